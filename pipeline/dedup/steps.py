"""The DoFns of the dedup stage, in pipeline order; :class:`pipeline.dedup.stage.Dedup` wires them.

Every step reads its input from hand-off files (:func:`.work.receive`) and hands its output on the same way,
so only file references cross the shuffles; the records it reads and writes are :mod:`.records`. Each step
yields one outcome per document it settles (``pipeline.accounting``) and its counters as ``(name, n)`` once
per bundle element, not per document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import xxhash

from pipeline.accounting import KEPT, OUTCOMES, dropped
from pipeline.dedup.boilerplate import CoreSketch, core_sketch, verify_pair
from pipeline.dedup.components import partition_of, read_labels
from pipeline.dedup.exact import exact_hash, key_id, rank_key
from pipeline.dedup.index import SKETCH_SCHEMA, is_indexed, write_index_file
from pipeline.dedup.lines import ChunkLines, load_line_keys
from pipeline.dedup.lsh import band_keys
from pipeline.dedup.minhash import MinHasher
from pipeline.dedup.records import (
    BandEntries,
    ExactCopy,
    FrequentLine,
    Kept,
    Member,
    Pair,
    Probe,
    Survivor,
    Weight,
    add_band_batches,
    add_batches,
    unpack_columns,
)
from pipeline.dedup.work import (
    BANDS,
    CLUSTERS,
    COPIES,
    COUNTERS,
    PAIRS,
    SURVIVORS,
    WEIGHTS,
    Chunk,
    chunk_file,
    chunk_name,
    hand_off,
    hand_off_lines,
    handed,
    iter_chunk,
    list_array,
    load_sketches,
    open_parquet,
    receive,
    send,
    sketch_file,
    write_parquet,
)
from schemas.documents import DOCUMENT_SCHEMA

if TYPE_CHECKING:
    from pipeline.dedup.stage import DedupConfig

READ_COLUMNS = ["id", "source", "text", "quality_score", "url", "source_file", "source_offset", "date"]


def _tagged(tag: str, elements: Iterable[Any]) -> Iterator[beam.pvalue.TaggedOutput]:
    return (beam.pvalue.TaggedOutput(tag, e) for e in elements)


def _counters(counts: dict[str, int]) -> Iterator[beam.pvalue.TaggedOutput]:
    return _tagged(COUNTERS, counts.items())


def _by_partition(rows: Iterable[Any], key: Callable[[Any], str], partitions: int) -> dict[int, list]:
    """Records -> lists by the partition of their node key (:func:`.components.partition_of`)."""
    out: dict[int, list] = {}
    for row in rows:
        out.setdefault(partition_of(key(row), partitions), []).append(row)
    return out


def cluster_line(doc_id: str, cluster: str, source: str, survivor: bool, reason: str | None) -> str:
    """One ``clusters`` line."""
    return json.dumps(
        {"id": doc_id, "cluster": cluster, "source": source, "survivor": survivor, "reason": reason}, ensure_ascii=False
    )


class ReadChunk(beam.DoFn):
    """One input chunk -> its exact-group members (:class:`.records.Member` batches by the partition of their
    group hash); writes the chunk's sketch file.

    Malformed or blank rows become counted drops. Every other row gets its node key (survivor-ordered, see
    :func:`.exact.rank_key`), the 128-bit hash of its normalised text, and (near pass on) the band hashes of
    its core's MinHash signature and its verification sketch (:func:`.boilerplate.core_sketch`: the core is
    the text without the boilerplate lines of its group, which the element brings from :mod:`.lines`). The sketch file
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

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        chunk, joined = element
        ((path, groups),) = joined["task"]
        lines = ChunkLines(
            receive(FrequentLine, joined["lines"]), self.cfg.near.boilerplate, lambda: load_line_keys(self.work, chunk)
        )
        counts: dict[str, int] = {}
        emitted: list[Any] = []
        members: dict[int, list] = {}
        pos = 0
        offset = 0

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal pos, offset
            for batch in iter_chunk(path, groups, READ_COLUMNS):
                cols: dict[str, list] = {name: [] for name in SKETCH_SCHEMA.names}
                sketches: list[np.ndarray] = []
                cores: list[np.ndarray | None] = []
                mine: list[Member] = []
                for i, row in enumerate(batch.to_pylist()):
                    doc = self._row(row, offset + i, lines, counts, emitted)
                    if doc is None:
                        continue
                    key, h, band_hashes, (sketch, core) = doc
                    for name, value in (
                        ("key", key),
                        ("id", row["id"]),
                        ("source", row["source"]),
                        ("exact_hash", h),
                        ("row", offset + i),
                    ):
                        cols[name].append(value)
                    sketches.append(sketch)
                    cores.append(core)
                    provenance = json.dumps(
                        [row.get("url"), row.get("source_file"), row.get("source_offset"), row.get("date")], default=str
                    )
                    group = (
                        bytes.fromhex(h)
                        if self.cfg.exact.enabled
                        else xxhash.xxh3_128_digest(key.encode("utf-8", "surrogatepass"))
                    )
                    order = xxhash.xxh3_64_intdigest(provenance.encode("utf-8", "surrogatepass"))
                    mine.append(Member(group, key, row["source"], order, chunk, pos, band_hashes))
                    pos += 1
                offset += batch.num_rows
                if mine:
                    add_batches(members, Member, mine, lambda m: m.partition(self.partitions))
                cols["bands"] = list_array([m.bands for m in mine])
                cols["sketch"] = list_array(sketches)
                cols["core"] = list_array(cores)
                yield pa.RecordBatch.from_pydict(cols, schema=SKETCH_SCHEMA)

        # The sketch file is streamed (one record batch at a time); entries leave after it is in place, so
        # nothing downstream can look up a sketch that is not yet written.
        write_parquet(sketch_file(self.work, chunk), batches(), SKETCH_SCHEMA)
        yield from emitted
        yield from hand_off(self.work, "members", f"c{chunk:05d}", members)
        yield from _counters(counts)
        yield from _tagged(COUNTERS, lines.counters())

    def _row(self, row: dict, at: int, lines: ChunkLines, counts: dict[str, int], emitted: list) -> tuple | None:
        """``(node key, text hash, band hashes, stored sketch)`` of a valid row (the chunk's row ``at``); None
        (and a drop) otherwise."""
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
            return key, h, empty, (empty, None)
        group_lines = lines.of(row.get("url"))
        try:
            keys = None if group_lines is None else lines.observe(text, group_lines, at)
            sketch = core_sketch(text, self.cfg.near.shingles, self.hasher, group_lines, keys)
        except (UnicodeError, ValueError):  # still exact-deduplicated and kept, just never clustered
            sketch = None
        if sketch is None:
            return key, h, empty, (empty, None)
        if sketch.has_boilerplate:
            counts["documents_with_boilerplate"] = counts.get("documents_with_boilerplate", 0) + 1
        band_hashes = np.array([b for _, b in band_keys(sketch.signature, self.bands, self.rows)], dtype=np.uint64)
        return key, h, band_hashes, _stored(sketch, self.cfg.near.verify)


