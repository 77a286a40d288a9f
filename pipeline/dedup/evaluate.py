"""Pairwise precision / recall of near-duplicate detection against labelled clusters.

A labelled set is JSON lines ``{"id", "text", "cluster"}``: documents sharing ``cluster`` are duplicates of
each other. Dedup decides *pairs* (every two documents put in one cluster), so it is scored on pairs:
precision = correct predicted pairs / predicted pairs, recall = correct predicted pairs / labelled pairs.
Counting pairs through the cluster contingency table (``sum C(n, 2)`` over cells) avoids enumerating them.

:func:`evaluate_dedup` runs the same building blocks as the Beam stage (shingles, MinHash, banding, bucket
pairs, verification) in one process with union-find for the components: it measures the *algorithm* at a
threshold quickly, for tuning. :func:`pairwise_scores` scores any prediction, e.g. a stage's
cluster files (:func:`pipeline.dedup.stage.read_clusters`).

:func:`eval_main` is ``ccgpt dedup eval FILE.jsonl [--threshold T] [--out PATH]``: it validates the file
(every line an object with ``id``, ``text`` and ``cluster``; clear errors naming the line otherwise), runs
:func:`evaluate_dedup` and prints (and optionally writes) the scores as JSON, adjusted Rand index included.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter, defaultdict
from typing import Any

from pipeline import fs
from pipeline.dedup.boilerplate import (
    BoilerplateConfig,
    GroupLines,
    candidate_threshold,
    core_sketch,
    count_line_keys,
    frequent_lines,
    group_of,
    line_keys,
    verify_pair,
)
from pipeline.dedup.components import UnionFind
from pipeline.dedup.exact import NormalizeConfig, exact_hash
from pipeline.dedup.lsh import band_keys, bucket_pairs, lsh_params
from pipeline.dedup.minhash import MinHasher, ShingleConfig


def _pairs(sizes: Any) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def adjusted_rand_index(n: int, true_pairs: int, pred_pairs: int, tp: int) -> float:
    """Adjusted Rand index (Hubert & Arabie) from pair counts, as ``sklearn.metrics.adjusted_rand_score``.

    ``n`` items, ``true_pairs`` / ``pred_pairs`` pairs inside a labelled / predicted cluster, ``tp`` pairs in
    both. Exact integer arithmetic; identical partitions (including all-singletons) score 1.0.
    """
    total = n * (n - 1) // 2
    fp, fn = pred_pairs - tp, true_pairs - tp
    tn = total - tp - fp - fn
    if fp == 0 and fn == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def pairwise_scores(predicted: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """Pairwise scores of ``predicted`` (id -> cluster) against ``truth`` (id -> cluster) over truth's ids.

    Ids missing from ``predicted`` are singletons; predicted ids missing from ``truth`` are ignored. With no
    labelled (or no predicted) pairs, recall (precision) is 1.0 by convention; ``ari`` needs no convention.
    """
    pred = {i: predicted.get(i, ("__singleton__", i)) for i in truth}
    true_pairs = _pairs(Counter(truth.values()).values())
    pred_pairs = _pairs(Counter(pred.values()).values())
    tp = _pairs(Counter((pred[i], truth[i]) for i in truth).values())
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "true_pairs": true_pairs,
        "predicted_pairs": pred_pairs,
        "true_positive_pairs": tp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ari": adjusted_rand_index(len(truth), true_pairs, pred_pairs, tp),
    }


class LabelledSetError(ValueError):
    """A labelled file that cannot be scored (unreadable, not JSON lines, missing fields, repeated ids)."""


def load_labelled(path_jsonl: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(id -> cluster, id -> text)`` from a labelled JSON-lines file, validated line by line.

    Every non-blank line must be a JSON object with ``id`` (string or integer), ``text`` (string; may be
    empty) and ``cluster`` (any JSON scalar; ``null`` makes the document its own singleton cluster). Cluster
    values compare by JSON value, so ``1`` and ``"1"`` are different clusters. Raises
    :class:`LabelledSetError` naming the first bad line.
    """
    truth, texts, _ = read_labelled(path_jsonl)
    return truth, texts


