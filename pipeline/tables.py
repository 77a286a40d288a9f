"""Shared I/O of Beam stages: document tables into a pipeline, and the small count files stages write.

Every stage that reads document tables goes through :func:`read_document_tables`, so local inputs are
schema-checked the same way before a pipeline starts (a wrong input fails in a second, not after a
cluster spins up); and every keyed-count side file is summed by :func:`sum_jsonl`.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import fs
from pipeline.commit import committed_files
from schemas.documents import DOCUMENT_SCHEMA, document_files, validate_document_schema


def read_document_tables(p: beam.Pipeline, inputs: list[str]) -> beam.PCollection:
    """All input document tables as one PCollection of rows (dicts with every schema field).

    A committed stage folder (local or on an object store) is read from the file list of its ``stats.json``,
    never from a listing, so a straggler's or a killed attempt's files are never read; an unfinished one is
    refused. Local tables are validated against the document schema here; a remote file or glob is read as
    given (a folder URL without ``stats.json`` means its ``*.parquet`` files). A finished stage that kept
    nothing adds no rows.
    """
    reads = []
    for i, path in enumerate(inputs):
        if "://" in path:
            is_pattern = path.endswith(".parquet") or any(c in path for c in "*?[")
            committed = None if is_pattern else committed_files(path)
            if committed is not None:  # a stage folder: its committed tables, never a listing
                tables = sorted(f for f in committed if f[len(path.rstrip("/")) + 1 :].count("/") == 0)
                tables = [f for f in tables if f.endswith(".parquet")]
                if tables:
                    reads.append(
                        p
                        | f"Tables{i}" >> beam.Create(tables)
                        | f"Read{i}" >> beam.io.ReadAllFromParquet(columns=list(DOCUMENT_SCHEMA.names))
                    )
                continue
            pattern = path if is_pattern else path.rstrip("/") + "/*.parquet"
        else:
            files = document_files(path)
            if not files:
                continue
            for f in files:
                validate_document_schema(pq.read_schema(f), where=f)
            pattern = os.path.join(os.path.abspath(path), "*.parquet") if os.path.isdir(path) else os.path.abspath(path)
            if os.path.isdir(path) and files != sorted(glob.glob(pattern)):  # a committed list that is not the listing
                reads.append(
                    p
                    | f"Tables{i}" >> beam.Create(files)
                    | f"Read{i}" >> beam.io.ReadAllFromParquet(columns=list(DOCUMENT_SCHEMA.names))
                )
                continue
        reads.append(p | f"Read{i}" >> beam.io.ReadFromParquet(pattern, columns=list(DOCUMENT_SCHEMA.names)))
    if not reads:
        return p | "NoInput" >> beam.Create([])
    return tuple(reads) | "FlattenInputs" >> beam.Flatten()


def count_rows(inputs: list[str]) -> int | None:
    """Rows in local document tables, from Parquet footers (no data read); None when any input is remote."""
    total = 0
    for path in inputs:
        if "://" in path:
            return None
        for f in document_files(path):
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file a stage wrote (absent file: none); local or on an object store."""
    if not fs.exists(path):
        return []
    return [json.loads(line) for line in fs.read_lines(path) if line.strip()]


def sum_jsonl(path: str, key: str, value: str, cast: Callable[[Any], Any] = int) -> dict[Any, Any]:
    """Sum ``value`` by ``key`` over a JSON-lines file (absent file: empty). List keys become tuples."""
    out: dict[Any, Any] = {}
    if fs.exists(path):
        for line in fs.read_lines(path):
            if line.strip():
                row = json.loads(line)
                k = tuple(row[key]) if isinstance(row[key], list) else row[key]
                out[k] = out.get(k, cast(0)) + cast(row[value])
    return out


