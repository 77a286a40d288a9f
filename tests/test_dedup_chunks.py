"""The dedup stage's work chunks and column batches: pure functions, no runner."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.index import SKETCH_SCHEMA
from pipeline.dedup.records import (
    BandEntries,
    Member,
    Probe,
    Survivor,
    Weight,
    add_band_batches,
    pack,
    pack_strings,
    unpack,
    unpack_columns,
    unpack_strings,
)
from pipeline.dedup.work import (
    hand_off,
    handed,
    list_array,
    load_sketches,
    plan_chunks,
    receive,
    send,
    write_parquet,
)


def _file(path, groups: list[int]) -> str:
    table = pa.table({"x": pa.array(range(sum(groups)), type=pa.int64())})
    with pq.ParquetWriter(str(path), table.schema) as writer:
        start = 0
        for n in groups:
            writer.write_table(table.slice(start, n))
            start += n
    return str(path)


def test_chunks_are_runs_of_whole_row_groups(tmp_path):
    a = _file(tmp_path / "a.parquet", [40, 40, 40, 10])
    b = _file(tmp_path / "b.parquet", [500])
    assert plan_chunks([a, b], 80) == [(a, (0, 1)), (a, (2, 3)), (b, (0,))]
    assert plan_chunks([a], 1) == [(a, (0,)), (a, (1,)), (a, (2,)), (a, (3,))]
    assert plan_chunks([a], 10**6) == [(a, (0, 1, 2, 3))]


def test_packed_strings_round_trip_any_text():
    strings = ["", "plain", "naïve — ünïcode", "tab\tnul\x00line\n", "\ud800 lone surrogate", "x" * 10_000]
    assert unpack_strings(pack_strings(strings)) == strings
    assert unpack_strings(pack_strings([])) == []


def test_hand_off_writes_one_file_per_producer_and_each_consumer_reads_its_batches(tmp_path):
    work = str(tmp_path)
    rows = {3: [(b"a", b"\x00\xff"), (b"b", b"")], 0: [(b"c", b"d")], 5: []}
    refs = list(hand_off(work, "kind", "p00001", rows))
    assert [p for p, _ in refs] == [0, 3]  # sorted targets; an empty one gets nothing
    assert len({ref.rpartition("#")[0] for _, ref in refs}) == 1 == len(list(tmp_path.iterdir()))
    assert list(handed([refs[1][1]])) == rows[3] and list(handed([refs[0][1]])) == rows[0]
    again = list(hand_off(work, "kind", "p00001", rows))  # a retried producer rewrites the same file
    assert again == refs and len(list(tmp_path.iterdir())) == 1
    other = list(hand_off(work, "kind", "p00002", {3: [(b"z", b"z")]}))
    # a consumer's rows come in file order whatever order its references arrive in
    assert list(handed([other[0][1], refs[1][1]])) == rows[3] + [(b"z", b"z")]
    assert list(hand_off(work, "kind", "p00003", {})) == []


def test_members_round_trip_with_and_without_bands():
    rows = [
        Member(bytes(range(16)), "key-a", "crawl", 2**64 - 1, 3, 7, np.array([1, 2**63, 5], dtype=np.uint64)),
        Member(bytes(16), "key-b", "books", 0, -1, 0, np.zeros(0, dtype=np.uint64)),
        Member(b"\xff" * 16, "kéy-c", "crawl", 12345, 0, 2**40, np.array([9, 8, 7], dtype=np.uint64)),
    ]
    back = list(unpack(Member, pack(Member, rows)))
    assert len(back) == 3
    for m, m2 in zip(rows, back):
        assert isinstance(m2, Member) and m2[:6] == m[:6]
        assert m2.bands.dtype == np.uint64 and m2.bands.tolist() == m.bands.tolist()
    assert [m.indexed for m in back] == [False, True, False]


def test_records_round_trip_through_hand_off_files(tmp_path):
    """Records sent to a partition come back as the same named records, numbers as Python ints."""
    survivors = [Survivor("k\x00a", "crawl", 0, 5, 2), Survivor("\ud800", "books", 7, 2**40, 0)]
    empty = np.zeros(0, np.uint64)
    probes = [Probe("a", "b", 3, np.array([1, 2], dtype=np.uint64), empty, 1), Probe("a", "c", 0, empty, empty, 0)]
    refs = dict(send(str(tmp_path), "survivors", "x00000", Survivor, {4: survivors, 1: []}))
    assert list(refs) == [4] and list(receive(Survivor, [refs[4]])) == survivors
    back = list(receive(Probe, [ref for _, ref in send(str(tmp_path), "probes", "s00000", Probe, {0: probes})]))
    assert [p[:3] for p in back] == [p[:3] for p in probes]
    assert [p.sketch_a.tolist() for p in back] == [[1, 2], []]
    assert [p.stored_a().core for p in back][1] is None and back[0].stored_a().core.tolist() == []
    weights = [Weight("a", 3), Weight("b", 1)]
    assert all(type(x) is int for w in unpack(Weight, pack(Weight, weights)) for x in w[1:])


def test_band_entries_land_whole_buckets_in_one_partition():
    keys = ["k0", "k1", "k2"]
    hashes = np.array([[1, 2], [1, 5], [6, 2]], dtype=np.uint64)
    out: dict[int, list] = {}
    add_band_batches(out, keys, np.array([0, 0, 1], np.int32), np.array([4, 5, 6], np.int64), hashes, 3)
    seen = set()
    for part, batches in out.items():
        (batch,) = batches
        e = unpack_columns(BandEntries, batch)
        for band, h, doc in zip(e.band.tolist(), e.hash.tolist(), e.doc.tolist()):
            assert h % 3 == part and hashes[keys.index(e.keys[doc]), band] == h
            seen.add((e.keys[doc], band, int(e.chunk[doc]), int(e.pos[doc])))
    assert seen == {(k, b, [0, 0, 1][i], 4 + i) for i, k in enumerate(keys) for b in (0, 1)}


def test_sketches_read_back_by_position_across_row_groups(tmp_path):
    """A sketch file is written in record batches (row groups); any position reads back its own sketch and
    core (None where the file holds a null: no line of the document is boilerplate)."""
    rng = np.random.default_rng(0)
    sketches = [np.unique(rng.integers(0, 2**63, size=int(rng.integers(0, 50)), dtype=np.uint64)) for _ in range(2500)]
    cores = [s[: s.size // 2] if i % 3 else None for i, s in enumerate(sketches)]

    def batches():
        for start in range(0, len(sketches), 1000):
            part = sketches[start : start + 1000]
            n = len(part)
            yield pa.RecordBatch.from_pydict(
                {
                    "key": [f"k{start + i}" for i in range(n)],
                    "id": [str(start + i) for i in range(n)],
                    "source": ["crawl"] * n,
                    "exact_hash": ["0" * 32] * n,
                    "bands": list_array([np.zeros(0, dtype=np.uint64)] * n),
                    "sketch": list_array(part),
                    "core": list_array(cores[start : start + 1000]),
                    "row": list(range(start, start + n)),
                },
                schema=SKETCH_SCHEMA,
            )

    path = str(tmp_path / "sketch.parquet")
    assert write_parquet(path, batches(), SKETCH_SCHEMA) == 2500
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    wanted = [0, 999, 1000, 1001, 2499, 1500, 1500]
    got = load_sketches(path, wanted)
    assert sorted(got) == sorted(set(wanted))
    for pos in wanted:
        assert got[pos].sketch.tolist() == sketches[pos].tolist()
        assert (got[pos].core is None) == (cores[pos] is None)
        assert cores[pos] is None or got[pos].core.tolist() == cores[pos].tolist()
    assert load_sketches(path, []) == {}