def read_labelled(path_jsonl: str) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
    """:func:`load_labelled` plus ``id -> {"url", "kind"}`` for the lines that have these optional string
    fields (``url``: the page's address, whose host groups boilerplate lines; ``kind``: e.g. original /
    syndicated / template, scored separately by :func:`kind_scores`)."""
    truth: dict[str, str] = {}
    texts: dict[str, str] = {}
    extras: dict[str, dict[str, str]] = {}
    try:
        raw = fs.open_read(path_jsonl)
    except OSError as e:
        raise LabelledSetError(f"{path_jsonl}: cannot open: {e.strerror or e}") from e
    with io.TextIOWrapper(raw, encoding="utf-8") as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path_jsonl}:{lineno}"
                try:
                    d = json.loads(line)
                except ValueError as e:
                    raise LabelledSetError(f"{where}: not valid JSON ({e})") from e
                if not isinstance(d, dict):
                    raise LabelledSetError(f"{where}: expected a JSON object with id, text, cluster")
                missing = [k for k in ("id", "text", "cluster") if k not in d]
                if missing:
                    raise LabelledSetError(f"{where}: missing field(s) {', '.join(missing)}")
                doc_id, text, cluster = d["id"], d["text"], d["cluster"]
                if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or doc_id == "":
                    raise LabelledSetError(f"{where}: id must be a non-empty string or an integer")
                doc_id = str(doc_id)
                if doc_id in truth:
                    raise LabelledSetError(f"{where}: id {doc_id!r} repeats an earlier line")
                if not isinstance(text, str):
                    raise LabelledSetError(f"{where}: text must be a string")
                if isinstance(cluster, (dict, list)):
                    raise LabelledSetError(f"{where}: cluster must be a string or number")
                truth[doc_id] = ("__singleton__:" + doc_id) if cluster is None else json.dumps(cluster)
                texts[doc_id] = text
                extra = {k: d[k] for k in ("url", "kind") if isinstance(d.get(k), str)}
                if extra:
                    extras[doc_id] = extra
        except UnicodeDecodeError as e:
            raise LabelledSetError(f"{path_jsonl}: not UTF-8 ({e})") from e
    return truth, texts, extras


def default_near_config() -> Any:
    """The default near-duplicate settings (the Beam stage's too): boilerplate lines set aside, MinHash on each
    document's core, candidates verified by :func:`.boilerplate.core_containment_match`."""
    from pipeline.dedup.stage import NearConfig  # late: stage imports Beam, this module need not

    return NearConfig()


def plain_near_config() -> Any:
    """The settings before boilerplate-aware comparison (the earlier defaults, kept for comparison): full
    texts, Jaccard verification, banding chosen for the threshold itself."""
    from pipeline.dedup.stage import NearConfig

    return NearConfig(verify="jaccard", boilerplate=BoilerplateConfig(enabled=False))


def kind_scores(predicted: dict[str, Any], truth: dict[str, Any], kinds: dict[str, str]) -> dict[str, Any]:
    """Scores per document ``kind`` (labelled sets such as syndicated-news v2: original / syndicated /
    template), so a gain in recall on copies and a loss on template pages do not hide each other.

    ``syndicated_recall``: labelled pairs among the non-template documents that were found;
    ``template_fp_pairs``: predicted pairs of two template documents that the labels keep apart;
    ``template_other_fp_pairs``: predicted pairs of a template document and another that the labels keep apart.
    Empty when no document has a kind.
    """
    if not kinds:
        return {}
    pred = {i: predicted.get(i, ("__singleton__", i)) for i in truth}
    template = [i for i in truth if kinds.get(i) == "template"]
    others = [i for i in truth if kinds.get(i) != "template"]
    sub = pairwise_scores({i: pred[i] for i in others}, {i: truth[i] for i in others})

    def wrong_pairs(ids: list[str]) -> int:
        return _pairs(Counter(pred[i] for i in ids).values()) - _pairs(
            Counter((pred[i], truth[i]) for i in ids).values()
        )

    template_fp = wrong_pairs(template)
    return {
        "documents_by_kind": dict(sorted(Counter(kinds.get(i, "") for i in truth).items())),
        "syndicated_true_pairs": sub["true_pairs"],
        "syndicated_recall": sub["recall"],
        "template_fp_pairs": template_fp,
        "template_other_fp_pairs": wrong_pairs(list(truth)) - wrong_pairs(others) - template_fp,
    }


