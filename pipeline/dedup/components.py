"""Connected components of the verified-duplicate graph, computed on the Beam runner.

Collecting the edges on one machine and running union-find would make the driver the memory limit of
dedup. Plain min-label propagation stays distributed but needs as many rounds as the graph's diameter: a
chain of syndicated copies (a~b, b~c, c~d, ...) of length 1000 needs 1000 rounds. We use the
**large-star / small-star** alternation of Kiveris et al., "Connected Components in MapReduce and Beyond"
(SoCC 2014), which converges in O(log² n) rounds (about log n in practice), each round two GroupByKeys:

* *large-star*: every node ``u`` connects its **larger** neighbours to ``m = min(Γ(u) ∪ {u})``;
* *small-star*: every node ``u`` connects its **smaller-or-equal** neighbours and itself to
  ``m = min(N(u) ∪ {u})`` over those neighbours.

Both preserve connectivity and never join two components; the fixed point is a union of stars, each centred
on its component's minimum. Beam graphs are static, so the rounds are *unrolled*: ``rounds`` is fixed when
the pipeline is built (``cc_rounds`` in the config; ``0`` means ``max(4, ceil(log2(n + 1)))`` for ``n``
input documents, enough for every graph in the demo and tests). The final pass labels each node with
``min(Γ(u) ∪ {u})`` and counts *unconverged* nodes -- a non-minimum node with more than one neighbour,
which exists iff the graph is not yet a union of stars. If any remain (too few rounds), the labels still
only ever group nodes of one true component: a cluster may be split, never wrongly merged. The dedup stage
treats any such count as a failure (converge or fail: a split cluster is silent under-deduplication) and
names ``cc_rounds`` in its error. The rounds stay unrolled in one pipeline rather than looped until no label
changes, since a loop would need one Beam job per round; the default settles a 1,000-node shuffled path and a
1,000-leaf star (``tests/test_dedup_components.py``).

Node keys are the survivor-ordered rank keys from :mod:`pipeline.dedup.exact`, so each component's minimum
is already its survivor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import xxhash

from pipeline.dedup.records import Edge, Label
from pipeline.dedup.work import receive, send

UNCONVERGED = "unconverged"


def auto_rounds(n_nodes: int) -> int:
    """Default number of large-star + small-star rounds for a graph on at most ``n_nodes`` nodes."""
    return max(4, math.ceil(math.log2(max(1, n_nodes) + 1)))


def _both_directions(edge: tuple[str, str]) -> Iterator[tuple[str, str]]:
    u, v = edge
    if u != v:
        yield u, v
        yield v, u


def _large_star(element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
    u, neighbours = element
    nbrs = set(neighbours)
    nbrs.discard(u)
    if not nbrs:
        return
    m = min(min(nbrs), u)
    for v in nbrs:
        if v > u:
            yield v, m


def _towards_smaller(edge: tuple[str, str]) -> Iterator[tuple[str, str]]:
    u, v = edge
    if u == v:
        return
    yield (u, v) if v <= u else (v, u)


def _small_star(element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
    u, smaller = element
    nbrs = set(smaller)
    nbrs.add(u)
    m = min(nbrs)
    for v in nbrs:
        if v != m:
            yield v, m


def _label(u: str, neighbours: set[str]) -> tuple[str, bool]:
    """Final pass for one node: ``(min(Γ(u) ∪ {u}), settled)``; a non-minimum node with more than one
    neighbour means the graph is not yet a union of stars."""
    nbrs = neighbours - {u}
    m = min(min(nbrs), u) if nbrs else u
    return m, not (m != u and len(nbrs) > 1)


def partition_of(key: str, partitions: int) -> int:
    """The shuffle partition of a node key: XXH3-64 of its UTF-8 bytes mod ``partitions``.

    A content hash, not Python's ``hash()``: that one is salted per process (``PYTHONHASHSEED``), and
    partition numbers name output files, so they must be the same in every worker and every run.
    """
    return xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass")) % partitions


def _by_partition(edges: Iterable[tuple[str, str]], partitions: int) -> dict[int, list[tuple[str, str]]]:
    """Edges ``(u, v)`` -> ``{partition of u: [edges]}``, to be handed on as :class:`.records.Edge` batches."""
    out: dict[int, list[tuple[str, str]]] = {}
    for edge in edges:
        out.setdefault(partition_of(edge[0], partitions), []).append(edge)
    return out


def _adjacency(refs: Iterable[str]) -> dict[str, set]:
    """One partition's handed edges -> ``{u: {v, ...}}`` (every edge is keyed by its first node's partition)."""
    adj: dict[str, set] = {}
    for edge in receive(Edge, refs):
        adj.setdefault(edge.u, set()).add(edge.v)
    return adj


def read_labels(refs: Iterable[str]) -> Iterator[Label]:
    """The :class:`.records.Label` of every node in the label references :class:`ConnectedComponents` produced."""
    return receive(Label, refs)


class _EdgesToPartitions(beam.DoFn):
    """An edge batch -> both directions, by the partition of the first node (the first large star), in a
    hand-off file named by the batch's content hash (the same batch always makes the same file)."""

    def __init__(self, partitions: int, work: str):
        self.partitions = partitions
        self.work = work

    def process(self, batch: list) -> Iterator[tuple[int, str]]:
        edges = sorted(e for edge in batch for e in _both_directions(tuple(edge)))
        if not edges:
            return
        # named by content: a retried batch rewrites its own file (identical batches, identical files)
        content = "\n".join(f"{u}\t{v}" for u, v in edges).encode("utf-8", "surrogatepass")
        producer = xxhash.xxh3_64_hexdigest(content)
        yield from send(self.work, "cc-edges", producer, Edge, _by_partition(edges, self.partitions))


