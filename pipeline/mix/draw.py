"""Steps 3-4 of the mix across workers: per source, the held-out documents, the drawn documents and the
packing buckets, decided from per-document metadata without ever gathering a source's documents in one place.

Each choice is a prefix of a hash order (:mod:`pipeline.mix.plan`). A prefix is found in two passes over
``(id, token count)`` records: a histogram of the order's top 16 bits per source (``CombinePerKey``: at most
65,536 counters per source on one worker), which names the bin where the prefix ends, then the documents of
that one bin (1/65,536 of the source) in exact order. The result is a :class:`~pipeline.mix.plan.Cut`, a
single (key, id) pair every document compares itself against. Three rounds, each a small side input to the
next:

1. validation: :class:`ValPlan` per source (held-out documents and tokens; the training tokens left);
2. the draw: with every source's training tokens known, each source's target, whole epochs, the documents of
   its fractional epoch and its number of packing buckets (:class:`SourceDraw`);
3. bucket capacities: the tokens each (source, bucket) selects, and the rows it is given
   (:class:`~pipeline.mix.plan.BucketPlan`), so each bucket knows where its rows sit in its source's numbering.

What remains per source on one worker: the histogram (65,536 bins at most), one bin's documents and one
(bucket -> plan) table (a bucket per ``pack_bucket_documents`` documents of the source).

The metadata itself never crosses a shuffle: each document's ``(source, id)`` entry is handed, by a hash of
the id, to one of ``partitions`` workers through hand-off files (:mod:`pipeline.handoff`); each keeps the
copy of a duplicated id that packing keeps and writes its distinct :class:`Meta` records to one *metas file*
(:class:`WriteMetas`, a partition per :data:`META_PARTITION_DOCUMENTS` documents); every step that needs the
metadata reads those files (:func:`read_metas`), and only references are shuffled. (Beam's local runner keeps
every shuffled value, and every PCollection a side input waits on, in its driver: ~240 bytes a document per
step when the records themselves crossed.) Two ``Reshuffle`` steps of those references re-read the metadata before
steps whose side input is computed from that same metadata: without them Beam's local runner fuses the
consumer with its own side input's producer and stalls ("watermark-pending bundles did not execute").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import xxhash

from pipeline import handoff
from pipeline.mix.config import MixConfig
from pipeline.mix.encode import Doc
from pipeline.mix.plan import (
    Boundary,
    BucketPlan,
    Cut,
    ReachTokens,
    Rule,
    ValidationRule,
    allocate_rows,
    bin_of,
    bucket_of,
    cut_in_bin,
    find_boundary,
    in_prefix,
    normalise_weights,
    plan_problems,
    select_key,
    selection_goal,
    source_target,
    val_key,
)


class Meta(NamedTuple):
    """What the plan needs of a document: not its tokens, only their count."""

    source: str
    id: str
    tokens: int


class Step(NamedTuple):
    """A source's prefix rule and the histogram bin its prefix ends in."""

    rule: Rule | None
    boundary: Boundary


class ValPlan(NamedTuple):
    """A source's validation split: documents with ``val_key`` up to ``cut`` are held out."""

    documents: int  # distinct documents of the source
    tokens: int
    cut: Cut
    val_documents: int
    val_tokens: int

    @property
    def train_tokens(self) -> int:
        return self.tokens - self.val_tokens


class SourceDraw(NamedTuple):
    """All a packing bucket needs to know of its source's plan (a small per-source side input)."""

    val: ValPlan
    target: int  # tokens the weight asks for
    goal_rows: int  # round(target / row width): the rows the source should fill
    whole: int  # epochs every training document is drawn
    partial_cut: Cut  # documents with ``select_key`` up to it are drawn once more
    buckets: int
    problems: tuple[str, ...]


def is_validation(source: str, doc_id: str, val: ValPlan) -> bool:
    return in_prefix(val_key(source, doc_id), doc_id, val.cut)


def times_drawn(source: str, doc_id: str, draw: SourceDraw, seed: int) -> int:
    """How often a training document is drawn: every whole epoch, plus once if in the fractional epoch."""
    return draw.whole + in_prefix(select_key(seed, source, doc_id), doc_id, draw.partial_cut)