def evaluate_dedup(
    path_jsonl: str, threshold: float = 0.8, cfg: Any = None, exact: NormalizeConfig | None = None
) -> dict[str, Any]:
    """Dedup the labelled set at ``path_jsonl`` at similarity ``threshold`` and score it pairwise.

    ``cfg`` is a :class:`pipeline.dedup.NearConfig` (:func:`default_near_config` when None; pass
    :func:`plain_near_config` for the earlier, plain settings); ``exact`` the exact pass's normalisation
    (None: near-duplicates only). With ``cfg.boilerplate.enabled`` the lines recurring in
    ``boilerplate.min_docs`` documents of a group (the host of the line's ``url`` field where it has one, else
    the whole file) are boilerplate, and each document's signature hashes its core's shingles (the full text's
    when the core has none). Verification by ``cfg.verify``: ``jaccard`` of the (core) shingle sets,
    ``containment`` (:func:`.boilerplate.core_containment_match`, floor ``cfg.min_overlap``), ``signature``
    or ``none``. Returns the scores plus candidate/verified pair counts, the LSH parameters used and, where
    lines carry a ``kind``, :func:`kind_scores`.
    """
    near = cfg or default_near_config()
    truth, texts, extras = read_labelled(path_jsonl)
    bands, rows = lsh_params(
        candidate_threshold(threshold, near), near.num_perm, near.bands, near.rows, near.fp_weight, near.fn_weight
    )
    hasher = MinHasher(near.num_perm, near.seed, near.scheme, near.hash)
    bp = near.boilerplate
    groups = {i: group_of(extras.get(i, {}).get("url"), bp) for i in texts}
    keys = {i: line_keys(t) for i, t in texts.items()} if bp.enabled else {}
    frequent = frequent_lines(count_line_keys((groups[i], k) for i, k in keys.items()), bp.min_docs)
    sketches: dict[str, Any] = {}
    buckets: dict[tuple[int, int], list[str]] = defaultdict(list)
    with_boilerplate = 0
    for doc_id, text in texts.items():
        lines = GroupLines(frequent, groups[doc_id]) if frequent else None
        sketch = core_sketch(text, near.shingles, hasher, lines, keys.get(doc_id))
        if sketch is None:
            continue
        with_boilerplate += sketch.has_boilerplate
        sketches[doc_id] = sketch
        for band in band_keys(sketch.signature, bands, rows):
            buckets[band].append(doc_id)
    uf = UnionFind()
    if exact is not None:  # exact groups, as the stage's first pass (catches texts too short to shingle)
        by_hash: dict[str, str] = {}
        for doc_id, text in texts.items():
            if text.strip():
                h = exact_hash(text, exact)
                if h in by_hash:
                    uf.union(by_hash[h], doc_id)
                else:
                    by_hash[h] = doc_id
    candidates = {pair for members in buckets.values() for pair in bucket_pairs(members, near.all_pairs_max)}
    verified = 0
    for a, b in sorted(candidates):
        ok = verify_pair(near.verify, sketches[a], sketches[b], threshold, near.min_overlap)
        if ok:
            verified += 1
            uf.union(a, b)
    predicted = uf.components()
    scores = pairwise_scores(predicted, truth)
    kinds = {i: e["kind"] for i, e in extras.items() if "kind" in e}
    return {
        "documents": len(truth),
        "threshold": threshold,
        "lsh_threshold": round(candidate_threshold(threshold, near), 4),
        "bands": bands,
        "rows": rows,
        "verify": near.verify,
        "boilerplate": {
            "enabled": bp.enabled,
            "min_docs": bp.min_docs,
            "groups": len(set(groups.values())),
            "lines": len(frequent),
            "documents_with_boilerplate": with_boilerplate,
        },
        "candidate_pairs": len(candidates),
        "verified_pairs": verified,
        "clusters_true": sum(1 for n in Counter(truth.values()).values() if n > 1),
        "clusters_predicted": len(set(predicted.values())),
        **scores,
        **kind_scores(predicted, truth, kinds),
    }


