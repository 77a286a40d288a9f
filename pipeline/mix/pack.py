"""Steps 5-7 of the mix: draw and pack each source into rows, place every row in the global shuffle, write shards.

Each source is packed in hash buckets, each by one worker (:class:`PackBucket`): a bucket's drawn token stream
is cut into rows of ``seq_len + 1`` tokens with ``doc_offsets``; the final partial row is dropped and its
tokens counted (``tail_tokens_dropped``) rather than padded, so every token a trainer sees is real text and no
pad token or loss mask is needed. A row's place in the global shuffle is a seeded hash of (source, row index):
its range picks the shard and its value the place in it (:class:`AssignShard`), so no worker sorts or lists
all rows. Documents reach their bucket, and rows their shard, as hand-off files (:func:`docs_table`,
:func:`shard_rows_table`; :mod:`pipeline.handoff`): only references cross the shuffle, and a worker reads one
bucket's or one shard's files when it packs or writes it. Shards are Arrow IPC files written in place through
:mod:`pipeline.fs` (local disk or an object store), made visible by the stage's commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import xxhash

from pipeline import fs, handoff
from pipeline.accounting import KEPT, OUTCOMES, dropped
from pipeline.mix.draw import SourceDraw, is_validation, times_drawn
from pipeline.mix.encode import Doc
from pipeline.mix.plan import BucketPlan, epoch_key, val_key
from schemas.manifest import ShardInfo
from schemas.shards import shard_schema

BUCKET_STATS = "bucket_stats"
VAL_ROWS = "val_rows"
SHARD_PATTERN = "shard-{:05d}.arrow"
VAL_SHARD_PATTERN = "val-{:05d}.arrow"


# --------------------------------------------------------------------------------------------- packing


def pack_rows(docs: list[np.ndarray], width: int, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenate documents and cut rows of ``width`` tokens (at most ``max_rows``).

    Returns ``(rows [n_rows, width], starts, used)``: ``starts`` are the stream positions where each document
    begins; ``used = n_rows * width`` tokens went into rows, the rest (a partial row, or what lies past the
    row goal) is the dropped tail.
    """
    if not docs:
        return np.zeros((0, width), dtype=np.uint32), np.zeros(0, dtype=np.int64), 0
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stream = np.concatenate(docs)
    n_rows = len(stream) // width
    if max_rows is not None:
        n_rows = min(n_rows, max_rows)
    used = n_rows * width
    return stream[:used].reshape(n_rows, width), starts, used


class Row(NamedTuple):
    """One packed row of a source, before the shuffle places it."""

    source: str
    index: int  # the row's position in its source's row numbering (buckets in order, then rows of a bucket)
    tokens: bytes  # seq_len + 1 tokens, raw bytes of the shard dtype
    doc_offsets: list[int]  # where documents start inside the row


def _dedup_sorted(grouped: Iterable[Doc]) -> tuple[dict[str, bytes], int]:
    """Documents by id, the copy with the smallest (digest, length, tokens) kept; and how many duplicates went."""
    keyed = sorted((doc.id, xxhash.xxh64_hexdigest(doc.tokens), len(doc.tokens), doc.tokens) for doc in grouped)
    docs: dict[str, bytes] = {}
    duplicates = 0
    for doc_id, _, _, data in keyed:  # sorted: arrival order varies by runner; the result must not
        if doc_id in docs:
            duplicates += 1
        else:
            docs[doc_id] = data
    return docs, duplicates


def _row_records(source: str, rows: np.ndarray, starts: np.ndarray, width: int, first: int) -> Iterator[Row]:
    """A :class:`Row` for each packed row (numbered from ``first``), with the document starts inside it."""
    row_of_start = starts // width
    bounds = np.searchsorted(row_of_start, np.arange(len(rows) + 1), side="left")
    for r in range(len(rows)):
        offsets = (starts[bounds[r] : bounds[r + 1]] - r * width).astype(np.int32).tolist()
        yield Row(source, first + r, rows[r].tobytes(), offsets)


@dataclass
class SourceStats:
    """What packing one source gave: the driver's plan check, the manifest and the stage stats read it.

    A source whose plan cannot be met carries only its counts and ``problems`` (nothing was packed).
    """

    source: str
    documents: int
    tokens_available: int  # training tokens: held-out documents excluded
    problems: list[str] = field(default_factory=list)
    documents_drawn: int = 0
    repeated_documents: int = 0
    tokens_target: int = 0
    tokens_selected: int = 0
    tokens_drawn: int = 0
    tail_tokens_dropped: int = 0
    rows: int = 0
    val_documents: int = 0
    val_documents_packed: int = 0
    val_tokens: int = 0
    val_tokens_packed: int = 0
    val_rows: int = 0


