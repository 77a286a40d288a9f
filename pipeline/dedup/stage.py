"""``ccgpt dedup``: exact and MinHash-LSH near-duplicate removal within and across document tables, on Beam.

All inputs (the quality-filtered crawl and curated sources such as books or docs) go through one pipeline, so
a crawl page that copies a book is found like any other duplicate and removed from the *crawl*: the
survivor of every group is chosen by source priority, then quality score, then id (:mod:`.exact`).

The pipeline graph, every step a Beam transform (nothing is collected on the driver):

1. **Prepare** each row: malformed rows -> ``dropped:invalid_record``, blank text -> ``dropped:empty_text``;
   the rest get their *node key* (survivor-ordered, see :func:`.exact.rank_key`) and the 128-bit hash of
   their normalised text.
2. **Exact**: GroupByKey on the text hash; the smallest node key survives, the others are
   ``dropped:exact_duplicate``. The group is scanned once to find the survivor holding only the best row
   (and, only for groups with copies, once more to name them), so a page repeated a million times costs no
   memory.
3. **Sketch** the survivors in batches: word (or char) n-gram shingles, MinHash signature bit-identical to
   datasketch, band hashes, and the document's 64-bit shingle-hash set (or its signature) for verification.
4. **LSH buckets**: band entries travel as raw numpy bytes grouped by ``band hash % partitions`` (one element
   per partition per batch, not one per band per document); each partition sorts its entries by
   ``(band, hash)`` and only runs of equal keys reach Python: small buckets give all pairs, oversized ones a
   star on their minimum (:func:`.lsh.bucket_pairs`).
5. **Verify** candidates by the true Jaccard of the shingle sets (default; or by the signature estimate, or
   not at all): pairs grouped by the partition of their first node meet that partition's sketches (which
   also removes pairs found in several bands), the first node's set is shipped to the second node's
   partition, and the pair is checked there. Both joins are by partition, with batches as elements.
6. **Connected components** of the verified pairs on the runner (:mod:`.components`, the same partitioned
   batching): because node keys sort survivor-first, each component's label *is* its survivor. Cluster
   sizes add up each member's exact copies.
7. **Finish**: CoGroupByKey of rows, exact copies, labels, cluster sizes and index columns by *output shard*
   (``partition_of(node key, shards)``). A *cluster* is a near-duplicate component or an exact group (or
   both); its survivor is kept with ``{"dedup_cluster", "cluster_size"}`` (and ``exact_duplicates`` when it
   had exact copies) added to its annotations, the other near-duplicates are ``dropped:near_duplicate``,
   and every member gets a line in ``clusters.jsonl``. Each shard writes its kept documents (and index
   rows) as one Parquet file sorted by id, and ``clusters.jsonl`` is written sorted, so a rerun gives the
   same bytes in any process (Beam's grouping order follows the per-process hash seed; the file a row lands
   in and its place in the file do not).

Every row yields exactly one outcome (``pipeline.accounting``), so ``stats.json`` is exact on any runner.
Counters for the extras (per-source read/kept, candidate and verified pairs, cluster sizes) travel the same
way through a temporary counts file that is folded into ``stats.json`` and removed.

Output folder: ``documents-NNNNN-of-NNNNN.parquet`` (kept documents of every source), ``stats.json``,
``outcomes.jsonl``, ``clusters.jsonl`` (``{"id", "cluster", "source", "survivor", "reason"}`` per cluster
member, sorted; ``cluster`` is the survivor's id, ``reason`` is ``exact_duplicate`` or ``near_duplicate`` for
the dropped members, null for the survivor) and ``index/`` (below). The shard files and ``clusters.jsonl`` are
written by the workers straight into the stage's output folder (atomic rename per file), which like every
ccgpt stage must be a path the workers share with the driver.

**Incremental dedup.** ``index/`` holds one Parquet row per kept document (``INDEX_SCHEMA``: node key, id,
source, exact text hash, LSH band hashes, and the sorted shingle-hash set or signature the verification
needs) plus ``meta.json`` with the settings that made them. A later run with ``DedupConfig.against`` set to
earlier output folders reads those indexes into the same graph, never their documents: an indexed entry
joins the exact groups (every new copy is ``dropped:exact_duplicate_of_index``), the LSH buckets and the
verification joins under a node key that sorts before every new one, so a component holding an indexed
document is labelled by it and its new members are ``dropped:near_duplicate_of_index``. Indexed documents
are never emitted again and indexed-indexed pairs are never formed. Each run's index holds its own
survivors only: to deduplicate crawl N against all earlier ones, pass all earlier folders. The settings that
decide hashes and bands (normalisation, shingles, num_perm, seed, scheme, hash, bands x rows, verify mode)
must match the indexes' (checked before the pipeline starts).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.accounting import (
    KEPT,
    OUTCOMES,
    WriteOutcomes,
    dropped,
    read_outcomes,
    stats_from_outcomes,
)
from pipeline.dedup.components import ConnectedComponents, auto_rounds, partition_of
from pipeline.dedup.exact import _RANK_WIDTH, ExactConfig, exact_hash, key_id, rank_key
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
from schemas.documents import DOCUMENT_SCHEMA, document_files, validate_document_schema
from schemas.stats import StageStats

log = logging.getLogger(__name__)

COUNTERS = "counters"
BANDS = "bands"
SKETCHES = "sketches"
CLUSTERS = "clusters"
EXACT_MEMBERS = "exact_members"
INDEX = "index"
PAIRS = "pairs"
INDEX_DIR = "index"
INDEX_META = "meta.json"
INDEX_VERSION = 1
# An indexed node's key: its earlier key with the rank digits replaced by this mark, which sorts before every
# digit, so a component holding an indexed document is labelled by it (and ``key_id`` still reads the id).
INDEX_MARK = "-"
INDEX_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("id", pa.string()),
    ("source", pa.string()),
    ("exact_hash", pa.string()),
    ("bands", pa.list_(pa.uint64())),
    ("sketch", pa.list_(pa.uint64())),
])
_COUNTS_FILE = "_dedup_counts.jsonl"


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
    # Verification removes false positives, so a missed duplicate costs more than an extra candidate: weighting
    # false negatives 0.7 (datasketch's default is 0.5/0.5) takes the syndicated-news recall at 0.8 from 0.964
    # to 1.0 for 4 % more candidate pairs, at unchanged precision.
    fp_weight: float = field(default=0.3, metadata={"help": "weight of false positives when choosing bands x rows"})
    fn_weight: float = field(default=0.7, metadata={"help": "weight of false negatives when choosing bands x rows"})
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
    # Band entries, sketches, candidate pairs and component edges cross the shuffles in batches grouped by
    # partition; a partition's band entries (about 11 small entries per document) and needed sketches are
    # held by one worker, so the count grows with the input to keep that bounded, and has a floor so a few
    # local workers all get work.
    partitions: int = field(
        default=0,
        metadata={"help": "shuffle partitions for LSH, verification and components (0: max(8, docs / 25000))"},
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
    output_shards: int = field(
        default=0,
        metadata={"help": "documents-*.parquet files (by hash of the node key; 0: one per 25000 input rows)"},
    )


# --- DoFns --------------------------------------------------------------------------------------------------


class Prepare(beam.DoFn):
    """Row -> ``(text hash, (node key, row))``; malformed or blank rows become counted drops."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def process(self, row: Any) -> Iterator[Any]:
        source = row.get("source") if isinstance(row, dict) else None
        yield beam.pvalue.TaggedOutput(COUNTERS, f"read:{source if isinstance(source, str) else '?'}")
        if not isinstance(row, dict):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_record"))
            return
        doc_id, text = row.get("id"), row.get("text")
        if not (isinstance(doc_id, str) and doc_id and isinstance(source, str) and source):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_record"))
            return
        if text is None or (isinstance(text, str) and not text.strip()):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("empty_text"))
            return
        if not isinstance(text, str):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_record"))
            return
        quality = row.get("quality_score")
        try:
            h = exact_hash(text, self.cfg.exact.normalize)
        except (UnicodeError, ValueError):  # e.g. a lone surrogate from a non-Parquet source
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_record"))
            return
        key = rank_key(source, quality if isinstance(quality, (int, float)) else None, doc_id, h,
                       self.cfg.source_priority, self.cfg.lowest_priority_sources)
        yield h, (key, row)


