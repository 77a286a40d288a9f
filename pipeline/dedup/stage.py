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
round, labels, cluster weights and sizes) is handed from step to step in files (:mod:`.work`: one Arrow
file per producer, only references are shuffled; the records are :mod:`.records`); the kept rows are read
again at the end, and each step's cluster lines are split by a hash of the line into the output's cluster
files, sorted, and each cluster file merged by its own worker (no step sees the whole corpus's lines).
:class:`Dedup` is the recipe; the steps are in :mod:`.steps`, the index in :mod:`.index`.

0. **Boilerplate lines** (:mod:`.lines`, near pass with ``near.boilerplate`` on, the default): each chunk's
   ``(group, line hash)`` document counts are summed by partition of the key; the lines seen in ``min_docs``
   documents of their group (URL host, or the corpus) are handed to the chunks that hold them.
1. **Read chunks** (:class:`.steps.ReadChunk`): malformed rows -> ``dropped:invalid_record``, blank text ->
   ``dropped:empty_text``; the rest get their *node key* (survivor-ordered, see :func:`.exact.rank_key`),
   the 128-bit hash of their normalised text, word (or char) n-gram shingles of their *core* (the text
   without its boilerplate lines, :func:`.boilerplate.core_sketch`), a MinHash signature of the core's
   shingles bit-identical to datasketch, its band hashes (banding chosen for
   :func:`.boilerplate.candidate_threshold`) and the verification sketch (the 64-bit shingle-hash sets of
   the full text and of the core, or the signature). The chunk's *sketch file* gets one row per document;
   the exact-group members leave as :class:`.records.Member` batches by partition of their text hash.
2. **Exact** (:class:`.steps.ExactPartition`): each partition groups its members by hash; the smallest node
   key survives, the others are ``dropped:exact_duplicate``. Survivors leave batched: band entries by band
   partition, :class:`.records.Survivor` by node-key partition.
3. **LSH buckets** (:class:`.steps.BucketPairs`): band entries are handed over as raw numpy bytes by ``band
   hash % partitions``; each partition sorts its entries by ``(band, hash)`` and only runs of equal keys
   reach Python: small buckets give all pairs, oversized ones a star on their minimum.
4. **Verify** candidates by :func:`.boilerplate.verify_pair`: the containment of the shorter core in the
   other document (default), the true Jaccard of the core shingle sets, the signature estimate, or not at
   all: pairs grouped by the chunk of their first node (which also removes pairs found in several bands)
   read that node's sketch from the chunk's file and ship it to the chunk of the second node, where
   the pair is checked against the second sketch, read the same way. Only candidate pairs carry a sketch.
5. **Connected components** of the verified pairs on the runner (:mod:`.components`, partitioned, edges
   in hand-off files): because node keys sort survivor-first, each component's label *is* its survivor.
   Cluster sizes add up each member's weight, 1 + its exact copies (:class:`.steps.ClusterWeights`,
   :class:`.steps.ClusterSizes`).
6. **Decide** (:class:`.steps.Decide`): survivors, exact copies, labels and sizes meet by node-key
   partition. A *cluster* is a near-duplicate component or an exact group (or both); its survivor is kept
   with ``{"dedup_cluster", "cluster_size"}`` (and ``exact_duplicates`` when it had exact copies) added to
   its annotations, the other near-duplicates are ``dropped:near_duplicate``, and every member gets a line
   in the cluster files.
7. **Write chunks** (:class:`.steps.WriteChunk`): each chunk's kept positions -> the chunk's rows read again
   and written, in input order, as ``documents-<chunk>-of-<chunks>.parquet`` (and its ``index/`` file). The
   file a document lands in and its place there follow the input, not the order the shuffles delivered
   (which follows the per-process hash seed), and each cluster file is written sorted, so a rerun gives
   the same bytes in any process.

Every row yields exactly one outcome (``pipeline.accounting``), so ``stats.json`` is exact on any runner.
Counters for the extras (per-source read/kept, candidate and verified pairs, cluster sizes) travel the same
way into ``counters.jsonl``, which :func:`run_dedup` folds into ``stats.json``.

