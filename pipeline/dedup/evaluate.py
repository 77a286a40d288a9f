"""Pairwise precision / recall of near-duplicate detection against labelled clusters.

A labelled set is JSON lines ``{"id", "text", "cluster"}``: documents sharing ``cluster`` are duplicates of
each other. Dedup decides *pairs* (every two documents put in one cluster), so it is scored on pairs:
precision = correct predicted pairs / predicted pairs, recall = correct predicted pairs / labelled pairs.
Counting pairs through the cluster contingency table (``sum C(n, 2)`` over cells) avoids enumerating them.

:func:`evaluate_dedup` runs the same building blocks as the Beam stage (shingles, MinHash, banding, bucket
pairs, verification) in one process with union-find for the components: it measures the *algorithm* at a
threshold quickly, for tuning. :func:`pairwise_scores` scores any prediction, e.g. a stage's
``clusters.jsonl``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from pipeline.dedup.components import UnionFind
from pipeline.dedup.lsh import band_keys, bucket_pairs, lsh_params
from pipeline.dedup.minhash import MinHasher, jaccard, shingles, signature_similarity


def _pairs(sizes: Any) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def pairwise_scores(predicted: dict[str, str], truth: dict[str, str]) -> dict[str, Any]:
    """Pairwise scores of ``predicted`` (id -> cluster) against ``truth`` (id -> cluster) over truth's ids.

    Ids missing from ``predicted`` are singletons; predicted ids missing from ``truth`` are ignored.
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
    }


def evaluate_dedup(path_jsonl: str, threshold: float = 0.8, cfg: Any = None) -> dict[str, Any]:
    """Near-dedup the labelled set at ``path_jsonl`` at Jaccard ``threshold`` and score it pairwise.

    ``cfg`` is a :class:`pipeline.dedup.NearConfig` (defaults when None). Returns the scores plus candidate/verified pair counts and the LSH parameters used.
    """
    from pipeline.dedup.stage import NearConfig  # late: stage imports Beam, this module need not

    near = cfg or NearConfig()
    truth: dict[str, str] = {}
    texts: dict[str, str] = {}
    with open(path_jsonl, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                d = json.loads(line)
                truth[str(d["id"])] = str(d["cluster"])
                texts[str(d["id"])] = d.get("text") or ""
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
    candidates = {pair for members in buckets.values() for pair in bucket_pairs(members, near.all_pairs_max)}
    uf = UnionFind()
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
