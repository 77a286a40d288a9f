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
only ever group nodes of one true component: a cluster may be split, never wrongly merged, and the count
is reported in the stage stats so ``cc_rounds`` can be raised.

Node keys are the survivor-ordered rank keys from :mod:`pipeline.dedup.exact`, so each component's minimum
is already its survivor.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import apache_beam as beam

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


class _Label(beam.DoFn):
    """Final pass: ``(u, min(Γ(u) ∪ {u}))`` for every node, plus a counter for nodes not yet in a star."""

    def process(self, element: tuple[str, Iterable[str]]) -> Iterator[Any]:
        u, neighbours = element
        nbrs = set(neighbours)
        nbrs.discard(u)
        m = min(min(nbrs), u) if nbrs else u
        if m != u and len(nbrs) > 1:
            yield beam.pvalue.TaggedOutput(UNCONVERGED, 1)
        yield u, m


class ConnectedComponents(beam.PTransform):
    """PCollection[(u, v)] undirected edges -> PCollection[(node, component label)] for every node on an edge.

    The label is the smallest node of the component (once converged). ``.unconverged`` after expansion is a
    PCollection of ``1`` per node that was not yet settled when the unrolled rounds ran out.
    """

    def __init__(self, rounds: int):
        super().__init__()
        if rounds < 0:
            raise ValueError("rounds must be >= 0")
        self.rounds = rounds
        self.unconverged = None

    def expand(self, edges):
        current = edges
        for i in range(self.rounds):
            current = (
                current
                | f"LargeStarEmit{i}" >> beam.FlatMap(_both_directions)
                | f"LargeStarGroup{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.FlatMap(_large_star)
                | f"SmallStarEmit{i}" >> beam.FlatMap(_towards_smaller)
                | f"SmallStarGroup{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.FlatMap(_small_star)
            )
        labelled = (
            current
            | "LabelEmit" >> beam.FlatMap(_both_directions)
            | "LabelGroup" >> beam.GroupByKey()
            | "Label" >> beam.ParDo(_Label()).with_outputs(UNCONVERGED, main="labels")
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
