"""The quality classifier: training on real reference text vs real crawl text, scoring, and the filter stage.

Positives are five real reference sources (WikiText-2, Shakespeare, the King James Bible, inaugural and
State of the Union addresses), each with its formatting quirks undone and packed into prose documents of
the crawl documents' length; negatives are real web pages through the project's own decoding and
extraction. The classifier must reach ROC AUC >= 0.90 on held-out documents, and a run that leaves the
speeches out of training reports how well it ranks them anyway (quality, not provenance). Training is tiny
(small dim, few epochs) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import tarfile
import zipfile

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.quality import (
    QualityError,
    QualityFilterConfig,
    QualityTrainConfig,
    run_quality_filter,
    score_documents,
    score_paths,
    train_quality,
)
from pipeline.quality import train as quality_train
from pipeline.quality.folds import fold_key, fold_of
from pipeline.quality.model import check_model
from pipeline.quality.rules import exact_cutoff, pareto_draw, pareto_keep, pareto_keep_probability, rank_key
from pipeline.quality.text import DEFAULT_MAX_CHARS, iter_records, normalize_text, unscorable_reason
from pipeline.quality.train import split_holdout, train_fasttext
from pipeline.stage import load_stats
from pipeline.tables import read_documents, write_documents

TINY = dict(dim=16, epoch=10, bucket=20_000, min_count=1, word_ngrams=2, lr=0.3, baseline_features=2**14)


# -- real test data: every source normalised to prose paragraphs -------------------------------------------
#
# Each corpus has formatting no crawl page has: WikiText's tokenisation (` @-@ `, spaces before punctuation,
# `<unk>`) and ` = Heading = ` lines, the Bible's one verse a line with `Ge1:1` references, Shakespeare's
# speaker lines and verse breaks, speech files' title and date lines. A classifier could learn those instead
# of quality, so they are undone here; then every source's paragraphs are packed into documents of about
# the same length as the crawl documents (DOC_WORDS), so length is no shortcut either.

DOC_WORDS = (80, 300)  # (min, max) words of a test document, both classes


def _detokenize_wikitext(text: str) -> str:
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".").replace("<unk>", "")
    text = re.sub(r" ([.,;:!?')\]])", r"\1", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    text = re.sub(r'" ([^"]*?) "', r'"\1"', text)
    return " ".join(text.split())


def _wikitext_paragraphs(path: str) -> list[str]:
    """One paragraph a line; heading lines (` = Title = `, ` = = Section = = `) are not documents."""
    with open(path, encoding="utf-8") as fh:
        return [_detokenize_wikitext(line) for line in fh if line.strip() and not line.strip().startswith("=")]


def _shakespeare_paragraphs(path: str) -> list[str]:
    """Speeches without the speaker line (`First Citizen:`), verse lines joined into one paragraph."""
    with open(path, encoding="utf-8") as fh:
        blocks = re.split(r"\n\s*\n", fh.read())
    out = []
    for block in blocks:
        lines = block.strip().splitlines()
        if lines and lines[0].endswith(":") and len(lines[0].split()) <= 4:
            lines = lines[1:]
        if lines:
            out.append(" ".join(line.strip() for line in lines))
    return out


def _bible_paragraphs(path: str) -> list[str]:
    """One verse a line with a `Ge1:1` reference: references stripped, each chapter one paragraph."""
    chapters: dict[str, list[str]] = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = re.match(r"^([1-3]?[A-Za-z]+\d+):\d+ (.*)$", line.strip())
            if m:
                chapters.setdefault(m.group(1), []).append(m.group(2))
    return [" ".join(verses) for verses in chapters.values()]


def _speech_paragraphs(zip_path: str) -> list[str]:
    """NLTK speech files: title / date / salutation lines dropped, the rest one paragraph per blank block."""
    out = []
    with zipfile.ZipFile(zip_path) as zf:
        for name in sorted(zf.namelist()):
            if not name.endswith(".txt"):
                continue
            text = zf.read(name).decode("utf-8", errors="replace")
            for block in re.split(r"\n\s*\n", text):
                lines = [line.strip() for line in block.splitlines() if line.strip()]
                lines = [line for line in lines if len(line.split()) > 6 and not line.isupper()]
                if lines:
                    out.append(" ".join(lines))
    return out


def _pack(paragraphs: list[str], limit: int) -> list[str]:
    """Consecutive paragraphs joined (blank line between) into documents of DOC_WORDS words, at most `limit`."""
    lo, hi = DOC_WORDS
    docs, cur, n = [], [], 0
    for para in paragraphs:
        words = para.split()
        if cur and (n + len(words) > hi or len(words) > hi):  # the current document is full
            if n >= lo:
                docs.append("\n\n".join(cur))
            cur, n = [], 0
        while len(words) > hi:  # one very long paragraph: cut at the word limit
            docs.append(" ".join(words[:hi]))
            words = words[hi:]
        cur.append(" ".join(words))
        n += len(words)
        if len(docs) >= limit:
            break
    if cur and n >= lo and len(docs) < limit:
        docs.append("\n\n".join(cur))
    return docs[:limit]


def _crawl_texts(html_dir: str, pages: dict[str, int]) -> list[str]:
    """Real pages through the project's own decoding and extraction (what `curate` stores as raw crawl).

    Resiliparse, the fast extractor, keeps much of a page's boilerplate (menus, banners, footers): raw crawl
    as the quality classifier sees it. A page is cut to the first DOC_WORDS[1] words like the reference.
    """
    from pipeline.extract import ExtractConfig, decode_html, extract_text

    cfg = ExtractConfig(extractor="resiliparse")
    out = []
    for name, per_archive in pages.items():
        n = 0
        with tarfile.open(os.path.join(html_dir, name)) as tf:
            for member in tf:
                if n >= per_archive:
                    break
                if not (member.isfile() and member.name.endswith((".html", ".htm"))):
                    continue
                words = extract_text(decode_html(tf.extractfile(member).read()), cfg).split()
                if len(words) >= DOC_WORDS[0]:
                    out.append(" ".join(words[: DOC_WORDS[1]]))
                    n += 1
    return out


def _write_jsonl(path: str, prefix: str, texts: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"{prefix}-{i}", "text": t}) + "\n")
    return path


PER_SOURCE = 90  # documents per reference source (~67 held-out documents a class for the AUC)
CRAWL_PAGES = {"newspaper.tar.gz": 150, "goose3.tar.gz": 50, "trafilatura-eval.tar.gz": 180}
LEFT_OUT = ["inaugural.jsonl", "state_union.jsonl"]  # the speeches: a genre no other reference source has
HUGE = "word " * (DEFAULT_MAX_CHARS // 5 + 1)  # one character over the default limit


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("quality_corpus"))
    ref = os.path.join(shared_data, "reference")
    sources = {
        "wikitext": _pack(_wikitext_paragraphs(os.path.join(ref, "wikitext-2", "valid.txt")), PER_SOURCE),
        "shakespeare": _pack(_shakespeare_paragraphs(os.path.join(ref, "tinyshakespeare.txt")), PER_SOURCE),
        "bible-kjv": _pack(_bible_paragraphs(os.path.join(ref, "bible-kjv.txt.gz")), PER_SOURCE),
        "inaugural": _pack(_speech_paragraphs(os.path.join(ref, "nltk", "inaugural.zip")), PER_SOURCE),
        "state_union": _pack(_speech_paragraphs(os.path.join(ref, "nltk", "state_union.zip")), PER_SOURCE),
    }
    positives = [_write_jsonl(os.path.join(root, f"{k}.jsonl"), k, v) for k, v in sources.items()]
    wiki_heldout = _pack(_wikitext_paragraphs(os.path.join(ref, "wikitext-2", "test.txt")), 30)

    crawl = _crawl_texts(os.path.join(shared_data, "html"), CRAWL_PAGES)
    crawl_train, crawl_heldout = crawl[:-30], crawl[-30:]
    crawl_path = _write_jsonl(os.path.join(root, "crawl.jsonl"), "crawl", crawl_train)

    # A document table to filter: held-out text of both kinds, plus records that cannot be scored.
    table = os.path.join(root, "table")
    os.makedirs(table)
    rows = [dict(id=f"ref-{i}", source="crawl", text=t) for i, t in enumerate(wiki_heldout)]
    rows += [dict(id=f"cc-{i}", source="crawl", text=t) for i, t in enumerate(crawl_heldout)]
    write_documents(rows[::2], os.path.join(table, "part-0.parquet"))
    odd = rows[1::2] + [
        dict(id="empty-0", source="crawl", text=""),
        dict(id="empty-1", source="crawl", text=" \n\t "),
        dict(id="", source="crawl", text="a document without an id cannot be tracked"),
        dict(id="huge-0", source="crawl", text=HUGE),
    ]
    write_documents(odd, os.path.join(table, "part-1.parquet"))
    return {
        "root": root,
        "sources": sources,
        "positives": positives,
        "negatives": [crawl_path],
        "table": table,
        "n_scorable": len(rows),
        "n_unscorable": {"empty_text": 2, "bad_record": 1, "too_long": 1},
        "table_texts": {r["id"]: r["text"] for r in rows},
    }


@pytest.fixture(scope="module")
def trained(corpus):
    out = os.path.join(corpus["root"], "model")
    result = train_quality(corpus["positives"], corpus["negatives"], out, QualityTrainConfig(**TINY))
    return out, result


@pytest.fixture(scope="module")
def left_out(corpus):
    """Trained without the speeches; the negatives include records no training may use (all counted)."""
    junk = os.path.join(corpus["root"], "junk.jsonl")
    with open(junk, "w", encoding="utf-8") as fh:
        for text in ["", " \n ", HUGE, "too short to learn from"]:
            fh.write(json.dumps({"text": text}) + "\n")
        fh.write("{not json\n")
    out = os.path.join(corpus["root"], "model_left_out")
    cfg = QualityTrainConfig(**TINY, holdout_positive=LEFT_OUT)
    result = train_quality(corpus["positives"], corpus["negatives"] + [junk], out, cfg)
    return out, result


# -- pure functions --------------------------------------------------------------------------------------


def test_normalize_text_is_one_lowercase_line():
    text = "Hello  World\n\nSecond\tLINE\r\n __label__hq injected\x00end "
    norm = normalize_text(text)
    assert norm == "hello world second line label hq injected end"
    assert "\n" not in norm and "__label__" not in norm
    assert normalize_text(norm) == norm
    assert normalize_text("") == "" and normalize_text(" \n ") == ""


def test_iter_records_reads_every_format(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first block\nstill first\n\n\n  \nsecond block\n", encoding="utf-8")
    assert [t for _, t in iter_records(str(txt))] == ["first block\nstill first\n", "second block\n"]

    jl = tmp_path / "b.jsonl"
    jl.write_text('{"id": "x", "text": "ok"}\nnot json\n{"text": 5}\n\n[1, 2]\n{"text": "no id"}\n', encoding="utf-8")
    assert list(iter_records(str(jl))) == [("x", "ok"), (None, None), (None, None), (None, None), (None, "no id")]

    table = tmp_path / "t"
    table.mkdir()
    write_documents([dict(id="d1", source="s", text="doc one")], str(table / "p.parquet"))
    assert list(iter_records(str(table))) == [("d1", "doc one")]


def test_pareto_keep_rate_matches_analytic():
    """Over many ids the realised keep rate is (2 - s) ** -alpha within 5 standard errors, for each score."""
    n = 20_000
    ids = [f"doc-{i}" for i in range(n)]
    for alpha in (9.0, 3.0):
        draws = np.array([pareto_draw(d, 7, alpha) for d in ids])
        assert draws.min() >= 0.0
        for s in (0.0, 0.25, 0.5, 0.8, 0.95, 1.0):
            p = pareto_keep_probability(s, alpha)
            rate = float(np.mean(draws > 1.0 - s))
            se = max(np.sqrt(p * (1 - p) / n), 1.0 / n)
            assert abs(rate - p) <= 5 * se, (alpha, s, rate, p)
            # the per-document function agrees with the vectorised check
            assert sum(pareto_keep(s, d, 7, alpha) for d in ids[:500]) == int(np.sum(draws[:500] > 1.0 - s))


def test_pareto_draw_is_deterministic_per_id_and_seed():
    a = [pareto_keep(0.6, f"id-{i}", 1) for i in range(2000)]
    assert a == [pareto_keep(0.6, f"id-{i}", 1) for i in range(2000)]
    assert a != [pareto_keep(0.6, f"id-{i}", 2) for i in range(2000)]  # another run seed, other documents


def test_exact_cutoff_keeps_exactly_k_even_with_tied_scores():
    ids = [f"d{i}" for i in range(101)]
    scores = [0.5] * 60 + [round(i / 41, 3) for i in range(41)]  # many exact ties
    keys = [rank_key(s, d, 3) for s, d in zip(scores, ids)]
    for fraction in (0.0, 0.1, 0.33, 0.5, 1.0):
        cut = exact_cutoff(keys, fraction)
        kept = 0 if cut is None else sum(k >= cut for k in keys)
        assert kept == round(fraction * len(keys))


# -- training --------------------------------------------------------------------------------------------


def test_train_separates_reference_from_crawl(trained):
    out, result = trained
    for name in ("model.bin", "config.json", "eval.json", "score_hist.png", "stats.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "score_hist.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "eval.json"), encoding="utf-8") as fh:
        assert json.load(fh) == result
    for key in ("roc_auc", "precision", "recall", "f1", "n_train", "n_test", "baseline_roc_auc", "score_hist"):
        assert key in result, key
    assert result["roc_auc"] >= 0.90  # held out, on real reference text vs real crawl pages
    assert "left_out" not in result
    assert result["folds"] == 1 and result["fold_models"] == [] and "cross_fit" not in result
    assert not any(f.startswith("model-fold") for f in os.listdir(out))
    assert result["baseline_roc_auc"] > 0.7
    assert result["f1"] > 0.7
    # held-out classes are balanced, and the histograms count every held-out document
    per_class = result["n_test"] // 2
    assert sum(result["score_hist"]["positive"]) == per_class == sum(result["score_hist"]["negative"])
    assert len(result["score_hist"]["bins"]) == TINY.get("hist_bins", 20) + 1
    # GPT-3's rule keeps far more reference text than crawl under this model
    keep = result["pareto_expected_keep_rate"]
    assert keep["positive"] > 3 * keep["negative"]

    stats = load_stats(out)
    stats.check()
    assert stats.stage == "quality_train"
    assert stats.kept == result["n_train"] + result["n_test"]
    assert stats.dropped.get("balance_downsampled", 0) > 0  # more reference documents than crawl pages
    assert stats.read == stats.extra["positive"]["read"] + stats.extra["negative"]["read"]


def test_training_is_reproducible(corpus, trained, tmp_path):
    out, result = trained
    again = train_quality(corpus["positives"], corpus["negatives"], str(tmp_path / "again"), QualityTrainConfig(**TINY))
    assert again == result
    texts = list(corpus["table_texts"].values())
    assert score_documents(out, texts) == score_documents(str(tmp_path / "again" / "model.bin"), texts)
    # a different seed gives a different model (the test above could not pass by accident)
    other = train_quality(
        corpus["positives"],
        corpus["negatives"],
        str(tmp_path / "other"),
        QualityTrainConfig(**TINY, seed=1, baseline=False),
    )
    assert score_documents(str(tmp_path / "other"), texts) != score_documents(out, texts)
    assert other["n_test"] == result["n_test"]


def test_left_out_reference_source_is_scored_not_trained(corpus, left_out):
    """The speeches never reach training; eval.json reports how the model ranks them against held-out crawl."""
    out, result = left_out
    lo = result["left_out"]
    n_speech_docs = len(corpus["sources"]["inaugural"]) + len(corpus["sources"]["state_union"])
    assert [os.path.basename(p) for p in lo["paths"]] == LEFT_OUT
    assert lo["n"] == n_speech_docs and lo["n_negative"] == result["n_test_per_class"]
    # a genre the model never saw still ranks above crawl: the score is not the provenance of the training text
    assert lo["roc_auc"] >= 0.85, lo
    assert 0.0 <= lo["baseline_roc_auc"] <= 1.0 and 0.0 <= lo["mean_score"] <= 1.0
    assert result["roc_auc"] >= 0.90
    with open(os.path.join(out, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    assert [os.path.basename(p) for p in config["left_out_positives"]] == LEFT_OUT
    assert not any(os.path.basename(p) in LEFT_OUT for p in config["positives"])
    assert config["config"]["holdout_positive"] == LEFT_OUT
    # the other three sources only: fewer positives than the full run, and every record accounted for
    stats = load_stats(out)
    stats.check()
    assert stats.dropped["left_out"] == n_speech_docs
    assert stats.extra["left_out"]["usable"] == n_speech_docs
    assert stats.kept == result["n_train"] + result["n_test"]
    # the unusable negatives are counted by reason, never trained on
    assert stats.dropped["empty_text"] == 2 and stats.dropped["too_long"] == 1
    assert stats.dropped["too_short"] == 1 and stats.dropped["bad_record"] == 1


def test_holdout_positive_names_must_match(corpus, tmp_path):
    pos, neg = corpus["positives"], corpus["negatives"]
    with pytest.raises(ValueError, match="match no positive input"):
        train_quality(pos, neg, str(tmp_path / "a"), QualityTrainConfig(**TINY, holdout_positive=["nope.jsonl"]))
    everything = [os.path.basename(p) for p in pos]
    with pytest.raises(ValueError, match="leaves no positive input"):
        train_quality(pos, neg, str(tmp_path / "b"), QualityTrainConfig(**TINY, holdout_positive=everything))
    # globs match the path or the file name
    assert split_holdout(["/d/a.jsonl", "/d/b.txt"], ["*.txt"]) == (["/d/a.jsonl"], ["/d/b.txt"])
    assert split_holdout(["/d/a.jsonl", "/e/b"], ["/e/*"]) == (["/d/a.jsonl"], ["/e/b"])
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_train_skips_when_up_to_date(corpus, trained):
    out, result = trained
    mtime = os.stat(os.path.join(out, "model.bin")).st_mtime_ns
    assert train_quality(corpus["positives"], corpus["negatives"], out, QualityTrainConfig(**TINY)) == result
    assert os.stat(os.path.join(out, "model.bin")).st_mtime_ns == mtime


def test_train_reruns_when_forced_or_eval_is_gone(corpus, trained, tmp_path):
    """``force`` (``ccgpt run --force``) retrains; so does an up-to-date folder whose eval.json was lost."""
    out = str(tmp_path / "model")
    shutil.copytree(trained[0], out)
    model = os.path.join(out, "model.bin")
    for force in (True, False):
        os.utime(model, ns=(0, 0))
        if not force:
            os.remove(os.path.join(out, "eval.json"))
        result = train_quality(corpus["positives"], corpus["negatives"], out, QualityTrainConfig(**TINY), force=force)
        assert result == trained[1] and os.stat(model).st_mtime_ns != 0, force


def test_configs_check_their_values():
    with pytest.raises(ValueError, match="test_fraction"):
        QualityTrainConfig(test_fraction=1.0)
    with pytest.raises(ValueError, match="folds"):
        QualityTrainConfig(folds=0)
    with pytest.raises(ValueError, match="top_fraction"):
        QualityFilterConfig(rule="top_fraction", top_fraction=1.5)
    with pytest.raises(ValueError, match="alpha"):
        QualityFilterConfig(alpha=0.0)
    QualityFilterConfig(rule="threshold", alpha=0.0, top_fraction=2.0)  # values of other rules are not used


def test_score_paths_and_cli(corpus, trained, capsys, tmp_path):
    out, _ = trained
    recs = list(score_paths(out, [corpus["table"]]))
    assert len(recs) == corpus["n_scorable"] + 4
    # records that cannot be scored get no score and say why
    reasons = {r["id"]: r.get("reason") for r in recs if r["score"] is None}
    assert reasons == {"empty-0": "empty_text", "empty-1": "empty_text", "huge-0": "too_long"}
    scored = {r["id"]: r["score"] for r in recs if r["score"] is not None}
    ref = [scored[i] for i in scored if i.startswith("ref-")]
    cc = [scored[i] for i in scored if i.startswith("cc-")]
    assert np.mean(ref) > np.mean(cc) + 0.3
    assert all(0.0 <= s <= 1.0 for s in scored.values())

    assert main(["quality", "score", "--model", out, corpus["negatives"][0]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["score"] for line in lines] == [r["score"] for r in score_paths(out, corpus["negatives"])]

    # train through the command line: flags reach the config
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("\n\n".join(f"the committee reviewed the report {i} carefully" for i in range(10)))
    neg.write_text("\n\n".join(f"click here buy now cheap deal {i} login" for i in range(10)))
    args = ["quality", "train", "--positive", str(pos), "--negative", str(neg), "--out", str(tmp_path / "m")]
    assert main(args + ["--min_words", "1", "--dim", "8", "--bucket", "1000"]) == 0
    cli_eval = json.loads(capsys.readouterr().out)
    assert cli_eval["n_test"] == 4
    with open(tmp_path / "m" / "config.json", encoding="utf-8") as fh:
        assert json.load(fh)["config"]["dim"] == 8


# -- the Beam filter stage -------------------------------------------------------------------------------


def _kept(out_dir: str) -> dict[str, float]:
    return {r["id"]: r["quality_score"] for r in read_documents(out_dir)}


def _expected_scores(model: str, texts: dict[str, str]) -> dict[str, float]:
    ids = list(texts)
    return {i: float(np.float32(s)) for i, s in zip(ids, score_documents(model, [texts[i] for i in ids]))}


def test_pareto_filter_accounting_is_exact(corpus, trained, local_runner, tmp_path):
    model, _ = trained
    cfg = QualityFilterConfig(model=model, rule="pareto", alpha=9.0, seed=11)
    stats = run_quality_filter([corpus["table"]], str(tmp_path / "out"), cfg, local_runner)
    kept = _kept(str(tmp_path / "out"))
    n_scorable = corpus["n_scorable"]
    assert stats.read == n_scorable + 4
    assert {k: v for k, v in stats.dropped.items() if k != "quality"} == corpus["n_unscorable"]
    assert stats.kept == len(kept) and stats.dropped.get("quality", 0) == n_scorable - len(kept)
    # exactly the documents the pure rule keeps, with the scores score_documents gives
    expected = _expected_scores(model, corpus["table_texts"])
    assert set(kept) == {i for i, s in expected.items() if pareto_keep(s, i, 11, 9.0)}
    for i, s in kept.items():
        assert s == pytest.approx(expected[i], abs=1e-7)
    # reference text is far likelier to survive than crawl (the analytic keep rates: 30 documents a class are
    # too few for the realised counts at alpha 9)
    keep = {
        p: np.mean([pareto_keep_probability(s, 9.0) for i, s in expected.items() if i.startswith(p)])
        for p in ("ref-", "cc-")
    }
    assert keep["ref-"] > 3 * keep["cc-"], keep
    hist = stats.extra["score_hist"]
    assert sum(hist["scored"]) == n_scorable and sum(hist["kept"]) == stats.kept
    assert stats.extra["keep_rate"] == pytest.approx(stats.kept / n_scorable)
    assert 0.0 < stats.extra["pareto_expected_keep_rate"] < 1.0
    assert stats.extra["cross_fit_folds"] == 0  # a model trained without folds: model.bin scores everything
    # a rerun with the same inputs, config and model is skipped
    mtime = os.stat(tmp_path / "out" / "stats.json").st_mtime_ns
    assert run_quality_filter([corpus["table"]], str(tmp_path / "out"), cfg, local_runner).kept == stats.kept
    assert os.stat(tmp_path / "out" / "stats.json").st_mtime_ns == mtime


def test_pareto_filter_keeps_same_ids_on_every_runner(corpus, trained, local_runner, portable_runner, tmp_path):
    model, _ = trained
    cfg = QualityFilterConfig(model=model, rule="pareto", alpha=2.0, seed=5)  # alpha 2: many borderline draws
    a = run_quality_filter([corpus["table"]], str(tmp_path / "local"), cfg, local_runner)
    b = run_quality_filter([corpus["table"]], str(tmp_path / "portable"), cfg, portable_runner)
    assert _kept(str(tmp_path / "local")) == _kept(str(tmp_path / "portable"))
    assert (a.read, a.kept, a.dropped) == (b.read, b.kept, b.dropped)
    assert 0 < a.kept < corpus["n_scorable"]


@pytest.mark.parametrize("quantiles", ["exact", "approximate"])
def test_top_fraction_keeps_the_best_share(corpus, trained, local_runner, tmp_path, quantiles):
    model, _ = trained
    cfg = QualityFilterConfig(model=model, rule="top_fraction", top_fraction=0.3, quantiles=quantiles)
    stats = run_quality_filter([corpus["table"]], str(tmp_path / "out"), cfg, local_runner)
    kept = _kept(str(tmp_path / "out"))
    target = round(0.3 * corpus["n_scorable"])
    if quantiles == "exact":
        assert stats.kept == len(kept) == target
    else:
        assert abs(stats.kept - target) <= 2
    expected = _expected_scores(model, corpus["table_texts"])
    dropped_scores = [s for i, s in expected.items() if i not in kept]
    assert min(kept.values()) >= max(dropped_scores)
    assert stats.extra["cutoff_score"] == pytest.approx(min(kept.values()), abs=1e-7)
    assert stats.read == stats.kept + sum(stats.dropped.values())


def test_pareto_or_top_fraction_falls_back_by_the_pareto_count(corpus, trained, local_runner, tmp_path):
    model, _ = trained
    expected = _expected_scores(model, corpus["table_texts"])
    by_pareto = {i for i, s in expected.items() if pareto_keep(s, i, 3, 9.0)}
    assert 0 < len(by_pareto) < round(0.3 * corpus["n_scorable"])
    kept = {}
    for name, need in (("pareto", len(by_pareto)), ("top", len(by_pareto) + 1)):
        cfg = QualityFilterConfig(
            model=model, rule="pareto_or_top_fraction", min_documents=need, top_fraction=0.3, seed=3
        )
        stats = run_quality_filter([corpus["table"]], str(tmp_path / name), cfg, local_runner)
        kept[name] = set(_kept(str(tmp_path / name)))
        assert stats.extra["pareto_kept"] == len(by_pareto) and stats.extra["min_documents"] == need
        assert stats.read == stats.kept + sum(stats.dropped.values())
    assert kept["pareto"] == by_pareto  # Pareto keeps enough: it feeds the mix
    assert len(kept["top"]) == round(0.3 * corpus["n_scorable"])  # one short: the top fraction does
    assert load_stats(str(tmp_path / "top")).extra["rule_used"] == "top_fraction"
    assert load_stats(str(tmp_path / "pareto")).extra["rule_used"] == "pareto"
    from pipeline.run import _quality_rule

    line = _quality_rule(load_stats(str(tmp_path / "top")))
    assert line.startswith("quality rule: top_fraction (GPT-3's Pareto rule, alpha 9, keeps ")
    assert f"{len(by_pareto)} documents, fewer than min_documents {len(by_pareto) + 1})" in line


def test_threshold_rule(corpus, trained, local_runner, tmp_path):
    model, _ = trained
    cfg = QualityFilterConfig(model=model, rule="threshold", threshold=0.5)
    stats = run_quality_filter([corpus["table"]], str(tmp_path / "out"), cfg, local_runner)
    expected = _expected_scores(model, corpus["table_texts"])
    assert set(_kept(str(tmp_path / "out"))) == {i for i, s in expected.items() if s >= 0.5}
    assert stats.dropped["quality"] == sum(s < 0.5 for s in expected.values())


# -- cross-fitting ---------------------------------------------------------------------------------------

N_PLANTED = 20
PINNED_FOLDS = [1, 1, 0, 0, 1, 0, 1, 0]  # xxh64(b"fold\x00doc-{i}", seed=0) % 2


def test_fold_of_is_deterministic_and_balanced():
    ids = [f"<urn:uuid:{i:08d}>" for i in range(12_000)]
    for folds in (2, 3, 5):
        a = [fold_of(d, 0, folds) for d in ids]
        assert a == [fold_of(d, 0, folds) for d in ids]  # a pure function of (id, seed, folds)
        counts = np.bincount(a, minlength=folds)
        assert len(counts) == folds
        expected = len(ids) / folds
        sd = np.sqrt(len(ids) * (1 / folds) * (1 - 1 / folds))
        assert np.all(np.abs(counts - expected) < 5 * sd), counts
        assert a != [fold_of(d, 1, folds) for d in ids]  # another training seed, other folds
    assert all(fold_of(d, 3, 1) == 0 for d in ids[:100])
    # pinned: models trained with one version of the hash must be routed the same way by the next one
    assert [fold_of(f"doc-{i}", 0, 2) for i in range(8)] == PINNED_FOLDS
    # a record without an id is placed by its normalised text; an id wins over the text
    assert fold_key(None, "Some  Text\n") == fold_key(None, "some text") != fold_key(None, "other text")
    assert fold_key("id-1", "some text") == "id-1"


def _capture_training_files(calls: list[tuple[str, list[str]]]):
    """Wrap ``train_fasttext`` to keep (model file name, training lines) of every training: what fastText saw."""
    real = quality_train.train_fasttext

    def spy(input_path, output_path, **params):
        with open(input_path, encoding="utf-8") as fh:
            calls.append((os.path.basename(output_path), fh.read().splitlines()))
        return real(input_path, output_path, **params)

    return spy


@pytest.fixture(scope="module")
def planted(corpus):
    """The crawl negatives plus copies of reference paragraphs planted among them as crawl documents.

    A planted page is what the problem looks like in a run: crawl text whose content is reference-like.
    As a training negative it is memorised as "crawl" by any model that trained on it.
    """
    root = corpus["root"]
    with open(corpus["positives"][0], encoding="utf-8") as fh:
        wiki = [json.loads(line)["text"] for line in fh]
    with open(corpus["negatives"][0], encoding="utf-8") as fh:
        crawl = [json.loads(line) for line in fh]
    records = crawl + [{"id": f"planted-{i}", "text": t} for i, t in enumerate(wiki[:N_PLANTED])]
    negatives = os.path.join(root, "crawl_planted.jsonl")
    with open(negatives, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    # What the filter sees: the same documents, same ids, as a document table (curate/ next to curate/raw).
    table = os.path.join(root, "crawl_table")
    os.makedirs(table)
    rows = [dict(id=r["id"], source="crawl", text=r["text"]) for r in records]
    write_documents(rows[::2], os.path.join(table, "part-0.parquet"))
    write_documents(rows[1::2], os.path.join(table, "part-1.parquet"))

    cfg = dict(TINY, baseline=False)
    single = os.path.join(root, "model_planted_1")
    train_quality(corpus["positives"], [negatives], single, QualityTrainConfig(**cfg))
    calls: list[tuple[str, list[str]]] = []
    folded = os.path.join(root, "model_planted_2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quality_train, "train_fasttext", _capture_training_files(calls))
        result = train_quality(corpus["positives"], [negatives], folded, QualityTrainConfig(**cfg, folds=2))
    return {
        "negatives": negatives,
        "table": table,
        "texts": {r["id"]: r["text"] for r in records},
        "single": single,
        "folded": folded,
        "result": result,
        "calls": dict(calls),
    }


def _training_negatives(lines: list[str]) -> tuple[int, list[str]]:
    """(number of positive lines, texts of the negative lines) of one fastText training file."""
    n_pos, neg = 0, []
    for line in lines:
        label, text = line.split(" ", 1)
        if label == "__label__hq":
            n_pos += 1
        else:
            assert label == "__label__cc"
            neg.append(text)
    return n_pos, neg


def test_fold_models_never_train_on_their_own_fold(planted):
    """Checked on what fastText was actually given, not on what the code says it did."""
    folded, result, calls = planted["folded"], planted["result"], planted["calls"]
    assert sorted(calls) == ["model-fold0.bin", "model-fold1.bin", "model.bin"]
    for name in ("model.bin", "model-fold0.bin", "model-fold1.bin", "config.json", "eval.json"):
        assert os.path.getsize(os.path.join(folded, name)) > 0, name
    with open(os.path.join(folded, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    assert config["folds"] == 2 and config["fold_models"] == ["model-fold0.bin", "model-fold1.bin"]
    assert config["fold_seed"] == 0
    with open(os.path.join(folded, "eval.json"), encoding="utf-8") as fh:
        assert json.load(fh) == result
    assert result["folds"] == 2 and result["fold_models"] == config["fold_models"]

    # The crawl holds the same page under several ids (as a crawl does before dedup); a fold model must not
    # have trained on any copy of a document of its fold, so the check goes by text, not by id.
    fold = {i: fold_of(i, 0, 2) for i in planted["texts"]}
    folds_of_text: dict[str, set[int]] = {}
    for i, t in planted["texts"].items():
        folds_of_text.setdefault(normalize_text(t), set()).add(fold[i])
    assert any(len(f) == 2 for f in folds_of_text.values())  # the data does exercise the duplicate case
    n_pos, main_neg = _training_negatives(calls["model.bin"])
    assert set().union(*(folds_of_text[t] for t in main_neg)) == {0, 1}  # model.bin learned from both folds
    per_fold = result["cross_fit"]["per_fold"]
    for k in (0, 1):
        n_pos, neg = _training_negatives(calls[f"model-fold{k}.bin"])
        assert neg and not any(k in folds_of_text[t] for t in neg), k  # no text of its own fold
        assert n_pos == len(neg) == per_fold[k]["n_train_negative"] == per_fold[k]["n_train_positive"]
        assert per_fold[k]["n_fold_negatives"] == sum(f == k for f in fold.values())  # every record is usable
        assert per_fold[k]["n_duplicates_left_out"] > 0
        assert per_fold[k]["roc_auc"] > 0.85
    # the main model is the one a folds=1 run trains: cross-fitting only adds models
    texts = list(planted["texts"].values())
    assert score_documents(planted["folded"], texts) == score_documents(planted["single"], texts)
    with open(os.path.join(planted["single"], "config.json"), encoding="utf-8") as fh:
        assert json.load(fh)["fold_models"] == []
    assert not any(f.startswith("model-fold") for f in os.listdir(planted["single"]))
    # memorised in-sample scores of model.bin's training negatives are lower than their out-of-fold scores
    train_neg = result["cross_fit"]["train_negatives"]
    assert train_neg["n"] == len(main_neg)
    assert train_neg["mean_score_out_of_fold"] > train_neg["mean_score_in_sample"]


def _all_scores(out_dir: str) -> dict[str, float]:
    return {r["id"]: r["quality_score"] for r in read_documents(out_dir)}


def test_cross_fit_filter_scores_each_document_with_the_model_that_did_not_see_it(planted, local_runner, tmp_path):
    folded, texts = planted["folded"], planted["texts"]
    keep_all = dict(rule="threshold", threshold=0.0)  # every scored document is written with its score
    cfg = QualityFilterConfig(model=os.path.join(folded, "model.bin"), **keep_all)
    out = str(tmp_path / "cross")
    stats = run_quality_filter([planted["table"]], out, cfg, local_runner)
    cross = _all_scores(out)
    fold = {i: fold_of(i, 0, 2) for i in texts}
    assert stats.read == stats.kept == len(cross) == len(texts) and not stats.dropped
    assert stats.extra["cross_fit_folds"] == 2
    assert stats.extra["scored_per_fold"] == [sum(f == k for f in fold.values()) for k in (0, 1)]
    assert [os.path.basename(p) for p in stats.extra["fold_models"]] == ["model-fold0.bin", "model-fold1.bin"]
    for k in (0, 1):
        ids = [i for i in texts if fold[i] == k]
        expected = _expected_scores(os.path.join(folded, f"model-fold{k}.bin"), {i: texts[i] for i in ids})
        assert {i: cross[i] for i in ids} == expected

    # cross_fit off: the same folder scores everything with model.bin, exactly as a folds=1 model would
    plain_out = str(tmp_path / "plain")
    plain_stats = run_quality_filter(
        [planted["table"]], plain_out, QualityFilterConfig(model=folded, cross_fit=False, **keep_all), local_runner
    )
    plain = _all_scores(plain_out)
    assert plain == _expected_scores(planted["single"], texts)
    assert plain_stats.extra["cross_fit_folds"] == 0 and "scored_per_fold" not in plain_stats.extra

    # The planted reference copies were memorised as crawl by model.bin; the model that did not see them
    # scores them as the reference text they are. The whole crawl gains too: memorised scores are lower.
    planted_ids = [i for i in texts if i.startswith("planted-")]
    gain = np.array([cross[i] - plain[i] for i in planted_ids])
    assert gain.mean() > 0.05 and np.mean(gain > 0) >= 0.7, gain
    keep = {
        name: np.mean([pareto_keep_probability(s, 9.0) for s in scores.values()])
        for name, scores in (("cross", cross), ("plain", plain))
    }
    assert keep["cross"] > 1.5 * keep["plain"], keep

    # the fold models take part in the fingerprint: same models -> skipped, a retrained fold model -> rerun
    mtime = os.stat(os.path.join(out, "stats.json")).st_mtime_ns
    assert run_quality_filter([planted["table"]], out, cfg, local_runner).kept == stats.kept
    assert os.stat(os.path.join(out, "stats.json")).st_mtime_ns == mtime
    # (models are identified by content: a retrained model has new bytes; stand one in with fold 0's bytes,
    # committed as a retrain commits it: its record in stats.json too, since readers check the file against it)
    fold0, fold1 = (os.path.join(folded, f"model-fold{k}.bin") for k in (0, 1))
    original, commit = open(fold1, "rb").read(), open(os.path.join(folded, "stats.json"), "rb").read()
    try:
        retrained = open(fold0, "rb").read()
        record = json.loads(commit)
        for f in record["files"]:
            if f["path"] == "model-fold1.bin":
                f.update(size=len(retrained), sha256=hashlib.sha256(retrained).hexdigest())
        with open(fold1, "wb") as fh:
            fh.write(retrained)
        with open(os.path.join(folded, "stats.json"), "w") as fh:
            json.dump(record, fh)
        run_quality_filter([planted["table"]], out, cfg, local_runner)
        assert os.stat(os.path.join(out, "stats.json")).st_mtime_ns != mtime
    finally:
        with open(fold1, "wb") as fh:
            fh.write(original)
        with open(os.path.join(folded, "stats.json"), "wb") as fh:
            fh.write(commit)


def test_cross_fit_filter_is_the_same_on_every_runner(planted, local_runner, portable_runner, tmp_path):
    cfg = QualityFilterConfig(model=planted["folded"], rule="pareto", alpha=2.0, seed=5)
    a = run_quality_filter([planted["table"]], str(tmp_path / "local"), cfg, local_runner)
    b = run_quality_filter([planted["table"]], str(tmp_path / "portable"), cfg, portable_runner)
    kept = _kept(str(tmp_path / "local"))
    assert kept == _kept(str(tmp_path / "portable"))
    assert (a.read, a.kept, a.dropped) == (b.read, b.kept, b.dropped)
    assert a.extra["scored_per_fold"] == b.extra["scored_per_fold"] and a.extra["cross_fit_folds"] == 2
    assert a.read == a.kept + a.dropped.get("quality", 0) == len(planted["texts"])
    assert 0 < a.kept < a.read
    # exactly the documents the pure rule keeps under the cross-fitted scores
    folded, texts = planted["folded"], planted["texts"]
    scores = {}
    for k in (0, 1):
        ids = {i: t for i, t in texts.items() if fold_of(i, 0, 2) == k}
        scores.update(_expected_scores(os.path.join(folded, f"model-fold{k}.bin"), ids))
    assert set(kept) == {i for i, s in scores.items() if pareto_keep(s, i, 5, 2.0)}


# -- bad input: models ------------------------------------------------------------------------------------


def _texts_never_read():
    raise AssertionError("a document was read before the model was checked")
    yield ""  # pragma: no cover


@pytest.fixture(scope="module")
def bad_models(shared_data, corpus, trained, tmp_path_factory):
    """A missing, a truncated, a garbage and a foreign-label model file (trained like ours, other labels)."""
    root = tmp_path_factory.mktemp("bad_models")
    good = os.path.join(trained[0], "model.bin")
    with open(good, "rb") as fh:
        data = fh.read()
    truncated, garbage, header_only = root / "truncated.bin", root / "garbage.bin", root / "header.bin"
    truncated.write_bytes(data[: len(data) // 2])
    garbage.write_bytes(b"not a fastText model " * 50)
    header_only.write_bytes(data[:10])
    # a real classifier over the same kind of text, trained exactly like ours, but for other labels
    train_file = root / "ab.txt"
    with open(train_file, "w", encoding="utf-8") as fh:
        for label, docs in (("a", corpus["sources"]["wikitext"]), ("b", corpus["sources"]["bible-kjv"])):
            fh.writelines(f"__label__{label} {normalize_text(t)}\n" for t in docs[:50])
    foreign = root / "labels_ab.bin"
    train_fasttext(
        str(train_file),
        str(foreign),
        dim=8,
        epoch=2,
        minCount=1,
        bucket=1000,
        verbose=0,
        wordNgrams=2,
        thread=1,
        seed=0,
        lr=0.1,
        loss="softmax",
    )
    return {
        "missing": (str(root / "missing.bin"), "not found"),
        "truncated": (str(truncated), "truncated or damaged"),
        "garbage": (str(garbage), "not a fastText"),
        "header_only": (str(header_only), "truncated or damaged"),
        "foreign_labels": (str(foreign), "__label__a"),
        # a real fastText classifier for something else: language identification (quantised, 176 labels)
        "language_id": (os.path.join(shared_data, "lid", "lid.176.ftz"), "__label__en"),
    }


BAD_MODELS = ["missing", "truncated", "garbage", "header_only", "foreign_labels", "language_id"]


@pytest.mark.parametrize("which", BAD_MODELS)
def test_bad_model_fails_before_scoring(bad_models, which):
    path, why = bad_models[which]
    with pytest.raises(QualityError, match=re.escape(path)) as exc:
        score_documents(path, _texts_never_read())
    assert why in str(exc.value)
    with pytest.raises(QualityError, match=re.escape(path)):
        list(score_paths(path, ["never-opened.jsonl"]))


@pytest.mark.parametrize("which", BAD_MODELS)
def test_bad_model_fails_before_the_filter_runs(corpus, bad_models, local_runner, tmp_path, which):
    path, why = bad_models[which]
    out = tmp_path / "out"
    with pytest.raises(QualityError, match=re.escape(path)) as exc:
        run_quality_filter([corpus["table"]], str(out), QualityFilterConfig(model=path), local_runner)
    assert why in str(exc.value)
    assert not out.exists()  # no work started


def test_check_model_accepts_our_models(trained):
    info = check_model(os.path.join(trained[0], "model.bin"))
    assert sorted(info["labels"]) == ["__label__cc", "__label__hq"] and info["dim"] == TINY["dim"]
    assert not info["quantized"]


def test_damaged_fold_model_fails_before_the_filter_runs(planted, corpus, local_runner, tmp_path):
    folder = tmp_path / "folded"
    folder.mkdir()
    for name in ("model.bin", "config.json", "model-fold0.bin"):
        with open(os.path.join(planted["folded"], name), "rb") as src:
            (folder / name).write_bytes(src.read())
    (folder / "model-fold1.bin").write_bytes(b"\0" * 100)
    with pytest.raises(QualityError, match="model-fold1.bin") as exc:
        run_quality_filter(
            [corpus["table"]], str(tmp_path / "out"), QualityFilterConfig(model=str(folder)), local_runner
        )
    assert "cross_fit: false" in str(exc.value)
    (folder / "model-fold1.bin").unlink()
    with pytest.raises(QualityError, match="model-fold1.bin.*not found|not found.*model-fold1.bin"):
        run_quality_filter(
            [corpus["table"]], str(tmp_path / "out"), QualityFilterConfig(model=str(folder)), local_runner
        )
    assert not (tmp_path / "out").exists()


def test_unscorable_reason():
    assert unscorable_reason(None) == "bad_record"
    assert unscorable_reason("") == unscorable_reason(" \n\t ") == "empty_text"
    assert unscorable_reason(HUGE) == "too_long"
    assert unscorable_reason(HUGE, max_chars=0) is None  # 0 = no limit
    assert unscorable_reason("x" * 11, max_chars=10) == "too_long"
    assert unscorable_reason("fine text") is None
