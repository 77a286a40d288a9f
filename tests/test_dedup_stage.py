"""``run_dedup`` end to end through Beam: real labelled news duplicates, source priority, accounting, runners."""

from __future__ import annotations

import argparse
import json
import os
import random
import unicodedata
from collections import Counter, defaultdict

import pytest

from pipeline.accounting import read_outcomes
from pipeline.commit import untagged
from pipeline.dedup import DedupConfig, NearConfig, evaluate_dedup, pairwise_scores, read_clusters, run_dedup
from pipeline.dedup.evaluate import default_near_config
from pipeline.dedup.stage import ComponentsError, cluster_files
from pipeline.tables import read_documents, write_documents
from schemas.config import add_dataclass_args, dataclass_from_args


def _clusters(out_dir: str) -> list[dict]:
    return list(read_clusters(out_dir))


def _check_accounting(stats, out_dir: str, n_rows: int) -> list[dict]:
    kept = list(read_documents(out_dir))
    assert stats.read == n_rows == sum(read_outcomes(out_dir).values())
    assert stats.kept == len(kept) == stats.read - sum(stats.dropped.values())
    assert len({d["id"] for d in kept}) == len(kept)
    per_source = stats.extra["per_source"]
    assert sum(s["read"] for s in per_source.values()) == stats.read
    assert sum(s["kept"] for s in per_source.values()) == stats.kept
    for source, counts in per_source.items():
        assert counts["kept"] == sum(1 for d in kept if d["source"] == source)
    return kept


def _check_clusters(stats, kept: list[dict], clusters: list[dict]) -> None:
    """One survivor per cluster, it is kept and annotated with the cluster's id and full size."""
    members = defaultdict(list)
    for line in clusters:
        members[line["cluster"]].append(line)
    kept_by_id = {d["id"]: d for d in kept}
    annotated = {d["id"]: json.loads(d["annotations"]) for d in kept if "dedup_cluster" in d["annotations"]}
    for cluster, lines in members.items():
        survivors = [m["id"] for m in lines if m["survivor"]]
        assert survivors == [cluster]
        assert all(m["id"] not in kept_by_id for m in lines if not m["survivor"])
        assert annotated[cluster] == {**annotated[cluster], "dedup_cluster": cluster, "cluster_size": len(lines)}
    assert set(annotated) == set(members)
    assert stats.extra["cluster_size_histogram"] == {
        str(k): v for k, v in sorted(Counter(len(v) for v in members.values()).items())
    }
    assert stats.extra["documents_in_clusters"] == len(clusters)


