"""Connected components on the Beam runner, against scipy's connected_components."""

from __future__ import annotations

import os
import random

import apache_beam as beam
import numpy as np
from apache_beam.testing.util import assert_that, equal_to
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.dedup.components import ConnectedComponents, UnionFind, auto_rounds, partition_of, read_labels
from pipeline.runner import make_pipeline


def _reference(edges: list[tuple[str, str]]) -> dict[str, str]:
    """node -> smallest node of its component, via scipy.sparse.csgraph."""
    nodes = sorted({n for e in edges for n in e})
    index = {n: i for i, n in enumerate(nodes)}
    rows = [index[a] for a, _ in edges]
    cols = [index[b] for _, b in edges]
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(nodes), len(nodes)))
    _, comp = connected_components(graph, directed=False)
    smallest: dict[int, str] = {}
    for n in nodes:  # nodes are sorted, so the first seen per component is its minimum
        smallest.setdefault(int(comp[index[n]]), n)
    return {n: smallest[int(comp[index[n]])] for n in nodes}


def _graphs() -> list[tuple[str, str]]:
    rng = random.Random(7)
    chain_ids = [f"c{i:03d}" for i in range(64)]
    rng.shuffle(chain_ids)  # a path whose labels are not monotone along it
    chain = [(chain_ids[i], chain_ids[i + 1]) for i in range(63)]
    ordered_chain = [(f"o{i:03d}", f"o{i + 1:03d}") for i in range(40)]  # a-b, b-c, c-d, ...
    star = [("s000", f"s{i:03d}") for i in range(1, 30)]
    random_graph = [(f"r{rng.randrange(80):03d}", f"r{rng.randrange(80):03d}") for _ in range(70)]
    random_graph = [(a, b) for a, b in random_graph if a != b]
    return chain + ordered_chain + star + random_graph


def _labels(refs):
    """(partition, reference) -> its (node, label) pairs, checking each node is in its own partition."""
    part, ref = refs
    for node, label in read_labels([ref]):
        assert partition_of(node, PARTITIONS) == part
        yield node, label


PARTITIONS = 5


def test_chain_and_random_graphs_match_scipy(local_runner, tmp_path):
    edges = _graphs()
    expected = _reference(edges)
    rounds = auto_rounds(len(expected))
    with make_pipeline(local_runner) as p:
        cc = ConnectedComponents(rounds, str(tmp_path), partitions=PARTITIONS)
        labels = p | beam.Create(edges) | cc | beam.FlatMap(_labels)
        assert_that(labels, equal_to(sorted(expected.items())), label="LabelsMatch")
        assert_that(cc.unconverged | beam.CombineGlobally(sum), equal_to([0]), label="Converged")
    # the edges crossed every step in hand-off files (one per producer and step), never in the shuffles
    assert any(name.startswith(f"cc-{rounds - 1:03d}-small-") for name in os.listdir(tmp_path))


def _check_split_not_merged(expected: dict[str, str]):
    def check(pairs):
        got = dict(pairs)
        assert set(got) == set(expected)
        for node, label in got.items():
            assert expected[label] == expected[node]  # a label always lies in the node's own component
            assert label <= node
        assert len(set(got.values())) > len(set(expected.values()))  # some component is still split

    return check


def _check_positive(counts):
    assert counts and counts[0] > 0, counts


def test_too_few_rounds_splits_but_never_merges(local_runner, tmp_path):
    """One round cannot settle a 64-node path: the shortfall is counted, and clusters only split."""
    edges = _graphs()
    expected = _reference(edges)
    with make_pipeline(local_runner) as p:
        cc = ConnectedComponents(1, str(tmp_path), partitions=PARTITIONS)
        labels = p | beam.Create(edges) | cc | beam.FlatMap(_labels)
        assert_that(labels, _check_split_not_merged(expected), label="SplitNotMerged")
        assert_that(cc.unconverged | beam.CombineGlobally(sum), _check_positive, label="Unconverged")


def test_union_find_matches_scipy():
    edges = _graphs()
    uf = UnionFind()
    for a, b in edges:
        uf.union(a, b)
    assert uf.components() == _reference(edges)


def test_a_long_chain_and_a_large_star_converge_in_the_default_rounds(local_runner, tmp_path):
    """The worst shapes for label propagation: a 1,000-node path with shuffled labels (diameter 999) and a
    1,000-leaf star. The default rounds (max(4, ceil(log2(n + 1)))) settle both: nothing is left unconverged,
    so the stage's converge-or-fail check does not fire on real graphs of this kind."""
    rng = random.Random(11)
    ids = [f"c{i:04d}" for i in range(1000)]
    rng.shuffle(ids)
    edges = [(ids[i], ids[i + 1]) for i in range(999)] + [("s0000", f"s{i:04d}") for i in range(1, 1001)]
    expected = _reference(edges)
    with make_pipeline(local_runner) as p:
        cc = ConnectedComponents(auto_rounds(len(expected)), str(tmp_path), partitions=PARTITIONS)
        labels = p | beam.Create(edges) | cc | beam.FlatMap(_labels)
        assert_that(labels, equal_to(sorted(expected.items())), label="LabelsMatch")
        assert_that(cc.unconverged | beam.CombineGlobally(sum), equal_to([0]), label="Converged")
