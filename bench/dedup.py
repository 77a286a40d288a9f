"""Throughput of ccgpt's MinHash vs ``datasketch.MinHash`` on the same real texts.

Run by hand from the repository root::

    .venv/bin/python -m bench.dedup --docs 2000 --num-perm 128
    .venv/bin/python -m bench.dedup --docs 500 --stage     # also the whole Beam stage, docs/s

Texts are the WikiText-2 articles (paragraphs) and the syndicated news articles from ``../shared/data``,
cycled to ``--docs``. Each side turns a text into word-5-gram shingles (the same function, timed on both
sides) and a 128-permutation signature on one core: ccgpt with SHA-1 (the default, bit-identical to
datasketch; checked here on every document) and with XXH3 (the faster option), datasketch via
``MinHash.update_batch`` on the distinct shingles (its fastest path). Prints docs/s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def load_texts(n: int) -> list[str]:
    texts: list[str] = []
    for name in ("valid.txt", "test.txt"):
        with open(os.path.join(SHARED, "reference", "wikitext-2", name), encoding="utf-8") as fh:
            texts.extend(line.strip() for line in fh if len(line.split()) >= 50)
    with open(os.path.join(SHARED, "dedup", "syndicated-news.jsonl"), encoding="utf-8") as fh:
        texts.extend(json.loads(line)["text"] for line in fh)
    return [texts[i % len(texts)] for i in range(n)]


def bench(texts: list[str], num_perm: int) -> dict[str, float]:
    from datasketch import MinHash

    from pipeline.dedup.minhash import MinHasher, ShingleConfig, shingles

    cfg = ShingleConfig()
    results: dict[str, float] = {}

    t = time.perf_counter()
    ours = []
    hasher = MinHasher(num_perm=num_perm)
    for text in texts:
        ours.append(hasher.sketch(shingles(text, cfg))[0])
    results["ccgpt sha1"] = len(texts) / (time.perf_counter() - t)

    t = time.perf_counter()
    fast = MinHasher(num_perm=num_perm, hash="xxh3")
    for text in texts:
        fast.sketch(shingles(text, cfg))
    results["ccgpt xxh3"] = len(texts) / (time.perf_counter() - t)

    t = time.perf_counter()
    theirs = []
    for text in texts:
        m = MinHash(num_perm=num_perm)
        m.update_batch(shingles(text, cfg))
        theirs.append(m.hashvalues)
    results["datasketch"] = len(texts) / (time.perf_counter() - t)

    mismatches = sum(not np.array_equal(a, b) for a, b in zip(ours, theirs))
    if mismatches:
        raise SystemExit(f"{mismatches} signatures differ from datasketch")
    return results


def bench_stage(texts: list[str]) -> float:
    from pipeline.dedup import DedupConfig, run_dedup
    from pipeline.runner import RunnerConfig
    from schemas.documents import write_documents

    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "in"))
        write_documents([{"id": f"d{i:07d}", "source": "crawl", "text": t} for i, t in enumerate(texts)],
                        os.path.join(tmp, "in", "part-0.parquet"))
        t = time.perf_counter()
        stats = run_dedup([os.path.join(tmp, "in")], os.path.join(tmp, "out"), DedupConfig(),
                          RunnerConfig(runner="local", num_workers=1, running_mode="in_memory"), force=True)
        elapsed = time.perf_counter() - t
        print(f"stage: read {stats.read} kept {stats.kept} dropped {stats.dropped} "
              f"candidates {stats.extra['candidate_pairs']} verified {stats.extra['verified_pairs']}")
        return len(texts) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--stage", action="store_true", help="also time run_dedup (Beam local runner, 1 worker)")
    args = ap.parse_args()
    texts = load_texts(args.docs)
    words = sum(len(t.split()) for t in texts)
    print(f"{len(texts)} documents, {words / len(texts):.0f} words on average, num_perm={args.num_perm}")
    res = bench(texts, args.num_perm)
    for name, rate in res.items():
        print(f"{name:12s} {rate:10.1f} docs/s")
    print(f"ratio ccgpt sha1 / datasketch: {res['ccgpt sha1'] / res['datasketch']:.2f}x (identical signatures)")
    print(f"ratio ccgpt xxh3 / datasketch: {res['ccgpt xxh3'] / res['datasketch']:.2f}x")
    if args.stage:
        print(f"stage        {bench_stage(texts):10.1f} docs/s end to end (exact + near, one worker)")


if __name__ == "__main__":
    main()