def _tiebreak(item: tuple[str, dict]) -> tuple:
    """Total order on (node key, row): equal keys (same id and text) fall back to the record's provenance."""
    key, row = item
    offset = row.get("source_offset")
    return (key, str(row.get("url") or ""), str(row.get("source_file") or ""),
            offset if isinstance(offset, int) else -1, str(row.get("date") or ""))


class ExactSurvivor(beam.DoFn):
    """One exact-duplicate group -> its survivor ``(node key, (row, copies dropped))``; the rest dropped.

    The dropped copies are also emitted as ``(survivor key, (id, source))`` so ``clusters.jsonl`` lists them
    under the cluster their survivor ends up in.
    """

    def process(self, element: tuple[str, Iterable[tuple[str, dict | None]]]) -> Iterator[Any]:
        _, members = element
        best, best_order, n, indexed = None, None, 0, None
        for item in members:  # one pass, holding only the best row (and the first indexed key)
            if item[1] is None:  # an earlier run's survivor (incremental dedup)
                if indexed is None or item[0] < indexed:
                    indexed = item[0]
                continue
            n += 1
            order = _tiebreak(item)
            if best is None or order < best_order:
                best, best_order = item, order
        if best is None:
            return
        if indexed is not None:
            cluster = key_id(indexed)
            for key, row in members:
                if row is not None:
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("exact_duplicate_of_index"))
                    yield beam.pvalue.TaggedOutput(CLUSTERS, _cluster_line(row["id"], cluster, row["source"], False,
                                                                           "exact_duplicate_of_index"))
            return
        if n > 1:
            yield beam.pvalue.TaggedOutput(COUNTERS, "exact_duplicate_groups")
            # Second pass (GroupByKey values re-iterate on every Beam runner; large groups are re-read from
            # state, as new objects, so the survivor is recognised by value, exactly once).
            skipped = False
            for item in members:
                if item[1] is None:
                    continue
                if not skipped and _tiebreak(item) == best_order:
                    skipped = True
                    continue
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("exact_duplicate"))
                yield beam.pvalue.TaggedOutput(EXACT_MEMBERS, (best[0], (item[1]["id"], item[1]["source"])))
        yield best[0], (best[1], n - 1)


