"""Steps 5-7 of the mix: draw and pack each source into rows, place every row in the global shuffle, write shards.

Each source is packed whole by one worker (:class:`PackSource`): its drawn token stream is cut into rows of
``seq_len + 1`` tokens with ``doc_offsets``; the final partial row is dropped and its tokens counted
(``tail_tokens_dropped``) rather than padded, so every token a trainer sees is real text and no pad token or
loss mask is needed. A row's place in the global shuffle is derived from the per-source row counts alone
(:func:`global_row_ranks`), so no worker sorts the rows themselves; shards are Arrow IPC files written in place
through :mod:`pipeline.fs` (local disk or an object store), made visible by the stage's commit.
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

from pipeline import fs
from pipeline.accounting import KEPT, OUTCOMES, dropped
from pipeline.mix.encode import Doc
from pipeline.mix.plan import SourcePlan, draw_plan, plan_problems, source_target
from schemas.manifest import ShardInfo
from schemas.shards import shard_schema

SOURCE_STATS = "source_stats"
VAL_ROWS = "val_rows"
SHARD_PATTERN = "shard-{:05d}.arrow"
VAL_SHARD_PATTERN = "val-{:05d}.arrow"


# --------------------------------------------------------------------------------------------- packing


def pack_rows(docs: list[np.ndarray], width: int, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenate documents and cut rows of ``width`` tokens (at most ``max_tokens``, rounded to whole rows).

    Returns ``(rows [n_rows, width], starts, used)``: ``starts`` are the stream positions where each document
    begins; ``used = n_rows * width`` tokens went into rows, the rest (a partial row, or what lies past the
    token target) is the dropped tail.
    """
    if not docs:
        return np.zeros((0, width), dtype=np.uint32), np.zeros(0, dtype=np.int64), 0
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stream = np.concatenate(docs)
    n_rows = len(stream) // width
    if max_tokens is not None:
        n_rows = min(n_rows, int(round(max_tokens / width)))
    used = n_rows * width
    return stream[:used].reshape(n_rows, width), starts, used


class Row(NamedTuple):
    """One packed row of a source, before the shuffle places it."""

    source: str
    index: int  # the row's position in its source's packed stream
    tokens: bytes  # seq_len + 1 tokens, raw bytes of the shard dtype
    doc_offsets: list[int]  # where documents start inside the row


def _dedup_sorted(grouped: Iterable[Doc]) -> tuple[dict[str, bytes], int]:
    """Documents by id, the copy with the smallest (digest, tokens) kept; and how many duplicates went."""
    keyed = sorted((doc.id, xxhash.xxh64_hexdigest(doc.tokens), len(doc.tokens), doc.tokens) for doc in grouped)
    docs: dict[str, bytes] = {}
    duplicates = 0
    for doc_id, _, _, data in keyed:  # sorted: arrival order varies by runner; the result must not
        if doc_id in docs:
            duplicates += 1
        else:
            docs[doc_id] = data
    return docs, duplicates


def _row_records(source: str, rows: np.ndarray, starts: np.ndarray, width: int) -> Iterator[Row]:
    """A :class:`Row` for each packed row, with the document starts that fall inside it."""
    row_of_start = starts // width
    bounds = np.searchsorted(row_of_start, np.arange(len(rows) + 1), side="left")
    for r in range(len(rows)):
        offsets = (starts[bounds[r] : bounds[r + 1]] - r * width).astype(np.int32).tolist()
        yield Row(source, r, rows[r].tobytes(), offsets)


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


