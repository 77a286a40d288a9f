"""Deduplication stage (``ccgpt dedup``): exact and MinHash-LSH near-duplicate removal across sources.

See :mod:`pipeline.dedup.stage` for the pipeline (configs, the :class:`~pipeline.dedup.stage.Dedup` recipe,
``run_dedup``), :mod:`.steps` (its DoFns), :mod:`.records` (what crosses a shuffle or a hand-off file),
:mod:`.work` (chunks, sketch and hand-off files), :mod:`.index` (the index later runs dedup against),
:mod:`.minhash` (datasketch-identical signatures), :mod:`.lsh` (banding), :mod:`.components` (connected
components on the runner) and :mod:`.evaluate`.
"""

from pipeline.dedup.evaluate import (
    adjusted_rand_index,
    eval_main,
    evaluate_dedup,
    load_labelled,
    pairwise_scores,
)
from pipeline.dedup.exact import ExactConfig, NormalizeConfig
from pipeline.dedup.minhash import ShingleConfig
from pipeline.dedup.stage import DedupConfig, NearConfig, read_clusters, run_dedup

__all__ = [
    "DedupConfig",
    "ExactConfig",
    "NearConfig",
    "NormalizeConfig",
    "ShingleConfig",
    "adjusted_rand_index",
    "eval_main",
    "evaluate_dedup",
    "load_labelled",
    "pairwise_scores",
    "read_clusters",
    "run_dedup",
]
