"""``ccgpt dedup``: exact and MinHash-LSH near-duplicate removal within and across document tables, on Beam.

All inputs (the quality-filtered crawl and curated sources such as books or docs) go through one pipeline, so
a crawl page that copies a book is found like any other duplicate and removed from the *crawl*: the
survivor of every group is chosen by source priority, then quality score, then id (:mod:`.exact`).

The pipeline graph, every step a Beam transform (nothing is collected on the driver). **No per-document
data enters a shuffle**: Beam's local runner holds every shuffle in memory, and with texts, shingle sets
and per-document entries aboard, the stage's memory grew about 15 KB per document per process.
The input is split into *chunks* (runs of whole Parquet row groups, ``chunk_rows``); a chunk's sketches go
to a file in the stage's work folder, and everything else that grows with the documents or the duplicates
(exact-group members and copies, band entries, survivors, candidate pairs, probes, component edges of every
round, labels, cluster weights and sizes) is handed from step to step in files (:mod:`.handoff`: one Arrow
file per producer, only references are shuffled); the kept rows are read again at the end and
``clusters.jsonl`` lines are sorted per step into files and merged at the end.

1. **Read chunks** (:class:`ReadChunk`): malformed rows -> ``dropped:invalid_record``, blank text ->
   ``dropped:empty_text``; the rest get their *node key* (survivor-ordered, see :func:`.exact.rank_key`),
   the 128-bit hash of their normalised text, word (or char) n-gram shingles, a MinHash signature
   bit-identical to datasketch, its band hashes and the verification sketch (the 64-bit shingle-hash set,
   or the signature). The chunk's *sketch file* gets one row per document; the exact-group members leave
   as :class:`Members` batches by partition of their text hash.
2. **Exact** (:class:`ExactPartition`): each partition groups its members by hash; the smallest node key
   survives, the others are ``dropped:exact_duplicate``. Survivors leave batched: band entries by band
   partition, ``(source, chunk, position, copies)`` by node-key partition.
3. **LSH buckets** (:class:`BucketPairs`): band entries are handed over as raw numpy bytes by ``band hash
   % partitions``; each partition sorts its entries by ``(band, hash)`` and only runs of equal keys reach
   Python: small buckets give all pairs, oversized ones a star on their minimum (:func:`.lsh.bucket_pairs`).
4. **Verify** candidates by the true Jaccard of the shingle sets (default; or by the signature estimate, or
   not at all): pairs grouped by the chunk of their first node (which also removes pairs found in several
   bands) read that node's sketch from the chunk's file and ship it to the chunk of the second node, where
   the pair is checked against the second sketch, read the same way. Only candidate pairs carry a sketch.
5. **Connected components** of the verified pairs on the runner (:mod:`.components`, partitioned, edges
   in hand-off files): because node keys sort survivor-first, each component's label *is* its survivor.
   Cluster sizes add up each member's weight, 1 + its exact copies (:class:`ClusterWeights`,
   :class:`ClusterSizes`).
6. **Decide** (:class:`Decide`): survivors, exact copies, labels and sizes meet by node-key partition. A
   *cluster* is a near-duplicate component or an exact group (or both); its survivor is kept with
   ``{"dedup_cluster", "cluster_size"}`` (and ``exact_duplicates`` when it had exact copies) added to its
   annotations, the other near-duplicates are ``dropped:near_duplicate``, and every member gets a line in
   ``clusters.jsonl``.
7. **Write chunks** (:class:`WriteChunk`): each chunk's kept positions -> the chunk's rows read again and
   written, in input order, as ``documents-<chunk>-of-<chunks>.parquet`` (and its ``index/`` file). The
   file a document lands in and its place there follow the input, not the order the shuffles delivered
   (which follows the per-process hash seed), and ``clusters.jsonl`` is written sorted, so a rerun gives
   the same bytes in any process.

Every row yields exactly one outcome (``pipeline.accounting``), so ``stats.json`` is exact on any runner.
Counters for the extras (per-source read/kept, candidate and verified pairs, cluster sizes) travel the same
way through a temporary counts file that is folded into ``stats.json`` and removed.

Output folder: ``documents-NNNNN-of-NNNNN.parquet`` (kept documents of every source), ``stats.json``,
``outcomes.jsonl``, ``clusters.jsonl`` (``{"id", "cluster", "source", "survivor", "reason"}`` per cluster
member, sorted; ``cluster`` is the survivor's id, ``reason`` is ``exact_duplicate`` or ``near_duplicate`` for
the dropped members, null for the survivor) and ``index/`` (below). The output files, the sketch files (in
``_work/``, removed when the stage ends) and ``clusters.jsonl`` are written by the workers straight into the
stage's output folder (atomic rename per file), which like every ccgpt stage must be a path the workers
share with the driver.

**Incremental dedup.** ``index/`` holds one Parquet row per kept document (``INDEX_SCHEMA``: node key, id,
source, exact text hash, LSH band hashes, and the sorted shingle-hash set or signature the verification
needs) plus ``meta.json`` with the settings that made them. A later run with ``DedupConfig.against`` set to
earlier output folders reads those indexes into the same graph, never their documents: an indexed entry
joins the exact groups (every new copy is ``dropped:exact_duplicate_of_index``) and the LSH buckets under a
node key that sorts before every new one (its sketch is read from the index file, like a chunk's), so a
component holding an indexed document is labelled by it and its new members are
``dropped:near_duplicate_of_index``. Indexed documents are never emitted again and indexed-indexed pairs
are never formed. Each run's index holds its own
survivors only: to deduplicate crawl N against all earlier ones, pass all earlier folders. The settings that
decide hashes and bands (normalisation, shingles, num_perm, seed, scheme, hash, bands x rows, verify mode)
must match the indexes' (checked before the pipeline starts).
"""

from __future__ import annotations

import contextlib
import glob
import heapq
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.accounting import (
    KEPT,
    OUTCOMES,
    WriteOutcomes,
    dropped,
    read_outcomes,
    stats_from_outcomes,
)
from pipeline.dedup.components import ConnectedComponents, auto_rounds, partition_of, read_labels
from pipeline.dedup.exact import _RANK_WIDTH, ExactConfig, exact_hash, key_id, rank_key
from pipeline.dedup.handoff import hand_off, handed, pack_strings, unpack_strings
from pipeline.dedup.lsh import band_keys, lsh_params
from pipeline.dedup.minhash import (
    MinHasher,
    ShingleConfig,
    jaccard,
    shingles,
    signature_similarity,
)
from pipeline.runner import RunnerConfig, make_pipeline
from pipeline.stage import fingerprint, finish, is_complete, load_stats, stage_output
from pipeline.tables import sum_jsonl
from schemas.atomic import atomic_path
from schemas.documents import DOCUMENT_SCHEMA, document_files, validate_document_schema
from schemas.stats import StageStats

log = logging.getLogger(__name__)

COUNTERS = "counters"
BANDS = "bands"
CLUSTERS = "clusters"
EXACT_MEMBERS = "exact_members"
SURVIVORS = "survivors"
WEIGHTS = "weights"
PAIRS = "pairs"
INDEX_DIR = "index"
INDEX_META = "meta.json"
INDEX_VERSION = 1
# An indexed node's key: its earlier key with the rank digits replaced by this mark, which sorts before every
# digit, so a component holding an indexed document is labelled by it (and ``key_id`` still reads the id).
INDEX_MARK = "-"
INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("id", pa.string()),
        ("source", pa.string()),
        ("exact_hash", pa.string()),
        ("bands", pa.list_(pa.uint64())),
        ("sketch", pa.list_(pa.uint64())),
    ]
)
_COUNTS_FILE = "_dedup_counts.jsonl"
_WORK_DIR = "_work"  # sketch and hand-off files, removed when the stage finishes