def _no_exact(element: tuple[str, tuple[str, dict]]) -> tuple[str, tuple[dict, int]]:
    """Exact dedup disabled: pass every prepared row on as ``(node key, (row, 0))``."""
    _, (key, row) = element
    return key, (row, 0)


class Sketch(beam.DoFn):
    """A batch of survivors -> their LSH band keys and verification sketches, grouped by shuffle partition.

    Why batches: one element per band per document (11 per document at the default banding) made the local
    runner's per-element cost the bulk of dedup's time. A batch of documents leaves as at most one element
    per partition per output: band entries as numpy arrays ``(band index, band hash, node keys)`` under
    ``band hash % partitions``, sketches as ``(node keys, sketches)`` under ``partition_of(node key)``, and
    the index columns under the node key's output shard.
    """

    def __init__(self, near: NearConfig, bands: int, rows: int, partitions: int, shards: int, index: bool = False):
        self.near = near
        self.bands = bands
        self.rows = rows
        self.partitions = partitions
        self.shards = shards
        self.index = index
        self.hasher = MinHasher(near.num_perm, near.seed, near.scheme, near.hash)

    def process(self, batch: list[tuple[str, tuple[dict, int]]]) -> Iterator[Any]:
        keys: list[str] = []
        hashes: list[list[int]] = []
        sketches: list[Any] = []
        index_rows: dict[int, list] = {}
        for key, (row, _) in batch:
            try:
                items = shingles(row["text"], self.near.shingles)
            except (UnicodeError, ValueError):  # the document still gets its outcome in Finish, unclustered
                items = []
            if not items:
                yield beam.pvalue.TaggedOutput(COUNTERS, "documents_without_shingles")
                continue
            signature, shingle_set = self.hasher.sketch(items)
            band_hashes = [h for _, h in band_keys(signature, self.bands, self.rows)]
            sketch = None
            if self.near.verify == "jaccard":
                sketch = shingle_set
            elif self.near.verify == "signature":
                sketch = signature
            keys.append(key)
            hashes.append(band_hashes)
            sketches.append(sketch)
            if self.index:
                # Raw bytes, not lists: Beam's fast coder pickles every int >= 2**63 one by one (half of all
                # 64-bit hashes are), which made these lists the bulk of the runner's encoding time.
                index_rows.setdefault(partition_of(key, self.shards), []).append(
                    (key, np.array(band_hashes, dtype=np.uint64).tobytes(),
                     b"" if sketch is None else np.asarray(sketch, dtype=np.uint64).tobytes()))
        if keys:
            yield from _band_elements(keys, np.array(hashes, dtype=np.uint64), self.partitions)
            if self.near.verify != "none":
                yield from _sketch_elements(keys, sketches, self.partitions)
        for shard, entries in index_rows.items():
            yield beam.pvalue.TaggedOutput(INDEX, (shard, entries))


def _band_elements(keys: list[str], hashes: np.ndarray, partitions: int) -> Iterator[Any]:
    """``hashes[i, band]`` of node ``keys[i]`` -> one ``(band hash % partitions, (bands, hashes, keys))`` each.

    Arrays travel as raw bytes: Beam's fast coder passes bytes through but pickles a numpy array (tens of
    microseconds each), which showed up as the largest single cost in a profile of the local runner.
    """
    part = hashes % np.uint64(partitions)
    for p in np.unique(part):
        doc, band = np.nonzero(part == p)
        yield beam.pvalue.TaggedOutput(BANDS, (int(p), (band.astype(np.uint16).tobytes(), hashes[doc, band].tobytes(),
                                                        [keys[i] for i in doc])))


