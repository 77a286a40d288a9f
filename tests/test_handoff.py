"""Hand-off files (pipeline.handoff): one file per producer flush, a batch per key, read in sorted order."""

from __future__ import annotations

import os
import random

import pyarrow as pa

from pipeline import handoff


def _table(values: list[int]) -> pa.Table:
    return pa.table({"v": pa.array(values, pa.int64())})


def _weight(_value: int) -> int:
    return 1


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_one_file_holds_a_batch_per_key_and_refs_name_it(tmp_path):
    path = str(tmp_path / "p.arrow")
    chunked = pa.concat_tables([_table([1, 2]), _table([3])])  # a key's table, in two chunks, is one batch
    refs = handoff.write(path, [("b", chunked), ("a", _table([4]))])
    assert refs == [("b", f"{path}#0"), ("a", f"{path}#1")] and _files(tmp_path) == ["p.arrow"]
    with pa.memory_map(path) as source:
        reader = pa.ipc.open_file(source)
        assert reader.num_record_batches == 2 and reader.get_batch(0).num_rows == 3
    assert handoff.take([refs[0][1]]).column("v").to_pylist() == [1, 2, 3]
    assert handoff.write(str(tmp_path / "none.arrow"), []) == [] and _files(tmp_path) == ["p.arrow"]


def test_references_in_any_order_read_the_same(tmp_path):
    refs = []
    for producer in range(3):
        path = str(tmp_path / f"{producer}.arrow")
        refs += [ref for _, ref in handoff.write(path, [(k, _table([producer, k])) for k in range(12)])]
    expected = handoff.take(refs).column("v").to_pylist()
    # sorted by path, then by batch index as a number (#10 after #9)
    assert expected == [v for p in range(3) for k in range(12) for v in (p, k)]
    for seed in range(5):
        shuffled = list(refs)
        random.Random(seed).shuffle(shuffled)
        assert handoff.take(shuffled).column("v").to_pylist() == expected
        assert [b.num_rows for b in handoff.read(shuffled)] == [2] * len(refs)


def test_a_producer_flush_writes_one_file_for_all_its_keys(tmp_path):
    folder = str(tmp_path / "handoff")
    fn = handoff.HandOff(folder, handoff.file_pattern(), _table, _weight)
    fn.start_bundle()
    for key, value in [(2, 20), (0, 1), (2, 21), (1, 10), (0, 2)]:
        assert list(fn.process((key, value))) == []
    out = [w.value for w in fn.finish_bundle()]
    assert [k for k, _ in out] == [0, 1, 2] and len(_files(folder)) == 1
    assert len({ref.rpartition("#")[0] for _, ref in out}) == 1
    assert {k: handoff.take([ref]).column("v").to_pylist() for k, ref in out} == {0: [1, 2], 1: [10], 2: [20, 21]}
    fn.start_bundle()
    assert [w.value for w in fn.finish_bundle()] == [] and len(_files(folder)) == 1  # an empty bundle: no file
    assert handoff.take([handoff.put(folder, handoff.file_pattern(), _table([7]))]).column("v").to_pylist() == [7]
    assert len(_files(folder)) == 2
