"""Dedup output is byte-identical across processes: same input and settings, different hash seeds and runners.

Beam's grouping order follows Python's per-process string hash seed (``PYTHONHASHSEED``), so a sink that writes
rows in arrival order makes every rerun a different file. Each run here is its own interpreter with its own
seed, and the second one also uses a different local running mode (threads instead of one process).
"""

from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys

from pipeline.commit import untagged
from pipeline.dedup import read_clusters
from pipeline.tables import read_documents, write_documents

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUN = """
import sys
from pipeline.dedup import DedupConfig, run_dedup
from pipeline.runner import RunnerConfig
runner = RunnerConfig(runner="local", num_workers=int(sys.argv[3]), running_mode=sys.argv[4])
run_dedup([sys.argv[1]], sys.argv[2], DedupConfig(chunk_rows=100), runner)
"""


def _corpus(folder) -> int:
    """290 documents: 200 originals, 50 near copies (one word edited), 40 exact copies (respaced), two files;
    each page on one of four sites, inside its site's template (two boilerplate lines)."""
    rng = random.Random(3)
    rows = []

    def page(doc_id: str, words: list[str], site: int) -> dict:
        text = f"Site {site} home news sport weather\n{' '.join(words)}\nCopyright site {site} all rights reserved"
        return {"id": doc_id, "source": "crawl", "text": text, "url": f"https://site{site}.example/{doc_id}"}

    for i in range(200):
        words = [f"w{rng.randrange(3000)}" for _ in range(80)]
        rows.append(page(f"doc{i:04d}", words, i % 4))
        if i % 4 == 0:
            near = list(words)
            for j in rng.sample(range(80), 1):
                near[j] = "edited"
            rows.append(page(f"near{i:04d}", near, (i // 4) % 4))
        if i % 5 == 0:
            exact = page(f"exact{i:04d}", words, i % 4)
            rows.append({**exact, "text": exact["text"].replace(" ", "  ").upper()})
    rng.shuffle(rows)
    os.makedirs(folder)
    # Row groups of 50 rows, so chunk_rows decides how the files are split into work chunks.
    for part, chunk in enumerate((rows[:150], rows[150:])):
        write_documents(chunk, str(folder / f"part-{part}.parquet"), row_group_size=50)
    return len(rows)


def _run(src: str, out: str, seed: str, workers: int, mode: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    subprocess.run(
        [sys.executable, "-c", _RUN, src, out, str(workers), mode], cwd=REPO, env=env, check=True, timeout=300
    )
    names = ["index/meta.json"] + sorted(
        os.path.relpath(f, out)
        for pattern in ("documents-*.parquet", "clusters-*.jsonl", "index/*.parquet")
        for f in glob.glob(os.path.join(out, pattern))
    )
    files = {}
    for name in names:
        with open(os.path.join(out, name), "rb") as fh:
            files[untagged(name)] = fh.read()  # by name without the attempt tag, which differs run to run
    return files


def test_outputs_byte_identical_across_hash_seeds(tmp_path):
    n = _corpus(tmp_path / "in")
    first = _run(str(tmp_path / "in"), str(tmp_path / "a"), "1", 1, "in_memory")
    second = _run(str(tmp_path / "in"), str(tmp_path / "b"), "2", 2, "multi_threading")
    assert sorted(first) == sorted(second)
    assert [f for f in first if f.startswith("documents-")] == [
        f"documents-{i:05d}-of-00004.parquet" for i in range(4)
    ]  # 150 + 140 rows in row groups of 50, chunks of 100 rows: 100 + 50 and 100 + 40
    assert len([f for f in first if f.startswith("index/") and f.endswith(".parquet")]) == 4
    for name in first:
        assert first[name] == second[name], f"{name} differs between the two runs"
    kept = list(read_documents(str(tmp_path / "a")))
    assert len(kept) <= 210  # most of the 90 copies found (LSH misses a few), so clusters and annotations count
    lines = b"".join(data for name, data in first.items() if name.startswith("clusters-")).splitlines()
    survivors = [line for line in lines if b'"survivor": true' in line]
    assert survivors and len(lines) == (n - len(kept)) + len(survivors)


def test_partition_and_chunk_counts_do_not_change_the_result(local_runner, tmp_path):
    """Partitions and chunks only decide where work happens: 1 or 5 LSH/component partitions and 2 or 6 work
    chunks (one per file, or one per row group) give the same kept documents and the same cluster lines."""
    from pipeline.dedup import DedupConfig, NearConfig, run_dedup

    _corpus(tmp_path / "in")
    outputs = []
    for parts, chunk_rows, chunks in ((1, 1000, 2), (5, 50, 6)):
        out = str(tmp_path / f"out-{parts}")
        stats = run_dedup(
            [str(tmp_path / "in")],
            out,
            DedupConfig(near=NearConfig(partitions=parts), chunk_rows=chunk_rows),
            local_runner,
        )
        assert stats.extra["chunks"] == chunks
        assert len(glob.glob(os.path.join(out, "documents-*.parquet"))) == chunks
        outputs.append(
            (
                sorted(d["id"] for d in read_documents(out)),
                sorted(json.dumps(d, sort_keys=True) for d in read_clusters(out)),
                stats.dropped,
                stats.extra["candidate_pairs"],
                stats.extra["verified_pairs"],
                stats.extra["boilerplate"],
            )
        )
    assert outputs[0] == outputs[1]
    assert outputs[0][-1]["lines"] == 8 and outputs[0][-1]["removed_share"] > 0.6  # 2 of a page's 3 lines
