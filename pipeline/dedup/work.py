"""The dedup stage's work: input chunks, the chunks' sketch files, and hand-off files between steps.

Each *chunk* of input rows (:func:`plan_chunks`) writes one *sketch file* into the stage's work folder (its
rows' keys, hashes, bands and sketches, in input order); per-document data between steps goes through
**hand-off files** there (:mod:`pipeline.handoff`, which says why: a document's text and shingle set crossing
Beam's local shuffles made the stage's memory grow ~15 KB per document per process), and only references to
them (short strings) are shuffled: the GroupByKey on the references is the barrier. Verification reads the two
sketches of a candidate pair from the sketch files (:func:`load_sketches`), and the kept rows are read again
from the input chunk when its output file is written. The work folder is in the stage's output folder, so
workers that share no disk with each other meet there: every file of it is read and written through
:mod:`pipeline.fs`, on local disk or an object store alike.

:func:`hand_off` writes a producer's batches for its target partitions to one hand-off file
(:func:`pipeline.handoff.write`: one record batch per partition, references ``path#batch``); :func:`handed`
reads the batches a consumer was sent. A file's name is fixed by kind and producer, so a retried bundle
rewrites the same bytes in place (no rename: object stores have none); a consumer only reads it once the
GroupByKey on the references says its producer finished. The work folder itself is tagged by the stage's
attempt (:func:`work_folder`), so another attempt's straggler writes its sketch and hand-off files into its
own folder, never into this one's, and the commit deletes that folder with the other attempts' files.
:func:`send` and :func:`receive` do the same for lists of named records (:mod:`.records`).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import os
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import fs, handoff
from pipeline.commit import attempt_name
from pipeline.dedup.records import Batch, R, Stored, pack, unpack

WORK_DIR = "_work"  # sketch and hand-off files, removed when the stage finishes
WORK_ROWS = 8192  # rows per record batch / row group of the sketch and output files

# Tagged outputs of the steps: hand-off references by kind (or counters, or cluster-line files).
COUNTERS = "counters"
BANDS = "bands"
CLUSTERS = "clusters"
COPIES = "copies"
SURVIVORS = "survivors"
WEIGHTS = "weights"
PAIRS = "pairs"

Chunk = tuple[str, tuple[int, ...]]  # an input file and the row groups of it that make one chunk


def work_folder(folder: str) -> str:
    """The stage's work folder in its output ``folder``: ``_work`` tagged by the active attempt as a whole
    (:func:`pipeline.commit.attempt_name`; made on the driver, where the pipeline is built)."""
    return attempt_name(os.path.join(folder, WORK_DIR))


def open_parquet(path: str) -> pq.ParquetFile:
    """A Parquet file, local or on an object store (:func:`pipeline.fs.open_arrow`)."""
    return pq.ParquetFile(fs.open_arrow(path))


def plan_chunks(files: list[str], chunk_rows: int) -> list[Chunk]:
    """Input files -> work chunks ``(file, row groups)``: runs of whole row groups of about ``chunk_rows``
    rows (a row group is never split, so a chunk is read without decoding rows it does not own)."""
    chunks: list[Chunk] = []
    for path in files:
        meta = open_parquet(path).metadata
        groups: list[int] = []
        n = 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows == 0:
                continue
            groups.append(g)
            n += rows
            if n >= chunk_rows:
                chunks.append((path, tuple(groups)))
                groups, n = [], 0
        if groups:
            chunks.append((path, tuple(groups)))
    return chunks


def iter_chunk(path: str, groups: tuple[int, ...], columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    pf = open_parquet(path)
    if columns is not None:
        columns = [c for c in columns if c in pf.schema_arrow.names]
    yield from pf.iter_batches(batch_size=WORK_ROWS, row_groups=list(groups), columns=columns)


def sketch_file(work: str, chunk: int) -> str:
    return os.path.join(work, f"sketch-{chunk:05d}.parquet")


def line_keys_file(work: str, chunk: int) -> str:
    """Where the boilerplate pass leaves a chunk's line hashes for its ReadChunk (:mod:`.lines`)."""
    return os.path.join(work, f"lines-{chunk:05d}.parquet")


def chunk_name(prefix: str) -> str:
    """The name pattern of an output chunk's files, ``<prefix>-<k>-of-<n>.parquet`` tagged by the stage's
    attempt (:func:`pipeline.commit.attempt_name`): made on the driver, filled in on the workers
    (:func:`chunk_file`)."""
    return attempt_name(prefix + "-{k:05d}-of-{n:05d}.parquet")


def chunk_file(folder: str, name: str, chunk: int, chunks: int) -> str:
    return os.path.join(folder, name.format(k=chunk, n=chunks))


