"""The quality filter stage (``ccgpt quality filter``): score every document, store it, keep by a rule.

Each document is scored by the trained model (or, with cross-fitting, by the fold model that never trained
on it), its ``quality_score`` stored, and it is kept by one of three rules (:mod:`pipeline.quality.rules`):
GPT-3's ``pareto``, a ``threshold``, or DCLM's ``top_fraction``. Unscorable documents are counted reasons,
never a default score, and every model file is checked before any document is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from pipeline import fs
from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped
from pipeline.quality.folds import cross_fit_models, fold_of
from pipeline.quality.model import QualityError, fasttext_scores, load_model, resolve_model_path, validate_model
from pipeline.quality.rules import (
    approximate_cutoff,
    exact_cutoff,
    pareto_keep,
    pareto_keep_probability,
    rank_key,
)
from pipeline.quality.text import DEFAULT_MAX_CHARS, normalize_text, unscorable_reason
from pipeline.runner import RunnerConfig
from pipeline.stage import Stage, load_stats
from pipeline.tables import (
    WriteDocuments,
    WriteJsonLines,
    count_rows,
    ensure_table,
    output_files,
    read_document_tables,
    sum_jsonl,
)
from schemas.documents import DOCUMENT_SCHEMA
from schemas.stats import StageStats

SUMMARY_FILE = "quality_summary.jsonl"


PARETO_OR_TOP = "pareto_or_top_fraction"


@dataclass
class QualityFilterConfig:
    model: str = field(default="", metadata={"help": "model.bin, or the folder `quality train` wrote"})
    rule: Literal["pareto", "threshold", "top_fraction", "pareto_or_top_fraction"] = field(
        default="pareto",
        metadata={
            "help": "pareto (GPT-3) | threshold (score >= threshold) | top_fraction (DCLM: best share) | "
            "pareto_or_top_fraction (pareto when it keeps at least min_documents, else top_fraction)"
        },
    )
    alpha: float = field(default=9.0, metadata={"help": "Pareto shape; keep probability is (2 - score) ** -alpha"})
    seed: int = field(default=0, metadata={"help": "run seed of the per-document Pareto draws and tie breaks"})
    threshold: float = field(default=0.5, metadata={"help": "rule=threshold: keep documents scoring at least this"})
    top_fraction: float = field(default=0.1, metadata={"help": "rule=top_fraction: share of scored documents kept"})
    min_documents: int = field(
        default=1000,
        metadata={
            "help": "rule=pareto_or_top_fraction: the fewest documents the Pareto rule must keep to be used "
            "(counted over all scored documents before any is kept, so the choice does not depend on order)"
        },
    )
    quantiles: Literal["exact", "approximate"] = field(
        default="exact",
        metadata={
            "help": "rule=top_fraction cutoff: exact (gathers every score, fine to ~10^7 docs) or approximate"
            " (ApproximateQuantiles, bounded memory)"
        },
    )
    num_quantiles: int = field(default=1001, metadata={"help": "quantiles=approximate: resolution of the cutoff"})
    hist_bins: int = field(default=20, metadata={"help": "bins of the score histograms in stats.json"})
    max_chars: int = field(
        default=DEFAULT_MAX_CHARS,
        metadata={"help": "documents longer than this many characters are dropped as too_long (0 = no limit)"},
    )
    cross_fit: bool = field(
        default=True,
        metadata={
            "help": "use the fold models (model-fold{k}.bin) when the model folder has them: each document is"
            " scored by the model that did not train on it"
        },
    )

    def __post_init__(self) -> None:
        # ``model`` may stay empty here: a pipeline run fills it in with the model it trains.
        if self.rule in ("top_fraction", PARETO_OR_TOP) and not 0.0 <= self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in [0, 1], got {self.top_fraction}")
        if self.rule in ("pareto", PARETO_OR_TOP) and self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if self.rule == PARETO_OR_TOP and self.min_documents < 0:
            raise ValueError(f"min_documents must be >= 0, got {self.min_documents}")

    def rule_used(self, pareto_kept: int) -> str:
        """The rule that decides: pareto_or_top_fraction picks by how many documents Pareto keeps."""
        if self.rule != PARETO_OR_TOP:
            return self.rule
        return "pareto" if pareto_kept >= self.min_documents else "top_fraction"


def _with_outcome(outcome: str) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(OUTCOMES, outcome)


class ScoreDocuments(beam.DoFn):
    """Score each document and set ``quality_score``; unreadable or empty documents become counted drops.

    The score is rounded to float32 before anything uses it, so the stored ``quality_score`` alone decides
    the keep rule: anyone can re-derive the decision from the output table.

    With ``fold_paths`` (cross-fitting) a document whose id falls in fold k (:func:`fold_of` with the
    training seed) is scored by fold model k, which never trained on it. Every scored document has an id,
    so ``model.bin`` is then never used and not loaded; ``setup`` loads the models this DoFn uses once per
    worker, not once per bundle (a model on an object store is downloaded to the worker's temp folder for
    that, since fastText loads only local files).
    """

    def __init__(
        self,
        model_path: str,
        fold_paths: list[str] | None = None,
        fold_seed: int = 0,
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        self.model_path = model_path
        self.max_chars = max_chars
        self.fold_paths = list(fold_paths or [])
        self.fold_seed = fold_seed
        self._model: Any = None
        self._fold_models: list[Any] = []

    def setup(self) -> None:
        if self.fold_paths:
            self._fold_models = [load_model(p) for p in self.fold_paths]
        else:
            self._model = load_model(self.model_path)

    def _model_of(self, doc_id: str) -> Any:
        if self._fold_models:
            return self._fold_models[fold_of(doc_id, self.fold_seed, len(self._fold_models))]
        return self._model

    def process(self, row: dict[str, Any]) -> Iterator[Any]:
        doc_id = row.get("id") if isinstance(row, dict) else None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(doc_id, str) or not doc_id or not isinstance(text, str):
            yield _with_outcome(dropped("bad_record"))
            return
        reason = unscorable_reason(text, self.max_chars)
        if reason is not None:
            yield _with_outcome(dropped(reason))
            return
        line = normalize_text(text)
        if not line:
            yield _with_outcome(dropped("empty_text"))
            return
        try:
            (score,) = fasttext_scores(self._model_of(doc_id), [line])
        except (ValueError, RuntimeError, UnicodeError):
            yield _with_outcome(dropped("score_error"))
            return
        out = {name: row.get(name) for name in DOCUMENT_SCHEMA.names}
        out["quality_score"] = float(np.float32(score))
        yield out


class ApplyKeepRule(beam.DoFn):
    """Keep or drop each scored document by the configured rule; dropped ones count as ``quality``."""

    def __init__(self, cfg: QualityFilterConfig):
        self.cfg = cfg

    def process(
        self, row: dict[str, Any], cutoff: tuple[float, float] | None = None, pareto_kept: int = 0
    ) -> Iterator[Any]:
        cfg = self.cfg
        score = row["quality_score"]
        rule = cfg.rule_used(pareto_kept)
        if rule == "pareto":
            keep = pareto_keep(score, row["id"], cfg.seed, cfg.alpha)
        elif rule == "threshold":
            keep = score >= cfg.threshold
        else:
            keep = cutoff is not None and rank_key(score, row["id"], cfg.seed) >= tuple(cutoff)
        if keep:
            yield row
            yield _with_outcome(KEPT)
        else:
            yield _with_outcome(dropped("quality"))


# Entries of quality_summary.jsonl: (key, value) pairs summed per key in the pipeline.


def _rank_key_of(row: dict[str, Any], seed: int) -> tuple[float, float]:
    return rank_key(row["quality_score"], row["id"], seed)


def _hist_entries(row: dict[str, Any], which: str, bins: int) -> tuple[str, float]:
    b = min(bins - 1, max(0, int(row["quality_score"] * bins)))
    return (f"hist:{which}:{b}", 1.0)


def _pareto_keeps(row: dict[str, Any], seed: int, alpha: float) -> int:
    return int(pareto_keep(row["quality_score"], row["id"], seed, alpha))


def _pareto_kept_entry(n: int) -> tuple[str, float]:
    return ("pareto_kept", float(n))


def _expected_keep_entry(row: dict[str, Any], alpha: float) -> tuple[str, float]:
    return ("pareto_expected_keep", pareto_keep_probability(row["quality_score"], alpha))


def _fold_entry(row: dict[str, Any], seed: int, folds: int) -> tuple[str, float]:
    return (f"fold:{fold_of(row['id'], seed, folds)}", 1.0)


def _score_entry(row: dict[str, Any]) -> tuple[str, float]:
    return ("score_sum", float(row["quality_score"]))


def _cutoff_entries(cutoff: tuple[float, float] | None) -> Iterator[tuple[str, float]]:
    if cutoff is not None:
        yield ("cutoff_score", float(cutoff[0]))


class _BundleSums(beam.DoFn):
    """Rows -> the sums per key of ``entry(row, *args)`` over a bundle, emitted when it ends: a few pairs a
    bundle, where one pair a row made the summary's input grow with the documents (Beam's local runner holds
    the flattened entries in its driver before it sums them)."""

    def __init__(self, entry: Callable[..., tuple[str, float]], *args: Any):
        self.entry, self.args = entry, args

    def start_bundle(self):
        self._sums: dict[str, float] = {}

    def process(self, row: dict[str, Any]) -> Iterator[tuple[str, float]]:
        key, value = self.entry(row, *self.args)
        self._sums[key] = self._sums.get(key, 0.0) + value
        return iter(())

    def finish_bundle(self):
        for kv in sorted(self._sums.items()):
            yield GlobalWindows.windowed_value(kv)


def _summary_row(kv: tuple[str, float]) -> dict[str, Any]:
    return {"key": kv[0], "value": kv[1]}


def _read_summary(folder: str) -> dict[str, float]:
    return sum_jsonl(os.path.join(folder, SUMMARY_FILE), "key", "value", float)


def _check_models(model_path: str, cross_fit: bool) -> tuple[list[str], int]:
    """Check ``model_path`` and, with ``cross_fit``, the fold models beside it; return those and their seed.

    Run before any document is read: a missing, damaged or foreign model is a :class:`QualityError` naming
    it, not a failure on a worker after the inputs were read.
    """
    validate_model(model_path)
    fold_paths, fold_seed = cross_fit_models(model_path) if cross_fit else ([], 0)
    for path in fold_paths:
        try:
            validate_model(path)
        except QualityError as exc:
            raise QualityError(f"{exc} (a cross-fitting model; or set cross_fit: false)") from None
    return fold_paths, fold_seed


def run_quality_filter(
    inputs: list[str], out_dir: str, cfg: QualityFilterConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Score every document with the quality model, store ``quality_score``, keep by ``cfg.rule``.

    Output: ``out_dir/documents-*.parquet`` (kept documents, scored), ``outcomes.jsonl``,
    ``quality_summary.jsonl`` (histogram counts and sums), ``stats.json`` whose ``extra`` holds the rule,
    ``keep_rate`` (kept / scored), ``mean_score``, the score histograms of scored and kept documents and,
    for ``pareto``, the analytic ``pareto_expected_keep_rate`` to compare the realised rate with.
    The model files take part in the fingerprint, so retraining them reruns the filter. Inputs, model and
    ``out_dir`` may each be local or on an object store.

    When the model folder holds fold models (``train_quality`` with ``folds >= 2``) and ``cfg.cross_fit``,
    each document is scored by the fold model that did not train on it, so crawl documents that were the
    classifier's negatives are not scored by a model that memorised them; ``stats.extra`` then records
    ``cross_fit_folds`` (0 when every document is scored by ``model.bin``) and ``scored_per_fold``.
    """
    if not cfg.model:
        raise ValueError("quality filter needs cfg.model (model.bin or the quality train output folder)")
    model_path = resolve_model_path(cfg.model)
    if not fs.is_url(model_path):
        model_path = os.path.abspath(model_path)  # workers may run in another working directory
    fold_paths, fold_seed = _check_models(model_path, cfg.cross_fit)
    folds = len(fold_paths)
    stage = Stage(
        "quality_filter",
        out_dir,
        [*inputs, model_path, *fold_paths],
        cfg,
        force,
        module=__name__,
    )
    if stage.complete():
        return load_stats(out_dir)
    bins = max(1, cfg.hist_bins)

    def build(p: beam.Pipeline, tmp: str) -> None:
        docs = read_document_tables(p, inputs)
        score = ScoreDocuments(model_path, fold_paths, fold_seed, cfg.max_chars)
        scored = docs | "Score" >> beam.ParDo(score).with_outputs(OUTCOMES, main="scored")
        side: dict[str, Any] = {}
        summary_parts = []
        if cfg.rule == PARETO_OR_TOP:
            pareto_kept = (
                scored.scored
                | "ParetoKeeps" >> beam.Map(_pareto_keeps, cfg.seed, cfg.alpha)
                | "ParetoKept" >> beam.CombineGlobally(sum)
            )
            side["pareto_kept"] = beam.pvalue.AsSingleton(pareto_kept)
            summary_parts.append(pareto_kept | "ParetoKeptEntry" >> beam.Map(_pareto_kept_entry))
        if cfg.rule in ("top_fraction", PARETO_OR_TOP):
            keys = scored.scored | "RankKeys" >> beam.Map(_rank_key_of, cfg.seed)
            if cfg.quantiles == "approximate":
                cutoff = (
                    keys
                    | "Quantiles" >> beam.transforms.stats.ApproximateQuantiles.Globally(max(2, cfg.num_quantiles))
                    | "Cutoff" >> beam.Map(approximate_cutoff, cfg.top_fraction)
                )
            else:
                cutoff = (
                    keys | "AllKeys" >> beam.combiners.ToList() | "Cutoff" >> beam.Map(exact_cutoff, cfg.top_fraction)
                )
            side["cutoff"] = beam.pvalue.AsSingleton(cutoff)
            summary_parts.append(cutoff | "CutoffEntry" >> beam.FlatMap(_cutoff_entries))
        kept = scored.scored | "Keep" >> beam.ParDo(ApplyKeepRule(cfg), **side).with_outputs(OUTCOMES, main="kept")
        _ = kept.kept | "WriteDocuments" >> WriteDocuments(tmp, output_files(inputs))
        _ = (scored[OUTCOMES], kept[OUTCOMES]) | "AllOutcomes" >> beam.Flatten() | WriteOutcomes(tmp)

        summary_parts.append(scored.scored | "HistAll" >> beam.ParDo(_BundleSums(_hist_entries, "scored", bins)))
        summary_parts.append(kept.kept | "HistKept" >> beam.ParDo(_BundleSums(_hist_entries, "kept", bins)))
        summary_parts.append(scored.scored | "ScoreSum" >> beam.ParDo(_BundleSums(_score_entry)))
        if folds:
            summary_parts.append(scored.scored | "FoldCounts" >> beam.ParDo(_BundleSums(_fold_entry, fold_seed, folds)))
        if cfg.rule in ("pareto", PARETO_OR_TOP):
            summary_parts.append(
                scored.scored | "ExpectedKeep" >> beam.ParDo(_BundleSums(_expected_keep_entry, cfg.alpha))
            )
        _ = (
            tuple(summary_parts)
            | "FlattenSummary" >> beam.Flatten()
            | "SumSummary" >> beam.CombinePerKey(sum)
            | "SummaryRows" >> beam.Map(_summary_row)
            | "WriteSummary" >> WriteJsonLines(os.path.join(tmp, SUMMARY_FILE))
        )

    def summarise(tmp: str, stats: StageStats) -> None:
        ensure_table(tmp)
        summary = _read_summary(tmp)
        n_scored = stats.kept + stats.dropped.get("quality", 0)
        stats.extra["rule"] = cfg.rule
        stats.extra["scored"] = n_scored
        stats.extra["keep_rate"] = stats.kept / n_scored if n_scored else 0.0
        stats.extra["mean_score"] = summary.get("score_sum", 0.0) / n_scored if n_scored else None
        stats.extra["score_hist"] = {
            "bins": [i / bins for i in range(bins + 1)],
            "scored": [int(summary.get(f"hist:scored:{b}", 0)) for b in range(bins)],
            "kept": [int(summary.get(f"hist:kept:{b}", 0)) for b in range(bins)],
        }
        if cfg.rule == PARETO_OR_TOP:
            pareto_kept = int(summary.get("pareto_kept", 0))
            stats.extra["rule_used"] = cfg.rule_used(pareto_kept)
            stats.extra["pareto_kept"] = pareto_kept
            stats.extra["min_documents"] = cfg.min_documents
        if cfg.rule in ("pareto", PARETO_OR_TOP):
            stats.extra["alpha"] = cfg.alpha
            stats.extra["pareto_expected_keep_rate"] = (
                summary.get("pareto_expected_keep", 0.0) / n_scored if n_scored else None
            )
        if cfg.rule == "threshold":
            stats.extra["threshold"] = cfg.threshold
        if cfg.rule in ("top_fraction", PARETO_OR_TOP):
            stats.extra["top_fraction"] = cfg.top_fraction
            stats.extra["cutoff_score"] = summary.get("cutoff_score")
        stats.extra["model"] = model_path
        stats.extra["cross_fit_folds"] = folds
        if folds:
            stats.extra["fold_models"] = fold_paths
            stats.extra["scored_per_fold"] = [int(summary.get(f"fold:{k}", 0)) for k in range(folds)]

    return stage.run_beam(runner, build, summarise, total=count_rows(inputs), label="quality")