class PackSource(beam.DoFn):
    """One source's documents -> its drawn, packed :class:`Row` records.

    All of a source's documents meet under one key (GroupByKey on the source name), so one worker holds one
    source's tokens in memory. That is fine at the scale ccgpt targets (a source of a few hundred million
    tokens is a few hundred MB of uint16); a larger corpus would pack per (source, hash bucket) instead.
    The held-out documents named by the source's plan are packed apart into validation rows (tagged
    ``val_rows``) and never into a training row. Besides rows it emits one outcome per document and one
    :class:`SourceStats` (tagged ``source_stats``) per source. When the plan cannot be met
    (:func:`pipeline.mix.plan.plan_problems`) it packs nothing and the driver raises.
    """

    def __init__(
        self,
        weights: dict[str, float],
        total_tokens: int,
        seq_len: int,
        seed: int,
        token_dtype: str,
        max_epochs: float = 0.0,
    ):
        self.weights = dict(weights)
        self.total_tokens = total_tokens
        self.seq_len = seq_len
        self.seed = seed
        self.token_dtype = token_dtype
        self.max_epochs = max_epochs

    def process(
        self, element: tuple[str, Iterable[Doc]], available: dict[str, int], plans: dict[str, SourcePlan]
    ) -> Iterator[Any]:
        source, grouped = element
        dtype = np.dtype(self.token_dtype)
        width = self.seq_len + 1
        docs, duplicates = _dedup_sorted(grouped)
        val_ids = list(plans[source].val_ids) if source in plans else []
        held = set(val_ids)
        ids = [i for i in docs if i not in held]
        arrays = [np.frombuffer(docs[i], dtype=dtype) for i in ids]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        own_available = int(lengths.sum())
        problems = plan_problems(available, self.weights, self.total_tokens, self.seq_len, self.max_epochs)
        if problems:  # the driver raises with these problems; packing and writing would be wasted work
            yield beam.pvalue.TaggedOutput(SOURCE_STATS, SourceStats(source, len(docs), own_available, problems))
            return
        for _ in range(duplicates):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate_id"))
        target = source_target(source, available, self.weights, self.total_tokens)
        order, times = draw_plan(ids, lengths, target, self.seed, source)
        rows, starts, used = pack_rows([arrays[i] for i in order], width, max_tokens=target)
        landed = np.zeros(len(ids), dtype=np.int64)  # instances of each document with a token in a row
        if len(order):
            np.add.at(landed, np.asarray(order, dtype=np.int64)[starts < used], 1)
        for k in range(len(ids)):
            if landed[k] > 0:
                yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
            elif times[k] > 0:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("packing_tail"))
            else:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("not_drawn"))
        yield from _row_records(source, rows, starts, width)
        # validation: every held-out document once, in the plan's (hash) order; the final partial row dropped
        val_arrays = [np.frombuffer(docs[i], dtype=dtype) for i in val_ids]
        vrows, vstarts, vused = pack_rows(val_arrays, width)
        for start in vstarts.tolist():
            yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT if start < vused else dropped("val_packing_tail"))
        for record in _row_records(source, vrows, vstarts, width):
            yield beam.pvalue.TaggedOutput(VAL_ROWS, record)
        selected = int(sum(int(lengths[i]) for i in order))
        yield beam.pvalue.TaggedOutput(
            SOURCE_STATS,
            SourceStats(
                source,
                len(docs),
                own_available,
                documents_drawn=int((landed > 0).sum()),
                repeated_documents=int(np.maximum(landed - 1, 0).sum()),
                tokens_target=target,
                tokens_selected=selected,
                tokens_drawn=int(used),
                tail_tokens_dropped=selected - int(used),
                rows=len(rows),
                val_documents=len(val_ids),
                val_documents_packed=int((vstarts < vused).sum()),
                val_tokens=int(sum(len(a) for a in val_arrays)),
                val_tokens_packed=int(vused),
                val_rows=len(vrows),
            ),
        )


# --------------------------------------------------------------------------------------------- the shuffle


def row_shuffle_keys(seed: int, source: str, n_rows: int) -> np.ndarray:
    """A seeded 64-bit hash of (source, row index) for every row of a source (splitmix64, vectorised)."""
    with np.errstate(over="ignore"):
        base = np.uint64(xxhash.xxh64_intdigest(f"{seed}\x00rows\x00{source}".encode()))
        z = base + np.arange(n_rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def global_row_ranks(seed: int, rows_per_source: dict[str, int]) -> dict[str, np.ndarray]:
    """Position of every row in the global shuffle: rows sorted by their seeded hash, ties by (source, index).

    Needs only the row count of each source, so every worker derives the same order without a global sort of
    the rows themselves (8 bytes of memory per row).
    """
    sources = sorted(s for s, n in rows_per_source.items() if n > 0)
    if not sources:
        return {}
    keys = np.concatenate([row_shuffle_keys(seed, s, rows_per_source[s]) for s in sources])
    src = np.concatenate([np.full(rows_per_source[s], k, dtype=np.int32) for k, s in enumerate(sources)])
    idx = np.concatenate([np.arange(rows_per_source[s], dtype=np.int64) for s in sources])
    order = np.lexsort((idx, src, keys))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    start = 0
    for s in sources:
        out[s] = ranks[start : start + rows_per_source[s]]
        start += rows_per_source[s]
    return out


def source_order_ranks(rows_per_source: dict[str, int]) -> dict[str, np.ndarray]:
    """Position of every row when rows are not shuffled: by source name, then row index."""
    firsts = np.cumsum([0] + [rows_per_source[s] for s in sorted(rows_per_source)])
    return {s: firsts[k] + np.arange(rows_per_source[s], dtype=np.int64) for k, s in enumerate(sorted(rows_per_source))}


class ShardRow(NamedTuple):
    """A row on its way to its shard: ``position`` is its place in the shard file."""

    position: int
    source: str
    tokens: bytes
    doc_offsets: list[int]


class AssignShard(beam.DoFn):
    """:class:`Row` -> ``(shard index, ShardRow)`` from the global shuffle.

    The rank table is derived from the per-source row counts (a small side input) once per worker and cached.
    With ``shuffle=False`` (the validation split) rows are ranked by source name, then row index.
    """

    def __init__(self, seed: int, rows_per_shard: int, shuffle: bool = True):
        self.seed = seed
        self.rows_per_shard = rows_per_shard
        self.shuffle = shuffle
        self._cache_key: tuple | None = None
        self._ranks: dict[str, np.ndarray] = {}

    def process(self, row: Row, rows_per_source: dict[str, int]) -> Iterator[tuple[int, ShardRow]]:
        key = tuple(sorted(rows_per_source.items()))
        if key != self._cache_key:
            self._ranks = global_row_ranks(self.seed, dict(key)) if self.shuffle else source_order_ranks(dict(key))
            self._cache_key = key
        rank = int(self._ranks[row.source][row.index])
        yield rank // self.rows_per_shard, ShardRow(rank % self.rows_per_shard, row.source, row.tokens, row.doc_offsets)


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
        rows = sorted(grouped, key=lambda row: row.position)
        if [row.position for row in rows] != list(range(len(rows))):
            raise RuntimeError(f"shard {shard}: row positions are not 0..{len(rows) - 1}")
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