@dataclass
class NearConfig:
    """Near-duplicate detection. ``bands``/``rows`` default to the (FP, FN)-weighted optimum for the stage's
    ``threshold`` and ``num_perm`` (:func:`.lsh.optimal_param`); ``cc_rounds`` bounds the component rounds."""

    enabled: bool = field(default=True, metadata={"help": "drop near-duplicates (MinHash LSH + verification)"})
    shingles: ShingleConfig = field(default_factory=ShingleConfig)
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations (signature length)"})
    seed: int = field(default=1, metadata={"help": "MinHash seed (datasketch-compatible)"})
    scheme: Literal["affine32", "legacy"] = field(
        default="affine32", metadata={"help": "MinHash permutation scheme: datasketch>=2.0 default or pre-2.0"}
    )
    hash: Literal["sha1", "xxh3"] = field(
        default="sha1",
        metadata={"help": "shingle hash: sha1 (bit-identical to datasketch's default) or xxh3 (faster)"},
    )
    bands: int = field(default=0, metadata={"help": "LSH bands (0 with rows=0: chosen from the threshold)"})
    rows: int = field(default=0, metadata={"help": "LSH rows per band (0 with bands=0: chosen from the threshold)"})
    # Verification removes false positives, so a missed duplicate costs far more than an extra candidate (one
    # set intersection). datasketch's 0.5/0.5 gives 9 x 13 bands, under which a pair at Jaccard 0.8 becomes a
    # candidate with probability 0.40; 0.3/0.7 gave 11 x 11 (0.63); 0.05/0.95 gives 16 x 8: 0.95 at 0.8 and
    # 0.99 at 0.85, 0.06 at 0.5. Measured on a 10k synthetic labelled set: recall 0.931 -> 0.996 for 13 % more
    # candidate pairs, precision 1.0 both. With ``verify="none"`` candidates are the verdict: raise fp_weight.
    fp_weight: float = field(default=0.05, metadata={"help": "weight of false positives when choosing bands x rows"})
    fn_weight: float = field(default=0.95, metadata={"help": "weight of false negatives when choosing bands x rows"})
    verify: Literal["jaccard", "signature", "none"] = field(
        default="jaccard",
        metadata={"help": "check candidates by true shingle Jaccard, by the MinHash estimate, or not at all"},
    )
    all_pairs_max: int = field(
        default=8, metadata={"help": "LSH buckets up to this size emit all pairs; larger ones a star on their min"}
    )
    cc_rounds: int = field(
        default=0,
        metadata={"help": "large-star/small-star rounds for connected components (0: max(4, ceil(log2(docs+1))))"},
    )
    # Exact-group members, band entries, survivors and component edges are handed on in files grouped
    # by partition; one partition's entries (about 11 small band entries per document) are held by one
    # worker, so the count grows with the input to keep that bounded, and has a floor so a few local
    # workers all get work.
    partitions: int = field(
        default=0,
        metadata={"help": "shuffle partitions for exact groups, LSH and components (0: max(8, docs / 25000))"},
    )


@dataclass
class DedupConfig:
    """The duplicate threshold, which copy survives (by the documents' ``source`` column, not by input order),
    and the two passes."""

    threshold: float = field(
        default=0.8,
        metadata={"help": "near-duplicate when the Jaccard similarity of the shingle sets is at least this"},
    )
    source_priority: list[str] = field(
        default_factory=list,
        metadata={"help": "sources whose copy survives a duplicate group, best first (e.g. books wiki docs)"},
    )
    lowest_priority_sources: list[str] = field(
        default_factory=lambda: ["crawl"],
        metadata={"help": "sources ranked after all others (a crawl copy of a curated document is dropped)"},
    )
    exact: ExactConfig = field(default_factory=ExactConfig)
    near: NearConfig = field(default_factory=NearConfig)
    against: list[str] = field(
        default_factory=list,
        metadata={"help": "earlier dedup output folders: drop documents that duplicate their indexed survivors"},
    )
    write_index: bool = field(
        default=True, metadata={"help": "write index/ (hashes, bands, sketches of the kept documents)"}
    )
    chunk_rows: int = field(
        default=25_000,
        metadata={"help": "input rows per work chunk (whole row groups): one sketch file and one output file each"},
    )


# --- work files -------------------------------------------------------------------------------------------------
#
# Why work files: Beam's local runner keeps every shuffle in memory (in the driver, and each worker receives
# its whole share of a grouped stage), so a document's text and shingle set crossing the shuffles made the
# stage's memory grow ~15 KB per document per process. Each chunk of input rows writes one *sketch file*
# (its rows' keys, hashes, bands and shingle sets, in input order) into the stage's work folder; the
# per-document entries between steps go through hand-off files there (:func:`hand_off`), so the shuffles
# carry file paths; verification reads the two sketches of a candidate pair from the sketch files, and the
# kept rows are read again from the input chunk when its output file is written. On a distributed runner
# the work folder is the shared output path, as for every ccgpt stage.

_READ_COLUMNS = ["id", "source", "text", "quality_score", "url", "source_file", "source_offset", "date"]
_WORK_ROWS = 8192  # rows per record batch / row group of the sketch and output files
SKETCH_SCHEMA = INDEX_SCHEMA.append(pa.field("row", pa.int64()))  # row: position in the input chunk


def _open_parquet(path: str) -> pq.ParquetFile:
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        return pq.ParquetFile(FileSystems.open(path))
    return pq.ParquetFile(path)


def plan_chunks(files: list[str], chunk_rows: int) -> list[tuple[str, tuple[int, ...]]]:
    """Input files -> work chunks ``(file, row groups)``: runs of whole row groups of about ``chunk_rows``
    rows (a row group is never split, so a chunk is read without decoding rows it does not own)."""
    chunks: list[tuple[str, tuple[int, ...]]] = []
    for path in files:
        meta = _open_parquet(path).metadata
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