class BucketStats(NamedTuple):
    """What one bucket packed; a source's :class:`SourceStats` sums them (:func:`source_stats`)."""

    documents_drawn: int
    repeated_documents: int
    tokens_selected: int
    tokens_drawn: int
    rows: int
    val_documents_packed: int
    val_tokens_packed: int
    val_rows: int


def source_stats(source: str, draw: SourceDraw, buckets: Iterable[BucketStats]) -> SourceStats:
    """A source's totals: its plan's counts and the sums over its buckets."""
    val = draw.val
    if draw.problems:
        return SourceStats(source, val.documents, val.train_tokens, list(draw.problems))
    total = BucketStats(*(sum(column) for column in zip(*buckets, strict=True))) if buckets else BucketStats(*[0] * 8)
    return SourceStats(
        source,
        val.documents,
        val.train_tokens,
        documents_drawn=total.documents_drawn,
        repeated_documents=total.repeated_documents,
        tokens_target=draw.target,
        tokens_selected=total.tokens_selected,
        tokens_drawn=total.tokens_drawn,
        tail_tokens_dropped=total.tokens_selected - total.tokens_drawn,
        rows=total.rows,
        val_documents=val.val_documents,
        val_documents_packed=total.val_documents_packed,
        val_tokens=val.val_tokens,
        val_tokens_packed=total.val_tokens_packed,
        val_rows=total.val_rows,
    )


def docs_table(docs: list[Doc]) -> pa.Table:
    """Tokenized documents as a table, the way they cross the shuffle into their bucket (:mod:`pipeline.handoff`)."""
    return pa.table(
        {"id": pa.array([d.id for d in docs], pa.string()), "tokens": pa.array([d.tokens for d in docs], pa.binary())}
    )


def doc_bytes(doc: Doc) -> int:
    return len(doc.tokens)


def bucket_docs(key: tuple[str, int], paths: Iterable[str]) -> tuple[tuple[str, int], list[Doc]]:
    """A bucket's hand-off files -> its documents (in no particular order: packing sorts them)."""
    table = handoff.take(paths)
    return key, [Doc(i, t) for i, t in zip(table["id"].to_pylist(), table["tokens"].to_pylist())]


class PackBucket(beam.DoFn):
    """One (source, bucket)'s documents -> its drawn, packed :class:`Row` records.

    A bucket is a hash share of a source (:func:`pipeline.mix.plan.bucket_of`), sized so its token stream fits
    a worker, so no worker holds a whole source. Its stream is every whole epoch of its training documents,
    each in its own seeded order, then its fractional-epoch documents; the first ``plan.rows`` rows are kept
    (:func:`pipeline.mix.plan.allocate_rows` shared the source's rows among its buckets) and numbered from
    ``plan.offset``; they are written to a hand-off file in ``rows_folder`` (:func:`rows_table`) and its path
    emitted, so the rows never wait in Beam's local runner's driver for the shuffle's side input
    (:class:`AssignFile`). Held-out documents are packed apart, in validation order, into validation rows (a
    file in ``val_rows_folder``, its path tagged ``val_rows``) and never into a training row. Besides the rows
    files it emits one outcome per document and one ``(source, BucketStats)`` (tagged ``bucket_stats``). A
    source whose plan cannot be met packs nothing (the driver raises).
    """

    def __init__(self, seq_len: int, seed: int, token_dtype: str, rows_folder: str, val_rows_folder: str):
        self.seq_len = seq_len
        self.seed = seed
        self.token_dtype = token_dtype
        self.rows_folder, self.val_rows_folder = rows_folder, val_rows_folder
        self.pattern = handoff.file_pattern()

    def process(
        self,
        element: tuple[tuple[str, int], Iterable[Doc]],
        draws: dict[str, SourceDraw],
        buckets: dict[tuple[str, int], BucketPlan],
    ) -> Iterator[Any]:
        (source, bucket), grouped = element
        draw = draws[source]
        if draw.problems:
            return
        plan = buckets[(source, bucket)]
        dtype = np.dtype(self.token_dtype)
        width = self.seq_len + 1
        docs, duplicates = _dedup_sorted(grouped)
        for _ in range(duplicates):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate_id"))
        held = sorted((val_key(source, i), i) for i in docs if is_validation(source, i, draw.val))
        held_ids = {i for _, i in held}
        ids = [i for i in docs if i not in held_ids]
        times = np.array([times_drawn(source, i, draw, self.seed) for i in ids], dtype=np.int64)
        order: list[int] = []
        for epoch in range(draw.whole + 1):  # whole epochs, then the fractional one (times > whole)
            drawn = range(len(ids)) if epoch < draw.whole else np.flatnonzero(times > draw.whole).tolist()
            order.extend(sorted(drawn, key=lambda k: (epoch_key(self.seed, source, epoch, ids[k]), ids[k])))
        arrays = [np.frombuffer(docs[i], dtype=dtype) for i in ids]
        rows, starts, used = pack_rows([arrays[k] for k in order], width, max_rows=plan.rows)
        if len(rows) != plan.rows:
            raise RuntimeError(f"mix: bucket {bucket} of {source!r} filled {len(rows)} rows, its plan {plan.rows}")
        landed = np.zeros(len(ids), dtype=np.int64)  # instances of each document with a token in a row
        if order:
            np.add.at(landed, np.asarray(order, dtype=np.int64)[starts < used], 1)
        for k in range(len(ids)):
            if landed[k] > 0:
                yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
            elif times[k] > 0:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("packing_tail"))
            else:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("not_drawn"))
        if len(rows):
            yield handoff.put(
                self.rows_folder, self.pattern, rows_table(_row_records(source, rows, starts, width, plan.offset))
            )
        # validation: every held-out document once, in validation order; the bucket's final partial row dropped
        vrows, vstarts, vused = pack_rows([np.frombuffer(docs[i], dtype=dtype) for _, i in held], width)
        if len(vrows) != plan.val_rows:
            raise RuntimeError(
                f"mix: bucket {bucket} of {source!r} filled {len(vrows)} validation rows, not {plan.val_rows}"
            )
        for start in vstarts.tolist():
            yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT if start < vused else dropped("val_packing_tail"))
        if len(vrows):
            records = _row_records(source, vrows, vstarts, width, plan.val_offset)
            yield beam.pvalue.TaggedOutput(
                VAL_ROWS, handoff.put(self.val_rows_folder, self.pattern, rows_table(records))
            )
        selected = int(sum(len(arrays[k]) for k in order))
        stats = BucketStats(
            documents_drawn=int((landed > 0).sum()),
            repeated_documents=int(np.maximum(landed - 1, 0).sum()),
            tokens_selected=selected,
            tokens_drawn=int(used),
            rows=len(rows),
            val_documents_packed=int((vstarts < vused).sum()),
            val_tokens_packed=int(vused),
            val_rows=len(vrows),
        )
        yield beam.pvalue.TaggedOutput(BUCKET_STATS, (source, stats))