def _stored(sketch: CoreSketch, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``(sketch, core)`` columns a sketch file keeps for verification ``mode`` (:class:`.records.Stored`)."""
    if mode == "containment":
        return sketch.full, sketch.core if sketch.has_boilerplate else None
    if mode == "jaccard":
        return sketch.core, None
    if mode == "signature":
        return sketch.signature.astype(np.uint64), None
    return np.zeros(0, dtype=np.uint64), None


class ExactPartition(beam.DoFn):
    """One partition of exact-group members -> each group's survivor; the rest dropped.

    Groups are found by hash inside the partition (every member of a group lands in the partition of its
    group hash). The survivor is the smallest by node key, then provenance, then position, so the choice is
    total and independent of arrival order. An earlier run's indexed survivor in a group makes every new
    member ``exact_duplicate_of_index``. With exact dedup off, groups are keyed by node key: only rows with
    the same id *and* text meet, and the extra ones are ``duplicate_id``.

    Survivors leave in hand-off files: their band entries by band partition (``BANDS``), and by node-key
    partition the :class:`.records.Survivor` (``SURVIVORS``) and the dropped :class:`.records.ExactCopy`
    (``COPIES``) for :class:`Decide`, so ``clusters`` lists a copy under the cluster its survivor ends
    up in, and the :class:`.records.Weight` ``1 + copies`` of survivors with copies (``WEIGHTS``) for
    :class:`ClusterWeights`.
    """

    def __init__(self, exact: bool, near: bool, partitions: int, work: str):
        self.exact = exact
        self.near = near
        self.partitions = partitions
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        part, paths = element
        groups: dict[bytes, list[Member]] = {}
        for m in receive(Member, paths):
            groups.setdefault(m.group, []).append(m)
        counts: dict[str, int] = {}
        winners: list[tuple[Member, int]] = []  # each group's survivor and its number of exact copies
        copies: list[ExactCopy] = []
        lines: list[str] = []
        for members in groups.values():
            yield from self._group(members, winners, copies, counts, lines)
        producer = f"x{part:05d}"
        for shard_file in hand_off_lines(self.work, producer, lines, self.partitions):
            yield beam.pvalue.TaggedOutput(CLUSTERS, shard_file)
        yield from _counters(counts)
        survivors = [Survivor(m.key, m.source, m.chunk, m.pos, n) for m, n in winners]
        weights = [Weight(s.key, 1 + s.copies) for s in survivors if s.copies]
        for tag, kind, record, rows, key in (
            (WEIGHTS, "weights", Weight, weights, lambda w: w.key),
            (COPIES, "copies", ExactCopy, copies, lambda c: c.survivor),
            (SURVIVORS, "survivors", Survivor, survivors, lambda s: s.key),
        ):
            refs = send(self.work, kind, producer, record, _by_partition(rows, key, self.partitions))
            yield from _tagged(tag, refs)
        if self.near:
            banded = [m for m, _ in winners if m.bands.size]
            if len(banded) < len(winners):
                yield beam.pvalue.TaggedOutput(COUNTERS, ("documents_without_shingles", len(winners) - len(banded)))
            if banded:
                entries: dict[int, list] = {}
                add_band_batches(
                    entries,
                    [m.key for m in banded],
                    np.array([m.chunk for m in banded], dtype=np.int32),
                    np.array([m.pos for m in banded], dtype=np.int64),
                    np.stack([m.bands for m in banded]),
                    self.partitions,
                )
                yield from _tagged(BANDS, hand_off(self.work, "bands", producer, entries))

    def _group(
        self,
        members: list[Member],
        winners: list[tuple[Member, int]],
        copies: list[ExactCopy],
        counts: dict[str, int],
        lines: list[str],
    ) -> Iterator[Any]:
        new = [m for m in members if not m.indexed]
        if not new:
            return
        indexed = [m.key for m in members if m.indexed]
        if indexed:
            cluster = key_id(min(indexed))
            for m in new:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("exact_duplicate_of_index"))
                lines.append(cluster_line(key_id(m.key), cluster, m.source, False, "exact_duplicate_of_index"))
            return
        best = min(new, key=lambda m: (m.key, m.order, m.chunk, m.pos))
        n_copies = 0
        if len(new) > 1:
            if self.exact:
                counts["exact_duplicate_groups"] = counts.get("exact_duplicate_groups", 0) + 1
            for m in new:
                if m is best:
                    continue
                if self.exact:
                    n_copies += 1
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("exact_duplicate"))
                    copies.append(ExactCopy(best.key, key_id(m.key), m.source))
                else:  # the same (id, text) twice with exact dedup off
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate_id"))
        winners.append((best, n_copies))


def bucket_candidates(keys: list[str], all_pairs_max: int) -> tuple[list[tuple[str, str]], bool]:
    """One LSH bucket's node keys -> its candidate pairs (all pairs when small, a star on the minimum when
    oversized) and whether it was oversized. Indexed-indexed pairs are never formed (earlier runs settled
    them); indexed keys sort first, so a bucket whose largest key is indexed holds nothing new."""
    keys = sorted(set(keys))
    if len(keys) < 2 or is_indexed(keys[-1]):
        return [], False
    if len(keys) <= all_pairs_max:
        return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :] if not is_indexed(b)], False
    return [(keys[0], b) for b in keys[1:] if not is_indexed(b)], True


class BucketPairs(beam.DoFn):
    """One band partition's :class:`.records.BandEntries` -> its candidate pairs, found by sorting the band
    entries (no per-bucket element).

    Every entry of a bucket ``(band, hash)`` lands in partition ``hash % partitions``, so the sort sees whole
    buckets. Only runs of two or more equal ``(band, hash)`` reach Python. A :class:`.records.Pair` is handed
    on under the chunk of ``a``'s sketch, so the next step both removes repeats (a pair found in several
    bands) and reads ``a``'s sketch from one file. Holds the partition's band entries (node keys, not texts).
    """

    def __init__(self, all_pairs_max: int, work: str):
        self.all_pairs_max = all_pairs_max
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        part, paths = element
        entries = [unpack_columns(BandEntries, batch) for batch in handed(paths)]
        keys: list[str] = []
        docs: list[np.ndarray] = []
        for e in entries:
            docs.append(e.doc.astype(np.int64) + len(keys))  # document numbers across all batches
            keys.extend(e.keys)
        band, hsh, doc = (np.concatenate(cols) for cols in ([e.band for e in entries], [e.hash for e in entries], docs))
        chunk, position = np.concatenate([e.chunk for e in entries]), np.concatenate([e.pos for e in entries])
        order = np.lexsort((hsh, band))
        band, hsh = band[order], hsh[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (band[1:] != band[:-1]) | (hsh[1:] != hsh[:-1])
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(order))
        multi = ends - starts >= 2
        out: dict[int, set[Pair]] = {}
        oversized = 0
        for s, e in zip(starts[multi].tolist(), ends[multi].tolist()):
            members = doc[order[s:e]].tolist()
            where = {keys[i]: (int(chunk[i]), int(position[i])) for i in members}
            pairs, big = bucket_candidates(list(where), self.all_pairs_max)
            oversized += big
            for a, b in pairs:
                (chunk_a, pos_a), (chunk_b, pos_b) = where[a], where[b]
                out.setdefault(chunk_a, set()).add(Pair(a, pos_a, b, chunk_b, pos_b))
        if oversized:
            yield beam.pvalue.TaggedOutput(COUNTERS, ("oversized_buckets", oversized))
        yield from send(self.work, "pairs", f"b{part:05d}", Pair, {c: sorted(pairs) for c, pairs in out.items()})


class ShipFirst(beam.DoFn):
    """The candidate pairs whose first node's sketch is in chunk ``c`` -> the distinct pairs, each shipped with
    that sketch to the chunk of its second node (a :class:`.records.Probe`).

    Reads only the needed sketches of the chunk's file. With ``verify="none"`` the distinct pairs are the
    verified ones (tagged ``PAIRS``).
    """

    def __init__(self, mode: str, sketch_files: list[str], work: str):
        self.mode = mode
        self.sketch_files = sketch_files
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        chunk, paths = element
        pairs = set(receive(Pair, paths))
        if not pairs:
            return
        yield beam.pvalue.TaggedOutput(COUNTERS, ("candidate_pairs", len(pairs)))
        if self.mode == "none":
            yield beam.pvalue.TaggedOutput(PAIRS, sorted((p.a, p.b) for p in pairs))
            return
        sketches = load_sketches(self.sketch_files[chunk], (p.pos_a for p in pairs))
        probes: dict[int, list[Probe]] = {}
        empty = np.zeros(0, dtype=np.uint64)
        for p in sorted(pairs):
            sketch, core = sketches[p.pos_a]
            probe = Probe(p.a, p.b, p.pos_b, sketch, empty if core is None else core, int(core is not None))
            probes.setdefault(p.chunk_b, []).append(probe)
        yield from send(self.work, "probes", f"s{chunk:05d}", Probe, probes)


class VerifyPairs(beam.DoFn):
    """The probes whose second sketch is in chunk ``c`` -> the pairs that really match, as one batch of edges,
    by :func:`.boilerplate.verify_pair` (the same test ``ccgpt dedup eval`` applies)."""

    def __init__(self, mode: str, threshold: float, min_overlap: int, sketch_files: list[str]):
        self.mode = mode
        self.threshold = threshold
        self.min_overlap = min_overlap
        self.sketch_files = sketch_files

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        chunk, paths = element
        probes = list(receive(Probe, paths))
        if not probes:
            return
        sketches = load_sketches(self.sketch_files[chunk], (p.pos_b for p in probes))
        mode, threshold, floor = self.mode, self.threshold, self.min_overlap
        verified = [
            (p.a, p.b)
            for p in probes
            if verify_pair(mode, p.stored_a().verifiable(mode), sketches[p.pos_b].verifiable(mode), threshold, floor)
        ]
        if verified:
            yield beam.pvalue.TaggedOutput(COUNTERS, ("verified_pairs", len(verified)))
            yield verified


class ClusterWeights(beam.DoFn):
    """One node-key partition's component labels and survivor weights -> a :class:`.records.Weight` per
    labelled node under its label (``1 + exact copies``, so cluster sizes count exact copies too), handed on
    by the partition of the label."""

    def __init__(self, partitions: int, work: str):
        self.partitions = partitions
        self.work = work

    def process(self, element: tuple[int, dict[str, Iterable[str]]]) -> Iterator[tuple[int, str]]:
        part, grouped = element
        weights = {w.key: w.weight for w in receive(Weight, grouped["weight"])}
        shares = (Weight(n.label, weights.get(n.node, 1)) for n in read_labels(grouped["label"]))
        by_label = _by_partition(shares, lambda w: w.key, self.partitions)
        yield from send(self.work, "cluster-weights", f"p{part:05d}", Weight, by_label)


class ClusterSizes(beam.DoFn):
    """One label partition's weights -> each cluster's size, handed to :class:`Decide` of the same partition
    (a label is its survivor's node key)."""

    def __init__(self, work: str):
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[tuple[int, str]]:
        part, refs = element
        sizes: dict[str, int] = {}
        for w in receive(Weight, refs):
            sizes[w.key] = sizes.get(w.key, 0) + w.weight
        yield from send(
            self.work,
            "cluster-sizes",
            f"p{part:05d}",
            Weight,
            {part: [Weight(*kv) for kv in sorted(sizes.items())]},
        )


class Decide(beam.DoFn):
    """One node-key partition with its survivors, exact copies, component labels and sizes -> each
    survivor's fate: kept (a :class:`.records.Kept` per chunk for :class:`WriteChunk`, with the annotations of
    clustered ones) or ``near_duplicate``, and one ``clusters`` line per cluster member.

    A document belongs to a cluster when it is in a near-duplicate component or has exact copies; the
    cluster id is the survivor's document id, and its size counts exact copies too.
    """

    def __init__(self, work: str, shards: int):
        self.work = work
        self.shards = shards  # the cluster files the output has

    def process(self, element: tuple[int, dict[str, Iterable[str]]]) -> Iterator[Any]:
        part, grouped = element
        lines: list[str] = []
        copies: dict[str, list[ExactCopy]] = {}
        for c in receive(ExactCopy, grouped["copies"]):
            copies.setdefault(c.survivor, []).append(c)
        labels = {n.node: n.label for n in read_labels(grouped["label"])}
        sizes = {w.key: w.weight for w in receive(Weight, grouped["size"])}
        counts: dict[str, int] = {}
        kept: dict[int, tuple[list[int], dict[int, str]]] = {}
        for s in receive(Survivor, grouped["survivor"]):
            extra = yield from self._node(s, labels.get(s.key), sizes.get(s.key), copies.get(s.key, []), counts, lines)
            if extra is None:
                continue
            positions, notes = kept.setdefault(s.chunk, ([], {}))
            positions.append(s.pos)
            if extra:
                notes[s.pos] = json.dumps(extra, sort_keys=True)
        yield from _counters(counts)
        for shard_file in hand_off_lines(self.work, f"d{part:05d}", lines, self.shards):
            yield beam.pvalue.TaggedOutput(CLUSTERS, shard_file)
        for chunk, (positions, notes) in sorted(kept.items()):
            yield chunk, Kept(np.array(positions, dtype=np.int64).tobytes(), notes)

    @staticmethod
    def _node(
        s: Survivor,
        label: str | None,
        size: int | None,
        copies: list[ExactCopy],
        counts: dict[str, int],
        lines: list[str],
    ):
        """Outcome and cluster lines of one survivor; returns its annotations (None when dropped)."""
        doc_id = key_id(s.key)
        cluster_key = label if label is not None else (s.key if s.copies else None)
        extra: dict[str, Any] = {}
        if cluster_key is not None:
            cluster = key_id(cluster_key)
            survivor = cluster_key == s.key
            reason = "near_duplicate_of_index" if is_indexed(cluster_key) else "near_duplicate"
            lines.append(cluster_line(doc_id, cluster, s.source, survivor, None if survivor else reason))
            for c in copies:
                lines.append(cluster_line(c.id, cluster, c.source, False, "exact_duplicate"))
            if not survivor:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
                return None
            size = int(size) if size is not None else 1 + s.copies
            extra.update({"dedup_cluster": cluster, "cluster_size": size})
            if s.copies:
                extra["exact_duplicates"] = s.copies
            counts[f"cluster_size:{size}"] = counts.get(f"cluster_size:{size}", 0) + 1
        yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
        counts[f"kept:{s.source}"] = counts.get(f"kept:{s.source}", 0) + 1
        return extra


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


class WriteChunk(beam.DoFn):
    """One chunk's kept positions -> its output file ``documents-<chunk>-of-<chunks>.parquet`` (and its
    ``index/`` file): the kept rows re-read from the input chunk, in input order, annotations merged.

    The file a document lands in is its input chunk and its place is its input order, so the same input and
    settings give the same bytes in any process, on any runner, whatever order the shuffles delivered.
    Streams the chunk one record batch at a time.
    """

    def __init__(self, chunks: list[Chunk], work: str, folder: str, index: bool):
        self.chunks = chunks
        self.work = work
        self.folder = folder
        self.index = index
        self.names = chunk_name("documents"), chunk_name("index")  # tagged by the attempt, on the driver

    def process(self, element: tuple[int, Iterable[Kept]]) -> Iterator[None]:
        chunk, kept = element
        extra: dict[int, str] = {}  # sketch-file position -> annotations JSON ("" when not clustered)
        for k in kept:
            extra.update(dict.fromkeys(np.frombuffer(k.positions, dtype=np.int64).tolist(), ""))
            extra.update(k.notes)
        sketches = sketch_file(self.work, chunk)
        input_rows = open_parquet(sketches).read(columns=["row"]).column(0).to_numpy()
        positions = np.array(sorted(extra), dtype=np.int64)
        by_row = dict(zip(input_rows[positions].tolist(), positions.tolist()))
        path, groups = self.chunks[chunk]
        n = len(self.chunks)

        def documents() -> Iterator[pa.Table]:
            start = 0
            for batch in iter_chunk(path, groups):
                rows = [r for r in range(start, start + batch.num_rows) if r in by_row]
                if rows:
                    picked = batch.take(pa.array([r - start for r in rows], type=pa.int64())).to_pylist()
                    out = []
                    for r, row in zip(rows, picked):
                        notes = extra[by_row[r]]
                        out.append(_annotate(row, json.loads(notes) if notes else {}))
                    yield pa.Table.from_pylist(out, schema=DOCUMENT_SCHEMA)
                start += batch.num_rows

        written = write_parquet(chunk_file(self.folder, self.names[0], chunk, n), documents(), DOCUMENT_SCHEMA)
        if written != len(extra):
            raise RuntimeError(f"dedup: chunk {chunk} ({path}): wrote {written} of {len(extra)} kept rows")
        if self.index:
            write_index_file(sketches, positions, self.folder, self.names[1], chunk, n)
        return iter(())