def _iter_chunk(path: str, groups: tuple[int, ...], columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    pf = _open_parquet(path)
    if columns is not None:
        columns = [c for c in columns if c in pf.schema_arrow.names]
    yield from pf.iter_batches(batch_size=_WORK_ROWS, row_groups=list(groups), columns=columns)


def _list_array(arrays: list[np.ndarray]) -> pa.Array:
    """Equal-typed uint64 arrays -> one Arrow ``list<uint64>`` array, without a Python int per value."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    if arrays:
        np.cumsum([a.size for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays).astype(np.uint64) if arrays else np.zeros(0, dtype=np.uint64)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.uint64()))


def _write_atomic(path: str, batches: Iterator[pa.RecordBatch | pa.Table], schema: pa.Schema) -> int:
    """Stream batches into one Parquet file (temp name, then rename): a retried worker rewrites the same
    bytes. Returns the rows written; writes nothing when there are none."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tables = (b if isinstance(b, pa.Table) else pa.Table.from_batches([b], schema=schema) for b in batches)
    first = next((t for t in tables if t.num_rows), None)
    if first is None:
        return 0
    n = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for table in itertools.chain([first], tables):
            writer.write_table(table, row_group_size=_WORK_ROWS)
            n += table.num_rows
    return n


def _rows_at(path: str, positions: np.ndarray, columns: list[str]) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """The rows of a Parquet file at the sorted, distinct ``positions``, one row group at a time: yields each
    group's positions and their rows (``columns`` only), reading only groups that hold any."""
    pf = _open_parquet(path)
    start = 0
    for g in range(pf.metadata.num_row_groups):
        stop = start + pf.metadata.row_group(g).num_rows
        mine = positions[(positions >= start) & (positions < stop)]
        if mine.size:
            yield mine, pf.read_row_group(g, columns=columns).take(pa.array(mine - start))
        start = stop


def load_sketches(path: str, positions: Iterable[int]) -> dict[int, np.ndarray]:
    """The ``sketch`` column of a sketch or index file at the given row positions, one row group at a time."""
    wanted = np.unique(np.fromiter(positions, dtype=np.int64))
    out: dict[int, np.ndarray] = {}
    if wanted.size == 0:
        return out
    for mine, rows in _rows_at(path, wanted, ["sketch"]):
        column = rows.column(0).combine_chunks()
        offsets = column.offsets.to_numpy()
        values = column.values.to_numpy(zero_copy_only=False)
        for i, pos in enumerate(mine.tolist()):
            out[pos] = values[offsets[i] : offsets[i + 1]]
    return out


class Members:
    """Column-wise batch of exact-group members (a tuple of bytes, handed to the exact step in a file).

    ``group``: 16-byte group hash each (the normalised-text hash; the node key's hash with exact dedup off),
    ``keys``/``sources``: packed strings, ``order``: 64-bit provenance hash (tie-break between equal keys),
    ``chunk``/``pos``: where the member's sketch is (chunk -1: an earlier run's indexed survivor),
    ``bands``: the band hashes, ``width`` per member (0 without shingles). Built and read by the helpers below.
    """

    @staticmethod
    def pack(rows: list[tuple[bytes, str, str, int, int, int, np.ndarray]]) -> tuple:
        group, keys, sources, order, chunk, pos, bands = zip(*rows)
        widths = np.array([b.size for b in bands], dtype=np.uint16)
        flat = np.concatenate(bands).astype(np.uint64) if widths.sum() else np.zeros(0, dtype=np.uint64)
        return (
            b"".join(group),
            *pack_strings(list(keys)),
            *pack_strings(list(sources)),
            np.array(order, dtype=np.uint64).tobytes(),
            np.array(chunk, dtype=np.int32).tobytes(),
            np.array(pos, dtype=np.int64).tobytes(),
            widths.tobytes(),
            flat.tobytes(),
        )

    @staticmethod
    def unpack(batch: tuple) -> Iterator[tuple[bytes, str, str, int, int, int, np.ndarray]]:
        group, key_lengths, key_data, source_lengths, source_data, order, chunk, pos, widths, flat = batch
        widths_a = np.frombuffer(widths, dtype=np.uint16)
        ends = np.cumsum(widths_a, dtype=np.int64)
        bands = np.frombuffer(flat, dtype=np.uint64)
        rows = zip(
            unpack_strings((key_lengths, key_data)),
            unpack_strings((source_lengths, source_data)),
            np.frombuffer(order, dtype=np.uint64).tolist(),
            np.frombuffer(chunk, dtype=np.int32).tolist(),
            np.frombuffer(pos, dtype=np.int64).tolist(),
            ends.tolist(),
            widths_a.tolist(),
        )
        for i, (key, source, o, c, p, end, width) in enumerate(rows):
            yield group[16 * i : 16 * (i + 1)], key, source, o, c, p, bands[end - width : end]


def _members_by_partition(rows: list[tuple], partitions: int, out: dict[int, list]) -> None:
    """Members -> one :class:`Members` batch per partition of their group hash, added to ``out``."""
    parts: dict[int, list] = {}
    for row in rows:
        parts.setdefault(int.from_bytes(row[0][:8], "little") % partitions, []).append(row)
    for p, members in parts.items():
        out.setdefault(p, []).append(Members.pack(members))


# --- DoFns --------------------------------------------------------------------------------------------------


class ReadChunk(beam.DoFn):
    """One input chunk -> its exact-group members (:class:`Members` batches); writes the chunk's sketch file.

    Malformed or blank rows become counted drops. Every other row gets its node key (survivor-ordered, see
    :func:`.exact.rank_key`), the 128-bit hash of its normalised text, and (near pass on) its shingles'
    MinHash band hashes and verification sketch (the shingle-hash set, or the signature). The sketch file
    holds one row per such document, in input order; the member carries the position there, not the text.
    """

    def __init__(self, cfg: DedupConfig, bands: int, rows: int, work: str, partitions: int):
        self.cfg = cfg
        self.bands = bands
        self.rows = rows
        self.work = work
        self.partitions = partitions

    def setup(self) -> None:
        near = self.cfg.near
        self.hasher = MinHasher(near.num_perm, near.seed, near.scheme, near.hash) if near.enabled else None

    def process(self, task: tuple[int, str, tuple[int, ...]]) -> Iterator[Any]:
        chunk, path, groups = task
        counts: dict[str, int] = {}
        emitted: list[Any] = []
        by_partition: dict[int, list] = {}
        pos = 0
        offset = 0

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal pos, offset
            for batch in _iter_chunk(path, groups, _READ_COLUMNS):
                cols: dict[str, list] = {name: [] for name in SKETCH_SCHEMA.names}
                bands: list[np.ndarray] = []
                sketches: list[np.ndarray] = []
                members: list[tuple] = []
                for i, row in enumerate(batch.to_pylist()):
                    member = self._row(row, counts, emitted)
                    if member is None:
                        continue
                    key, h, band_hashes, sketch = member
                    for name, value in (
                        ("key", key),
                        ("id", row["id"]),
                        ("source", row["source"]),
                        ("exact_hash", h),
                        ("row", offset + i),
                    ):
                        cols[name].append(value)
                    bands.append(band_hashes)
                    sketches.append(sketch)
                    provenance = json.dumps(
                        [row.get("url"), row.get("source_file"), row.get("source_offset"), row.get("date")], default=str
                    )
                    group = (
                        bytes.fromhex(h)
                        if self.cfg.exact.enabled
                        else xxhash.xxh3_128_digest(key.encode("utf-8", "surrogatepass"))
                    )
                    order = xxhash.xxh3_64_intdigest(provenance.encode("utf-8", "surrogatepass"))
                    members.append((group, key, row["source"], order, chunk, pos, band_hashes))
                    pos += 1
                offset += batch.num_rows
                if members:
                    _members_by_partition(members, self.partitions, by_partition)
                cols["bands"] = _list_array(bands)
                cols["sketch"] = _list_array(sketches)
                yield pa.RecordBatch.from_pydict(cols, schema=SKETCH_SCHEMA)

        # The sketch file is streamed (one record batch at a time); entries leave after it is in place, so
        # nothing downstream can look up a sketch that is not yet written.
        _write_atomic(sketch_file(self.work, chunk), batches(), SKETCH_SCHEMA)
        yield from emitted
        yield from hand_off(self.work, "members", f"c{chunk:05d}", by_partition)
        for name, n in counts.items():
            yield beam.pvalue.TaggedOutput(COUNTERS, (name, n))

    def _row(self, row: dict, counts: dict[str, int], emitted: list) -> tuple | None:
        source = row.get("source")
        name = f"read:{source if isinstance(source, str) else '?'}"
        counts[name] = counts.get(name, 0) + 1
        doc_id, text = row.get("id"), row.get("text")
        if not (isinstance(doc_id, str) and doc_id and isinstance(source, str) and source):
            emitted.append(beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_record")))
            return None
        if text is None or (isinstance(text, str) and not text.strip()):
            emitted.append(beam.pvalue.TaggedOutput(OUTCOMES, dropped("empty_text")))
            return None
        if not isinstance(text, str):
            emitted.append(beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_record")))
            return None
        quality = row.get("quality_score")
        try:
            h = exact_hash(text, self.cfg.exact.normalize)
        except (UnicodeError, ValueError):  # e.g. a lone surrogate from a non-Parquet source
            emitted.append(beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_record")))
            return None
        key = rank_key(
            source,
            quality if isinstance(quality, (int, float)) else None,
            doc_id,
            h,
            self.cfg.source_priority,
            self.cfg.lowest_priority_sources,
        )
        empty = np.zeros(0, dtype=np.uint64)
        if self.hasher is None:
            return key, h, empty, empty
        try:
            items = shingles(text, self.cfg.near.shingles)
        except (UnicodeError, ValueError):  # still exact-deduplicated and kept, just never clustered
            items = []
        if not items:
            return key, h, empty, empty
        signature, shingle_set = self.hasher.sketch(items)
        band_hashes = np.array([b for _, b in band_keys(signature, self.bands, self.rows)], dtype=np.uint64)
        verify = self.cfg.near.verify
        sketch = shingle_set if verify == "jaccard" else signature if verify == "signature" else empty
        return key, h, band_hashes, np.asarray(sketch, dtype=np.uint64)


def sketch_file(work: str, chunk: int) -> str:
    return os.path.join(work, f"sketch-{chunk:05d}.parquet")


class ExactPartition(beam.DoFn):
    """One partition of exact-group members -> each group's survivor; the rest dropped.

    Groups are found by hash inside the partition (every member of a group lands in the partition of its
    group hash). The survivor is the smallest by node key, then provenance, then position, so the choice is
    total and independent of arrival order. An earlier run's indexed survivor in a group makes every new
    member ``exact_duplicate_of_index``. Dropped copies are emitted as ``(survivor key, (id, source))`` so
    ``clusters.jsonl`` lists them under the cluster their survivor ends up in. With exact dedup off, groups
    are keyed by node key: only rows with the same id *and* text meet, and the extra ones are ``duplicate_id``.

    Members arrive as files (:func:`hand_off`); survivors leave the same way, batched: their band entries
    by band partition (:func:`_band_batches`), and by node-key partition for :class:`Decide` their
    ``(source, chunk, position, exact copies)``, the dropped copies ``(survivor key, id, source)`` and, for
    :class:`ClusterWeights`, the weight ``1 + copies`` of survivors that have copies.
    """

    def __init__(self, exact: bool, near: bool, partitions: int, work: str):
        self.exact = exact
        self.near = near
        self.partitions = partitions
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        part, paths = element
        groups: dict[bytes, list] = {}
        for batch in handed(paths):
            for m in Members.unpack(batch):
                groups.setdefault(m[0], []).append(m)
        counts: dict[str, int] = {}
        survivors: list[tuple] = []
        exact_copies: list[tuple[str, str, str]] = []
        lines: list[str] = []
        for members in groups.values():
            yield from self._group(members, survivors, exact_copies, counts, lines)
        if lines:
            yield beam.pvalue.TaggedOutput(CLUSTERS, hand_off_lines(self.work, f"x{part:05d}", lines))
        for name, n in counts.items():
            yield beam.pvalue.TaggedOutput(COUNTERS, (name, n))
        by_part: dict[int, list] = {}
        weights: dict[int, list] = {}
        for s in survivors:
            q = partition_of(s[0], self.partitions)
            by_part.setdefault(q, []).append(s)
            if s[4]:
                weights.setdefault(q, []).append((s[0], 1 + s[4]))
        for q, ref in hand_off(
            self.work, "weights", f"x{part:05d}", {q: [_pack_weights(rows)] for q, rows in weights.items()}
        ):
            yield beam.pvalue.TaggedOutput(WEIGHTS, (q, ref))
        copies_by_part: dict[int, list] = {}
        for c in exact_copies:
            copies_by_part.setdefault(partition_of(c[0], self.partitions), []).append(c)
        for q, ref in hand_off(
            self.work, "copies", f"x{part:05d}", {q: [_pack_copies(rows)] for q, rows in copies_by_part.items()}
        ):
            yield beam.pvalue.TaggedOutput(EXACT_MEMBERS, (q, ref))
        batches: dict[int, list] = {}
        for q, rows in by_part.items():
            keys, sources, chunks, positions, copies, _ = zip(*rows)
            batches[q] = [
                (
                    *pack_strings(list(keys)),
                    *pack_strings(list(sources)),
                    np.array(chunks, dtype=np.int32).tobytes(),
                    np.array(positions, dtype=np.int64).tobytes(),
                    np.array(copies, dtype=np.int64).tobytes(),
                )
            ]
        for q, path in hand_off(self.work, "survivors", f"x{part:05d}", batches):
            yield beam.pvalue.TaggedOutput(SURVIVORS, (q, path))
        if self.near:
            banded = [s for s in survivors if s[5].size]
            if len(banded) < len(survivors):
                yield beam.pvalue.TaggedOutput(COUNTERS, ("documents_without_shingles", len(survivors) - len(banded)))
            if banded:
                bands = _band_batches(
                    [s[0] for s in banded],
                    np.array([s[2] for s in banded], dtype=np.int32),
                    np.array([s[3] for s in banded], dtype=np.int64),
                    np.stack([s[5] for s in banded]),
                    self.partitions,
                )
                for bp, path in hand_off(self.work, "bands", f"x{part:05d}", bands):
                    yield beam.pvalue.TaggedOutput(BANDS, (bp, path))

    def _group(
        self,
        members: list[tuple],
        survivors: list[tuple],
        copies_out: list[tuple[str, str, str]],
        counts: dict[str, int],
        lines: list[str],
    ) -> Iterator[Any]:
        new = [m for m in members if m[4] >= 0]
        if not new:
            return
        indexed = [m[1] for m in members if m[4] < 0]
        if indexed:
            cluster = key_id(min(indexed))
            for m in new:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("exact_duplicate_of_index"))
                lines.append(_cluster_line(key_id(m[1]), cluster, m[2], False, "exact_duplicate_of_index"))
            return
        best = min(new, key=lambda m: (m[1], m[3], m[4], m[5]))
        copies = 0
        if len(new) > 1:
            if self.exact:
                counts["exact_duplicate_groups"] = counts.get("exact_duplicate_groups", 0) + 1
            for m in new:
                if m is best:
                    continue
                if self.exact:
                    copies += 1
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("exact_duplicate"))
                    copies_out.append((best[1], key_id(m[1]), m[2]))
                else:  # the same (id, text) twice with exact dedup off
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate_id"))
        survivors.append((best[1], best[2], best[4], best[5], copies, best[6]))


def _band_batches(
    keys: list[str],
    chunks: np.ndarray,
    positions: np.ndarray,
    hashes: np.ndarray,
    partitions: int,
    out: dict[int, list] | None = None,
) -> dict[int, list]:
    """``hashes[i, band]`` of node ``keys[i]`` (sketch at ``chunks[i], positions[i]``) -> one batch per band
    partition (``band hash % partitions``), added to ``out``: ``(bands, hashes, docs, key lengths, keys,
    chunks, positions)``, an entry per band landing there (its band index, hash and document number in the
    batch) and, once per document, its packed key and sketch position.

    Arrays travel as raw bytes (no Python int per hash, no pickled numpy array), and keys once per document
    instead of once per band.
    """
    out = {} if out is None else out
    part = hashes % np.uint64(partitions)
    for p in np.unique(part):
        doc, band = np.nonzero(part == p)
        docs, local = np.unique(doc, return_inverse=True)
        out.setdefault(int(p), []).append(
            (
                band.astype(np.uint16).tobytes(),
                hashes[doc, band].tobytes(),
                local.astype(np.uint32).tobytes(),
                *pack_strings([keys[i] for i in docs]),
                chunks[docs].tobytes(),
                positions[docs].tobytes(),
            )
        )
    return out


def _bucket_candidates(keys: list[str], all_pairs_max: int) -> tuple[list[tuple[str, str]], bool]:
    """One LSH bucket's node keys -> its candidate pairs (all pairs when small, a star on the minimum when
    oversized) and whether it was oversized. Indexed-indexed pairs are never formed (earlier runs settled
    them); indexed keys sort first, so a bucket whose largest key is indexed holds nothing new."""
    keys = sorted(set(keys))
    if len(keys) < 2 or _is_indexed(keys[-1]):
        return [], False
    if len(keys) <= all_pairs_max:
        return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :] if not _is_indexed(b)], False
    return [(keys[0], b) for b in keys[1:] if not _is_indexed(b)], True