def test_syndicated_news_exact_near_and_source_priority(shared_data, local_runner, tmp_path):
    path = os.path.join(shared_data, "dedup", "syndicated-news.jsonl")
    with open(path, encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh]
    truth = {d["id"]: d["cluster"] for d in docs}
    by_cluster = defaultdict(list)
    for d in docs:
        by_cluster[d["cluster"]].append(d)
    multi = sorted(c for c, ms in by_cluster.items() if len(ms) >= 3)
    # A curated "books" copy of five articles: it must survive although its id is not the smallest.
    books = {c: max(by_cluster[c], key=lambda d: d["id"]) for c in multi[:5]}
    # Quality decides among crawl copies: 0.9 beats 0.2 beats no score, whatever the ids.
    best_quality = {c: max(by_cluster[c], key=lambda d: d["id"]) for c in multi[5:10]}
    quality = {}
    for c, best in best_quality.items():
        quality[best["id"]] = 0.9
        quality[min(by_cluster[c], key=lambda d: d["id"])["id"]] = 0.2
    # Every crawl copy on a site of its own, as crawled pages are: boilerplate lines are counted per host, so
    # an article is never boilerplate of itself (without URLs, the exact copy below would make one article 6
    # documents of one group, and its unedited paragraphs boilerplate: see BoilerplateConfig.min_docs).
    crawl_rows = [
        {
            "id": d["id"],
            "source": "crawl",
            "text": d["text"],
            "quality_score": quality.get(d["id"]),
            "url": f"https://site-{d['id']}.example/story",
        }
        for d in docs
        if d["id"] not in {b["id"] for b in books.values()}
    ]
    # Exact crawl copies of two books (case and spacing changed): removed from the crawl, the book stays.
    for c in multi[:2]:
        b = books[c]
        copy = "  " + b["text"].upper().replace(" ", "  ")
        crawl_rows.append(
            {"id": f"zz-copy-{b['id']}", "source": "crawl", "text": copy, "url": "https://mirror.example/" + b["id"]}
        )
        truth[f"zz-copy-{b['id']}"] = c
    os.makedirs(tmp_path / "crawl")
    os.makedirs(tmp_path / "books")
    half = len(crawl_rows) // 2
    write_documents(crawl_rows[:half], str(tmp_path / "crawl" / "part-0.parquet"))
    write_documents(crawl_rows[half:], str(tmp_path / "crawl" / "part-1.parquet"))
    write_documents(
        [{"id": b["id"], "source": "books", "text": b["text"]} for b in books.values()],
        str(tmp_path / "books" / "part-0.parquet"),
    )
    out = str(tmp_path / "dedup")

    stats = run_dedup([str(tmp_path / "crawl"), str(tmp_path / "books")], out, DedupConfig(), local_runner)

    n_rows = len(crawl_rows) + len(books)
    kept = _check_accounting(stats, out, n_rows)
    clusters = _clusters(out)
    _check_clusters(stats, kept, clusters)
    assert {untagged(f) for f in os.listdir(out)} == {"stats.json", "outcomes.jsonl", "counters.jsonl", "index"} | {
        untagged(f) for f in os.listdir(out) if f.startswith(("documents-", "clusters-"))
    }
    assert [os.path.basename(f) for f in cluster_files(out)] == sorted(
        f for f in os.listdir(out) if f.startswith("clusters-")
    )

    # Exact duplicates: as many as an independent grouping of the normalised texts finds.
    groups = Counter(" ".join(unicodedata.normalize("NFKC", r["text"]).lower().split()) for r in crawl_rows)
    groups.update(" ".join(unicodedata.normalize("NFKC", b["text"]).lower().split()) for b in books.values())
    assert stats.dropped["exact_duplicate"] == sum(n - 1 for n in groups.values()) >= 2
    assert set(stats.dropped) == {"exact_duplicate", "near_duplicate"}

    # Source priority and quality decide the survivors.
    cluster_of = {line["id"]: line["cluster"] for line in clusters}
    kept_ids = {d["id"] for d in kept}
    assert stats.extra["per_source"]["books"] == {"read": 5, "kept": 5}
    for c, b in books.items():
        assert b["id"] in kept_ids
        assert all(cluster_of.get(d["id"]) == b["id"] for d in by_cluster[c])
    assert {line["reason"] for line in clusters if line["id"].startswith("zz-copy-")} == {"exact_duplicate"}
    for c, best in best_quality.items():
        assert best["id"] in kept_ids
        assert not any(d["id"] in kept_ids for d in by_cluster[c] if d["id"] != best["id"])

    # Pairwise quality against the labels, and agreement with the in-process evaluation.
    scores = pairwise_scores(cluster_of, truth)
    reference = evaluate_dedup(path, 0.8, default_near_config())
    msg = f"beam: {scores}; evaluate_dedup: {reference}"
    print(msg)
    assert scores["precision"] >= 0.98 and scores["recall"] >= 0.95 and scores["f1"] >= 0.97, msg
    assert reference["f1"] >= 0.97 and abs(scores["f1"] - reference["f1"]) <= 0.02, msg
    assert stats.extra["candidate_pairs"] >= stats.extra["verified_pairs"] > 0
    assert stats.extra["cc_unconverged_nodes"] == 0

    # Same inputs and config: the finished output is reused, not recomputed.
    mtime = os.stat(os.path.join(out, "stats.json")).st_mtime_ns
    assert (
        run_dedup([str(tmp_path / "crawl"), str(tmp_path / "books")], out, DedupConfig(), local_runner).to_dict()
        == stats.to_dict()
    )
    assert os.stat(os.path.join(out, "stats.json")).st_mtime_ns == mtime


def _words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randrange(5000)}" for _ in range(n)]


def _small_table(folder) -> int:
    """A, its near copy, its exact copy (respaced, uppercased), a false candidate B, an unrelated C, bad rows."""
    rng = random.Random(1)
    a = _words(rng, 200)
    near = list(a)
    for i in (20, 90, 160):
        near[i] = "edited"
    b = a[:100] + _words(rng, 100)  # shares the first half of A: word-5-gram Jaccard about 0.33
    rows = [
        {"id": "a", "source": "crawl", "text": " ".join(a)},
        {"id": "a-near", "source": "crawl", "text": " ".join(near)},
        {"id": "a-exact", "source": "crawl", "text": "\n".join(a).upper()},
        {"id": "b", "source": "crawl", "text": " ".join(b)},
        {"id": "c", "source": "crawl", "text": " ".join(_words(rng, 150))},
        {"id": "blank", "source": "crawl", "text": " \n\t "},
        {"id": "", "source": "crawl", "text": "a document without an id"},
    ]
    os.makedirs(folder)
    write_documents(rows, str(folder / "part-0.parquet"))
    return len(rows)


def _banded(verify: str) -> DedupConfig:
    """32 one-row bands: any shared MinHash value makes a candidate, so B collides with A."""
    return DedupConfig(near=NearConfig(bands=32, rows=1, verify=verify))