class WriteLines(beam.PTransform):
    """PCollection[str] -> one text file at ``path`` (no shard suffix), present even when nothing reaches it.

    With ``num_shards=1`` Beam writes the file even for an empty collection, so a stage's side files
    (examples, failures, counters) always exist once its pipeline has run.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, lines):
        return lines | "Write" >> beam.io.WriteToText(self.path, shard_name_template="", num_shards=1)


class WriteJsonLines(beam.PTransform):
    """PCollection[dict] -> one JSON-lines file (keys sorted, non-ASCII kept): :class:`WriteLines` of JSON."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, rows):
        return (
            rows
            | "Json" >> beam.Map(lambda row: json.dumps(row, ensure_ascii=False, sort_keys=True))
            | "Lines" >> WriteLines(self.path)
        )


COUNTERS_FILE = "counters.jsonl"


class WriteCounters(beam.PTransform):
    """Named counters -> ``<folder>/counters.jsonl``, one ``{"counter", "n"}`` line per name.

    Elements are a counter name (counts 1) or a ``(name, n)`` pair (adds n); names are summed in the
    pipeline, so the file holds exact totals on every runner. Read back with :func:`read_counters`.
    """

    def __init__(self, folder: str, name: str = COUNTERS_FILE):
        super().__init__()
        self.path = os.path.join(folder, name)

    def expand(self, counters):
        return (
            counters
            | "AsPairs" >> beam.Map(lambda c: (c, 1) if isinstance(c, str) else (c[0], int(c[1])))
            | "Sum" >> beam.CombinePerKey(sum)
            | "Json" >> beam.MapTuple(lambda k, n: json.dumps({"counter": k, "n": n}, sort_keys=True))
            | "Lines" >> WriteLines(self.path)
        )


def read_counters(folder: str, name: str = COUNTERS_FILE) -> dict[str, int]:
    """The totals :class:`WriteCounters` wrote (absent file: none)."""
    return sum_jsonl(os.path.join(folder, name), "counter", "n")


def counters_with_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    """``{"language:en": 3, ...}`` with ``prefix="language:"`` -> ``{"en": 3}``, sorted by name."""
    return dict(sorted((k[len(prefix) :], v) for k, v in counters.items() if k.startswith(prefix)))


FAILED_FILES = "failed_files.jsonl"
EXAMPLES_FILE = "examples.jsonl"


class WriteDocuments(beam.PTransform):
    """PCollection of document rows -> ``<folder>/documents-*.parquet`` (DOCUMENT_SCHEMA).

    Beam writes no Parquet file for an empty collection: call :func:`ensure_table` once the pipeline ran."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def expand(self, rows):
        return rows | "Parquet" >> beam.io.WriteToParquet(
            os.path.join(self.folder, "documents"), schema=DOCUMENT_SCHEMA, file_name_suffix=".parquet"
        )


def ensure_table(folder: str) -> None:
    """Leave one empty, valid document table in ``folder`` (local or an object store) when the pipeline wrote
    none."""
    if fs.is_url(folder):
        if fs.match(fs.join(folder, "*.parquet")):
            return
    else:
        os.makedirs(folder, exist_ok=True)
        if any(name.endswith(".parquet") for name in os.listdir(folder)):
            return
    sink = pa.BufferOutputStream()
    pq.write_table(DOCUMENT_SCHEMA.empty_table(), sink)
    fs.write_bytes(fs.join(folder, "documents-empty.parquet"), sink.getvalue().to_pybytes())


def _example_lines(kv):
    _, examples = kv
    for ex in sorted(examples, key=lambda e: (e.get("url") or "", e.get("text") or "")):
        yield json.dumps(ex, ensure_ascii=False, sort_keys=True)


class WriteExamples(beam.PTransform):
    """``(reason, example)`` pairs -> ``<folder>/examples.jsonl``: up to ``per_reason`` examples per reason."""

    def __init__(self, folder: str, per_reason: int):
        super().__init__()
        self.path = os.path.join(folder, EXAMPLES_FILE)
        self.per_reason = per_reason

    def expand(self, examples):
        return (
            examples
            | "Keep" >> beam.Filter(lambda _kv, n=self.per_reason: n > 0)
            | "Sample" >> beam.combiners.Sample.FixedSizePerKey(max(self.per_reason, 1))
            | "Json" >> beam.FlatMap(_example_lines)
            | "Lines" >> WriteLines(self.path)
        )