class _StarPartition(beam.DoFn):
    """One partition's adjacency -> the large- or small-star edges of each of its nodes, already keyed by
    partition for the next step (the small star's input after a large star, the next large star's after a
    small one), so a round is two DoFns and two shuffles.

    Every edge ``(u, v)`` reaches the partition of ``u``, so grouping by node inside the partition sees exactly
    the neighbours a per-node GroupByKey would: the result is the same edge set, in a handful of elements.
    """

    def __init__(self, large: bool, partitions: int, work: str, step: str):
        self.large = large
        self.partitions = partitions
        self.work = work
        self.step = step

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[tuple[int, str]]:
        part, refs = element
        star = _large_star if self.large else _small_star
        nxt = _towards_smaller if self.large else _both_directions
        out = [f for u, nbrs in _adjacency(refs).items() for e in star((u, nbrs)) for f in nxt(e)]
        yield from send(self.work, self.step, f"p{part:05d}", Edge, _by_partition(out, self.partitions))


class _LabelPartition(beam.DoFn):
    """Final pass over one partition: its nodes' ``(node, label)`` pairs in one hand-off file, plus the
    number of nodes not yet in a star (as an ``unconverged`` output, only when there are any)."""

    def __init__(self, work: str):
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        part, refs = element
        labels, unconverged = [], 0
        for u, nbrs in sorted(_adjacency(refs).items()):
            m, settled = _label(u, nbrs)
            labels.append((u, m))
            unconverged += not settled
        if unconverged:
            yield beam.pvalue.TaggedOutput(UNCONVERGED, unconverged)
        yield from send(self.work, "cc-labels", f"p{part:05d}", Label, {part: labels})


class ConnectedComponents(beam.PTransform):
    """PCollection[(u, v)] undirected edges -> the component label of every node on an edge, as
    PCollection[(partition, label reference)]: node ``u``'s label is in a reference of partition
    ``partition_of(u, partitions)``, and :func:`read_labels` turns references into ``(node, label)`` pairs.

    The label is the smallest node of the component (once converged). ``.unconverged`` after expansion is a
    PCollection of counts of nodes that were not yet settled when the unrolled rounds ran out (none: empty).

    **Partitioned rounds, edges in files.** A GroupByKey per node makes every round cost one shuffled
    element per edge direction, and on a local runner that per-element cost dominated dedup. Each star step
    instead groups edges by ``partition_of(node, partitions)`` and by node inside the partition; the edge
    set each step produces is exactly the per-node one, so the rounds and their convergence are unchanged.
    The edges themselves go through hand-off files in ``work`` (:mod:`.work`): only references cross the
    ``2 * rounds + 1`` shuffles, so what a local runner keeps per step no longer grows with the graph.
    ``batched=True`` takes PCollection[list of edges] (what the dedup stage produces); otherwise single
    edges are batched first.
    """

    def __init__(self, rounds: int, work: str, partitions: int = 8, batched: bool = False):
        super().__init__()
        if rounds < 0:
            raise ValueError("rounds must be >= 0")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.rounds = rounds
        self.work = work
        self.partitions = partitions
        self.batched = batched
        self.unconverged = None

    def expand(self, edges):
        batches = (
            edges
            if self.batched
            else edges | "BatchEdges" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
        )
        parts, work = self.partitions, self.work
        keyed = batches | "EmitEdges" >> beam.ParDo(_EdgesToPartitions(parts, work))
        for i in range(self.rounds):
            keyed = (
                keyed
                | f"LargeStarGroup{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.ParDo(_StarPartition(True, parts, work, f"cc-{i:03d}-large"))
                | f"SmallStarGroup{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.ParDo(_StarPartition(False, parts, work, f"cc-{i:03d}-small"))
            )
        labelled = (
            keyed
            | "LabelGroup" >> beam.GroupByKey()
            | "Label" >> beam.ParDo(_LabelPartition(work)).with_outputs(UNCONVERGED, main="labels")
        )
        self.unconverged = labelled[UNCONVERGED]
        return labelled.labels


class UnionFind:
    """In-memory union-find with path halving: the single-machine reference for small graphs (evaluation)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra  # the smaller root wins, so each root is its component's minimum

    def components(self) -> dict[str, str]:
        return {x: self.find(x) for x in list(self.parent)}
