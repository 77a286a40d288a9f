"""The Beam stage's boilerplate-aware near-duplicate detection (the default settings) against the evaluation
path: the same scores on the labelled syndicated-news sets, boilerplate lines counted per URL host, and the
boilerplate statistics in ``stats.json``."""

from __future__ import annotations

import json
import os
import random

from pipeline.dedup import DedupConfig, evaluate_dedup, pairwise_scores, read_clusters, run_dedup
from pipeline.dedup.evaluate import kind_scores
from pipeline.dedup.exact import NormalizeConfig
from pipeline.dedup.lines import TOP_LINES
from pipeline.tables import write_documents


def _stage(rows: list[dict], tmp_path, runner, cfg: DedupConfig | None = None) -> tuple[dict[str, str], object]:
    """Run the stage on labelled rows; ``(id -> predicted cluster, stats)``."""
    (tmp_path / "in").mkdir(parents=True)
    docs = [{"id": r["id"], "source": "crawl", "text": r["text"], "url": r.get("url")} for r in rows]
    write_documents(docs, str(tmp_path / "in" / "docs.parquet"), row_group_size=64)
    stats = run_dedup([str(tmp_path / "in")], str(tmp_path / "out"), cfg or DedupConfig(chunk_rows=100), runner)
    assert stats.read == len(rows) == stats.kept + sum(stats.dropped.values())
    return {line["id"]: line["cluster"] for line in read_clusters(str(tmp_path / "out"))}, stats


def _labelled(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_stage_scores_the_labelled_sets_as_the_eval_path_does(shared_data, local_runner, tmp_path):
    for name, floor in (("syndicated-news.jsonl", 0.99), ("syndicated-news-v2.jsonl", 0.95)):
        path = os.path.join(shared_data, "dedup", name)
        rows = _labelled(path)
        truth = {r["id"]: json.dumps(r["cluster"]) for r in rows}
        predicted, stats = _stage(rows, tmp_path / name, local_runner)
        scores = pairwise_scores(predicted, truth)
        reference = evaluate_dedup(path, exact=NormalizeConfig())
        msg = f"{name}: beam {scores}; eval {reference}"
        assert scores["f1"] >= floor and abs(scores["f1"] - reference["f1"]) <= 0.01, msg
        near, boilerplate = stats.extra["near"], stats.extra["boilerplate"]
        assert (near["verify"], near["bands"], near["rows"]) == ("containment", reference["bands"], reference["rows"])
        assert boilerplate["lines"] == reference["boilerplate"]["lines"], msg
        assert stats.extra["cc_unconverged_nodes"] == 0
    kinds = kind_scores(predicted, truth, {r["id"]: r["kind"] for r in rows})
    assert kinds["syndicated_recall"] >= 0.95 and kinds["template_other_fp_pairs"] == 0, kinds
    # The template lines of v2 are named, most frequent first, with their share of the documents' lines.
    top = boilerplate["top_lines"]
    assert len(top) == TOP_LINES and [t["docs"] for t in top] == sorted((t["docs"] for t in top), reverse=True)
    assert 0 < boilerplate["removed_share"] < 0.5 and boilerplate["documents_with_boilerplate"] > 0


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(100_000)}" for _ in range(n))


def test_stage_counts_lines_per_url_host(local_runner, tmp_path):
    """An article syndicated to 8 sites is not boilerplate of any of them; one site's template on 7 pages is:
    the copies are one cluster, the template pages (short distinct articles inside it) stay apart."""
    rng = random.Random(9)
    paragraphs = [_words(rng, 40) for _ in range(6)]
    top, bottom = _words(rng, 120), _words(rng, 120)
    rows = []
    for i in range(8):
        edited = list(paragraphs)
        words = edited[i % 6].split()
        words[rng.randrange(len(words))] = "edited"
        edited[i % 6] = " ".join(words)
        text = f"Menu of site {'abcdefgh'[i]}\n" + "\n".join(edited)
        rows.append({"id": f"a{i}", "text": text, "url": f"https://site-{i}.example/story"})
    for i in range(7):
        rows.append(
            {"id": f"t{i}", "text": f"{top}\n{_words(rng, 15)}\n{bottom}", "url": f"https://www.portal.example/{i}"}
        )
    predicted, stats = _stage(rows, tmp_path, local_runner, DedupConfig(chunk_rows=4))
    assert {predicted.get(f"a{i}") for i in range(8)} == {"a0"}
    assert not any(f"t{i}" in predicted for i in range(7))
    boilerplate = stats.extra["boilerplate"]
    assert boilerplate["lines"] == 2 and boilerplate["documents_with_boilerplate"] == 7, boilerplate
    assert {t["group"] for t in boilerplate["top_lines"]} == {"portal.example"}
    assert sorted(t["text"] for t in boilerplate["top_lines"]) == sorted([top[:200], bottom[:200]])
    assert boilerplate["document_lines"] == 8 * 7 + 7 * 3 and boilerplate["document_lines_removed"] == 14


def test_report_names_the_most_frequent_template_lines():
    from pipeline.report import boilerplate_section

    stats = {
        "enabled": True,
        "min_docs": 6,
        "per_host": True,
        "lines": 2,
        "document_lines": 40,
        "document_lines_removed": 10,
        "documents_with_boilerplate": 5,
        "top_lines": [{"docs": 7, "group": "portal.example", "text": "Cookies <help>"}],
    }
    html = boilerplate_section(stats)
    assert "25%" in html and "portal.example" in html and "Cookies &lt;help&gt;" in html
    assert boilerplate_section({"enabled": False}) == ""
