"""Bad input for dedup: empty and tiny documents, an all-identical corpus, one giant near-duplicate cluster."""

from __future__ import annotations

import json
import os
import random

from pipeline.accounting import read_outcomes
from pipeline.dedup import DedupConfig, run_dedup
from pipeline.tables import read_documents, write_documents


def _write(folder, rows: list[dict]) -> None:
    os.makedirs(folder)
    write_documents(rows, str(folder / "part-0.parquet"))


def test_empty_short_and_identical_documents(local_runner, tmp_path):
    rows = [{"id": f"same{i}", "source": "crawl", "text": "The very same page, again and again."} for i in range(300)]
    rows += [
        {"id": "empty", "source": "crawl", "text": ""},
        {"id": "blank", "source": "crawl", "text": " \n "},
        {"id": "punct", "source": "crawl", "text": "!!! ... ???"},  # no word token: no shingle at all
        {"id": "short1", "source": "crawl", "text": "hello world"},  # shorter than one 5-word shingle
        {"id": "short2", "source": "crawl", "text": "Hello, world!"},  # same shingle, different exact text
        {"id": "short3", "source": "crawl", "text": "hello   WORLD"},  # exact copy of short1 once normalised
    ]
    _write(tmp_path / "in", rows)
    out = str(tmp_path / "out")
    stats = run_dedup([str(tmp_path / "in")], out, DedupConfig(), local_runner)
    assert stats.read == len(rows) == sum(read_outcomes(out).values())
    assert stats.dropped == {"empty_text": 2, "exact_duplicate": 300 - 1 + 1, "near_duplicate": 1}
    assert {d["id"] for d in read_documents(out)} == {"same0", "punct", "short1"}
    assert stats.extra["documents_without_shingles"] == 1
    assert stats.extra["cluster_size_histogram"] == {"3": 1, "300": 1}


def test_giant_cluster_stays_linear(shared_data, local_runner, tmp_path):
    """2,000 near-copies of one real article: one cluster, and candidate pairs O(n * bands), not O(n^2)."""
    with open(os.path.join(shared_data, "dedup", "syndicated-news.jsonl"), encoding="utf-8") as fh:
        base = max((json.loads(line)["text"] for line in fh), key=len).split()[:60]
    rng = random.Random(3)
    n = 2000
    rows = []
    for i in range(n):
        # a copy with its own trailing word: Jaccard between any two copies 55/57
        rows.append(
            {"id": f"copy{rng.randrange(10**9):09d}-{i}", "source": "crawl", "text": " ".join(base + [f"x{i}"])}
        )
    _write(tmp_path / "in", rows)
    out = str(tmp_path / "out")
    stats = run_dedup([str(tmp_path / "in")], out, DedupConfig(), local_runner)
    assert stats.read == n and stats.kept == 1 and stats.dropped == {"near_duplicate": n - 1}
    assert stats.extra["cluster_size_histogram"] == {str(n): 1}
    assert stats.extra["cc_unconverged_nodes"] == 0
    bands = stats.extra["near"]["bands"]
    assert stats.extra["oversized_buckets"] >= 1
    assert stats.extra["candidate_pairs"] <= n * bands  # all pairs would be n(n-1)/2 = 1,999,000
    assert stats.extra["candidate_pairs"] < n * (n - 1) // 2 // 50