def test_jaccard_verification_removes_false_candidate_portable(portable_runner, tmp_path):
    n = _small_table(tmp_path / "in")
    out = str(tmp_path / "out")
    stats = run_dedup([str(tmp_path / "in")], out, _banded("jaccard"), portable_runner)
    kept = _check_accounting(stats, out, n)
    assert {d["id"] for d in kept} == {"a", "b", "c"}
    assert stats.dropped == {"empty_text": 1, "invalid_record": 1, "exact_duplicate": 1, "near_duplicate": 1}
    assert stats.extra["candidate_pairs"] >= 2 and stats.extra["verified_pairs"] == 1
    _check_clusters(stats, kept, _clusters(out))
    notes = {d["id"]: json.loads(d["annotations"]) for d in kept}
    assert notes["a"] == {"dedup_cluster": "a", "cluster_size": 3, "exact_duplicates": 1}
    assert notes["b"] == {} and notes["c"] == {}


@pytest.mark.parametrize("verify,merged", [("none", True), ("signature", False)])
def test_verification_modes(verify, merged, local_runner, tmp_path):
    """Without verification the false candidate B is merged into A's cluster; the signature estimate rejects it."""
    n = _small_table(tmp_path / "in")
    out = str(tmp_path / "out")
    stats = run_dedup([str(tmp_path / "in")], out, _banded(verify), local_runner)
    kept = _check_accounting(stats, out, n)
    assert ("b" not in {d["id"] for d in kept}) is merged
    assert stats.dropped["near_duplicate"] == (2 if merged else 1)


def test_config_flags_round_trip():
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, DedupConfig)
    args = parser.parse_args(
        [
            "--source_priority",
            "books",
            "wiki",
            "--threshold",
            "0.7",
            "--near.shingles.kind",
            "char",
            "--exact.normalize.strip_punctuation",
            "true",
            "--near.verify",
            "signature",
        ]
    )
    cfg = dataclass_from_args(DedupConfig, args, {"near": {"num_perm": 64}})
    assert cfg.source_priority == ["books", "wiki"] and cfg.lowest_priority_sources == ["crawl"]
    near = cfg.near
    assert (cfg.threshold, near.num_perm, near.shingles.kind, near.verify) == (0.7, 64, "char", "signature")
    assert cfg.exact.normalize.strip_punctuation is True


def test_invalid_config_fails_before_running(local_runner, tmp_path):
    with pytest.raises(ValueError, match="NearConfig.verify"):
        run_dedup([str(tmp_path)], str(tmp_path / "out"), DedupConfig(near=NearConfig(verify="maybe")), local_runner)
    assert not os.path.exists(tmp_path / "out")


def test_components_converge_or_the_stage_fails(local_runner, tmp_path):
    """Overlapping windows of one text make a long path of near duplicates: with too few component rounds the
    stage fails with a clear error instead of committing split clusters; the default rounds settle it."""
    rng = random.Random(7)
    words = _words(rng, 40 * 50 + 200)
    rows = [{"id": f"w{i:02d}", "source": "crawl", "text": " ".join(words[i * 50 : i * 50 + 200])} for i in range(40)]
    os.makedirs(tmp_path / "in")
    write_documents(rows, str(tmp_path / "in" / "part-0.parquet"))
    few = DedupConfig(near=NearConfig(bands=32, rows=1, verify="none", cc_rounds=1))
    with pytest.raises(ComponentsError, match=r"did not converge in 1 rounds: \d+ nodes .* raise near.cc_rounds"):
        run_dedup([str(tmp_path / "in")], str(tmp_path / "few"), few, local_runner)
    assert not os.path.exists(tmp_path / "few" / "stats.json")  # nothing committed
    stats = run_dedup([str(tmp_path / "in")], str(tmp_path / "auto"), _banded("none"), local_runner)
    assert stats.kept == 1 and stats.dropped == {"near_duplicate": 39} and stats.extra["cc_unconverged_nodes"] == 0


def test_a_hot_bucket_stays_linear(local_runner, tmp_path):
    """Skew: 400 pages of one site template (a long shared body, a few words of their own) fall into the same
    LSH bucket in most bands. An oversized bucket gives a star on its smallest key, not all its pairs, so the
    candidates grow with the bucket (at most bands x members), never with its square; what one worker holds
    for it is the bucket's node keys, a few dozen bytes each. Every page still ends in one cluster."""
    rng = random.Random(7)
    template = _words(rng, 300)
    rows = [{"id": f"t{i:03d}", "source": "crawl", "text": " ".join(template + _words(rng, 3))} for i in range(400)]
    rows += [{"id": f"u{i:03d}", "source": "crawl", "text": " ".join(_words(rng, 200))} for i in range(100)]
    os.makedirs(tmp_path / "in")
    write_documents(rows, str(tmp_path / "in" / "part-0.parquet"))
    out = str(tmp_path / "out")
    stats = run_dedup([str(tmp_path / "in")], out, DedupConfig(), local_runner)
    kept = _check_accounting(stats, out, len(rows))
    bands = stats.extra["near"]["bands"]
    assert stats.extra["oversized_buckets"] >= 1
    assert stats.extra["candidate_pairs"] <= bands * 400 < 400 * 399 // 2
    assert sorted(d["id"] for d in kept) == ["t000"] + [f"u{i:03d}" for i in range(100)]
    assert stats.dropped == {"near_duplicate": 399}
