"""Dedup with its input tables, its output folder and its ``--against`` index on an object store (moto_server).

On a cluster the driver and the workers share no disk, so every file of the stage (the sketch and hand-off
files of its work folder included) goes through ``pipeline.fs``. The same input must give the same committed
bytes on ``s3://`` as on local disk, and nothing the commit did not list may be left under the output folder.
"""

from __future__ import annotations

import dataclasses
import os
import random

import pyarrow.fs as pafs
import s3_runs

from pipeline.dedup import DedupConfig, NearConfig, run_dedup
from pipeline.tables import write_documents

# what decides the stats but not the output: where it ran, when, and which inputs (paths differ by scheme)
_VOLATILE = ("seconds", "attempt", "files", "fingerprint", "lineage", "against")


def _rows(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """A first crawl with exact and near duplicates, and a second one holding near copies of the first."""

    def words(n: int) -> list[str]:
        return [f"w{rng.randrange(3000)}" for _ in range(n)]

    def edit(ws: list[str]) -> str:
        out = list(ws)
        out[rng.randrange(len(out))] = "edited"
        return " ".join(out)

    base = [words(100) for _ in range(12)]
    first = []
    for i, ws in enumerate(base):
        first.append({"id": f"d{i}", "source": "books" if i % 3 == 0 else "crawl", "text": " ".join(ws)})
        if i % 3 == 1:
            first.append({"id": f"d{i}-copy", "source": "crawl", "text": " ".join(ws).upper()})
        if i % 4 == 0:
            first.append({"id": f"d{i}-near", "source": "crawl", "text": edit(ws)})
    rng.shuffle(first)
    second = [{"id": f"n{i}", "source": "crawl", "text": edit(base[i])} for i in range(0, 12, 5)]
    second += [{"id": f"f{i}", "source": "crawl", "text": " ".join(words(80))} for i in range(3)]
    return first, second


def test_dedup_on_s3_commits_the_bytes_it_commits_locally(s3_server, s3_bucket, local_runner, tmp_path):
    first, second = _rows(random.Random(5))
    store = s3_runs.store(s3_server)
    bucket = s3_bucket[len("s3://") :]
    for name, rows in (("crawl1", first), ("crawl2", second)):
        os.makedirs(tmp_path / name)
        write_documents(rows, str(tmp_path / name / "part-0.parquet"), row_group_size=5)  # several work chunks
        pafs.copy_files(
            str(tmp_path / name / "part-0.parquet"), f"{bucket}/{name}/part-0.parquet", destination_filesystem=store
        )

    # every work file is an object here, each costing S3 requests: one partition keeps them few
    cfg = DedupConfig(chunk_rows=10, near=NearConfig(partitions=1, cc_rounds=2))
    runs = {}
    for where, base in (("local", str(tmp_path)), ("s3", s3_bucket)):
        run1, run2 = os.path.join(base, "dedup1"), os.path.join(base, "dedup2")
        s1 = run_dedup([os.path.join(base, "crawl1")], run1, cfg, local_runner)
        s2 = run_dedup([os.path.join(base, "crawl2")], run2, dataclasses.replace(cfg, against=[run1]), local_runner)
        runs[where] = (s1, s2)
    (l1, l2), (r1, r2) = runs["local"], runs["s3"]
    assert l1.dropped == {"exact_duplicate": 4, "near_duplicate": 3} and l1.extra["chunks"] > 1
    assert l2.dropped == {"near_duplicate_of_index": 3} and l2.extra["indexed_documents"] == l1.kept
    assert s3_runs.figures(r1, *_VOLATILE) == s3_runs.figures(l1, *_VOLATILE)
    assert s3_runs.figures(r2, *_VOLATILE) == s3_runs.figures(l2, *_VOLATILE)

    for run, local, remote in (("dedup1", l1, r1), ("dedup2", l2, r2)):
        on_s3 = s3_runs.objects(store, f"{s3_bucket}/{run}")
        assert set(on_s3) == {f["path"] for f in remote.extra["files"]} | {"stats.json"}  # nothing not listed
        listed = set(s3_runs.untagged_files(remote))
        assert listed == set(s3_runs.untagged_files(local))
        assert any(p.startswith("clusters-") for p in listed) and "index/meta.json" in listed
        on_s3, on_disk = s3_runs.by_name(on_s3), s3_runs.by_name(s3_runs.local_files(str(tmp_path / run)))
        for path in listed:
            if path.endswith((".parquet", ".jsonl", "meta.json")) and not path.startswith(("outcomes", "counters")):
                assert on_s3[path] == on_disk[path], f"{run}/{path}"