def eval_main(argv: list[str] | None = None) -> int:
    """``ccgpt dedup eval FILE.jsonl [--threshold T] [--out PATH]``: score dedup on a labelled set.

    Prints the JSON scores (``precision``, ``recall``, ``f1`` over pairs, ``ari``, pair and cluster counts,
    the LSH parameters, the boilerplate lines found and, for files whose lines carry a ``kind``, the recall on
    syndicated copies and the false-positive pairs of template pages) and writes them to ``--out`` when given.
    Exit status 0, or 2 for a bad file or arguments (the message names the line).
    """
    defaults = default_near_config()
    ap = argparse.ArgumentParser(
        prog="ccgpt dedup eval",
        description='Deduplicate a labelled JSON-lines file ({"id", "text", "cluster"} per line, optionally "url" '
        'and "kind"; documents sharing a cluster are duplicates) in one process (exact pass, boilerplate lines '
        "set aside, MinHash LSH on the documents' cores, containment verification, connected components) and "
        "print pairwise precision / recall / F1 and the adjusted Rand index as JSON.",
    )
    ap.add_argument("file", help='labelled JSON lines: {"id", "text", "cluster"} (a local path or a URL)')
    ap.add_argument("--threshold", type=float, default=0.8, help="similarity threshold (default 0.8)")
    ap.add_argument("--out", default=None, help="also write the JSON here (a local path or a URL)")
    ap.add_argument("--num-perm", type=int, default=defaults.num_perm, help="MinHash permutations")
    ap.add_argument("--ngram", type=int, default=defaults.shingles.ngram, help="shingle length")
    ap.add_argument("--shingle-kind", choices=["word", "char"], default=defaults.shingles.kind)
    ap.add_argument(
        "--verify", choices=["containment", "jaccard", "signature", "none"], default=None, help="default: containment"
    )
    ap.add_argument("--no-exact", action="store_true", help="skip the exact (normalised text hash) pass")
    ap.add_argument("--no-boilerplate", action="store_true", help="compare full texts (no boilerplate lines)")
    ap.add_argument(
        "--min-docs",
        type=int,
        default=defaults.boilerplate.min_docs,
        help="a line in at least this many documents of its group (URL host, else the file) is boilerplate",
    )
    ap.add_argument(
        "--min-overlap", type=int, default=defaults.min_overlap, help="containment: shingles a core must share"
    )
    ap.add_argument(
        "--plain",
        action="store_true",
        help="the earlier defaults: no boilerplate, Jaccard verification (other options apply)",
    )
    args = ap.parse_args(argv)
    if not 0.0 < args.threshold <= 1.0:
        ap.error(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.num_perm < 1 or args.ngram < 1 or args.min_overlap < 1 or args.min_docs < 2:
        ap.error("--num-perm, --ngram and --min-overlap must be >= 1, --min-docs >= 2")
    near = plain_near_config() if args.plain else default_near_config()
    near.num_perm = args.num_perm
    near.shingles = ShingleConfig(kind=args.shingle_kind, ngram=args.ngram)
    near.verify = args.verify or near.verify
    near.min_overlap = args.min_overlap
    near.boilerplate = BoilerplateConfig(enabled=near.boilerplate.enabled and not args.no_boilerplate)
    near.boilerplate.min_docs = args.min_docs
    try:
        result = evaluate_dedup(args.file, args.threshold, near, None if args.no_exact else NormalizeConfig())
    except LabelledSetError as e:
        print(f"ccgpt dedup eval: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.out:
        fs.write_text(args.out, text + "\n")
    return 0