def _sketch_elements(keys: list[str], sketches: list[Any], partitions: int) -> Iterator[Any]:
    """Node keys and their sketches -> one ``(partition, (keys, sketches))`` per partition of the keys."""
    out: dict[int, tuple[list, list]] = {}
    for key, sketch in zip(keys, sketches):
        ks, ss = out.setdefault(partition_of(key, partitions), ([], []))
        ks.append(key)
        ss.append(np.asarray(sketch, dtype=np.uint64).tobytes())  # bytes: see _band_elements
    for p, value in out.items():
        yield beam.pvalue.TaggedOutput(SKETCHES, (p, value))


def _bucket_candidates(keys: list[str], all_pairs_max: int) -> tuple[list[tuple[str, str]], bool]:
    """One LSH bucket's node keys -> its candidate pairs (all pairs when small, a star on the minimum when
    oversized) and whether it was oversized. Indexed-indexed pairs are never formed (earlier runs settled
    them); indexed keys sort first, so a bucket whose largest key is indexed holds nothing new."""
    keys = sorted(set(keys))
    if len(keys) < 2 or _is_indexed(keys[-1]):
        return [], False
    if len(keys) <= all_pairs_max:
        return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:] if not _is_indexed(b)], False
    return [(keys[0], b) for b in keys[1:] if not _is_indexed(b)], True


class BucketPairs(beam.DoFn):
    """One band partition -> its candidate pairs, found by sorting the band entries (no per-bucket element).

    Every entry of a bucket ``(band, hash)`` lands in partition ``hash % partitions``, so the sort sees whole
    buckets. Only runs of two or more equal ``(band, hash)`` reach Python. The pairs leave grouped by the
    partition of their first node, so the next step both removes repeats (a pair found in several bands) and
    joins the first node's sketch, per partition. Holds the partition's band entries (node keys, not texts).
    """

    def __init__(self, all_pairs_max: int, partitions: int):
        self.all_pairs_max = all_pairs_max
        self.partitions = partitions

    def process(self, element: tuple[int, Iterable[tuple[np.ndarray, np.ndarray, list]]]) -> Iterator[Any]:
        _, batches = element
        bands, hashes, keys = [], [], []
        for b, h, k in batches:
            bands.append(np.frombuffer(b, dtype=np.uint16))
            hashes.append(np.frombuffer(h, dtype=np.uint64))
            keys.extend(k)
        band, hsh = np.concatenate(bands), np.concatenate(hashes)
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
            pairs, big = _bucket_candidates([keys[i] for i in order[s:e].tolist()], self.all_pairs_max)
            oversized += big
            for pair in pairs:
                out.setdefault(partition_of(pair[0], self.partitions), set()).add(pair)
        if oversized:
            yield beam.pvalue.TaggedOutput(COUNTERS, ("oversized_buckets", oversized))
        for p, pairs in out.items():
            yield p, sorted(pairs)


def _is_indexed(key: str) -> bool:
    return key.startswith(INDEX_MARK)


class IndexEntries(beam.DoFn):
    """A batch of an earlier run's index rows -> their exact-group entries, band keys and sketches."""

    def __init__(self, exact: bool, near: bool, partitions: int):
        self.exact = exact
        self.near = near
        self.partitions = partitions

    def process(self, batch: list[dict]) -> Iterator[Any]:
        keys, hashes, sketches = [], [], []
        sketched_keys = []
        yield beam.pvalue.TaggedOutput(COUNTERS, ("indexed_documents", len(batch)))
        for row in batch:
            key = INDEX_MARK * _RANK_WIDTH + row["key"][_RANK_WIDTH:]
            if self.exact and row.get("exact_hash"):
                yield beam.pvalue.TaggedOutput("exact", (row["exact_hash"], (key, None)))
            if not self.near:
                continue
            bands = row.get("bands") or []
            if bands:
                keys.append(key)
                hashes.append([int(h) for h in bands])
            if row.get("sketch"):
                sketched_keys.append(key)
                sketches.append(np.asarray(row["sketch"], dtype=np.uint64))
        if keys:
            width = max(len(h) for h in hashes)
            if any(len(h) != width for h in hashes):  # not written by this stage: fall back to one row at a time
                for key, h in zip(keys, hashes):
                    yield from _band_elements([key], np.array([h], dtype=np.uint64), self.partitions)
            else:
                yield from _band_elements(keys, np.array(hashes, dtype=np.uint64), self.partitions)
        if sketched_keys:
            yield from _sketch_elements(sketched_keys, sketches, self.partitions)