class BucketPairs(beam.DoFn):
    """One band partition -> its candidate pairs, found by sorting the band entries (no per-bucket element).

    Every entry of a bucket ``(band, hash)`` lands in partition ``hash % partitions``, so the sort sees whole
    buckets. Only runs of two or more equal ``(band, hash)`` reach Python. A pair leaves as
    ``(a, position of a, b, chunk of b, position of b)`` under the chunk of ``a``'s sketch (handed on in a
    file, :func:`_pack_pairs`), so the next step both removes repeats (a pair found in several bands) and
    reads ``a``'s sketch from one file. Holds the partition's band entries (node keys, not texts).
    """

    def __init__(self, all_pairs_max: int, work: str):
        self.all_pairs_max = all_pairs_max
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        part, paths = element
        bands, hashes, chunks, positions, keys = [], [], [], [], []
        docs: list[np.ndarray] = []
        for b, h, d, key_lengths, key_data, c, pos in handed(paths):
            bands.append(np.frombuffer(b, dtype=np.uint16))
            hashes.append(np.frombuffer(h, dtype=np.uint64))
            docs.append(np.frombuffer(d, dtype=np.uint32).astype(np.int64) + len(keys))
            chunks.append(np.frombuffer(c, dtype=np.int32))
            positions.append(np.frombuffer(pos, dtype=np.int64))
            keys.extend(unpack_strings((key_lengths, key_data)))
        band, hsh, doc = np.concatenate(bands), np.concatenate(hashes), np.concatenate(docs)
        chunk, position = np.concatenate(chunks), np.concatenate(positions)
        order = np.lexsort((hsh, band))
        band, hsh = band[order], hsh[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (band[1:] != band[:-1]) | (hsh[1:] != hsh[:-1])
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(order))
        multi = ends - starts >= 2
        out: dict[int, set] = {}
        oversized = 0
        for s, e in zip(starts[multi].tolist(), ends[multi].tolist()):
            members = doc[order[s:e]].tolist()
            ref = {keys[i]: (int(chunk[i]), int(position[i])) for i in members}
            pairs, big = _bucket_candidates(list(ref), self.all_pairs_max)
            oversized += big
            for a, b in pairs:
                (ca, pa_), (cb, pb) = ref[a], ref[b]
                out.setdefault(ca, set()).add((a, pa_, b, cb, pb))
        if oversized:
            yield beam.pvalue.TaggedOutput(COUNTERS, ("oversized_buckets", oversized))
        yield from hand_off(
            self.work, "pairs", f"b{part:05d}", {c: [_pack_pairs(sorted(pairs))] for c, pairs in out.items()}
        )