Output folder: ``documents-NNNNN-of-NNNNN.parquet`` (kept documents of every source), ``stats.json``,
``outcomes.jsonl``, ``counters.jsonl``, ``clusters-<k>-of-<n>.jsonl`` (:func:`read_clusters`: ``{"id",
"cluster", "source", "survivor", "reason"}`` per cluster member, each file sorted, a line's file chosen by
its hash; ``cluster`` is the survivor's id, ``reason`` is ``exact_duplicate``
or ``near_duplicate`` for the dropped members, null for the survivor) and ``index/`` (:mod:`.index`). The
output files, the sketch and hand-off files (in the attempt's work folder, removed before the stage commits) and
cluster files are written by the workers in place into the stage's output folder, through
:mod:`pipeline.fs`: a local or shared path, or an object-store URL (``s3://``, ``gs://``, ``hdfs://``) when
workers and driver share no disk. Inputs and ``--against`` folders may be URLs too.

**Incremental dedup.** A later run with ``DedupConfig.against`` set to earlier output folders reads their
indexes into the same graph, never their documents: an indexed entry joins the exact groups (every new copy
is ``dropped:exact_duplicate_of_index``) and the LSH buckets under a node key that sorts before every new one
(its sketch is read from the index file, like a chunk's), so a component holding an indexed document is
labelled by it and its new members are ``dropped:near_duplicate_of_index``. Indexed documents are never
emitted again and indexed-indexed pairs are never formed. Each run's index holds its own survivors only: to
deduplicate crawl N against all earlier ones, pass all earlier folders. The settings that decide hashes and
bands (normalisation, shingles, num_perm, seed, scheme, hash, bands x rows, verify mode, boilerplate settings)
must match the indexes' (checked before the pipeline starts).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam

from pipeline import fs
from pipeline.accounting import OUTCOMES, WriteOutcomes
from pipeline.commit import attempt_name, committed_files
from pipeline.dedup.boilerplate import BoilerplateConfig, candidate_threshold
from pipeline.dedup.components import ConnectedComponents, auto_rounds
from pipeline.dedup.exact import ExactConfig
from pipeline.dedup.index import INDEX_DIR, IndexEntries, index_files, index_meta, write_index_meta
from pipeline.dedup.lines import BoilerplateLines, top_template_lines
from pipeline.dedup.lsh import lsh_params
from pipeline.dedup.minhash import ShingleConfig
from pipeline.dedup.steps import (
    BucketPairs,
    ClusterSizes,
    ClusterWeights,
    Decide,
    ExactPartition,
    ReadChunk,
    ShipFirst,
    VerifyPairs,
    WriteChunk,
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
    MergeSortedLines,
    open_parquet,
    plan_chunks,
    sketch_file,
    work_folder,
)
from pipeline.runner import RunnerConfig
from pipeline.stage import Stage, load_stats
from pipeline.tables import WriteCounters, document_files, read_counters
from schemas.documents import validate_document_schema
from schemas.stats import StageStats

CLUSTERS_PREFIX = "clusters"  # clusters-<k>-of-<n>.jsonl: the cluster lines, sharded (read_clusters)


class ComponentsError(RuntimeError):
    """Connected components ran out of rounds before every node reached its component's label."""


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
    # Boilerplate-aware comparison (:mod:`.boilerplate`, :mod:`.lines`): shingles of each document's core (its
    # text without the lines recurring in min_docs documents of its host) go into the signature, candidates
    # are verified by the containment of the shorter core in the other document, and the banding is chosen
    # for the Jaccard t/(2-t) such pairs can have. verify="jaccard" with boilerplate off is the earlier method.
    verify: Literal["containment", "jaccard", "signature", "none"] = field(
        default="containment",
        metadata={
            "help": "check candidates by the containment of the shorter core in the other document "
            "(boilerplate.core_containment_match), by the true Jaccard of the (core) shingle sets, by the MinHash "
            "estimate, or not at all"
        },
    )
    boilerplate: BoilerplateConfig = field(default_factory=BoilerplateConfig)
    lsh_threshold: float = field(
        default=0.0,
        metadata={"help": "Jaccard the banding is chosen for (0: the threshold, or t/(2-t) with verify=containment)"},
    )
    min_overlap: int = field(
        default=20,
        metadata={"help": "verify=containment: shingles a core must share with the other document at least"},
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

    def __post_init__(self) -> None:
        """Reject settings that would otherwise fail deep inside a worker."""
        for name, low in (
            ("num_perm", 1),
            ("all_pairs_max", 1),
            ("cc_rounds", 0),
            ("partitions", 0),
            ("min_overlap", 1),
        ):
            if getattr(self, name) < low:
                raise ValueError(f"NearConfig.{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= self.lsh_threshold < 1.0:
            raise ValueError(f"NearConfig.lsh_threshold must be in [0, 1), got {self.lsh_threshold}")


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

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"DedupConfig.threshold must be in (0, 1], got {self.threshold}")
        if self.chunk_rows < 1:
            raise ValueError(f"DedupConfig.chunk_rows must be >= 1, got {self.chunk_rows}")


@dataclass(frozen=True)
class Plan:
    """What the driver settles before the pipeline, from the inputs' Parquet footers and the config: the work
    chunks, the ``--against`` index files (their settings checked), the banding, partitions and rounds."""

    documents: int  # input rows
    chunks: list[Chunk]
    index_files: list[str]
    bands: int
    rows: int
    partitions: int
    rounds: int
    lsh_threshold: float  # the Jaccard the banding is chosen for (:func:`.boilerplate.candidate_threshold`)
    meta: dict[str, Any]  # the settings this run's index is written with (:func:`.index.index_meta`)

    @classmethod
    def make(cls, inputs: list[str], cfg: DedupConfig) -> Plan:
        files, documents = _input_files(inputs)
        near = cfg.near
        lsh_threshold = candidate_threshold(cfg.threshold, near)
        bands, rows = lsh_params(lsh_threshold, near.num_perm, near.bands, near.rows, near.fp_weight, near.fn_weight)
        meta = index_meta(cfg, bands, rows)
        indexes = index_files(cfg.against, meta)
        return cls(
            documents=documents,
            chunks=plan_chunks(files, cfg.chunk_rows),
            index_files=indexes,
            bands=bands,
            rows=rows,
            partitions=near.partitions or max(8, math.ceil(documents / 25_000)),
            rounds=near.cc_rounds if near.cc_rounds > 0 else auto_rounds(documents),
            lsh_threshold=lsh_threshold,
            meta=meta,
        )

    def sketch_files(self, work: str) -> list[str]:
        """Where each "chunk"'s sketches are: chunk c's sketch file, then index file i as chunk ``len(chunks) + i``."""
        return [sketch_file(work, c) for c in range(len(self.chunks))] + self.index_files


def _input_files(inputs: list[str]) -> tuple[list[str], int]:
    """Every Parquet file of the input tables, schema-checked on the driver, and their total row count."""
    files: list[str] = []
    n_rows = 0
    for path in inputs:
        for f in document_files(path):
            pf = open_parquet(f)
            validate_document_schema(pf.schema_arrow, where=f)
            n_rows += pf.metadata.num_rows
            files.append(f if fs.is_url(f) else os.path.abspath(f))
    return files, n_rows


def _flatten(label: str, pcolls: list) -> beam.PCollection:
    return tuple(pcolls) | label >> beam.Flatten()


class ReadChunks(beam.PTransform):
    """Pipeline root -> the chunks' exact-group members (``members``), ``outcomes`` of unusable rows and
    ``counters``; writes each chunk's sketch file. With boilerplate lines on, a chunk is sketched once the
    boilerplate lines its documents hold are known (:class:`.lines.BoilerplateLines`, joined by chunk)."""

    def __init__(self, cfg: DedupConfig, plan: Plan, work: str):
        super().__init__()
        self.cfg, self.plan, self.work = cfg, plan, work

    def expand(self, root):
        cfg, plan = self.cfg, self.plan
        tasks = root | "Chunks" >> beam.Create(list(enumerate(plan.chunks)))
        if cfg.near.enabled and cfg.near.boilerplate.enabled:
            found = tasks | "Boilerplate" >> BoilerplateLines(cfg, self.work, plan.partitions)
            lines, line_counters = found["lines"], [found["counters"]]
        else:
            lines, line_counters = root | "NoBoilerplate" >> beam.Create([]), []
        read = (
            {"task": tasks, "lines": lines}
            | "JoinLines" >> beam.CoGroupByKey()
            | "ReadChunk"
            >> beam.ParDo(ReadChunk(cfg, plan.bands, plan.rows, self.work, plan.partitions)).with_outputs(
                OUTCOMES, COUNTERS, main="members"
            )
        )
        counters = _flatten("ReadCounters", [read[COUNTERS], *line_counters])
        return {"members": read.members, "outcomes": read[OUTCOMES], "counters": counters}


class ReadIndexes(beam.PTransform):
    """Pipeline root -> the ``--against`` indexes' exact-group members (``members``) and band entries
    (``bands``), and ``counters`` (none of either without indexes)."""

    def __init__(self, cfg: DedupConfig, plan: Plan, work: str):
        super().__init__()
        self.cfg, self.plan, self.work = cfg, plan, work

    def expand(self, root):
        plan, cfg = self.plan, self.cfg
        read = (
            root
            | "IndexFiles" >> beam.Create([(len(plan.chunks) + i, f) for i, f in enumerate(plan.index_files)])
            | "SpreadIndex" >> beam.Reshuffle()
            | "IndexEntries"
            >> beam.ParDo(IndexEntries(cfg.exact.enabled, cfg.near.enabled, plan.partitions, self.work)).with_outputs(
                BANDS, COUNTERS, main="members"
            )
        )
        return {"members": read.members, "bands": read[BANDS], "counters": read[COUNTERS]}


class ExactGroups(beam.PTransform):
    """Members (by partition) -> each exact group's survivor: ``outcomes``, ``counters``, ``clusters`` (line
    files) and the hand-offs ``survivors``, ``copies``, ``weights`` and ``bands``."""

    OUTPUTS = (OUTCOMES, COUNTERS, CLUSTERS, SURVIVORS, COPIES, WEIGHTS, BANDS)

    def __init__(self, cfg: DedupConfig, plan: Plan, work: str):
        super().__init__()
        self.cfg, self.plan, self.work = cfg, plan, work

    def expand(self, members):
        exact = ExactPartition(self.cfg.exact.enabled, self.cfg.near.enabled, self.plan.partitions, self.work)
        out = (
            members
            | "GroupExact" >> beam.GroupByKey()
            | "ExactPartition" >> beam.ParDo(exact).with_outputs(*self.OUTPUTS)
        )
        return {tag: out[tag] for tag in self.OUTPUTS}


class VerifyCandidates(beam.PTransform):
    """Candidate pairs (by the chunk of their first node) -> the verified pairs as edge batches (``edges``)
    and ``counters``; with ``verify="none"`` every distinct candidate is verified."""

    def __init__(self, cfg: DedupConfig, sketch_files: list[str], work: str):
        super().__init__()
        self.cfg, self.sketch_files, self.work = cfg, sketch_files, work

    def expand(self, pairs):
        mode = self.cfg.near.verify
        shipped = (
            pairs
            | "GroupByFirstChunk" >> beam.GroupByKey()
            | "ShipFirst"
            >> beam.ParDo(ShipFirst(mode, self.sketch_files, self.work)).with_outputs(COUNTERS, PAIRS, main="probes")
        )
        if mode == "none":
            return {"edges": shipped[PAIRS], "counters": shipped[COUNTERS]}
        checked = (
            shipped.probes
            | "GroupBySecondChunk" >> beam.GroupByKey()
            | "VerifyPairs"
            >> beam.ParDo(
                VerifyPairs(mode, self.cfg.threshold, self.cfg.near.min_overlap, self.sketch_files)
            ).with_outputs(COUNTERS, main="edges")
        )
        counters = _flatten("VerifyCounters", [shipped[COUNTERS], checked[COUNTERS]])
        return {"edges": checked.edges, "counters": counters}


class SizeClusters(beam.PTransform):
    """``{"label": component labels, "weight": survivor weights}`` -> each cluster's size (a hand-off by the
    partition of its label, which is its survivor's node key)."""

    def __init__(self, partitions: int, work: str):
        super().__init__()
        self.partitions, self.work = partitions, work

    def expand(self, joined):
        return (
            joined
            | "JoinWeights" >> beam.CoGroupByKey()
            | "ClusterWeights" >> beam.ParDo(ClusterWeights(self.partitions, self.work))
            | "GroupClusterWeights" >> beam.GroupByKey()
            | "ClusterSizes" >> beam.ParDo(ClusterSizes(self.work))
        )


class NearDuplicates(beam.PTransform):
    """``{"bands": band entries, "weights": survivor weights}`` -> component ``labels``, cluster ``sizes`` and
    ``counters``: LSH buckets -> candidate pairs -> verified pairs -> connected components -> sizes.
    With the near pass off: no labels and no sizes."""

    def __init__(self, cfg: DedupConfig, plan: Plan, work: str):
        super().__init__()
        self.cfg, self.plan, self.work = cfg, plan, work

    def expand(self, inputs):
        near, plan, work = self.cfg.near, self.plan, self.work
        if not near.enabled:
            root = inputs["bands"].pipeline
            return {name: root | f"No{name.title()}" >> beam.Create([]) for name in ("labels", "sizes", "counters")}
        buckets = (
            inputs["bands"]
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketPairs" >> beam.ParDo(BucketPairs(near.all_pairs_max, work)).with_outputs(COUNTERS, main="pairs")
        )
        verified = buckets.pairs | "Verify" >> VerifyCandidates(self.cfg, plan.sketch_files(work), work)
        components = ConnectedComponents(plan.rounds, work, partitions=plan.partitions, batched=True)
        labels = verified["edges"] | "Components" >> components
        unconverged = components.unconverged | "CountUnconverged" >> beam.Map(lambda n: ("cc_unconverged_nodes", n))
        sizes = {"label": labels, "weight": inputs["weights"]} | "Sizes" >> SizeClusters(plan.partitions, work)
        counters = _flatten("NearCounters", [buckets[COUNTERS], verified["counters"], unconverged])
        return {"labels": labels, "sizes": sizes, "counters": counters}


class DecideAndWrite(beam.PTransform):
    """``{"survivor", "copies", "label", "size"}`` hand-offs -> every survivor's fate, the kept documents
    written chunk by chunk (and their index files): ``outcomes``, ``counters``, ``clusters`` (line files)."""

    def __init__(self, cfg: DedupConfig, plan: Plan, work: str, folder: str):
        super().__init__()
        self.cfg, self.plan, self.work, self.folder = cfg, plan, work, folder

    def expand(self, joined):
        decided = (
            joined
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "Decide"
            >> beam.ParDo(Decide(self.work, self.plan.partitions)).with_outputs(
                OUTCOMES, COUNTERS, CLUSTERS, main="kept"
            )
        )
        _ = (
            decided.kept
            | "GroupKeptByChunk" >> beam.GroupByKey()
            | "WriteChunks" >> beam.ParDo(WriteChunk(self.plan.chunks, self.work, self.folder, self.cfg.write_index))
        )
        return {"outcomes": decided[OUTCOMES], "counters": decided[COUNTERS], "clusters": decided[CLUSTERS]}


def cluster_files(folder: str) -> list[str]:
    """A dedup output's cluster files (from its commit's list when it has one), in shard order."""
    listed = committed_files(folder)
    if listed is None:
        listed = [f.path for f in fs.match(fs.join(folder, f"{CLUSTERS_PREFIX}-*.jsonl"))]
    top = len(folder.rstrip("/")) + 1
    name = re.compile(rf"{CLUSTERS_PREFIX}-\d+-of-\d+(\.attempt-[0-9a-f]{{12}})?\.jsonl")  # tagged: pipeline.commit
    return sorted(f for f in listed if name.fullmatch(f[top:]))


def read_clusters(folder: str) -> Iterator[dict[str, Any]]:
    """Every ``clusters`` line of a dedup output (``{"id", "cluster", "source", "survivor", ...}``), streamed."""
    for path in cluster_files(folder):
        for line in fs.read_lines(path):
            if line.strip():
                yield json.loads(line)


class MergeClusterLines(beam.PTransform):
    """``(shard, sorted line file)`` from every step -> the output's cluster files, ``clusters-<k>-of-<n>.jsonl``,
    each merged by its own worker (a shard that got no line has no file)."""

    def __init__(self, folder: str, shards: int):
        super().__init__()
        self.folder, self.shards = folder, shards

    def expand(self, files):
        path = os.path.join(self.folder, attempt_name(CLUSTERS_PREFIX + "-{k:05d}-of-{n:05d}.jsonl"))
        return files | "ByShard" >> beam.GroupByKey() | "Merge" >> beam.ParDo(MergeSortedLines(path, self.shards))


class Dedup(beam.PTransform):
    """Pipeline root -> ``{"outcomes", "counters"}``; writes the kept documents, the cluster files and the
    index files into ``folder`` (its work folder, :func:`.work.work_folder`, holds the sketch and hand-off files)."""

    def __init__(self, cfg: DedupConfig, plan: Plan, folder: str):
        super().__init__()
        self.cfg, self.plan, self.folder = cfg, plan, folder

    def expand(self, root):
        cfg, plan = self.cfg, self.plan
        work = work_folder(self.folder)
        read = root | "ReadChunks" >> ReadChunks(cfg, plan, work)
        indexed = root | "ReadIndexes" >> ReadIndexes(cfg, plan, work)
        members = _flatten("AllMembers", [read["members"], indexed["members"]])
        exact = members | "Exact" >> ExactGroups(cfg, plan, work)
        bands = _flatten("AllBands", [exact[BANDS], indexed["bands"]])
        near = {"bands": bands, "weights": exact[WEIGHTS]} | "Near" >> NearDuplicates(cfg, plan, work)
        decided = {
            "survivor": exact[SURVIVORS],
            "copies": exact[COPIES],
            "label": near["labels"],
            "size": near["sizes"],
        } | "DecideAndWrite" >> DecideAndWrite(cfg, plan, work, self.folder)
        clusters = _flatten("ClusterLineFiles", [exact[CLUSTERS], decided["clusters"]])
        _ = clusters | "WriteClusters" >> MergeClusterLines(self.folder, plan.partitions)
        return {
            "outcomes": _flatten("AllOutcomes", [read["outcomes"], exact[OUTCOMES], decided["outcomes"]]),
            "counters": _flatten(
                "AllCounters",
                [read["counters"], indexed["counters"], exact[COUNTERS], near["counters"], decided["counters"]],
            ),
        }


def _summary(counts: dict[str, int], cfg: DedupConfig, plan: Plan) -> dict[str, Any]:
    """``stats.extra`` from the pipeline's counters and the plan."""
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
            "lsh_threshold": round(plan.lsh_threshold, 4),
            "bands": plan.bands,
            "rows": plan.rows,
            "verify": cfg.near.verify,
            "min_overlap": cfg.near.min_overlap,
            "cc_rounds": plan.rounds,
            "partitions": plan.partitions,
        },
        "boilerplate": _boilerplate_summary(counts, cfg.near),
        "chunks": len(plan.chunks),
    }


def _boilerplate_summary(counts: dict[str, int], near: NearConfig) -> dict[str, Any]:
    """``stats.extra["boilerplate"]``: the boilerplate lines found, the share of the documents' lines they
    took out of the comparison (each line counted once per document), and the most frequent of them."""
    cfg = near.boilerplate
    lines, removed = counts.get("lines", 0), counts.get("boilerplate_lines_removed", 0)
    return {
        "enabled": near.enabled and cfg.enabled,
        "min_docs": cfg.min_docs,
        "per_host": cfg.per_host,
        "lines": counts.get("boilerplate_lines", 0),
        "document_lines": lines,
        "document_lines_removed": removed,
        "removed_share": round(removed / lines, 4) if lines else 0.0,
        "documents_with_boilerplate": counts.get("documents_with_boilerplate", 0),
        "top_lines": top_template_lines(counts),
    }


def run_dedup(
    inputs: list[str], out_dir: str, cfg: DedupConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Deduplicate the document tables ``inputs`` (exact, then near) into one document table ``out_dir``."""
    stage = Stage(
        "dedup",
        out_dir,
        list(inputs) + [os.path.join(a, INDEX_DIR) for a in cfg.against],
        cfg,
        force,
        module=__name__,
    )
    if stage.complete():
        return load_stats(out_dir)
    plan = Plan.make(inputs, cfg)
    started = time.perf_counter()

    def build(p: beam.Pipeline, tmp: str) -> None:
        out = p | "Dedup" >> Dedup(cfg, plan, tmp)
        _ = out["outcomes"] | "WriteOutcomes" >> WriteOutcomes(tmp)
        _ = out["counters"] | "WriteCounters" >> WriteCounters(tmp)

    def summarise(tmp: str, stats: StageStats) -> None:
        fs.delete_folder(work_folder(tmp))
        stats.extra.update(_summary(read_counters(tmp), cfg, plan))
        stats.extra["seconds"] = round(time.perf_counter() - started, 2)
        if stats.extra["cc_unconverged_nodes"]:  # converge or fail: a split cluster is silent under-dedup
            raise ComponentsError(
                f"dedup: connected components did not converge in {plan.rounds} rounds: "
                f"{stats.extra['cc_unconverged_nodes']} nodes are not yet in a star, so some clusters would be "
                "split; raise near.cc_rounds (0 picks max(4, ceil(log2(docs + 1))))"
            )
        if cfg.write_index:
            write_index_meta(tmp, plan.meta, stats.kept)

    return stage.run_beam(runner, build, summarise, total=plan.documents)