class ShipFirst(beam.DoFn):
    """Partition ``p`` with its candidate pairs ``(a, b)`` (``a`` in ``p``) and its sketches -> the distinct
    pairs, each shipped with ``a``'s sketch to the partition of ``b``.

    Holds the partition's pairs and only the sketches they need. With ``verify="none"`` the distinct pairs
    are the verified ones (tagged ``PAIRS``).
    """

    def __init__(self, mode: str, partitions: int):
        self.mode = mode
        self.partitions = partitions

    def process(self, element: tuple[int, dict[str, Iterable]]) -> Iterator[Any]:
        _, grouped = element
        pairs: set = set()
        for batch in grouped["pairs"]:
            pairs.update(batch)
        if not pairs:
            return
        yield beam.pvalue.TaggedOutput(COUNTERS, ("candidate_pairs", len(pairs)))
        if self.mode == "none":
            yield beam.pvalue.TaggedOutput(PAIRS, sorted(pairs))
            return
        needed = {a for a, _ in pairs}
        mine: dict[str, Any] = {}
        for ks, ss in grouped["sketch"]:
            for k, s in zip(ks, ss):
                if k in needed:
                    mine[k] = s  # raw bytes, shipped on as they are
        out: dict[int, list] = {}
        for a, b in sorted(pairs):
            if a in mine:
                out.setdefault(partition_of(b, self.partitions), []).append((a, b, mine[a]))
        yield from out.items()


class VerifyPairs(beam.DoFn):
    """Partition ``p`` with its sketches and the shipped probes ``(a, b, sketch of a)`` (``b`` in ``p``) -> the
    pairs that really match, as one batch of edges."""

    def __init__(self, mode: str, threshold: float):
        self.mode = mode
        self.threshold = threshold

    def process(self, element: tuple[int, dict[str, Iterable]]) -> Iterator[Any]:
        _, grouped = element
        probes = [probe for batch in grouped["probes"] for probe in batch]
        if not probes:
            return
        needed = {b for _, b, _ in probes}
        mine: dict[str, Any] = {}
        for ks, ss in grouped["sketch"]:
            for k, s in zip(ks, ss):
                if k in needed:
                    mine[k] = np.frombuffer(s, dtype=np.uint64)
        sim = jaccard if self.mode == "jaccard" else signature_similarity
        verified = [(a, b) for a, b, other in probes
                    if b in mine and sim(np.frombuffer(other, dtype=np.uint64), mine[b]) >= self.threshold]
        if verified:
            yield beam.pvalue.TaggedOutput(COUNTERS, ("verified_pairs", len(verified)))
            yield verified


def _weight(element: tuple[str, tuple[dict, int]]) -> Iterator[tuple[str, int]]:
    """A surviving node stands for itself and its exact copies; only nodes with copies need saying so (a node
    without a weight counts 1), which keeps the size join to clustered nodes instead of every document."""
    key, (_, exact_copies) = element
    if exact_copies:
        yield key, 1 + exact_copies


def _weight_by_label(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, int]]:
    """``(component label, weight)`` for a node in a component, so sizes count exact copies too."""
    _, grouped = element
    labels, weights = list(grouped["label"]), list(grouped["weight"])
    if labels:
        yield labels[0], sum(weights) or 1


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


def _row_order(row: dict) -> tuple[str, str]:
    """Sort key of an output row: its id, then (for the rare same-id rows of exact dedup off) all its fields."""
    return row["id"], json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


