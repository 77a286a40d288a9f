"""Exact, runner-independent accounting for Beam stages.

Each DoFn emits, besides its kept documents, one *outcome* string per input record on a tagged output:
``"kept"`` or ``"dropped:<reason>"``. :class:`WriteOutcomes` counts them inside the pipeline and writes one
JSON-lines file, which the driver turns into ``stats.json``. Unlike Beam metrics this is exact on every
runner (no attempted-vs-committed ambiguity) and leaves a file a data engineer can read.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam

from pipeline.commit import attempt_name
from pipeline.tables import WriteLines, sum_jsonl
from schemas.stats import StageStats

KEPT = "kept"
OUTCOMES = "outcomes"  # the tag DoFns use for their outcome output


def dropped(reason: str) -> str:
    return f"dropped:{reason}"


class WriteOutcomes(beam.PTransform):
    """PCollection[str] of outcomes -> ``<folder>/outcomes.jsonl`` with one ``{"outcome", "n"}`` per line.

    The outcomes of a stage's input records are its progress: one kind of record a pipeline (webtext's URL
    list rows are counted by a pipeline of their own, :mod:`pipeline.sources.url_list`)."""

    def __init__(self, folder: str):
        super().__init__()
        self.path = attempt_name(os.path.join(folder, "outcomes.jsonl"))  # tagged: see pipeline.tables.WriteLines

    def expand(self, outcomes):
        progress = getattr(outcomes.pipeline, "progress", None)
        if progress is not None:  # one outcome per input record: counting them is the stage's progress
            outcomes = outcomes | "Progress" >> beam.ParDo(progress.counter())
        return (
            outcomes
            | "CountOutcomes" >> beam.combiners.Count.PerElement()
            | "OutcomeJson" >> beam.MapTuple(lambda k, n: json.dumps({"outcome": k, "n": n}, sort_keys=True))
            | "WriteOutcomeFile" >> WriteLines(self.path)
        )


def read_outcomes(folder: str) -> dict[str, int]:
    return sum_jsonl(os.path.join(folder, "outcomes.jsonl"), "outcome", "n")


def stats_from_outcomes(stage: str, counts: dict[str, int]) -> StageStats:
    """Build checked stats: ``read`` is every outcome, ``kept`` the ``kept`` ones, the rest by reason."""
    stats = StageStats(stage=stage)
    for outcome, n in sorted(counts.items()):
        stats.read += n
        if outcome == KEPT:
            stats.kept += n
        elif outcome.startswith("dropped:"):
            stats.drop(outcome[len("dropped:") :], n)
        else:
            raise ValueError(f"unknown outcome {outcome!r} (expected 'kept' or 'dropped:<reason>')")
    return stats.check()
