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

from pipeline.quality.filter import QualityFilterConfig, ScoreDocuments, run_quality_filter
from pipeline.quality.model import HQ_LABEL, QualityError, score_documents, score_paths
from pipeline.quality.text import normalize_text
from pipeline.quality.train import QualityTrainConfig, train_quality

__all__ = [
    "HQ_LABEL",
    "QualityError",
    "QualityFilterConfig",
    "QualityTrainConfig",
    "ScoreDocuments",
    "normalize_text",
    "run_quality_filter",
    "score_documents",
    "score_paths",
    "train_quality",
]