# --------------------------------------------------------------------------------------------- the shuffle


def row_shuffle_keys(seed: int, source: str, indices: np.ndarray) -> np.ndarray:
    """A seeded 64-bit hash of (source, row index) for rows of a source (splitmix64, vectorised)."""
    with np.errstate(over="ignore"):
        base = np.uint64(xxhash.xxh64_intdigest(f"{seed}\x00rows\x00{source}".encode()))
        z = base + np.asarray(indices, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def shard_count(rows_per_source: dict[str, int], rows_per_shard: int) -> int:
    return max(1, -(-sum(rows_per_source.values()) // rows_per_shard))


def shard_of(key: int, shards: int) -> int:
    """The shard a row's shuffle key falls in: shards split the 64-bit key range evenly."""
    return (int(key) * shards) >> 64


class ShardRow(NamedTuple):
    """A row on its way to its shard: rows of a shard are written in ``order``."""

    order: tuple[int, str, int]
    source: str
    tokens: bytes
    doc_offsets: list[int]


class AssignShard(beam.DoFn):
    """:class:`Row` -> ``(shard index, ShardRow)``: the seeded global shuffle, decided row by row.

    A row's seeded hash of (source, row index) picks its shard by key range and orders it inside the shard, so
    the shards together hold every row sorted by that hash (ties by source, then index), and no worker holds a
    table of all rows. Shards hold ``rows_per_shard`` rows on average (binomially spread, about +-sqrt of it).
    With ``shuffle=False`` (the validation split) rows are ranked by source name, then row index, and cut into
    shards of exactly ``rows_per_shard`` rows. ``rows_per_source`` is a small side input.
    """

    def __init__(self, seed: int, rows_per_shard: int, shuffle: bool = True):
        self.seed = seed
        self.rows_per_shard = rows_per_shard
        self.shuffle = shuffle

    def process(self, row: Row, rows_per_source: dict[str, int]) -> Iterator[tuple[int, ShardRow]]:
        if self.shuffle:
            key = int(row_shuffle_keys(self.seed, row.source, np.array([row.index]))[0])
            shards = shard_count(rows_per_source, self.rows_per_shard)
            yield shard_of(key, shards), ShardRow((key, row.source, row.index), row.source, row.tokens, row.doc_offsets)
            return
        first = sum(n for s, n in rows_per_source.items() if s < row.source)
        rank = first + row.index
        yield rank // self.rows_per_shard, ShardRow((rank, "", 0), row.source, row.tokens, row.doc_offsets)


def rows_table(rows: Iterable[Row]) -> pa.Table:
    """A bucket's packed rows as a table, the hand-off file :class:`PackBucket` writes."""
    rows = list(rows)
    return pa.table(
        {
            "source": pa.array([r.source for r in rows], pa.string()),
            "index": pa.array([r.index for r in rows], pa.int64()),
            "tokens": pa.array([r.tokens for r in rows], pa.binary()),
            "doc_offsets": pa.array([r.doc_offsets for r in rows], pa.list_(pa.int32())),
        }
    )


def read_rows(path: str) -> Iterator[Row]:
    """The rows of one hand-off file :func:`rows_table` wrote."""
    t = handoff.take([path])
    columns = [t[name].to_pylist() for name in ("source", "index", "tokens", "doc_offsets")]
    for source, index, tokens, offsets in zip(*columns):
        yield Row(source, index, tokens, offsets)


class AssignFile(AssignShard):
    """A bucket's rows file (:class:`PackBucket`) -> ``(shard index, ShardRow)`` for each of its rows
    (:class:`AssignShard`): the file's path is what waits for the ``rows_per_source`` side input."""

    def process(self, path: str, rows_per_source: dict[str, int]) -> Iterator[tuple[int, ShardRow]]:
        for row in read_rows(path):
            yield from super().process(row, rows_per_source)


def shard_rows_table(rows: list[ShardRow]) -> pa.Table:
    """Rows on their way to a shard as a table, the way they cross the shuffle (:mod:`pipeline.handoff`)."""
    return pa.table(
        {
            "order_key": pa.array([r.order[0] for r in rows], pa.uint64()),
            "order_source": pa.array([r.order[1] for r in rows], pa.string()),
            "order_index": pa.array([r.order[2] for r in rows], pa.int64()),
            "source": pa.array([r.source for r in rows], pa.string()),
            "tokens": pa.array([r.tokens for r in rows], pa.binary()),
            "doc_offsets": pa.array([r.doc_offsets for r in rows], pa.list_(pa.int32())),
        }
    )


def shard_row_bytes(row: ShardRow) -> int:
    return len(row.tokens)


def shard_rows(shard: int, paths: Iterable[str]) -> tuple[int, list[ShardRow]]:
    """A shard's hand-off files -> its rows (in no particular order: :class:`WriteShard` sorts them)."""
    t = handoff.take(paths)
    columns = [t[name].to_pylist() for name in ("order_key", "order_source", "order_index", "source", "tokens")]
    offsets = t["doc_offsets"].to_pylist()
    return shard, [ShardRow((k, o, i), s, b, d) for k, o, i, s, b, d in zip(*columns, offsets)]


# --------------------------------------------------------------------------------------------- shard files


def write_shard_file(path: str, table: pa.Table) -> str:
    """Write an Arrow IPC file (local path or URL) and return its sha256.

    The file is built in memory first (a shard is a few MB to tens of MB, and its rows are in memory already),
    so it is hashed without reading it back and uploaded in one piece; the stage's commit, not a rename,
    makes it visible to readers."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    fs.write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


class WriteShard(beam.DoFn):
    """One shard's rows -> ``shard-NNNNN.arrow`` (or ``pattern``) in the output folder; emits its ``ShardInfo`` as JSON.

    Writes through :mod:`pipeline.fs`, so the output folder may be an object-store URL that every worker reaches
    (no disk shared between workers is needed).
    """

    def __init__(self, folder: str, token_dtype: str, seq_len: int, pattern: str = SHARD_PATTERN):
        self.folder = folder
        self.token_dtype = token_dtype
        self.seq_len = seq_len
        self.pattern = pattern

    def process(self, element: tuple[int, Iterable[ShardRow]]) -> Iterator[str]:
        shard, grouped = element
        rows = sorted(grouped, key=lambda row: row.order)
        if len({row.order for row in rows}) != len(rows):
            raise RuntimeError(f"shard {shard}: a row arrived twice")
        width = self.seq_len + 1
        dtype = np.dtype(self.token_dtype)
        values = np.frombuffer(b"".join(row.tokens for row in rows), dtype=dtype)
        list_offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * width, type=pa.int32())
        schema = shard_schema(self.token_dtype)
        tokens = pa.ListArray.from_arrays(list_offsets, pa.array(values, type=schema.field("tokens").type.value_type))
        table = pa.Table.from_arrays(
            [
                tokens,
                pa.array([row.doc_offsets for row in rows], type=pa.list_(pa.int32())),
                pa.array([row.source for row in rows], type=pa.string()),
            ],
            schema=schema,
        )
        name = self.pattern.format(shard)
        sha = write_shard_file(fs.join(self.folder, name), table)
        yield ShardInfo(file=name, rows=len(rows), tokens=len(rows) * width, sha256=sha).model_dump_json()
