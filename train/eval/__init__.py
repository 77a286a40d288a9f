"""Zero-shot downstream evaluation (``ccgpt eval``): task files in, lm-eval-layout results out.

:mod:`train.tasks` reads the task files (:mod:`schemas.tasks` parses them); :mod:`train.eval.models` opens a
ccgpt checkpoint or a Hugging Face folder; :mod:`train.eval.scoring` batches log-likelihood requests;
:mod:`train.eval.metrics` turns scores into metrics per format; :mod:`train.eval.runner` ties them together in
an order that rejects bad input before any weight is loaded.
"""

from train.eval.models import EvalModelError, ModelSource, open_model
from train.eval.runner import LiveTasks, evaluate
from train.eval.scoring import ScoringError, rolling_requests, score_requests

__all__ = [
    "EvalModelError",
    "LiveTasks",
    "ModelSource",
    "ScoringError",
    "evaluate",
    "open_model",
    "rolling_requests",
    "score_requests",
]
