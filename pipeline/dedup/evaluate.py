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
from pipeline.dedup.components import UnionFind
from pipeline.dedup.exact import NormalizeConfig, exact_hash
from pipeline.dedup.lsh import band_keys, bucket_pairs, lsh_params
from pipeline.dedup.minhash import (
    MinHasher,
    ShingleConfig,
    jaccard,
    shingles,
    signature_similarity,
)


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
    truth: dict[str, str] = {}
    texts: dict[str, str] = {}
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
        except UnicodeDecodeError as e:
            raise LabelledSetError(f"{path_jsonl}: not UTF-8 ({e})") from e
    return truth, texts


def evaluate_dedup(
    path_jsonl: str, threshold: float = 0.8, cfg: Any = None, exact: NormalizeConfig | None = None
) -> dict[str, Any]:
    """Dedup the labelled set at ``path_jsonl`` at Jaccard ``threshold`` and score it pairwise.

    ``cfg`` is a :class:`pipeline.dedup.NearConfig` (defaults when None); ``exact`` the exact pass's
    normalisation (None: near-duplicates only). Returns the scores plus candidate/verified pair counts and the LSH
    parameters used.
    """
    from pipeline.dedup.stage import (
        NearConfig,  # late: stage imports Beam, this module need not
    )

    near = cfg or NearConfig()
    truth, texts = load_labelled(path_jsonl)
    bands, rows = lsh_params(threshold, near.num_perm, near.bands, near.rows, near.fp_weight, near.fn_weight)
    hasher = MinHasher(near.num_perm, near.seed, near.scheme, near.hash)
    sketches: dict[str, Any] = {}
    buckets: dict[tuple[int, int], list[str]] = defaultdict(list)
    for doc_id, text in texts.items():
        items = shingles(text, near.shingles)
        if not items:
            continue
        signature, shingle_set = hasher.sketch(items)
        sketches[doc_id] = (signature, shingle_set)
        for band in band_keys(signature, bands, rows):
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
        if near.verify == "jaccard":
            ok = jaccard(sketches[a][1], sketches[b][1]) >= threshold
        elif near.verify == "signature":
            ok = signature_similarity(sketches[a][0], sketches[b][0]) >= threshold
        else:
            ok = True
        if ok:
            verified += 1
            uf.union(a, b)
    predicted = uf.components()
    scores = pairwise_scores(predicted, truth)
    return {
        "documents": len(truth),
        "threshold": threshold,
        "bands": bands,
        "rows": rows,
        "verify": near.verify,
        "candidate_pairs": len(candidates),
        "verified_pairs": verified,
        "clusters_true": sum(1 for n in Counter(truth.values()).values() if n > 1),
        "clusters_predicted": len(set(predicted.values())),
        **scores,
    }


def eval_main(argv: list[str] | None = None) -> int:
    """``ccgpt dedup eval FILE.jsonl [--threshold T] [--out PATH]``: score dedup on a labelled set.

    Prints the JSON scores (``precision``, ``recall``, ``f1`` over pairs, ``ari``, pair and cluster counts,
    the LSH parameters) and writes them to ``--out`` when given. Exit status 0, or 2 for a bad file or
    arguments (the message names the line).
    """
    from pipeline.dedup.stage import NearConfig  # late: stage imports Beam

    defaults = NearConfig()
    ap = argparse.ArgumentParser(
        prog="ccgpt dedup eval",
        description='Deduplicate a labelled JSON-lines file ({"id", "text", "cluster"} per line; documents '
        "sharing a cluster are duplicates) with the stage's algorithm (exact pass, MinHash LSH, Jaccard "
        "verification, connected components) and print pairwise precision / recall / F1 and the adjusted "
        "Rand index as JSON.",
    )
    ap.add_argument("file", help='labelled JSON lines: {"id", "text", "cluster"} (a local path or a URL)')
    ap.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default 0.8)")
    ap.add_argument("--out", default=None, help="also write the JSON here (a local path or a URL)")
    ap.add_argument("--num-perm", type=int, default=defaults.num_perm, help="MinHash permutations")
    ap.add_argument("--ngram", type=int, default=defaults.shingles.ngram, help="shingle length")
    ap.add_argument("--shingle-kind", choices=["word", "char"], default=defaults.shingles.kind)
    ap.add_argument("--verify", choices=["jaccard", "signature", "none"], default=defaults.verify)
    ap.add_argument("--no-exact", action="store_true", help="skip the exact (normalised text hash) pass")
    args = ap.parse_args(argv)
    if not 0.0 < args.threshold <= 1.0:
        ap.error(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.num_perm < 1 or args.ngram < 1:
        ap.error("--num-perm and --ngram must be >= 1")
    near = NearConfig(
        num_perm=args.num_perm, verify=args.verify, shingles=ShingleConfig(kind=args.shingle_kind, ngram=args.ngram)
    )
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