def _pack_pairs(pairs: list[tuple[str, int, str, int, int]]) -> tuple[bytes, ...]:
    """Candidate pairs ``(a, position of a, b, chunk of b, position of b)`` -> one tuple of bytes."""
    a, pa_, b, cb, pb = zip(*pairs)
    return (
        *pack_strings(list(a)),
        np.array(pa_, dtype=np.int64).tobytes(),
        *pack_strings(list(b)),
        np.array(cb, dtype=np.int32).tobytes(),
        np.array(pb, dtype=np.int64).tobytes(),
    )


def _unpack_pairs(batch: tuple[bytes, ...]) -> Iterator[tuple[str, int, str, int, int]]:
    a_lengths, a_data, pa_, b_lengths, b_data, cb, pb = batch
    return zip(
        unpack_strings((a_lengths, a_data)),
        np.frombuffer(pa_, dtype=np.int64).tolist(),
        unpack_strings((b_lengths, b_data)),
        np.frombuffer(cb, dtype=np.int32).tolist(),
        np.frombuffer(pb, dtype=np.int64).tolist(),
    )


def _is_indexed(key: str) -> bool:
    return key.startswith(INDEX_MARK)


class IndexEntries(beam.DoFn):
    """One index file of an earlier run -> its exact-group members (:class:`Members`) and band entries, handed
    on as files like a chunk's. Its sketches stay in the index file (read by position, like a sketch file's,
    when a candidate pair needs them)."""

    def __init__(self, exact: bool, near: bool, partitions: int, work: str):
        self.exact = exact
        self.near = near
        self.partitions = partitions
        self.work = work

    def process(self, task: tuple[int, str]) -> Iterator[Any]:
        chunk, path = task
        pf = _open_parquet(path)
        pos = 0
        members: dict[int, list] = {}
        bands: dict[int, list] = {}
        for batch in pf.iter_batches(batch_size=_WORK_ROWS, columns=["key", "exact_hash", "bands"]):
            keys, positions, hashes, exact = [], [], [], []
            for row in batch.to_pylist():
                key = INDEX_MARK * _RANK_WIDTH + row["key"][_RANK_WIDTH:]
                if self.exact and row.get("exact_hash"):  # chunk -1 marks an indexed member
                    exact.append((bytes.fromhex(row["exact_hash"]), key, "", 0, -1, 0, np.zeros(0, np.uint64)))
                if self.near and row.get("bands"):
                    keys.append(key)
                    positions.append(pos)
                    hashes.append(np.array(row["bands"], dtype=np.uint64))
                pos += 1
            if exact:
                _members_by_partition(exact, self.partitions, members)
            if keys:
                width = max(h.size for h in hashes)
                if any(h.size != width for h in hashes):
                    raise ValueError(f"dedup: index file {path}: rows with different band counts")
                _band_batches(
                    keys,
                    np.full(len(keys), chunk, dtype=np.int32),
                    np.array(positions, dtype=np.int64),
                    np.stack(hashes),
                    self.partitions,
                    bands,
                )
        yield from hand_off(self.work, "members", f"i{chunk:05d}", members)
        for bp, band_path in hand_off(self.work, "bands", f"i{chunk:05d}", bands):
            yield beam.pvalue.TaggedOutput(BANDS, (bp, band_path))
        yield beam.pvalue.TaggedOutput(COUNTERS, ("indexed_documents", pos))


class ShipFirst(beam.DoFn):
    """The candidate pairs whose first node's sketch is in chunk ``c`` -> the distinct pairs, each shipped with
    that sketch to the chunk of its second node (handed on in a file: ``(a keys, b keys, positions of b,
    sketch lengths, sketches)``).

    Reads only the needed sketches of the chunk's file. With ``verify="none"`` the distinct pairs are the
    verified ones (tagged ``PAIRS``).
    """

    def __init__(self, mode: str, sketch_files: list[str], work: str):
        self.mode = mode
        self.sketch_files = sketch_files
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        chunk, paths = element
        pairs: set = set()
        for batch in handed(paths):
            pairs.update(_unpack_pairs(batch))
        if not pairs:
            return
        yield beam.pvalue.TaggedOutput(COUNTERS, ("candidate_pairs", len(pairs)))
        if self.mode == "none":
            yield beam.pvalue.TaggedOutput(PAIRS, sorted((a, b) for a, _, b, _, _ in pairs))
            return
        sketches = load_sketches(self.sketch_files[chunk], (pa_ for _, pa_, _, _, _ in pairs))
        out: dict[int, list] = {}
        for a, pa_, b, cb, pb in sorted(pairs):
            out.setdefault(cb, []).append((a, b, pb, sketches[pa_]))
        batches = {}
        for cb, probes in out.items():
            a, b, pb, sk = zip(*probes)
            batches[cb] = [
                (
                    *pack_strings(list(a)),
                    *pack_strings(list(b)),
                    np.array(pb, dtype=np.int64).tobytes(),
                    np.array([x.size for x in sk], dtype=np.uint32).tobytes(),
                    np.concatenate(sk).astype(np.uint64).tobytes(),
                )
            ]
        yield from hand_off(self.work, "probes", f"s{chunk:05d}", batches)


class VerifyPairs(beam.DoFn):
    """The shipped probes ``(a, b, position of b, sketch of a)`` whose second sketch is in chunk ``c`` -> the
    pairs that really match, as one batch of edges."""

    def __init__(self, mode: str, threshold: float, sketch_files: list[str]):
        self.mode = mode
        self.threshold = threshold
        self.sketch_files = sketch_files

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        chunk, paths = element
        probes = []
        for a_lengths, a_data, b_lengths, b_data, pb, sizes, values in handed(paths):
            ends = np.cumsum(np.frombuffer(sizes, dtype=np.uint32), dtype=np.int64)
            flat = np.frombuffer(values, dtype=np.uint64)
            starts = np.concatenate(([0], ends[:-1]))
            probes.extend(
                zip(
                    unpack_strings((a_lengths, a_data)),
                    unpack_strings((b_lengths, b_data)),
                    np.frombuffer(pb, dtype=np.int64).tolist(),
                    (flat[s:e] for s, e in zip(starts.tolist(), ends.tolist())),
                )
            )
        if not probes:
            return
        sketches = load_sketches(self.sketch_files[chunk], (pb for _, _, pb, _ in probes))
        sim = jaccard if self.mode == "jaccard" else signature_similarity
        verified = [(a, b) for a, b, pb, other in probes if sim(other, sketches[pb]) >= self.threshold]
        if verified:
            yield beam.pvalue.TaggedOutput(COUNTERS, ("verified_pairs", len(verified)))
            yield verified


def _pack_copies(rows: list[tuple[str, str, str]]) -> tuple[bytes, ...]:
    """Dropped exact copies ``(survivor key, id, source)`` -> one tuple of bytes."""
    keys, ids, sources = zip(*rows)
    return (*pack_strings(list(keys)), *pack_strings(list(ids)), *pack_strings(list(sources)))


