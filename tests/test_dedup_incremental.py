"""Incremental dedup: a second crawl deduplicated against the index of an earlier run, not its documents."""

from __future__ import annotations

import glob
import json
import os
import random

import pyarrow.parquet as pq
import pytest

from pipeline.accounting import read_outcomes
from pipeline.dedup import DedupConfig, NearConfig, read_clusters, run_dedup
from pipeline.tables import read_documents, write_documents


def _words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randrange(5000)}" for _ in range(n)]


def _edit(words: list[str], rng: random.Random, k: int = 3) -> list[str]:
    out = list(words)
    for i in rng.sample(range(len(out)), k):
        out[i] = "edited"
    return out


def _write(folder, rows: list[dict]) -> None:
    os.makedirs(folder)
    write_documents(rows, str(folder / "part-0.parquet"))


def _index_ids(out_dir: str) -> list[dict]:
    files = sorted(glob.glob(os.path.join(out_dir, "index", "*.parquet")))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _clusters(out_dir: str) -> dict[str, dict]:
    return {d["id"]: d for d in read_clusters(out_dir)}


def test_second_crawl_against_first_index(local_runner, tmp_path):
    rng = random.Random(7)
    old = {f"old{i}": _words(rng, 200) for i in range(4)}
    first = [{"id": k, "source": "crawl", "text": " ".join(v)} for k, v in old.items()]
    first.append({"id": "old0-copy", "source": "crawl", "text": " ".join(old["old0"]).upper()})  # dropped in run 1
    _write(tmp_path / "crawl1", first)
    run1 = str(tmp_path / "dedup1")
    s1 = run_dedup([str(tmp_path / "crawl1")], run1, DedupConfig(), local_runner)
    assert s1.kept == 4 and s1.dropped == {"exact_duplicate": 1}
    index = _index_ids(run1)
    assert sorted(r["id"] for r in index) == ["old0", "old1", "old2", "old3"]
    assert all(r["bands"] and r["sketch"] and r["exact_hash"] for r in index)
    with open(os.path.join(run1, "index", "meta.json"), encoding="utf-8") as fh:
        assert json.load(fh)["documents"] == 4

    fresh = _words(rng, 200)
    second = [
        {"id": "new-exact", "source": "crawl", "text": "\n".join(old["old1"])},  # respaced exact copy
        {"id": "new-near", "source": "crawl", "text": " ".join(_edit(old["old2"], rng))},
        {"id": "new-near-of-near", "source": "crawl", "text": " ".join(_edit(old["old2"], rng))},
        {"id": "fresh", "source": "crawl", "text": " ".join(fresh)},
        {"id": "fresh-near", "source": "crawl", "text": " ".join(_edit(fresh, rng))},
        {"id": "unrelated", "source": "crawl", "text": " ".join(_words(rng, 150))},
    ]
    _write(tmp_path / "crawl2", second)
    run2 = str(tmp_path / "dedup2")
    s2 = run_dedup([str(tmp_path / "crawl2")], run2, DedupConfig(against=[run1]), local_runner)
    kept = {d["id"] for d in read_documents(run2)}
    assert kept == {"fresh", "unrelated"}  # indexed documents are never re-emitted
    assert s2.read == len(second) == sum(read_outcomes(run2).values())
    assert s2.dropped == {"exact_duplicate_of_index": 1, "near_duplicate_of_index": 2, "near_duplicate": 1}
    assert s2.extra["indexed_documents"] == 4 and s2.extra["against"] == [run1]
    clusters = _clusters(run2)
    assert clusters["new-exact"]["cluster"] == "old1"
    assert clusters["new-exact"]["reason"] == "exact_duplicate_of_index"
    assert clusters["new-near"]["cluster"] == "old2" == clusters["new-near-of-near"]["cluster"]
    assert clusters["fresh-near"] == {
        "id": "fresh-near",
        "cluster": "fresh",
        "source": "crawl",
        "survivor": False,
        "reason": "near_duplicate",
    }
    # The second index holds only the second run's survivors; a third run passes both folders.
    assert sorted(r["id"] for r in _index_ids(run2)) == ["fresh", "unrelated"]
    _write(
        tmp_path / "crawl3",
        [
            {"id": "again", "source": "crawl", "text": " ".join(_edit(fresh, rng))},
            {"id": "again-old", "source": "crawl", "text": " ".join(old["old3"])},
        ],
    )
    s3 = run_dedup(
        [str(tmp_path / "crawl3")], str(tmp_path / "dedup3"), DedupConfig(against=[run1, run2]), local_runner
    )
    assert s3.kept == 0 and s3.dropped == {"near_duplicate_of_index": 1, "exact_duplicate_of_index": 1}

    # Settings that change hashes or bands must match the index's; a folder without an index is refused.
    with pytest.raises(ValueError, match="num_perm"):
        run_dedup(
            [str(tmp_path / "crawl3")],
            str(tmp_path / "d4"),
            DedupConfig(against=[run1], near=NearConfig(num_perm=64)),
            local_runner,
        )
    with pytest.raises(ValueError, match="no index"):
        run_dedup(
            [str(tmp_path / "crawl3")],
            str(tmp_path / "d5"),
            DedupConfig(against=[str(tmp_path / "crawl1")]),
            local_runner,
        )


def test_an_index_of_another_version_or_boilerplate_setting_is_refused(local_runner, tmp_path):
    """The index holds core sketches (version 2): a version 1 index, or one whose boilerplate lines were found
    with other settings, would be compared on other shingle sets, so it is refused before the pipeline runs."""
    rng = random.Random(3)
    _write(
        tmp_path / "crawl", [{"id": f"d{i}", "source": "crawl", "text": " ".join(_words(rng, 80))} for i in range(4)]
    )
    run1 = str(tmp_path / "dedup1")
    run_dedup([str(tmp_path / "crawl")], run1, DedupConfig(), local_runner)
    meta_path = os.path.join(run1, "index", "meta.json")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    assert meta["version"] == 2 and meta["near"]["boilerplate"] == {"enabled": True, "min_docs": 6, "per_host": True}
    assert pq.read_schema(glob.glob(os.path.join(run1, "index", "*.parquet"))[0]).names[-1] == "core"

    other = NearConfig()
    other.boilerplate.min_docs = 3
    with pytest.raises(ValueError, match="boilerplate"):
        run_dedup(
            [str(tmp_path / "crawl")], str(tmp_path / "d2"), DedupConfig(against=[run1], near=other), local_runner
        )
    with open(meta_path, "w", encoding="utf-8") as fh:
        json.dump({**meta, "version": 1}, fh)
    with pytest.raises(ValueError, match="index is version 1, this ccgpt reads version 2 only"):
        run_dedup([str(tmp_path / "crawl")], str(tmp_path / "d3"), DedupConfig(against=[run1]), local_runner)
