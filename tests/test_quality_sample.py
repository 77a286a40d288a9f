"""The quality classifier's training sample: drawn in Beam by a hash of each document's key, bounded, and
the same whatever the input order, the way the inputs are split into files, or the number of workers."""

from __future__ import annotations

import json
import random

import pytest

from pipeline.quality.folds import fold_key
from pipeline.quality.sample import SampleSpec, draw_samples, priority
from pipeline.quality.text import normalize_text
from pipeline.runner import RunnerConfig
from schemas.stats import StageStats

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def _docs(n: int, prefix: str) -> list[dict]:
    rng = random.Random(prefix)
    docs = [{"id": f"{prefix}-{i}", "text": " ".join(rng.choice(WORDS) for _ in range(30 + i % 7))} for i in range(n)]
    docs.append({"id": f"{prefix}-short", "text": "too few words here"})
    docs.append({"id": f"{prefix}-empty", "text": "   "})
    return docs


def _write(path, docs) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d) + "\n")
        fh.write("{not json\n")
    return str(path)


def _draw(tmp_path, name, classes, runner, cap=25):
    stats = StageStats(stage="quality_train")
    spec = SampleSpec(min_words=20, max_chars=100_000, max_per_class=cap, seed=7)
    drawn = draw_samples(classes, spec, runner, str(tmp_path / name), stats)
    return drawn, stats


ONE = RunnerConfig(num_workers=1, progress=False)


def test_sample_is_the_smallest_hashes_and_every_document_is_accounted(tmp_path):
    pos, neg = _docs(60, "ref"), _docs(90, "crawl")
    classes = {"positive": [_write(tmp_path / "p.jsonl", pos)], "negative": [_write(tmp_path / "n.jsonl", neg)]}
    drawn, stats = _draw(tmp_path, "a", classes, ONE)
    for cls, docs in (("positive", pos), ("negative", neg)):
        usable = [d for d in docs if len(d["text"].split()) >= 20]
        lines = {d["id"]: normalize_text(d["text"]) for d in usable}
        expected = sorted((priority(fold_key(i, t), 7), i, t) for i, t in lines.items())[:25]
        assert drawn[cls].items == [(i, t) for _, i, t in expected]  # the oracle: bottom-k by the hash
        assert drawn[cls].counts == {"read": len(docs) + 1, "usable": 25}
    assert stats.read == 60 + 90 + 2 * 3
    assert stats.dropped == {"too_short": 2, "empty_text": 2, "bad_record": 2, "max_per_class": 60 + 90 - 50}
    assert stats.read == 50 + sum(stats.dropped.values())


@pytest.mark.slow
def test_sample_does_not_depend_on_order_files_or_workers(tmp_path):
    pos, neg = _docs(60, "ref"), _docs(90, "crawl")
    a = {"positive": [_write(tmp_path / "p.jsonl", pos)], "negative": [_write(tmp_path / "n.jsonl", neg)]}
    shuffled = list(reversed(neg))
    b = {
        "positive": [_write(tmp_path / "p2.jsonl", pos[::-1])],
        "negative": [_write(tmp_path / f"n{k}.jsonl", shuffled[k::3]) for k in range(3)],
    }
    first, _ = _draw(tmp_path, "a", a, ONE)
    two_workers = RunnerConfig(num_workers=2, running_mode="multi_processing", progress=False)
    second, _ = _draw(tmp_path, "b", b, two_workers)
    assert {k: v.items for k, v in first.items()} == {k: v.items for k, v in second.items()}