def _copies(refs: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    for key_lengths, key_data, id_lengths, id_data, source_lengths, source_data in handed(refs):
        yield from zip(
            unpack_strings((key_lengths, key_data)),
            unpack_strings((id_lengths, id_data)),
            unpack_strings((source_lengths, source_data)),
        )


def _pack_weights(rows: list[tuple[str, int]]) -> tuple[bytes, ...]:
    keys, weights = zip(*rows)
    return (*pack_strings(list(keys)), np.array(weights, dtype=np.int64).tobytes())


def _weights(refs: Iterable[str]) -> Iterator[tuple[str, int]]:
    for key_lengths, key_data, weights in handed(refs):
        yield from zip(unpack_strings((key_lengths, key_data)), np.frombuffer(weights, dtype=np.int64).tolist())


class ClusterWeights(beam.DoFn):
    """One node-key partition's component labels and survivor weights -> ``(label, weight)`` for each of
    its labelled nodes (weight ``1 + exact copies``, so cluster sizes count exact copies too), handed on
    by the partition of the label."""

    def __init__(self, partitions: int, work: str):
        self.partitions = partitions
        self.work = work

    def process(self, element: tuple[int, dict[str, Iterable[str]]]) -> Iterator[tuple[int, str]]:
        part, grouped = element
        weights = dict(_weights(grouped["weight"]))
        out: dict[int, list] = {}
        for node, label in read_labels(grouped["label"]):
            out.setdefault(partition_of(label, self.partitions), []).append((label, weights.get(node, 1)))
        yield from hand_off(
            self.work, "cluster-weights", f"p{part:05d}", {q: [_pack_weights(rows)] for q, rows in out.items()}
        )


class ClusterSizes(beam.DoFn):
    """One label partition's ``(label, weight)`` entries -> each cluster's size, handed to :class:`Decide`
    of the same partition (a label is its survivor's node key)."""

    def __init__(self, work: str):
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[tuple[int, str]]:
        part, refs = element
        sizes: dict[str, int] = {}
        for label, weight in _weights(refs):
            sizes[label] = sizes.get(label, 0) + weight
        if sizes:
            yield from hand_off(
                self.work, "cluster-sizes", f"p{part:05d}", {part: [_pack_weights(sorted(sizes.items()))]}
            )


def _annotate(row: dict, extra: dict[str, Any]) -> dict:
    """Row in schema order with ``extra`` merged into its annotations JSON (an unparsable value is kept)."""
    raw = row.get("annotations")
    notes: dict[str, Any]
    try:
        parsed = json.loads(raw) if raw else {}
        notes = parsed if isinstance(parsed, dict) else {"previous": parsed}
    except (TypeError, ValueError):
        notes = {"previous_unparsed": str(raw)}
    notes.update(extra)
    out = {name: row.get(name) for name in DOCUMENT_SCHEMA.names}
    out["annotations"] = json.dumps(notes, sort_keys=True, ensure_ascii=False)
    if out.get("source_offset") is None:
        out["source_offset"] = -1
    return out


def chunk_file(folder: str, prefix: str, chunk: int, chunks: int) -> str:
    return os.path.join(folder, f"{prefix}-{chunk:05d}-of-{chunks:05d}.parquet")


class Decide(beam.DoFn):
    """One node-key partition with its survivors, exact copies, component labels and sizes -> each
    survivor's fate: kept (batched by chunk for :class:`WriteChunk`, with the annotations of clustered
    ones) or ``near_duplicate``, and one ``clusters.jsonl`` line per cluster member.

    A document belongs to a cluster when it is in a near-duplicate component or has exact copies; the
    cluster id is the survivor's document id, and its size counts exact copies too.
    """

    def __init__(self, work: str):
        self.work = work

    def process(self, element: tuple[int, dict[str, Iterable]]) -> Iterator[Any]:
        part, grouped = element
        lines: list[str] = []
        exact: dict[str, list] = {}
        for key, doc_id, source in _copies(grouped["exact"]):
            exact.setdefault(key, []).append((doc_id, source))
        labels = dict(read_labels(grouped["label"]))
        sizes = dict(_weights(grouped["size"]))
        counts: dict[str, int] = {}
        kept: dict[int, tuple[list[int], dict[int, str]]] = {}
        for key_lengths, key_data, source_lengths, source_data, chunks, positions, copies in handed(
            grouped["survivor"]
        ):
            rows = zip(
                unpack_strings((key_lengths, key_data)),
                unpack_strings((source_lengths, source_data)),
                np.frombuffer(chunks, dtype=np.int32).tolist(),
                np.frombuffer(positions, dtype=np.int64).tolist(),
                np.frombuffer(copies, dtype=np.int64).tolist(),
            )
            for key, source, chunk, pos, n_copies in rows:
                extra = yield from self._node(
                    key, source, n_copies, labels.get(key), sizes.get(key), exact.get(key, []), counts, lines
                )
                if extra is None:
                    continue
                positions_of, extras = kept.setdefault(chunk, ([], {}))
                positions_of.append(pos)
                if extra:
                    extras[pos] = json.dumps(extra, sort_keys=True)
        for name, n in counts.items():  # one counter element per partition, not per document
            yield beam.pvalue.TaggedOutput(COUNTERS, (name, n))
        if lines:
            yield beam.pvalue.TaggedOutput(CLUSTERS, hand_off_lines(self.work, f"d{part:05d}", lines))
        for chunk, (positions_of, extras) in sorted(kept.items()):
            yield chunk, (np.array(positions_of, dtype=np.int64).tobytes(), extras)

    @staticmethod
    def _node(
        key: str,
        source: str,
        exact_copies: int,
        label: str | None,
        size: int | None,
        exact: list[tuple[str, str]],
        counts: dict[str, int],
        lines: list[str],
    ):
        """Outcome and cluster lines of one survivor; returns its annotations (None when dropped)."""
        doc_id = key_id(key)
        cluster_key = label if label is not None else (key if exact_copies else None)
        extra: dict[str, Any] = {}
        if cluster_key is not None:
            cluster = key_id(cluster_key)
            survivor = cluster_key == key
            reason = "near_duplicate_of_index" if _is_indexed(cluster_key) else "near_duplicate"
            lines.append(_cluster_line(doc_id, cluster, source, survivor, None if survivor else reason))
            for member_id, member_source in exact:
                lines.append(_cluster_line(member_id, cluster, member_source, False, "exact_duplicate"))
            if not survivor:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
                return None
            size = int(size) if size is not None else 1 + exact_copies
            extra.update({"dedup_cluster": cluster, "cluster_size": size})
            if exact_copies:
                extra["exact_duplicates"] = exact_copies
            counts[f"cluster_size:{size}"] = counts.get(f"cluster_size:{size}", 0) + 1
        yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
        counts[f"kept:{source}"] = counts.get(f"kept:{source}", 0) + 1
        return extra


class WriteChunk(beam.DoFn):
    """One chunk's kept positions -> its output file ``documents-<chunk>-of-<chunks>.parquet`` (and its
    ``index/`` file): the kept rows re-read from the input chunk, in input order, annotations merged.

    The file a document lands in is its input chunk and its place is its input order, so the same input and
    settings give the same bytes in any process, on any runner, whatever order the shuffles delivered.
    Streams the chunk one record batch at a time.
    """

    def __init__(self, chunks: list[tuple[str, tuple[int, ...]]], work: str, folder: str, index: bool):
        self.chunks = chunks
        self.work = work
        self.folder = folder
        self.index = index

    def process(self, element: tuple[int, Iterable[tuple[bytes, dict[int, str]]]]) -> Iterator[None]:
        chunk, batches = element
        extra: dict[int, str] = {}  # sketch-file position -> annotations JSON ("" when not clustered)
        for positions_b, notes in batches:
            extra.update(dict.fromkeys(np.frombuffer(positions_b, dtype=np.int64).tolist(), ""))
            extra.update(notes)
        spill = pq.read_table(sketch_file(self.work, chunk), columns=["row"]).column(0).to_numpy()
        positions = np.array(sorted(extra), dtype=np.int64)
        by_row = dict(zip(spill[positions].tolist(), positions.tolist()))
        path, groups = self.chunks[chunk]
        n = len(self.chunks)

        def documents() -> Iterator[pa.Table]:
            start = 0
            for batch in _iter_chunk(path, groups):
                rows = [r for r in range(start, start + batch.num_rows) if r in by_row]
                if rows:
                    picked = batch.take(pa.array([r - start for r in rows], type=pa.int64())).to_pylist()
                    out = []
                    for r, row in zip(rows, picked):
                        notes = extra[by_row[r]]
                        out.append(_annotate(row, json.loads(notes) if notes else {}))
                    yield pa.Table.from_pylist(out, schema=DOCUMENT_SCHEMA)
                start += batch.num_rows

        written = _write_atomic(chunk_file(self.folder, "documents", chunk, n), documents(), DOCUMENT_SCHEMA)
        if written != len(extra):
            raise RuntimeError(f"dedup: chunk {chunk} ({path}): wrote {written} of {len(extra)} kept rows")
        if self.index:
            index_rows = (rows for _, rows in _rows_at(sketch_file(self.work, chunk), positions, INDEX_SCHEMA.names))
            _write_atomic(chunk_file(os.path.join(self.folder, INDEX_DIR), "index", chunk, n), index_rows, INDEX_SCHEMA)
        return iter(())


def hand_off_lines(work: str, producer: str, lines: list[str]) -> str:
    """Sort one step's ``clusters.jsonl`` lines into a file of the work folder; returns its path (the
    element that crosses the shuffle, see :func:`hand_off`)."""
    path = os.path.join(work, f"clusters-{producer}.jsonl")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in sorted(lines))
    return path