def _add(values: Iterable[tuple[int, ...]]) -> tuple[int, ...] | None:
    """Element-wise sum of tuples (an associative combiner: Beam may apply it to partial sums)."""
    total = None
    for v in values:
        total = v if total is None else tuple(a + b for a, b in zip(total, v))
    return total


def _meta_entry(element: tuple[str, Doc], itemsize: int) -> tuple[tuple[str, str], tuple[str, int]]:
    source, doc = element
    return (source, doc.id), (xxhash.xxh64_hexdigest(doc.tokens), len(doc.tokens) // itemsize)


META_PARTITION_DOCUMENTS = 100_000  # documents whose metadata one worker makes distinct and writes as one file


def meta_partitions(documents: int) -> int:
    """How many metas files the plan writes for ``documents`` input documents."""
    return max(1, -(-documents // META_PARTITION_DOCUMENTS))


def _by_partition(entry: tuple[tuple[str, str], tuple[str, int]], partitions: int) -> tuple[int, tuple]:
    (source, doc_id), _ = entry
    return xxhash.xxh64_intdigest(f"{source}\x00{doc_id}".encode("utf-8", "surrogatepass")) % partitions, entry


def _entries_table(entries: list[tuple[tuple[str, str], tuple[str, int]]]) -> pa.Table:
    return pa.table(
        {
            "source": pa.array([e[0][0] for e in entries], pa.string()),
            "id": pa.array([e[0][1] for e in entries], pa.string()),
            "digest": pa.array([e[1][0] for e in entries], pa.string()),
            "tokens": pa.array([e[1][1] for e in entries], pa.int64()),
        }
    )


def _entry_bytes(entry: tuple[tuple[str, str], tuple[str, int]]) -> int:
    return len(entry[0][0]) + len(entry[0][1]) + 24


class WriteMetas(beam.DoFn):
    """A partition's hand-off files of ``(source, id) -> (digest, tokens)`` entries -> the path of its metas
    file: one :class:`Meta` per distinct document, the copy with the smallest (digest, length) counting, as
    packing keeps it."""

    def __init__(self, folder: str, pattern: str):
        self.folder, self.pattern = folder, pattern

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[str]:
        _, paths = element
        t = handoff.take(paths)
        best: dict[tuple[str, str], tuple[str, int]] = {}
        for key, value in zip(
            zip(t["source"].to_pylist(), t["id"].to_pylist()), zip(t["digest"].to_pylist(), t["tokens"].to_pylist())
        ):
            if key not in best or value < best[key]:
                best[key] = value
        keys = sorted(best)
        table = pa.table(
            {
                "source": pa.array([k[0] for k in keys], pa.string()),
                "id": pa.array([k[1] for k in keys], pa.string()),
                "tokens": pa.array([best[k][1] for k in keys], pa.int64()),
            }
        )
        yield handoff.put(self.folder, self.pattern, table)


def read_metas(path: str) -> Iterator[Meta]:
    """The :class:`Meta` records of one metas file."""
    t = handoff.take([path])
    for source, doc_id, tokens in zip(t["source"].to_pylist(), t["id"].to_pylist(), t["tokens"].to_pylist()):
        yield Meta(source, doc_id, tokens)


def _val_order(meta: Meta) -> int:
    return val_key(meta.source, meta.id)


def _select_order(seed: int, meta: Meta) -> int:
    return select_key(seed, meta.source, meta.id)


class Histogram(beam.PTransform):
    """Metas -> ``(source, [(bin, documents, tokens), ...])`` over the hash order ``order``."""

    def __init__(self, order: Callable[[Meta], int]):
        super().__init__()
        self.order = order

    def expand(self, metas):
        order = self.order
        return (
            metas
            | "ByBin" >> beam.Map(lambda m: ((m.source, bin_of(order(m))), (1, m.tokens)))
            | "Count" >> beam.CombinePerKey(_add)
            | "BySource" >> beam.MapTuple(lambda key, ct: (key[0], (key[1], *ct)))
            | "Group" >> beam.GroupByKey()
        )


class Prefix(beam.PTransform):
    """Metas + ``(source, Step)`` -> ``(source, (cut, documents, tokens))``: the exact end of each source's
    prefix, from the documents of its boundary bin only."""

    def __init__(self, order: Callable[[Meta], int], steps):
        super().__init__()
        self.order = order
        self.steps = steps

    def expand(self, metas):
        order = self.order

        def in_boundary_bin(m: Meta, steps: dict[str, Step]) -> Iterator[tuple[str, tuple[int, str, int]]]:
            key = order(m)
            if bin_of(key) == steps[m.source].boundary.bin:
                yield m.source, (key, m.id, m.tokens)

        items = metas | "BoundaryBin" >> beam.FlatMap(in_boundary_bin, steps=beam.pvalue.AsDict(self.steps))
        return (
            {"step": self.steps, "items": items}
            | "Join" >> beam.CoGroupByKey()
            | "Cut"
            >> beam.MapTuple(
                lambda source, g: (source, cut_in_bin(g["items"], g["step"][0].boundary, g["step"][0].rule))
            )
        )


class DrawStep(beam.DoFn):
    """``(source, training histogram)`` -> ``(source, (SourceDraw without its cut, Step))``."""

    def __init__(
        self,
        weights: dict[str, float],
        total_tokens: int,
        seq_len: int,
        max_epochs: float,
        buckets: dict[str, int],
    ):
        self.weights = dict(weights)
        self.total_tokens = total_tokens
        self.width = seq_len + 1
        self.seq_len = seq_len
        self.max_epochs = max_epochs
        self.buckets = dict(buckets)

    def process(self, element, vals: dict[str, ValPlan]) -> Iterator[tuple[str, tuple[SourceDraw, Step]]]:
        source, histogram = element
        val = vals[source]
        available = {s: v.train_tokens for s, v in vals.items()}
        problems = tuple(plan_problems(available, self.weights, self.total_tokens, self.seq_len, self.max_epochs))
        target = 0 if problems else source_target(source, available, self.weights, self.total_tokens)
        buckets = self.buckets[source]
        goal = selection_goal(target, val.train_tokens, buckets, self.width)
        whole, remainder = divmod(goal, val.train_tokens) if val.train_tokens > 0 else (0, 0)
        rule = ReachTokens(remainder) if remainder > 0 else None
        draw = SourceDraw(val, target, int(round(target / self.width)), whole, Cut(-1, ""), buckets, problems)
        yield source, (draw, Step(rule, find_boundary(histogram, rule)))


def _val_step(
    source: str,
    histogram: list[tuple[int, int, int]],
    fractions: dict[str, float] | None = None,  # (MapTuple's side arguments need defaults)
    max_tokens: int = 0,
    width: int = 1,
) -> tuple[str, tuple[int, int, Step]]:
    """``(source, validation histogram)`` -> ``(source, (documents, tokens, Step))``."""
    fractions = fractions or {}
    n, tokens = sum(c for _, c, _ in histogram), sum(t for _, _, t in histogram)
    rule = ValidationRule.for_source(n, fractions.get(source, 0.0), max_tokens, width)
    return source, (n, tokens, Step(rule, find_boundary(histogram, rule)))


def _capacity(meta: Meta, draws: dict[str, SourceDraw], seed: int) -> Iterator[tuple[tuple[str, int], tuple[int, int]]]:
    """A document's tokens in its bucket's selected stream (training) or validation stream."""
    draw = draws[meta.source]
    if draw.problems:
        return
    bucket = bucket_of(meta.source, meta.id, draw.buckets)
    if is_validation(meta.source, meta.id, draw.val):
        yield (meta.source, bucket), (0, meta.tokens)
    else:
        yield (meta.source, bucket), (meta.tokens * times_drawn(meta.source, meta.id, draw, seed), 0)


def _allocate(
    source: str, buckets: Iterable[tuple[int, int, int]], draws: dict[str, SourceDraw] | None = None, width: int = 1
) -> Iterator[tuple[tuple[str, int], BucketPlan]]:
    capacity = {b: (selected // width, val // width) for b, selected, val in buckets}
    assert draws is not None  # a side input: MapTuple's side arguments need defaults
    for b, plan in allocate_rows(draws[source].goal_rows, capacity).items():
        yield (source, b), plan


class PlanDraws(beam.PTransform):
    """``(source, Doc)`` -> ``{"draws": (source, SourceDraw), "buckets": ((source, bucket), BucketPlan)}``."""

    def __init__(self, cfg: MixConfig, itemsize: int, buckets: dict[str, int], folder: str, documents: int):
        super().__init__()
        self.handoff = handoff.handoff_folder(folder, "plan")
        self.pattern = handoff.file_pattern()
        self.partitions = meta_partitions(documents)
        self.weights = normalise_weights(cfg.weights)
        self.total_tokens = cfg.total_tokens
        self.seq_len = cfg.seq_len
        self.seed = cfg.seed
        self.val_fraction = cfg.val_fraction
        self.val_max_tokens = cfg.val_max_tokens
        self.max_epochs = cfg.max_epochs
        self.itemsize = itemsize
        self.buckets = dict(buckets)

    def expand(self, docs):
        width = self.seq_len + 1
        # distinct documents: the copy of a duplicated id with the smallest (digest, length) counts, as packing keeps
        metas_files = (
            docs
            | "MetaEntries" >> beam.Map(_meta_entry, itemsize=self.itemsize)
            | "ByPartition" >> beam.Map(_by_partition, partitions=self.partitions)
            | "HandOff" >> beam.ParDo(handoff.HandOff(self.handoff, self.pattern, _entries_table, _entry_bytes))
            | "GroupEntries" >> beam.GroupByKey()
            | "DistinctIds" >> beam.ParDo(WriteMetas(self.handoff, self.pattern))
        )
        # 1. validation
        fractions = {s: self.val_fraction if w > 0 else 0.0 for s, w in self.weights.items()}
        val_steps = (
            metas_files
            | "ValMetas" >> beam.FlatMap(read_metas)
            | "ValHistogram" >> Histogram(_val_order)
            | "ValStep" >> beam.MapTuple(_val_step, fractions=fractions, max_tokens=self.val_max_tokens, width=width)
        )
        steps = val_steps | "ValSteps" >> beam.MapTuple(lambda s, v: (s, v[2]))
        val_cuts = metas_files | "ValPrefixMetas" >> beam.FlatMap(read_metas) | "ValPrefix" >> Prefix(_val_order, steps)
        vals = (
            {"step": val_steps, "cut": val_cuts}
            | "JoinVal" >> beam.CoGroupByKey()
            | "ValPlans" >> beam.MapTuple(lambda s, g: (s, ValPlan(g["step"][0][0], g["step"][0][1], *g["cut"][0])))
        )
        # 2. the draw, over training documents only
        train = (
            metas_files
            | "Reread" >> beam.Reshuffle()
            | "TrainMetas" >> beam.FlatMap(read_metas)
            | "TrainOnly"
            >> beam.Filter(
                lambda m, vals: not is_validation(m.source, m.id, vals[m.source]), vals=beam.pvalue.AsDict(vals)
            )
        )
        select_order = functools.partial(_select_order, self.seed)
        draw_steps = (
            train
            | "SelectHistogram" >> Histogram(select_order)
            | "DrawStep"
            >> beam.ParDo(
                DrawStep(self.weights, self.total_tokens, self.seq_len, self.max_epochs, self.buckets),
                vals=beam.pvalue.AsDict(vals),
            )
        )
        partial = train | "SelectPrefix" >> Prefix(
            select_order, draw_steps | "SelectSteps" >> beam.MapTuple(lambda s, v: (s, v[1]))
        )
        draws = (
            {"step": draw_steps, "cut": partial}
            | "JoinDraw" >> beam.CoGroupByKey()
            | "Draws" >> beam.MapTuple(lambda s, g: (s, g["step"][0][0]._replace(partial_cut=g["cut"][0][0])))
        )
        # 3. bucket capacities and rows
        buckets = (
            metas_files
            | "RereadForBuckets" >> beam.Reshuffle()
            | "BucketMetas" >> beam.FlatMap(read_metas)
            | "BucketTokens" >> beam.FlatMap(_capacity, draws=beam.pvalue.AsDict(draws), seed=self.seed)
            | "SumBuckets" >> beam.CombinePerKey(_add)
            | "BucketsBySource" >> beam.MapTuple(lambda key, sv: (key[0], (key[1], *sv)))
            | "GroupBuckets" >> beam.GroupByKey()
            | "Allocate" >> beam.FlatMapTuple(_allocate, draws=beam.pvalue.AsDict(draws), width=width)
        )
        # every metas file has been read once the buckets are allocated (each read feeds a GroupByKey before it)
        _ = buckets | "RemoveHandoff" >> handoff.RemoveWhenDone(self.handoff)
        return {"draws": draws, "buckets": buckets}