def list_array(arrays: list[np.ndarray | None]) -> pa.Array:
    """uint64 arrays -> one Arrow ``list<uint64>`` array, without a Python int per value (None: a null)."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    present = [a for a in arrays if a is not None]
    if arrays:
        np.cumsum([0 if a is None else a.size for a in arrays], out=offsets[1:])
    values = np.concatenate(present).astype(np.uint64) if present else np.zeros(0, dtype=np.uint64)
    mask = pa.array([a is None for a in arrays]) if len(present) < len(arrays) else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.uint64()), mask=mask)


def write_parquet(path: str, batches: Iterator[pa.RecordBatch | pa.Table], schema: pa.Schema) -> int:
    """Stream batches into one Parquet file, written in place: a retried worker rewrites the same bytes, and
    readers see the file whole (the next step reads it after the GroupByKey that follows its writer; the
    stage's outputs after its commit). Returns the rows written; writes nothing when there are none."""
    tables = (b if isinstance(b, pa.Table) else pa.Table.from_batches([b], schema=schema) for b in batches)
    first = next((t for t in tables if t.num_rows), None)
    if first is None:
        return 0
    n = 0
    with fs.arrow_sink(path) as sink, pq.ParquetWriter(sink, schema) as writer:
        for table in itertools.chain([first], tables):
            writer.write_table(table, row_group_size=WORK_ROWS)
            n += table.num_rows
    return n


def rows_at(path: str, positions: np.ndarray, columns: list[str]) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """The rows of a Parquet file at the sorted, distinct ``positions``, one row group at a time: yields each
    group's positions and their rows (``columns`` only), reading only groups that hold any."""
    pf = open_parquet(path)
    start = 0
    for g in range(pf.metadata.num_row_groups):
        stop = start + pf.metadata.row_group(g).num_rows
        mine = positions[(positions >= start) & (positions < stop)]
        if mine.size:
            yield mine, pf.read_row_group(g, columns=columns).take(pa.array(mine - start))
        start = stop


def _lists(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """A ``list<uint64>`` column -> its rows as numpy views (None for a null row)."""
    column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy(zero_copy_only=False)
    nulls = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else np.zeros(len(column), bool)
    return [None if nulls[i] else values[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def load_sketches(path: str, positions: Iterable[int]) -> dict[int, Stored]:
    """The ``sketch`` and ``core`` columns of a sketch or index file at the given row positions, one row
    group at a time."""
    wanted = np.unique(np.fromiter(positions, dtype=np.int64))
    out: dict[int, Stored] = {}
    if wanted.size == 0:
        return out
    for mine, rows in rows_at(path, wanted, ["sketch", "core"]):
        for pos, sketch, core in zip(mine.tolist(), _lists(rows.column(0)), _lists(rows.column(1))):
            out[pos] = Stored(sketch, core)
    return out


def _binary_batch(rows: list[Batch]) -> pa.RecordBatch:
    """Batches (tuples of bytes) -> one record batch of ``large_binary`` columns, a batch per row."""
    width = len(rows[0])
    return pa.RecordBatch.from_arrays(
        [pa.array([r[i] for r in rows], type=pa.large_binary()) for i in range(width)],
        names=[f"f{i}" for i in range(width)],
    )


def hand_off(work: str, kind: str, producer: str, batches: dict[int, list[Batch]]) -> list[tuple[int, str]]:
    """Write ``batches`` (target partition -> batches, each a tuple of bytes) to the producer's one hand-off
    file, ``<kind>-<producer>.arrow`` in the work folder (:func:`pipeline.handoff.write`), and return
    ``(partition, reference)`` per target that gets any, in partition order."""
    targets = sorted(p for p, rows in batches.items() if rows)
    path = os.path.join(work, f"{kind}-{producer}.arrow")
    return handoff.write(path, ((p, _binary_batch(batches[p])) for p in targets))


def handed(refs: Iterable[str]) -> Iterator[Batch]:
    """The batches :func:`hand_off` sent to one consumer, in :func:`pipeline.handoff.read`'s order (``refs`` in
    any order)."""
    for batch in handoff.read(refs):
        yield from zip(*(column.to_pylist() for column in batch.columns))


def send(work: str, kind: str, producer: str, record: type[R], rows: dict[int, list[R]]) -> list[tuple[int, str]]:
    """:func:`hand_off` of records: each target's list goes as one batch of ``record``."""
    return hand_off(work, kind, producer, {t: [pack(record, mine)] for t, mine in rows.items() if mine})


def receive(record: type[R], refs: Iterable[str]) -> Iterator[R]:
    """The records :func:`send` (or :func:`hand_off` of ``record`` batches) sent to one consumer."""
    for batch in handed(refs):
        yield from unpack(record, batch)


def cluster_shard(line: str, shards: int) -> int:
    """Which of the ``shards`` cluster files a ``clusters`` line goes to: a hash of the line, never arrival."""
    return int.from_bytes(hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest(), "big") % shards


def hand_off_lines(work: str, producer: str, lines: list[str], shards: int) -> Iterator[tuple[int, str]]:
    """Split one step's cluster lines into the output's ``shards`` files, each part sorted into a file of the
    work folder; yields ``(shard, path)`` (the element that crosses the shuffle, as with :func:`hand_off`).
    Text files, not :mod:`pipeline.handoff` batches: :class:`MergeSortedLines` streams them as sorted lines."""
    parts: dict[int, list[str]] = {}
    for line in lines:
        parts.setdefault(cluster_shard(line, shards), []).append(line)
    for k, part in sorted(parts.items()):
        path = os.path.join(work, f"clusters-{producer}-s{k:05d}.jsonl")
        yield k, fs.write_text(path, "".join(f"{line}\n" for line in sorted(part)))


class MergeSortedLines(beam.DoFn):
    """One output shard's sorted line files (from every step) -> its file (``path``, k of n), merged in sorted
    order: the same bytes whatever order the runner delivered the files in. Streams (a k-way merge of the
    UTF-8 lines as bytes, which sort as their text does): one line per file in memory, and each shard is
    merged by its own worker, so no worker sees the whole corpus's lines."""

    def __init__(self, path: str, shards: int):
        self.path, self.shards = path, shards  # path: a pattern of the shard k of n, {k} and {n}

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[str]:
        k, paths = element
        path = self.path.format(k=k, n=self.shards)
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(fs.open_read(p)) for p in sorted(set(paths))]
            with fs.open_write(path) as fh:
                fh.writelines(heapq.merge(*sources))
        yield path
