"""Shared I/O of Beam stages: document tables into a pipeline, and the small count files stages write.

Every stage that reads document tables goes through :func:`read_document_tables`, so local inputs are
schema-checked the same way before a pipeline starts (a wrong input fails in a second, not after a
cluster spins up); and every keyed-count side file is summed by :func:`sum_jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import fs, handoff
from pipeline.commit import STATS_FILE, active, attempt_name, committed_file, committed_files, relative_path
from pipeline.ledger import example_order
from schemas.documents import DOCUMENT_SCHEMA, SchemaError, document_row, validate_document_schema


def document_files(path: str) -> list[str]:
    """The Parquet files of a document table, local or on an object store: a committed stage folder's own
    list (its ``stats.json``: a straggler's or a killed attempt's file is never read, an unfinished folder is
    refused), a plain folder's ``*.parquet`` files, a glob's matches, or one file.

    Not recursive: a stage may keep side tables in subfolders (curate's ``raw/``) that are not its output."""
    if any(c in path for c in "*?["):
        files = [f.path for f in fs.match(path)]
    elif fs.is_dir(path):
        committed = committed_files(path)
        if committed is not None:
            top = len(path.rstrip("/")) + 1
            return sorted(f for f in committed if f.endswith(".parquet") and "/" not in f[top:])
        files = [f.path for f in fs.match(fs.join(path, "*.parquet"))]
        if not files and fs.exists(fs.join(path, STATS_FILE)):
            return []  # a stage finished before file lists existed, that kept no documents: an empty table
    else:
        files = [path] if fs.exists(path) else []
    if not files:
        raise SchemaError(f"{path}: no document table (*.parquet) found")
    return files


def read_documents(path: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Stream the rows of a document table (validated), batch by batch, never the whole table at once."""
    for f in document_files(path):
        with fs.open_arrow(f) as source:
            pf = pq.ParquetFile(source)
            validate_document_schema(pf.schema_arrow, where=f)
            for batch in pf.iter_batches(columns=columns, batch_size=1024):
                yield from batch.to_pylist()


def read_document_tables(p: beam.Pipeline, inputs: list[str]) -> beam.PCollection:
    """All input document tables as one PCollection of rows (dicts with every schema field).

    Each input's files are :func:`document_files`' (a committed stage folder's own list, never a listing);
    local tables are validated against the document schema here, before any worker starts (an object store's
    are validated as they are read). A finished stage that kept nothing adds no rows.
    """
    reads = []
    for i, path in enumerate(inputs):
        files = document_files(path)
        if not fs.is_url(path):
            for f in files:
                validate_document_schema(pq.read_schema(f), where=f)
        if files:
            reads.append(
                p
                | f"Tables{i}" >> beam.Create(files)
                | f"Read{i}" >> beam.io.ReadAllFromParquet(columns=list(DOCUMENT_SCHEMA.names))
            )
    if not reads:
        return p | "NoInput" >> beam.Create([])
    return tuple(reads) | "FlattenInputs" >> beam.Flatten()


def count_rows(inputs: list[str]) -> int:
    """Rows in document tables, local or on an object store, from their Parquet footers (no data read)."""
    total = 0
    for path in inputs:
        for f in document_files(path):
            with fs.open_arrow(f) as source:
                total += pq.ParquetFile(source).metadata.num_rows
    return total


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file a stage wrote as ``path`` (its untagged name; found by
    :func:`pipeline.commit.committed_file`; absent file: none); local or on an object store."""
    path = committed_file(path)
    if not fs.exists(path):
        return []
    return [json.loads(line) for line in fs.read_lines(path) if line.strip()]


def sum_jsonl(path: str, key: str, value: str, cast: Callable[[Any], Any] = int) -> dict[Any, Any]:
    """Sum ``value`` by ``key`` over a JSON-lines file a stage wrote as ``path`` (its untagged name, as
    :func:`read_jsonl`; absent file: empty). List keys become tuples."""
    out: dict[Any, Any] = {}
    path = committed_file(path)
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
    (examples, failures, counters) always exist once its pipeline has run. Built inside a stage's attempt, the
    file name carries the attempt's tag (``outcomes.attempt-<tag>.jsonl``, :func:`pipeline.commit.attempt_name`):
    a worker of another attempt (a zombie beside an Airflow retry) writes another name, which this attempt's
    commit never lists, so it never overwrites a committed side file. Readers find the file by the name given
    here (:func:`read_jsonl`, :func:`sum_jsonl`: :func:`pipeline.commit.committed_file`).
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = attempt_name(path)

    def expand(self, lines):
        return lines | "Write" >> beam.io.WriteToText(self.path, shard_name_template="", num_shards=1)


class WriteJsonLines(beam.PTransform):
    """PCollection[dict] -> one JSON-lines file (keys sorted, non-ASCII kept): :class:`WriteLines` of JSON."""

    def __init__(self, path: str):
        super().__init__()
        self.path = attempt_name(path)  # tagged, as WriteLines tags it

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
        self.path = attempt_name(os.path.join(folder, name))  # tagged, as WriteLines tags it

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


DOCUMENT_FILE_BYTES = 32 << 20  # input bytes per output document file (a document-table stage)
CRAWL_FILE_BYTES = 1 << 30  # WARC bytes per output document file: about one Common Crawl WARC's text
ROW_GROUP_TEXT_BYTES = 16 << 20  # text per Parquet row group: what a reader of the table holds at once
ROW_GROUP_ROWS = 50_000
UNLISTED_INPUT_BYTES = 1 << 30  # an https:// input, never listed: one Common Crawl WARC


def output_files(inputs: list[str], bytes_per_file: int = DOCUMENT_FILE_BYTES) -> int:
    """How many document files a stage writes for ``inputs``: one per ``bytes_per_file`` of input, at least one.

    Decided from the inputs' sizes alone, so it is the same on every runner and worker count; it bounds what
    one worker holds while writing one file (that file's rows). The budgets give files of some tens of MB, as
    datatrove's one output file per input WARC does."""
    total = 0
    for path in inputs:
        if fs.scheme(path) in fs.READ_ONLY:
            total += UNLISTED_INPUT_BYTES
        else:
            total += sum(f.size for f in fs.expand(path))
    return max(1, -(-total // bytes_per_file))


def group_output_files(group_bytes: int, bytes_per_file: int = DOCUMENT_FILE_BYTES) -> int:
    """:func:`output_files` for an input-file group of ``group_bytes`` (:mod:`pipeline.ledger`)."""
    return max(1, -(-group_bytes // bytes_per_file))


def file_of(doc_id: str, files: int) -> int:
    """The output file (0 .. files-1) a document id goes to: a hash of the id, never arrival order."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % files


def _keyed_by_file(row: dict[str, Any], files: int) -> tuple[int, dict[str, Any]]:
    return file_of(row["id"], files), row


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)


def _text_length(row: dict[str, Any]) -> int:
    return len(row.get("text") or "")


def _sort_order(table: pa.Table) -> pa.Array:
    """Row order of a document file: by id; rows sharing an id (before dedup) by where they came from, then by
    their text (a missing value sorts as the empty one)."""
    keys = pa.table(
        {
            "id": table["id"],
            "source_file": pc.coalesce(table["source_file"], pa.scalar("", pa.string())),
            "source_offset": pc.coalesce(table["source_offset"], pa.scalar(0, pa.int64())),
            "text": table["text"],
        }
    )
    return pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])


def row_groups(text_bytes: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges of consecutive Parquet row groups: each closes once it holds
    :data:`ROW_GROUP_TEXT_BYTES` of text or :data:`ROW_GROUP_ROWS` rows (``text_bytes`` per row, in order)."""
    ends = np.cumsum(text_bytes, dtype=np.int64)
    out, start = [], 0
    while start < len(text_bytes):
        before = ends[start - 1] if start else 0
        full = int(np.searchsorted(ends, before + ROW_GROUP_TEXT_BYTES, side="left")) + 1
        end = min(full, start + ROW_GROUP_ROWS, len(text_bytes))
        out.append((start, end))
        start = end
    return out


class _WriteDocumentFile(beam.DoFn):
    """One output file's batches -> ``<prefix>-<k>-of-<n>.attempt-<tag>.parquet``, its rows sorted, written in
    place (a retried bundle writes the same bytes again; readers see the file through the stage's commit).
    ``name`` is the name pattern, tagged on the driver (:func:`pipeline.commit.attempt_name`). The file's rows
    are held once, as one Arrow table (about their own size), never as Python objects; they are read from the
    hand-off files the shuffle names, sorted so that the table does not depend on their order."""

    def __init__(self, folder: str, name: str):
        self.folder, self.name = folder, name

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[str]:
        k, handed = element
        path = fs.join(self.folder, self.name.format(k=k))
        table = handoff.take(handed)
        order = _sort_order(table)
        text_bytes = pc.binary_length(table["text"]).to_numpy()[order.to_numpy()]
        with fs.arrow_sink(path) as sink, pq.ParquetWriter(sink, DOCUMENT_SCHEMA, compression="zstd") as writer:
            for start, end in row_groups(text_bytes):
                writer.write_table(table.take(order[start:end]))
        yield path


class WriteDocuments(beam.PTransform):
    """PCollection of document rows -> ``<folder>/documents-<k>-of-<n>.parquet`` (DOCUMENT_SCHEMA; built
    inside a stage's attempt, the name carries its tag: :mod:`pipeline.commit`), the same bytes on any runner
    and any number of workers.

    Beam's own ``WriteToParquet`` writes a file per bundle, so which worker saw which row decides the files.
    Here a hash of each row's id picks one of ``files`` files, and each file holds its rows sorted by id:
    arrival order never shows. Rows cross the shuffle in zstd-compressed Arrow batches written to hand-off
    files, only references shuffled (:mod:`pipeline.handoff`: Beam's local runner would otherwise hold every
    batch in its driver, and hand a worker all of its files' batches at once); the files are deleted once
    every output file is written. One worker holds one file's rows while it writes them, so size ``files``
    from the input (:func:`output_files`). A file that gets no row is not written: call :func:`ensure_table`
    once the pipeline ran. ``prefix`` starts the file names (an input-file group's, ``documents-<gid>``: see
    :mod:`pipeline.ledger`)."""

    def __init__(self, folder: str, files: int = 1, prefix: str = "documents"):
        super().__init__()
        self.folder, self.files = folder, max(1, files)
        self.name = attempt_name(f"{prefix}-{{k:05d}}-of-{self.files:05d}.parquet")
        self.handoff = handoff.handoff_folder(folder, prefix)
        self.pattern = handoff.file_pattern()

    def expand(self, rows):
        written = (
            rows
            | "ByFile" >> beam.Map(_keyed_by_file, self.files)
            | "HandOff" >> beam.ParDo(handoff.HandOff(self.handoff, self.pattern, _rows_table, _text_length))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(_WriteDocumentFile(self.folder, self.name))
        )
        _ = written | "RemoveHandoff" >> handoff.RemoveWhenDone(self.handoff)
        return written


def ensure_table(folder: str) -> None:
    """Leave one empty, valid document table in ``folder`` (local or an object store) when the pipeline wrote
    none (the files of another attempt, which the commit will not list, do not count)."""
    attempt = active()
    base = attempt.out_dir if attempt is not None else folder
    if any(
        attempt is None or attempt.owns(relative_path(base, f.path)) for f in fs.match(fs.join(folder, "*.parquet"))
    ):
        return
    sink = pa.BufferOutputStream()
    pq.write_table(DOCUMENT_SCHEMA.empty_table(), sink)
    fs.write_bytes(fs.join(folder, attempt_name("documents-empty.parquet")), sink.getvalue().to_pybytes())


def write_documents(rows: list[dict[str, Any]], path: str, row_group_size: int | None = None) -> str:
    """Rows (:func:`schemas.documents.document_row`'s fields) as one Parquet document table at ``path``, local
    or an object-store URL, written in one piece through :mod:`pipeline.fs`; returns ``path``. For small
    writes outside Beam (the tests' and benches' inputs); ``row_group_size`` caps the rows per row group
    (pyarrow's default otherwise)."""
    table = pa.Table.from_pylist([document_row(**r) for r in rows], schema=DOCUMENT_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return fs.write_bytes(path, sink.getvalue().to_pybytes())


def _example_lines(kv):
    _, examples = kv
    for ex in sorted(examples, key=example_order):
        yield json.dumps(ex, ensure_ascii=False, sort_keys=True)


class WriteExamples(beam.PTransform):
    """``(reason, example)`` pairs -> ``<folder>/examples.jsonl``: per reason the ``per_reason`` examples first
    by url and text. Chosen by content, not drawn: the same examples on any runner, and the first of an input
    group's firsts are the first of all (how :mod:`pipeline.ledger` merges its groups' examples)."""

    def __init__(self, folder: str, per_reason: int):
        super().__init__()
        self.path = attempt_name(os.path.join(folder, EXAMPLES_FILE))  # tagged, as WriteLines tags it
        self.per_reason = per_reason

    def expand(self, examples):
        return (
            examples
            | "Keep" >> beam.Filter(lambda _kv, n=self.per_reason: n > 0)
            | "First" >> beam.combiners.Top.SmallestPerKey(max(self.per_reason, 1), key=example_order)
            | "Json" >> beam.FlatMap(_example_lines)
            | "Lines" >> WriteLines(self.path)
        )
