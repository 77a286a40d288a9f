"""GPT-3's quality classifier: learn what reference text looks like, then filter the crawl with it.

GPT-3 (Brown et al. 2020, appendix A) trained a classifier to tell curated reference text from raw Common
Crawl and kept a crawl document when ``np.random.pareto(alpha) > 1 - score``; DCLM later showed that a
fastText classifier keeping a fixed top fraction works at least as well. The parts:

* :mod:`.text`: input records, the one text normalisation (train and score time), why a text gets no score;
* :mod:`.train`: :func:`train_quality`, sample -> fit -> evaluate -> cross-fit analysis -> write;
* :mod:`.model`: the model file: checked, loaded (local or remote), :func:`score_documents` / :func:`score_paths`;
* :mod:`.folds`: cross-fitting, so the filter never scores a crawl document with a model that trained on it;
* :mod:`.rules`: the keep rules (``pareto``, ``threshold``, ``top_fraction``), pure functions of (id, seed);
* :mod:`.filter`: :func:`run_quality_filter`, the Beam stage that scores, stores ``quality_score`` and keeps.
"""

from pipeline.lazy import exports

# imported on first use, so importing the package imports none of its modules (pipeline/lazy.py says why)
_EXPORTS = {
    "HQ_LABEL": "pipeline.quality.model",
    "QualityError": "pipeline.quality.model",
    "QualityFilterConfig": "pipeline.quality.filter",
    "QualityTrainConfig": "pipeline.quality.train",
    "ScoreDocuments": "pipeline.quality.filter",
    "normalize_text": "pipeline.quality.text",
    "run_quality_filter": "pipeline.quality.filter",
    "score_documents": "pipeline.quality.model",
    "score_paths": "pipeline.quality.model",
    "train_quality": "pipeline.quality.train",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