def _write_parquet(rows: list[dict], schema: pa.Schema, path: str) -> None:
    """Write one Parquet file atomically: a worker retried after a crash rewrites the same bytes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def shard_file(folder: str, prefix: str, shard: int, shards: int) -> str:
    return os.path.join(folder, f"{prefix}-{shard:05d}-of-{shards:05d}.parquet")


class Finish(beam.DoFn):
    """One output shard with its nodes' rows, exact copies, component labels, sizes and index columns -> the
    shard's kept documents (and index rows) written as one Parquet file, near-duplicates dropped.

    A document belongs to a cluster when it is in a near-duplicate component or has exact copies; the
    cluster id is the survivor's document id, and its size counts exact copies too.

    **Byte-identical output.** Beam's grouping order follows each process's hash seed, so a sink that writes
    rows in arrival order gives a different file on every run. Here the file a document lands in is
    ``partition_of(node key, shards)`` (a content hash) and rows are written sorted by id, so the same input
    and settings give the same bytes in any process, on any runner. Holds one shard's rows (the stage sizes
    shards from the input row count).
    """

    def __init__(self, folder: str, shards: int, normalize: Any = None):
        self.folder = folder
        self.shards = shards
        self.normalize = normalize  # set when writing the index: the exact pass's normalisation

    def process(self, element: tuple[int, dict[str, Iterable]]) -> Iterator[Any]:
        shard, grouped = element
        nodes: dict[str, dict[str, list]] = {}

        def node(key: str) -> dict[str, list]:
            return nodes.setdefault(key, {"rows": [], "exact": [], "label": [], "size": [], "index": []})

        for key, value in grouped["rows"]:
            node(key)["rows"].append(value)
        for key, value in grouped["exact"]:
            node(key)["exact"].append(value)
        for key, value in grouped["label"]:
            node(key)["label"].append(value)
        for key, value in grouped["size"]:
            node(key)["size"].append(value)
        for entries in grouped.get("index") or []:
            for key, bands, sketch in entries:
                node(key)["index"].append((bands, sketch))
        docs: list[dict] = []
        index: list[dict] = []
        counts: dict[str, int] = {}
        for key in sorted(nodes):
            yield from self._node(key, nodes[key], docs, index, counts)
        for name, n in counts.items():  # one counter element per shard, not per document
            yield beam.pvalue.TaggedOutput(COUNTERS, (name, n))
        if docs:
            docs.sort(key=_row_order)
            _write_parquet(docs, DOCUMENT_SCHEMA, shard_file(self.folder, "documents", shard, self.shards))
        if index:
            index.sort(key=lambda r: r["key"])
            _write_parquet(index, INDEX_SCHEMA, shard_file(os.path.join(self.folder, INDEX_DIR), "index", shard,
                                                           self.shards))

    def _node(self, key: str, grouped: dict[str, list], docs: list[dict], index: list[dict],
              counts: dict[str, int]) -> Iterator[Any]:
        rows = sorted(grouped["rows"], key=lambda r: _tiebreak((key, r[0])))
        if not rows:
            return
        for _ in rows[1:]:  # only possible with exact dedup off: the same (id, text) twice
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate_id"))
        row, exact_copies = rows[0]
        labels = grouped["label"]
        cluster_key = labels[0] if labels else (key if exact_copies else None)
        extra: dict[str, Any] = {}
        if cluster_key is not None:
            cluster = key_id(cluster_key)
            survivor = cluster_key == key
            reason = "near_duplicate_of_index" if _is_indexed(cluster_key) else "near_duplicate"
            yield beam.pvalue.TaggedOutput(CLUSTERS, _cluster_line(row["id"], cluster, row["source"], survivor,
                                                                   None if survivor else reason))
            for member_id, member_source in grouped["exact"]:
                yield beam.pvalue.TaggedOutput(CLUSTERS, _cluster_line(member_id, cluster, member_source, False,
                                                                       "exact_duplicate"))
            if not survivor:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
                return
            sizes = grouped["size"]
            size = int(sizes[0]) if sizes else 1 + exact_copies
            extra.update({"dedup_cluster": cluster, "cluster_size": size})
            if exact_copies:
                extra["exact_duplicates"] = exact_copies
            counts[f"cluster_size:{size}"] = counts.get(f"cluster_size:{size}", 0) + 1
        yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
        counts[f"kept:{row['source']}"] = counts.get(f"kept:{row['source']}", 0) + 1
        docs.append(_annotate(row, extra))
        if self.normalize is not None:
            bands, values = grouped["index"][0] if grouped["index"] else (b"", b"")
            index.append({"key": key, "id": row["id"], "source": row["source"],
                          "exact_hash": exact_hash(row["text"], self.normalize),
                          "bands": np.frombuffer(bands, dtype=np.uint64).tolist(),
                          "sketch": np.frombuffer(values, dtype=np.uint64).tolist()})


class WriteSortedLines(beam.DoFn):
    """All lines of a text output (under one key) -> one file, sorted, written atomically: the same bytes
    whatever order the runner delivered them in. Holds the lines (one short JSON line per cluster member)."""

    def __init__(self, path: str):
        self.path = path

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[None]:
        _, lines = element
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in sorted(lines))
        os.replace(tmp, self.path)
        return iter(())


def _by_shard(shards: int):
    """``(node key, value)`` -> ``(output shard of the key, (node key, value))``."""
    def key(element: tuple[str, Any]) -> tuple[int, tuple[str, Any]]:
        return partition_of(element[0], shards), element
    return key


def _cluster_line(doc_id: str, cluster: str, source: str, survivor: bool, reason: str | None) -> str:
    return json.dumps({"id": doc_id, "cluster": cluster, "source": source, "survivor": survivor, "reason": reason},
                      ensure_ascii=False)


def _tag_unconverged(_: int) -> str:
    return "cc_unconverged_nodes"


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
            "enabled": near.enabled, "shingles": asdict(near.shingles), "num_perm": near.num_perm,
            "seed": near.seed, "scheme": near.scheme, "hash": near.hash, "bands": bands, "rows": rows,
            "verify": near.verify,
        },
    }


def _index_files(against: list[str], meta: dict[str, Any]) -> list[str]:
    """The index Parquet files of earlier dedup outputs, after checking their settings match ``meta``."""
    files: list[str] = []
    for folder in against:
        meta_path = os.path.join(folder, INDEX_DIR, INDEX_META)
        if not os.path.exists(meta_path):
            raise ValueError(f"dedup: --against {folder}: no {INDEX_DIR}/{INDEX_META} (not a dedup output "
                             "written with write_index)")
        with open(meta_path, encoding="utf-8") as fh:
            theirs = json.load(fh)
        if theirs.get("version") != INDEX_VERSION:
            raise ValueError(f"dedup: --against {folder}: index version {theirs.get('version')}, "
                             f"expected {INDEX_VERSION}")
        for part in ("exact", "near"):
            mine, other = meta[part], theirs.get(part, {})
            if not (mine["enabled"] and other.get("enabled")):
                if mine["enabled"]:
                    log.warning("dedup: --against %s: its index was written without the %s pass; its documents "
                                "take no part in this run's %s pass", folder, part, part)
                continue
            diff = sorted(k for k in mine if k != "enabled" and mine[k] != other.get(k))
            if diff:
                raise ValueError(f"dedup: --against {folder}: its {part} settings differ in {', '.join(diff)} "
                                 f"({ {k: other.get(k) for k in diff} } vs { {k: mine[k] for k in diff} })")
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
        (near.verify in ("jaccard", "signature", "none"),
         f"near.verify must be jaccard|signature|none, got {near.verify!r}"),
        (near.all_pairs_max >= 1, f"near.all_pairs_max must be >= 1, got {near.all_pairs_max}"),
        (near.cc_rounds >= 0, f"near.cc_rounds must be >= 0, got {near.cc_rounds}"),
        (near.partitions >= 0, f"near.partitions must be >= 0, got {near.partitions}"),
        (cfg.output_shards >= 0, f"output_shards must be >= 0, got {cfg.output_shards}"),
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
    shards = cfg.output_shards or max(1, math.ceil(n_rows / 25_000))
    started = time.perf_counter()
    with stage_output(out_dir) as tmp:
        if cfg.write_index:
            os.makedirs(os.path.join(tmp, INDEX_DIR), exist_ok=True)
        with make_pipeline(runner, "dedup", total=n_rows) as p:
            if files:
                docs = p | "Files" >> beam.Create(files) | "Read" >> beam.io.ReadAllFromParquet()
            else:
                docs = p | "NoInput" >> beam.Create([])
            prepared = docs | "Prepare" >> beam.ParDo(Prepare(cfg)).with_outputs(OUTCOMES, COUNTERS, main="docs")
            outcomes = [prepared[OUTCOMES]]
            counters = [prepared[COUNTERS]]
            cluster_lines = []
            indexed = None
            if index_files:
                indexed = (
                    p
                    | "IndexFiles" >> beam.Create(index_files)
                    | "ReadIndex" >> beam.io.ReadAllFromParquet()
                    | "BatchIndex" >> beam.BatchElements(min_batch_size=64, max_batch_size=1024)
                    | "IndexEntries" >> beam.ParDo(IndexEntries(cfg.exact.enabled, near.enabled, parts)).with_outputs(
                        "exact", BANDS, SKETCHES, COUNTERS
                    )
                )
                counters.append(indexed[COUNTERS])
            if cfg.exact.enabled:
                exact_in = prepared.docs
                if indexed is not None:
                    exact_in = (exact_in, indexed["exact"]) | "WithIndexHashes" >> beam.Flatten()
                exact = (
                    exact_in
                    | "GroupExact" >> beam.GroupByKey()
                    | "ExactSurvivor"
                    >> beam.ParDo(ExactSurvivor()).with_outputs(OUTCOMES, COUNTERS, EXACT_MEMBERS, CLUSTERS,
                                                                main="docs")
                )
                outcomes.append(exact[OUTCOMES])
                counters.append(exact[COUNTERS])
                cluster_lines.append(exact[CLUSTERS])
                survivors = exact.docs
                exact_members = exact[EXACT_MEMBERS]
            else:
                survivors = prepared.docs | "NoExact" >> beam.Map(_no_exact)
                exact_members = p | "NoExactMembers" >> beam.Create([])

            by_shard = _by_shard(shards)
            final_inputs: dict[str, Any] = {
                "rows": survivors | "RowsByShard" >> beam.Map(by_shard),
                "exact": exact_members | "ExactByShard" >> beam.Map(by_shard),
            }
            if near.enabled:
                sketched = (
                    survivors
                    | "BatchSurvivors" >> beam.BatchElements(min_batch_size=64, max_batch_size=512)
                    | "Sketch" >> beam.ParDo(Sketch(near, bands, rows, parts, shards, cfg.write_index)).with_outputs(
                        BANDS, SKETCHES, COUNTERS, INDEX
                    )
                )
                counters.append(sketched[COUNTERS])
                if cfg.write_index:
                    final_inputs["index"] = sketched[INDEX]
                band_entries, sketches = sketched[BANDS], sketched[SKETCHES]
                if indexed is not None:
                    band_entries = (band_entries, indexed[BANDS]) | "WithIndexBands" >> beam.Flatten()
                    sketches = (sketches, indexed[SKETCHES]) | "WithIndexSketches" >> beam.Flatten()
                buckets = (
                    band_entries
                    | "GroupBuckets" >> beam.GroupByKey()
                    | "BucketPairs" >> beam.ParDo(BucketPairs(near.all_pairs_max, parts)).with_outputs(
                        COUNTERS, main="pairs")
                )
                counters.append(buckets[COUNTERS])
                shipped = (
                    {"pairs": buckets.pairs, "sketch": sketches}
                    | "JoinFirst" >> beam.CoGroupByKey()
                    | "ShipFirst" >> beam.ParDo(ShipFirst(near.verify, parts)).with_outputs(COUNTERS, PAIRS,
                                                                                            main="probes")
                )
                counters.append(shipped[COUNTERS])
                if near.verify == "none":
                    verified = shipped[PAIRS]
                else:
                    checked = (
                        {"probes": shipped.probes, "sketch": sketches}
                        | "JoinSecond" >> beam.CoGroupByKey()
                        | "Verify" >> beam.ParDo(VerifyPairs(near.verify, cfg.threshold)).with_outputs(
                            COUNTERS, main="pairs"
                        )
                    )
                    counters.append(checked[COUNTERS])
                    verified = checked.pairs
                cc = ConnectedComponents(rounds, partitions=parts, batched=True)
                labels = verified | "Components" >> cc
                counters.append(cc.unconverged | "CountUnconverged" >> beam.Map(_tag_unconverged))
                sizes = (
                    {"label": labels, "weight": survivors | "Weight" >> beam.FlatMap(_weight)}
                    | "JoinWeights" >> beam.CoGroupByKey()
                    | "ClusterMember" >> beam.FlatMap(_weight_by_label)
                    | "ClusterSize" >> beam.CombinePerKey(sum)
                )
                final_inputs.update(label=labels | "LabelsByShard" >> beam.Map(by_shard),
                                    size=sizes | "SizesByShard" >> beam.Map(by_shard))
            else:
                final_inputs.update(label=p | "NoLabels" >> beam.Create([]), size=p | "NoSizes" >> beam.Create([]))

            final = (
                final_inputs
                | "JoinFinal" >> beam.CoGroupByKey()
                | "Finish" >> beam.ParDo(
                    Finish(tmp, shards, cfg.exact.normalize if cfg.write_index else None)
                ).with_outputs(OUTCOMES, COUNTERS, CLUSTERS)
            )
            outcomes.append(final[OUTCOMES])
            counters.append(final[COUNTERS])
            cluster_lines.append(final[CLUSTERS])
            _ = (
                tuple(cluster_lines)
                | "AllClusterLines" >> beam.Flatten()
                | "ClusterLinesOneKey" >> beam.Map(lambda line: (0, line))
                | "GroupClusterLines" >> beam.GroupByKey()
                | "WriteClusters" >> beam.ParDo(WriteSortedLines(os.path.join(tmp, "clusters.jsonl")))
            )
            _ = tuple(outcomes) | "AllOutcomes" >> beam.Flatten() | "WriteOutcomes" >> WriteOutcomes(tmp)
            _ = (
                tuple(counters)
                | "AllCounters" >> beam.Flatten()
                | "CounterPairs" >> beam.Map(_counter_pair)
                | "CountCounters" >> beam.CombinePerKey(sum)
                | "CounterJson" >> beam.Map(_count_json)
                | "WriteCounters" >> beam.io.WriteToText(
                    os.path.join(tmp, _COUNTS_FILE), shard_name_template="", num_shards=1
                )
            )
        stats = stats_from_outcomes("dedup", read_outcomes(tmp))
        counts = _read_counts(tmp)
        stats.extra.update(_extra(counts, cfg, bands, rows, rounds))
        stats.extra["near"].update(partitions=parts)
        stats.extra["output_shards"] = shards
        stats.extra["seconds"] = round(time.perf_counter() - started, 2)
        if stats.extra["cc_unconverged_nodes"]:
            log.warning(
                "dedup: %d nodes not settled after %d component rounds; some clusters may be split "
                "(raise near.cc_rounds)", stats.extra["cc_unconverged_nodes"], rounds,
            )
        if not os.path.exists(os.path.join(tmp, "clusters.jsonl")):
            open(os.path.join(tmp, "clusters.jsonl"), "w").close()
        if cfg.write_index:
            with open(os.path.join(tmp, INDEX_DIR, INDEX_META), "w", encoding="utf-8") as fh:
                json.dump({**meta, "documents": stats.kept}, fh, indent=2, sort_keys=True)
        finish(stats, tmp, fp)
    return stats
