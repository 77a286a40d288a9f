"""The named records of the dedup stage: everything that crosses a shuffle or a hand-off file, and how it is packed.

A record is a ``NamedTuple`` whose ``COLUMNS`` say how each field is stored; the one codec here packs a list of
records into a *batch* (a tuple of bytes, a few per field: strings as lengths + UTF-8 data, numbers as raw
numpy bytes, uint64 arrays as widths + values) and unpacks it again. A batch costs Beam a handful of bytes
objects instead of a Python object per field per document, and a step reads ``member.chunk``, never ``m[4]``:
the layout of a record is written down once, here.

:class:`BandEntries` is the one column record: its fields are whole columns (numpy arrays), because the LSH
step sorts millions of band entries with numpy and never looks at one alone; :class:`LineCount` batches are
packed the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from pipeline.dedup.boilerplate import CoreSketch

Batch = tuple[bytes, ...]
R = TypeVar("R", bound=tuple)

# Column kinds besides numpy dtypes (fixed-width numbers):
STR = "str"  # strings: uint32 lengths + UTF-8 bytes (lone surrogates survive)
DIGEST = "digest"  # 16-byte hashes, concatenated
U64S = "u64s"  # a uint64 array per record: uint32 widths + the values
I32, I64, U8, U16, U32, U64 = (np.dtype(t) for t in ("int32", "int64", "uint8", "uint16", "uint32", "uint64"))
_EMPTY = np.zeros(0, dtype=np.uint64)
_DIGEST_BYTES = 16


def pack_strings(strings: Sequence[str]) -> tuple[bytes, bytes]:
    """Strings -> ``(uint32 lengths, UTF-8 bytes)``: one pair of bytes objects per batch instead of a
    string object per document (lone surrogates survive the round trip)."""
    data = [s.encode("utf-8", "surrogatepass") for s in strings]
    return np.array([len(d) for d in data], dtype=np.uint32).tobytes(), b"".join(data)


def unpack_strings(packed: tuple[bytes, bytes]) -> list[str]:
    lengths = np.frombuffer(packed[0], dtype=np.uint32)
    ends = np.cumsum(lengths, dtype=np.int64).tolist()
    data = packed[1]
    out, start = [], 0
    for end in ends:
        out.append(data[start:end].decode("utf-8", "surrogatepass"))
        start = end
    return out


def _pack_column(kind: Any, values: Sequence[Any]) -> tuple[bytes, ...]:
    if kind == STR:
        return pack_strings(values)
    if kind == DIGEST:
        return (b"".join(values),)
    if kind == U64S:
        widths = np.array([v.size for v in values], dtype=np.uint32)
        flat = np.concatenate(values).astype(np.uint64) if widths.sum() else np.zeros(0, dtype=np.uint64)
        return widths.tobytes(), flat.tobytes()
    return (np.asarray(values, dtype=kind).tobytes(),)


def _unpack_column(kind: Any, batch: Batch, at: int) -> tuple[Any, int]:
    """The column of ``kind`` starting at ``batch[at]`` and the index after it. Numbers come as numpy arrays."""
    if kind == STR:
        return unpack_strings((batch[at], batch[at + 1])), at + 2
    if kind == DIGEST:
        data = batch[at]
        return [data[i : i + _DIGEST_BYTES] for i in range(0, len(data), _DIGEST_BYTES)], at + 1
    if kind == U64S:
        ends = np.cumsum(np.frombuffer(batch[at], dtype=np.uint32), dtype=np.int64).tolist()
        flat = np.frombuffer(batch[at + 1], dtype=np.uint64)
        return [flat[s:e] for s, e in zip([0, *ends[:-1]], ends)], at + 2
    return np.frombuffer(batch[at], dtype=kind), at + 1


def pack_columns(columns: tuple) -> Batch:
    """A record whose fields are whole columns -> one batch."""
    return tuple(b for kind, values in zip(type(columns).COLUMNS, columns) for b in _pack_column(kind, values))


def unpack_columns(record: type[R], batch: Batch) -> R:
    """One batch -> the ``record`` holding its columns (numbers as numpy arrays)."""
    columns, at = [], 0
    for kind in record.COLUMNS:
        values, at = _unpack_column(kind, batch, at)
        columns.append(values)
    return record._make(columns)


def pack(record: type[R], rows: Sequence[R]) -> Batch:
    """Records (at least one) -> one batch."""
    return pack_columns(record._make(zip(*rows)))


def unpack(record: type[R], batch: Batch) -> Iterator[R]:
    """One batch -> its records (numbers as Python ints)."""
    columns = unpack_columns(record, batch)
    return map(record._make, zip(*(c.tolist() if isinstance(c, np.ndarray) else c for c in columns)))


def add_batches(out: dict[int, list[Batch]], record: type[R], rows: Sequence[R], target: Any) -> None:
    """``rows`` -> one batch per ``target(row)`` (a partition number), appended to ``out[target]``."""
    by_target: dict[int, list[R]] = {}
    for row in rows:
        by_target.setdefault(target(row), []).append(row)
    for t, mine in by_target.items():
        out.setdefault(t, []).append(pack(record, mine))


class Member(NamedTuple):
    """A document in the exact step: :class:`.steps.ReadChunk` (or an earlier run's index) -> ExactPartition,
    by the partition of ``group``.

    ``group`` is the 16-byte group hash (the normalised text's; the node key's with exact dedup off), ``order``
    a 64-bit provenance hash (the tie-break between equal keys), ``chunk``/``pos`` where its sketch is
    (``chunk`` -1: an earlier run's indexed survivor), ``bands`` its band hashes (none without shingles).
    """

    group: bytes
    key: str
    source: str
    order: int
    chunk: int
    pos: int
    bands: np.ndarray
    COLUMNS = (DIGEST, STR, STR, U64, I32, I64, U64S)

    @property
    def indexed(self) -> bool:
        return self.chunk < 0

    def partition(self, partitions: int) -> int:
        return int.from_bytes(self.group[:8], "little") % partitions


class Survivor(NamedTuple):
    """The survivor of an exact group (or a document without copies): ExactPartition -> Decide, by the
    partition of ``key``. ``copies``: the exact copies dropped in its favour."""

    key: str
    source: str
    chunk: int
    pos: int
    copies: int
    COLUMNS = (STR, STR, I32, I64, I64)


class ExactCopy(NamedTuple):
    """A dropped exact copy: ExactPartition -> Decide, by the partition of its ``survivor``'s key, so its
    ``clusters`` line names the cluster the survivor ends up in."""

    survivor: str
    id: str
    source: str
    COLUMNS = (STR, STR, STR)


class Weight(NamedTuple):
    """A node key (or component label) and a count: a survivor's weight ``1 + exact copies`` (ExactPartition
    -> ClusterWeights), a label's share of it (ClusterWeights -> ClusterSizes), a cluster's size (ClusterSizes
    -> Decide)."""

    key: str
    weight: int
    COLUMNS = (STR, I64)


class BandEntries(NamedTuple):
    """The band entries of one band partition from one producer (ExactPartition or an index file) ->
    BucketPairs: per entry its ``band`` index, ``hash`` and document number ``doc`` in the batch; per document
    its node key (``keys``) and sketch location (``chunk``, ``pos``), so keys travel once, not once per band."""

    band: np.ndarray
    hash: np.ndarray
    doc: np.ndarray
    keys: list[str]
    chunk: np.ndarray
    pos: np.ndarray
    COLUMNS = (U16, U64, U32, STR, I32, I64)


def add_band_batches(
    out: dict[int, list[Batch]],
    keys: list[str],
    chunks: np.ndarray,
    positions: np.ndarray,
    hashes: np.ndarray,
    partitions: int,
) -> None:
    """``hashes[i, band]`` of node ``keys[i]`` (sketch at ``chunks[i], positions[i]``) -> one
    :class:`BandEntries` batch per band partition (``band hash % partitions``), appended to ``out``. Every
    entry of a bucket ``(band, hash)`` lands in one partition, so a partition sees whole buckets."""
    part = hashes % np.uint64(partitions)
    for p in np.unique(part):
        doc, band = np.nonzero(part == p)
        docs, local = np.unique(doc, return_inverse=True)
        entries = BandEntries(band, hashes[doc, band], local, [keys[i] for i in docs], chunks[docs], positions[docs])
        out.setdefault(int(p), []).append(pack_columns(entries))


class Pair(NamedTuple):
    """A candidate pair: BucketPairs -> ShipFirst, by the chunk of ``a``'s sketch (``b`` in chunk ``chunk_b``)."""

    a: str
    pos_a: int
    b: str
    chunk_b: int
    pos_b: int
    COLUMNS = (STR, I64, STR, I32, I64)


class Stored(NamedTuple):
    """A document's verification data as a sketch (or index) file holds it: ``sketch`` (the shingle-hash set
    the mode compares: the core's for ``jaccard``, the full text's for ``containment``; or the signature) and,
    with ``containment``, ``core`` (the core's shingle-hash set; None when no line is boilerplate)."""

    sketch: np.ndarray
    core: np.ndarray | None

    def verifiable(self, mode: str) -> CoreSketch:
        """The :class:`.boilerplate.CoreSketch` :func:`.boilerplate.verify_pair` reads in ``mode``."""
        if mode == "signature":
            return CoreSketch(self.sketch, _EMPTY, _EMPTY)
        if mode == "containment":
            return CoreSketch(_EMPTY, self.sketch if self.core is None else self.core, self.sketch)
        return CoreSketch(_EMPTY, self.sketch, self.sketch)


class Probe(NamedTuple):
    """A candidate pair with ``a``'s stored sketch aboard (``core_a``: its core, empty unless the mode is
    ``containment`` and the core differs from the full set, ``has_core`` telling which): ShipFirst ->
    VerifyPairs, by the chunk of ``b``'s sketch."""

    a: str
    b: str
    pos_b: int
    sketch_a: np.ndarray
    core_a: np.ndarray
    has_core: int
    COLUMNS = (STR, STR, I64, U64S, U64S, U8)

    def stored_a(self) -> Stored:
        return Stored(self.sketch_a, self.core_a if self.has_core else None)


class LineCount(NamedTuple):
    """How many documents of one chunk hold a normalised line (``line``: its hash) of ``group`` (a URL host,
    or the corpus): CountLines -> FrequentLines, by the partition of ``(group, line)``. Packed as columns,
    like :class:`BandEntries`: a chunk has one per distinct line, and both ends sum them with numpy."""

    group: str
    line: int
    docs: int
    chunk: int
    COLUMNS = (STR, U64, I64, I32)


class FrequentLine(NamedTuple):
    """A boilerplate line (``docs``: the documents of its group that hold it, at least ``min_docs``):
    FrequentLines -> ReadChunk, to each chunk that holds it."""

    group: str
    line: int
    docs: int
    COLUMNS = (STR, U64, I64)


class Edge(NamedTuple):
    """An edge ``(u, v)`` of the duplicate graph between connected-components steps, by the partition of ``u``."""

    u: str
    v: str
    COLUMNS = (STR, STR)


class Label(NamedTuple):
    """A node's component label (its component's smallest node key): ConnectedComponents -> ClusterWeights
    and Decide, by the partition of ``node``."""

    node: str
    label: str
    COLUMNS = (STR, STR)


class Kept(NamedTuple):
    """One Decide partition's kept documents of one chunk -> WriteChunk: their sketch-file positions (int64
    bytes) and the annotations JSON of the clustered ones by position."""

    positions: bytes
    notes: dict[int, str]
