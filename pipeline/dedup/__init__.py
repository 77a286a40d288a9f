"""Deduplication stage (``ccgpt dedup``): exact and MinHash-LSH near-duplicate removal across sources.

See :mod:`pipeline.dedup.stage` for the pipeline (configs, the :class:`~pipeline.dedup.stage.Dedup` recipe,
``run_dedup``), :mod:`.steps` (its DoFns), :mod:`.records` (what crosses a shuffle or a hand-off file),
:mod:`.work` (chunks, sketch and hand-off files), :mod:`.index` (the index later runs dedup against),
:mod:`.minhash` (datasketch-identical signatures), :mod:`.lsh` (banding), :mod:`.components` (connected
components on the runner) and :mod:`.evaluate`.
"""

from pipeline.lazy import exports

# imported on first use, so importing the package imports none of its modules (pipeline/lazy.py says why)
_EXPORTS = {
    "DedupConfig": "pipeline.dedup.stage",
    "ExactConfig": "pipeline.dedup.exact",
    "NearConfig": "pipeline.dedup.stage",
    "NormalizeConfig": "pipeline.dedup.exact",
    "ShingleConfig": "pipeline.dedup.minhash",
    "adjusted_rand_index": "pipeline.dedup.evaluate",
    "eval_main": "pipeline.dedup.evaluate",
    "evaluate_dedup": "pipeline.dedup.evaluate",
    "load_labelled": "pipeline.dedup.evaluate",
    "pairwise_scores": "pipeline.dedup.evaluate",
    "read_clusters": "pipeline.dedup.stage",
    "run_dedup": "pipeline.dedup.stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