class MergeSortedLines(beam.DoFn):
    """The sorted line files of every step (under one key) -> one file, merged in sorted order and written
    atomically: the same bytes whatever order the runner delivered the files in. Streams (a k-way merge),
    so a million cluster lines cost one line per file in memory."""

    def __init__(self, path: str):
        self.path = path

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[None]:
        _, paths = element
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(open(p, encoding="utf-8")) for p in sorted(set(paths))]
            with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(heapq.merge(*sources))
        return iter(())


def _cluster_line(doc_id: str, cluster: str, source: str, survivor: bool, reason: str | None) -> str:
    return json.dumps(
        {"id": doc_id, "cluster": cluster, "source": source, "survivor": survivor, "reason": reason}, ensure_ascii=False
    )


def _tag_unconverged(n: int) -> tuple[str, int]:
    return "cc_unconverged_nodes", n


def _counter_pair(element: str | tuple[str, int]) -> tuple[str, int]:
    """A counter is a name (one occurrence) or ``(name, n)`` from a step that counted a whole batch."""
    return (element, 1) if isinstance(element, str) else (element[0], int(element[1]))


def _count_json(element: tuple[str, int]) -> str:
    return json.dumps({"counter": element[0], "n": element[1]}, sort_keys=True)


# --- driver ---------------------------------------------------------------------------------------------------


def _input_files(inputs: list[str]) -> tuple[list[str], int]:
    """Every Parquet file of the input tables, schema-checked on the driver, and their total row count."""
    files: list[str] = []
    n_rows = 0
    for path in inputs:
        for f in document_files(path):
            pf = pq.ParquetFile(f)
            validate_document_schema(pf.schema_arrow, where=f)
            n_rows += pf.metadata.num_rows
            files.append(f if "://" in f else os.path.abspath(f))
    return files, n_rows


def _read_counts(tmp: str) -> dict[str, int]:
    path = os.path.join(tmp, _COUNTS_FILE)
    counts = sum_jsonl(path, "counter", "n")
    if os.path.exists(path):
        os.remove(path)
    return counts


def _extra(counts: dict[str, int], cfg: DedupConfig, bands: int, rows: int, rounds: int) -> dict[str, Any]:
    per_source: dict[str, dict[str, int]] = {}
    hist: dict[int, int] = {}
    for name, n in counts.items():
        kind, _, arg = name.partition(":")
        if kind in ("read", "kept"):
            per_source.setdefault(arg, {"read": 0, "kept": 0})[kind] += n
        elif kind == "cluster_size":
            hist[int(arg)] = hist.get(int(arg), 0) + n
    return {
        "per_source": dict(sorted(per_source.items())),
        "exact_duplicate_groups": counts.get("exact_duplicate_groups", 0),
        "candidate_pairs": counts.get("candidate_pairs", 0),
        "verified_pairs": counts.get("verified_pairs", 0),
        "clusters": sum(hist.values()),
        "documents_in_clusters": sum(size * n for size, n in hist.items()),
        "cluster_size_histogram": {str(k): hist[k] for k in sorted(hist)},
        "oversized_buckets": counts.get("oversized_buckets", 0),
        "documents_without_shingles": counts.get("documents_without_shingles", 0),
        "cc_unconverged_nodes": counts.get("cc_unconverged_nodes", 0),
        "against": list(cfg.against),
        "indexed_documents": counts.get("indexed_documents", 0),
        "near": {
            "enabled": cfg.near.enabled,
            "threshold": cfg.threshold,
            "num_perm": cfg.near.num_perm,
            "bands": bands,
            "rows": rows,
            "verify": cfg.near.verify,
            "cc_rounds": rounds,
        },
    }


def index_meta(cfg: DedupConfig, bands: int, rows: int) -> dict[str, Any]:
    """The settings an index's hashes, bands and sketches depend on (must match to dedup against it)."""
    near = cfg.near
    return {
        "version": INDEX_VERSION,
        "exact": {"enabled": cfg.exact.enabled, "normalize": asdict(cfg.exact.normalize)},
        "near": {
            "enabled": near.enabled,
            "shingles": asdict(near.shingles),
            "num_perm": near.num_perm,
            "seed": near.seed,
            "scheme": near.scheme,
            "hash": near.hash,
            "bands": bands,
            "rows": rows,
            "verify": near.verify,
        },
    }


def _index_files(against: list[str], meta: dict[str, Any]) -> list[str]:
    """The index Parquet files of earlier dedup outputs, after checking their settings match ``meta``."""
    files: list[str] = []
    for folder in against:
        meta_path = os.path.join(folder, INDEX_DIR, INDEX_META)
        if not os.path.exists(meta_path):
            raise ValueError(
                f"dedup: --against {folder}: no {INDEX_DIR}/{INDEX_META} (not a dedup output written with write_index)"
            )
        with open(meta_path, encoding="utf-8") as fh:
            theirs = json.load(fh)
        if theirs.get("version") != INDEX_VERSION:
            raise ValueError(
                f"dedup: --against {folder}: index version {theirs.get('version')}, expected {INDEX_VERSION}"
            )
        for part in ("exact", "near"):
            mine, other = meta[part], theirs.get(part, {})
            if not (mine["enabled"] and other.get("enabled")):
                if mine["enabled"]:
                    log.warning(
                        "dedup: --against %s: its index was written without the %s pass; its documents "
                        "take no part in this run's %s pass",
                        folder,
                        part,
                        part,
                    )
                continue
            diff = sorted(k for k in mine if k != "enabled" and mine[k] != other.get(k))
            if diff:
                raise ValueError(
                    f"dedup: --against {folder}: its {part} settings differ in {', '.join(diff)} "
                    f"({ {k: other.get(k) for k in diff} } vs { {k: mine[k] for k in diff} })"
                )
        files.extend(os.path.abspath(f) for f in sorted(glob.glob(os.path.join(folder, INDEX_DIR, "*.parquet"))))
    return files


