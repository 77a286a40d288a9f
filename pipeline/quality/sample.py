"""The quality classifier's training sample, drawn in Beam by a hash of each document's key.

GPT-3 trained its classifier on a sample of a huge crawl; reading the whole crawl in the driver, as a
reservoir does, puts crawl-sized work on one process and ties the sample to the input's row order. Here the
workers read the inputs file by file, drop what cannot be scored (counted by reason), and give every usable
document a priority: :data:`SAMPLE_HASH`, a pure hash of its fold key (:func:`pipeline.quality.folds.fold_key`,
the id, or the text's hash for a record without one) and the seed. Each class keeps the ``max_per_class``
documents of smallest priority (Beam's ``Top`` combiner: each worker holds at most that many per class), ties
broken by key and text. That set, and the order the driver sorts it in, depend only on the documents and the
seed: the same sample, and so the same model, with any number of workers, on any runner, in any input order.
The driver reads back only that bounded sample and trains in one process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import xxhash

from pipeline import fs
from pipeline.quality.folds import fold_key
from pipeline.quality.text import iter_records, normalize_text, unscorable_reason
from pipeline.runner import RunnerConfig, make_pipeline
from pipeline.tables import WriteCounters, WriteLines, document_files, read_counters, read_jsonl
from schemas.stats import StageStats

SAMPLE_HASH = "xxh64(b'quality-sample\\x00' + fold key, seed); per class the max_per_class smallest are kept"
SAMPLE_FILE = "sample.jsonl"
COUNTS = "counts"


class Candidate(NamedTuple):
    """A usable document of one class, ordered by its sampling priority (then key and text: no ties)."""

    priority: int
    key: str
    line: str


def priority(key: str, seed: int) -> int:
    """A document's sampling priority: a stable hash of its key and the seed, never arrival order."""
    return xxhash.xxh64_intdigest(f"quality-sample\x00{key}".encode(), seed=seed & 0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class SampleSpec:
    """What decides which documents are usable and sampled (a subset of the training config)."""

    min_words: int
    max_chars: int
    max_per_class: int
    seed: int


def input_files(path: str) -> list[str]:
    """One input as the files the workers read one by one: a document table folder (or object-store prefix)
    becomes its Parquet files."""
    return document_files(path) if fs.is_dir(path) else [path]


class UsableDocuments(beam.DoFn):
    """``(class, file)`` -> ``(class, Candidate)`` for each usable document; counters on the ``counts`` output.

    Counters: ``read:<class>``, ``drop:<reason>`` (the document cannot be scored, is empty or too short) and
    ``usable:<class>``."""

    def __init__(self, spec: SampleSpec):
        self.spec = spec

    def process(self, element: tuple[str, str]) -> Iterator[Any]:
        cls, path = element
        for doc_id, text in iter_records(path):
            yield beam.pvalue.TaggedOutput(COUNTS, f"read:{cls}")
            reason = unscorable_reason(text, self.spec.max_chars)
            line = normalize_text(text) if reason is None else ""
            if reason is None and not line:
                reason = "empty_text"
            if reason is None and line.count(" ") + 1 < self.spec.min_words:
                reason = "too_short"
            if reason is not None:
                yield beam.pvalue.TaggedOutput(COUNTS, f"drop:{reason}")
                continue
            yield beam.pvalue.TaggedOutput(COUNTS, f"usable:{cls}")
            key = fold_key(doc_id, line)
            yield cls, Candidate(priority(key, self.spec.seed), key, line)


def _sample_lines(kv: tuple[str, list[Candidate]]) -> Iterator[str]:
    cls, candidates = kv
    for c in candidates:
        yield json.dumps({"class": cls, "priority": c.priority, "key": c.key, "line": c.line}, ensure_ascii=False)


class DrawQualitySample(beam.PTransform):
    """``(class, file)`` pairs -> ``<folder>/sample.jsonl`` (the sample) and ``<folder>/counters.jsonl``."""

    def __init__(self, spec: SampleSpec, folder: str):
        super().__init__()
        self.spec = spec
        self.folder = folder

    def expand(self, files):
        docs = (
            files
            | "Spread" >> beam.Reshuffle()
            | "Usable" >> beam.ParDo(UsableDocuments(self.spec)).with_outputs(COUNTS, main="docs")
        )
        if self.spec.max_per_class > 0:
            sampled = docs.docs | "SmallestPriorities" >> beam.combiners.Top.SmallestPerKey(self.spec.max_per_class)
        else:
            sampled = docs.docs | "All" >> beam.GroupByKey() | "Sort" >> beam.MapTuple(lambda k, v: (k, sorted(v)))
        _ = (
            sampled
            | "Lines" >> beam.FlatMap(_sample_lines)
            | "Write" >> WriteLines(os.path.join(self.folder, SAMPLE_FILE))
        )
        _ = docs[COUNTS] | "Counters" >> WriteCounters(self.folder)
        return sampled


@dataclass
class ClassSample:
    """One class's sampled documents as ``(fold key, normalised line)`` in priority order, and its counts."""

    items: list[tuple[str, str]]
    counts: dict[str, int]


def draw_samples(
    classes: dict[str, list[str]], spec: SampleSpec, runner: RunnerConfig, folder: str, stats: StageStats
) -> dict[str, ClassSample]:
    """Run the sampling pipeline over every class's inputs and read the bounded sample back.

    ``stats`` counts every document read, each drop by reason, and ``max_per_class`` for usable documents
    the cap left out, so ``read == sampled + dropped`` holds for the sample."""
    files = [(cls, f) for cls, paths in classes.items() for path in paths for f in input_files(path)]
    with make_pipeline(runner, "quality sample") as p:
        _ = p | "Files" >> beam.Create(files) | "Draw" >> DrawQualitySample(spec, folder)
    counters = read_counters(folder)
    rows = read_jsonl(os.path.join(folder, SAMPLE_FILE))
    out: dict[str, ClassSample] = {}
    for cls in classes:
        mine = sorted((r["priority"], r["key"], r["line"]) for r in rows if r["class"] == cls)
        read, usable = counters.get(f"read:{cls}", 0), counters.get(f"usable:{cls}", 0)
        stats.read += read
        if usable > len(mine):
            stats.drop("max_per_class", usable - len(mine))
        out[cls] = ClassSample([(key, line) for _, key, line in mine], {"read": read, "usable": len(mine)})
    for name, n in sorted(counters.items()):
        if name.startswith("drop:"):
            stats.drop(name[len("drop:") :], n)
    return out