def validate_config(cfg: DedupConfig) -> None:
    """Reject settings that would otherwise fail deep inside a worker (YAML bypasses the CLI's choices)."""
    near = cfg.near
    checks = [
        (0.0 < cfg.threshold <= 1.0, f"threshold must be in (0, 1], got {cfg.threshold}"),
        (near.num_perm >= 1, f"near.num_perm must be >= 1, got {near.num_perm}"),
        (near.shingles.ngram >= 1, f"near.shingles.ngram must be >= 1, got {near.shingles.ngram}"),
        (near.shingles.kind in ("word", "char"), f"near.shingles.kind must be word|char, got {near.shingles.kind!r}"),
        (near.scheme in ("affine32", "legacy"), f"near.scheme must be affine32|legacy, got {near.scheme!r}"),
        (near.hash in ("sha1", "xxh3"), f"near.hash must be sha1|xxh3, got {near.hash!r}"),
        (
            near.verify in ("jaccard", "signature", "none"),
            f"near.verify must be jaccard|signature|none, got {near.verify!r}",
        ),
        (near.all_pairs_max >= 1, f"near.all_pairs_max must be >= 1, got {near.all_pairs_max}"),
        (near.cc_rounds >= 0, f"near.cc_rounds must be >= 0, got {near.cc_rounds}"),
        (near.partitions >= 0, f"near.partitions must be >= 0, got {near.partitions}"),
        (cfg.chunk_rows >= 1, f"chunk_rows must be >= 1, got {cfg.chunk_rows}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"dedup: {message}")


def run_dedup(
    inputs: list[str], out_dir: str, cfg: DedupConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Deduplicate the document tables ``inputs`` (exact, then near) into one document table ``out_dir``."""
    validate_config(cfg)
    fp = fingerprint("dedup", list(inputs) + [os.path.join(a, INDEX_DIR) for a in cfg.against], cfg)
    if not force and is_complete(out_dir, fp):
        return load_stats(out_dir)
    files, n_rows = _input_files(inputs)
    near = cfg.near
    bands, rows = lsh_params(cfg.threshold, near.num_perm, near.bands, near.rows, near.fp_weight, near.fn_weight)
    meta = index_meta(cfg, bands, rows)
    index_files = _index_files(cfg.against, meta)
    rounds = near.cc_rounds if near.cc_rounds > 0 else auto_rounds(n_rows)
    parts = near.partitions or max(8, math.ceil(n_rows / 25_000))
    chunks = plan_chunks(files, cfg.chunk_rows)
    started = time.perf_counter()
    with stage_output(out_dir) as tmp:
        work = os.path.join(tmp, _WORK_DIR)
        os.makedirs(work, exist_ok=True)
        if cfg.write_index:
            os.makedirs(os.path.join(tmp, INDEX_DIR), exist_ok=True)
        # Chunk c's sketches are in sketch_files[c]; an earlier run's index file i is "chunk" len(chunks) + i.
        sketch_files = [sketch_file(work, c) for c in range(len(chunks))] + index_files
        with make_pipeline(runner, "dedup", total=n_rows) as p:
            tasks = [(c, path, groups) for c, (path, groups) in enumerate(chunks)]
            read = (
                p
                | "Chunks" >> beam.Create(tasks)
                | "SpreadChunks" >> beam.Reshuffle()
                | "ReadChunks"
                >> beam.ParDo(ReadChunk(cfg, bands, rows, work, parts)).with_outputs(OUTCOMES, COUNTERS, main="members")
            )
            outcomes = [read[OUTCOMES]]
            counters = [read[COUNTERS]]
            cluster_lines = []
            members = read.members
            indexed = None
            if index_files:
                indexed = (
                    p
                    | "IndexFiles" >> beam.Create([(len(chunks) + i, f) for i, f in enumerate(index_files)])
                    | "SpreadIndex" >> beam.Reshuffle()
                    | "IndexEntries"
                    >> beam.ParDo(IndexEntries(cfg.exact.enabled, near.enabled, parts, work)).with_outputs(
                        BANDS, COUNTERS, main="exact"
                    )
                )
                counters.append(indexed[COUNTERS])
                members = (members, indexed.exact) | "WithIndexHashes" >> beam.Flatten()
            exact = (
                members
                | "GroupExact" >> beam.GroupByKey()
                | "ExactPartition"
                >> beam.ParDo(ExactPartition(cfg.exact.enabled, near.enabled, parts, work)).with_outputs(
                    OUTCOMES, COUNTERS, EXACT_MEMBERS, CLUSTERS, SURVIVORS, WEIGHTS, BANDS
                )
            )
            outcomes.append(exact[OUTCOMES])
            counters.append(exact[COUNTERS])
            cluster_lines.append(exact[CLUSTERS])

            final_inputs: dict[str, Any] = {"survivor": exact[SURVIVORS], "exact": exact[EXACT_MEMBERS]}
            if near.enabled:
                bands_in = exact[BANDS]
                if indexed is not None:
                    bands_in = (bands_in, indexed[BANDS]) | "WithIndexBands" >> beam.Flatten()
                buckets = (
                    bands_in
                    | "GroupBuckets" >> beam.GroupByKey()
                    | "BucketPairs"
                    >> beam.ParDo(BucketPairs(near.all_pairs_max, work)).with_outputs(COUNTERS, main="pairs")
                )
                counters.append(buckets[COUNTERS])
                shipped = (
                    buckets.pairs
                    | "GroupByFirstChunk" >> beam.GroupByKey()
                    | "ShipFirst"
                    >> beam.ParDo(ShipFirst(near.verify, sketch_files, work)).with_outputs(
                        COUNTERS, PAIRS, main="probes"
                    )
                )
                counters.append(shipped[COUNTERS])
                if near.verify == "none":
                    verified = shipped[PAIRS]
                else:
                    checked = (
                        shipped.probes
                        | "GroupBySecondChunk" >> beam.GroupByKey()
                        | "Verify"
                        >> beam.ParDo(VerifyPairs(near.verify, cfg.threshold, sketch_files)).with_outputs(
                            COUNTERS, main="pairs"
                        )
                    )
                    counters.append(checked[COUNTERS])
                    verified = checked.pairs
                cc = ConnectedComponents(rounds, work, partitions=parts, batched=True)
                labels = verified | "Components" >> cc
                counters.append(cc.unconverged | "CountUnconverged" >> beam.Map(_tag_unconverged))
                sizes = (
                    {"label": labels, "weight": exact[WEIGHTS]}
                    | "JoinWeights" >> beam.CoGroupByKey()
                    | "ClusterWeights" >> beam.ParDo(ClusterWeights(parts, work))
                    | "GroupClusterWeights" >> beam.GroupByKey()
                    | "ClusterSizes" >> beam.ParDo(ClusterSizes(work))
                )
                final_inputs.update(label=labels, size=sizes)
            else:
                final_inputs.update(label=p | "NoLabels" >> beam.Create([]), size=p | "NoSizes" >> beam.Create([]))

            decided = (
                final_inputs
                | "JoinDecisions" >> beam.CoGroupByKey()
                | "Decide" >> beam.ParDo(Decide(work)).with_outputs(OUTCOMES, COUNTERS, CLUSTERS, main="kept")
            )
            outcomes.append(decided[OUTCOMES])
            counters.append(decided[COUNTERS])
            cluster_lines.append(decided[CLUSTERS])
            _ = (
                decided.kept
                | "GroupKeptByChunk" >> beam.GroupByKey()
                | "WriteChunks" >> beam.ParDo(WriteChunk(chunks, work, tmp, cfg.write_index))
            )
            _ = (
                tuple(cluster_lines)
                | "AllClusterLineFiles" >> beam.Flatten()
                | "ClusterFilesOneKey" >> beam.Map(lambda path: (0, path))
                | "GroupClusterFiles" >> beam.GroupByKey()
                | "WriteClusters" >> beam.ParDo(MergeSortedLines(os.path.join(tmp, "clusters.jsonl")))
            )
            _ = tuple(outcomes) | "AllOutcomes" >> beam.Flatten() | "WriteOutcomes" >> WriteOutcomes(tmp)
            _ = (
                tuple(counters)
                | "AllCounters" >> beam.Flatten()
                | "CounterPairs" >> beam.Map(_counter_pair)
                | "CountCounters" >> beam.CombinePerKey(sum)
                | "CounterJson" >> beam.Map(_count_json)
                | "WriteCounters"
                >> beam.io.WriteToText(os.path.join(tmp, _COUNTS_FILE), shard_name_template="", num_shards=1)
            )
        shutil.rmtree(work)
        stats = stats_from_outcomes("dedup", read_outcomes(tmp))
        counts = _read_counts(tmp)
        stats.extra.update(_extra(counts, cfg, bands, rows, rounds))
        stats.extra["near"].update(partitions=parts)
        stats.extra["chunks"] = len(chunks)
        stats.extra["seconds"] = round(time.perf_counter() - started, 2)
        if stats.extra["cc_unconverged_nodes"]:
            log.warning(
                "dedup: %d nodes not settled after %d component rounds; some clusters may be split "
                "(raise near.cc_rounds)",
                stats.extra["cc_unconverged_nodes"],
                rounds,
            )
        if not os.path.exists(os.path.join(tmp, "clusters.jsonl")):
            open(os.path.join(tmp, "clusters.jsonl"), "w").close()
        if cfg.write_index:
            with open(os.path.join(tmp, INDEX_DIR, INDEX_META), "w", encoding="utf-8") as fh:
                json.dump({**meta, "documents": stats.kept}, fh, indent=2, sort_keys=True)
        finish(stats, tmp, fp)
    return stats
