"""Decontamination (GPT-3 appendix C): normalisation, the cut rule, planted benchmark text, the Beam stage."""

from __future__ import annotations

import json
import os
import random
import re
from functools import lru_cache

import numpy as np
import pytest

from pipeline.benchmarks import (
    BenchmarkSet,
    DecontamError,
    WordHasher,
    benchmark_name,
    contains,
    normalize_text,
    resolve_benchmarks,
    task_ngram,
    text_ngram_hashes,
    words_with_spans,
)
from pipeline.commit import committed_file
from pipeline.decontam import (
    ALL_SHORT,
    EMPTY,
    SPLIT,
    TOO_MANY_SPLITS,
    DecontamConfig,
    decontaminate_text,
    run_decontam,
)
from pipeline.tables import read_documents, write_documents
from schemas.documents import SchemaError
from schemas.tasks import split_wikitext_articles, wikitext_detokenize

CFG = DecontamConfig()


def _filler(n_chars: int, seed: int) -> str:
    """Clean text that shares no 13-gram with anything else here (random made-up words)."""
    rng = random.Random(seed)
    words, size = [], 0
    while size < n_chars:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        words.append(w)
        size += len(w) + 1
    return " ".join(words)[:n_chars]


PLANT = "The committee published its final report on the northern railway extension in March of that year"
BENCH = BenchmarkSet.from_texts(13, {"synthetic": [PLANT]})


# ----------------------------------------------------------------------------------------------- pure parts


def test_normalisation_lowercases_strips_punctuation_and_keeps_spans():
    text = "Hello, World!  It's  @-@ «Zoë» 3.5 —\n$x"
    words, starts, ends = words_with_spans(text)
    assert words == ["hello", "world", "its", "zoë", "35", "x"]
    assert [text[s:e] for s, e in zip(starts, ends)] == ["Hello,", "World!", "It's", "«Zoë»", "3.5", "$x"]
    assert normalize_text(text) == "hello world its zoë 35 x"
    # the same words however they are cased, punctuated or spaced hash to the same n-grams
    a = text_ngram_hashes(PLANT, 13)
    b = text_ngram_hashes(PLANT.upper().replace(" ", " ,\n  ") + "!", 13)
    assert len(a) == len(PLANT.split()) - 12 and np.array_equal(a, b)
    assert len(text_ngram_hashes(" ".join(PLANT.split()[:12]), 13)) == 0


def test_hashes_are_deterministic_and_lookup_exact():
    h = WordHasher()
    assert h(["alpha", "beta"]).tolist() == WordHasher()(["alpha", "beta"]).tolist()
    arr = np.array([3, 7, 11], dtype=np.uint64)
    assert contains(arr, np.array([0, 3, 8, 11, 12], dtype=np.uint64)).tolist() == [False, True, False, True, False]
    assert contains(np.empty(0, np.uint64), np.array([1], dtype=np.uint64)).tolist() == [False]


def test_margins_of_200_characters_each_side():
    left, right = _filler(1000, 1), _filler(900, 2)
    text = f"{left} {PLANT}. {right}"
    s = len(left) + 1
    e = s + len(PLANT) + 1  # a word's span is its whitespace-separated token: "year." with its full stop
    res = decontaminate_text(text, BENCH, CFG)
    assert res.outcome == SPLIT
    assert res.hits == {"synthetic": len(PLANT.split()) - 12}
    assert res.removals == [(s - 200, e + 200)]
    assert res.fragments == [(0, s - 200), (e + 200, len(text))]
    assert res.removed_by == {"synthetic": e - s + 400}
    # the margin is clipped at the text's ends and leaves no empty piece
    res = decontaminate_text(PLANT + " " + right, BENCH, CFG)
    assert res.removals == [(0, len(PLANT) + 200)] and res.fragments == [
        (len(PLANT) + 200, len(PLANT) + 1 + len(right))
    ]
    # a 12-word overlap is no collision
    twelve = " ".join(PLANT.split()[:12])
    assert decontaminate_text(f"{left} {twelve} {right}", BENCH, CFG).outcome == "kept"


def test_margin_and_fragment_length_are_configurable():
    left, right = _filler(300, 3), _filler(300, 4)
    text = f"{left} {PLANT} {right}"
    s, e = len(left) + 1, len(left) + 1 + len(PLANT)
    res = decontaminate_text(text, BENCH, DecontamConfig(margin_chars=10, min_fragment_chars=250))
    assert res.removals == [(s - 10, e + 10)] and res.fragments == [(0, s - 10), (e + 10, len(text))]
    # 300-char sides minus 200-char margins leave ~100-char pieces: all short
    assert decontaminate_text(text, BENCH, CFG).outcome == ALL_SHORT
    assert decontaminate_text("  \n ", BENCH, CFG).outcome == EMPTY


def _planted(k: int, gap: int = 600) -> tuple[str, list[int]]:
    parts, starts, pos = [], [], 0
    for i in range(k + 1):
        filler = _filler(gap, 100 + i)
        parts.append(filler)
        pos += len(filler)
        if i < k:
            parts.append(" " + PLANT + " ")
            starts.append(pos + 1)
            pos += len(PLANT) + 2
    return "".join(parts), starts


def test_more_than_max_splits_drops_the_document():
    ten, starts = _planted(10)
    res = decontaminate_text(ten, BENCH, CFG)
    assert res.outcome == SPLIT and len(res.removals) == 10 and len(res.fragments) == 11
    assert [r[0] + 200 for r in res.removals] == starts
    eleven, _ = _planted(11)
    res = decontaminate_text(eleven, BENCH, CFG)
    assert res.outcome == TOO_MANY_SPLITS and len(res.removals) == 11 and res.fragments == []
    assert decontaminate_text(eleven, BENCH, DecontamConfig(max_splits=11)).outcome == SPLIT
    assert decontaminate_text(ten, BENCH, DecontamConfig(max_splits=9)).outcome == TOO_MANY_SPLITS
    # collisions closer than two margins merge into one removal: one split, not eleven
    close, _ = _planted(11, gap=300)
    res = decontaminate_text(close, BENCH, CFG)
    assert len(res.removals) == 1 and res.outcome == ALL_SHORT  # the 300-char ends lose 200 to the margins


def test_benchmark_names_and_errors(tmp_path):
    assert benchmark_name("/x/wikitext-2/test.txt") == "test" and benchmark_name("mmlu.jsonl.gz") == "mmlu"
    a = tmp_path / "a.txt"
    a.write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("y")
    assert resolve_benchmarks([f"wiki={a}"]) == [("wiki", str(a))]
    with pytest.raises(DecontamError, match="at least one"):
        resolve_benchmarks([])
    with pytest.raises(DecontamError, match="does not exist"):
        resolve_benchmarks([str(tmp_path / "missing.jsonl")])
    with pytest.raises(DecontamError, match="two benchmarks named 'a'"):
        resolve_benchmarks([str(a), str(tmp_path / "sub" / "a.txt")])


# ---------------------------------------------------------------------------------------- real benchmark


@lru_cache(maxsize=1)
def _wikitext_set(wiki: str) -> BenchmarkSet:
    return BenchmarkSet.from_texts(13, {"wikitext2_test": [wiki]})


def _real(shared_data):
    ref = os.path.join(shared_data, "reference")
    with open(os.path.join(ref, "wikitext-2", "test.txt"), encoding="utf-8") as fh:
        wiki = fh.read()
    with open(os.path.join(ref, "tinyshakespeare.txt"), encoding="utf-8") as fh:
        plays = fh.read()
    blocks = [b.strip() for b in re.split(r"\n[ \t]*\n", plays) if b.strip()]
    return wiki, blocks


def _plant_documents(wiki: str, blocks: list[str], n_docs: int, every: int, seed: int = 0):
    """Documents of 6 joined play blocks; every ``every``-th one gets 1-3 WikiText passages (13-40 words)
    planted at word boundaries, some upper-cased or re-spaced. Returns docs and ``{doc: [(offset, passage)]}``."""
    rng = random.Random(seed)
    lines = [ln for ln in wiki.split("\n") if len(ln.split()) >= 60]
    docs, planted = [], {}
    for i in range(n_docs):
        text = "\n\n".join(blocks[6 * i : 6 * i + 6])
        if i % every == 0:
            passages = []
            for _ in range(rng.randint(1, 3)):
                k = rng.randint(13, 40)  # normalised words: "," and "@-@" tokens do not count
                words = rng.choice(lines).split()
                start = rng.randrange(len(words) - 50)
                end = start + k
                while end <= len(words) and len(words_with_spans(" ".join(words[start:end]))[0]) < k:
                    end += 1
                passage = " ".join(words[start:end])  # at least 13 words (lines have 60+ tokens)
                assert len(words_with_spans(passage)[0]) >= 13
                if rng.random() < 0.3:
                    passage = passage.upper().replace(" ", "\n ")
                passages.append(passage)
            cuts = sorted(rng.sample([m.start() for m in re.finditer(r"\s", text)], len(passages)))
            pieces, pos, where = [], 0, []
            for at, passage in zip(cuts, passages):
                pieces.append(text[pos:at] + " ")
                where.append((sum(map(len, pieces)), passage))
                pieces.append(passage + " ")
                pos = at
            text = "".join(pieces) + text[pos:]
            planted[i] = where
        docs.append(text)
    return docs, planted


def test_planted_wikitext_recall_and_no_false_removal(shared_data):
    wiki, blocks = _real(shared_data)
    bench = _wikitext_set(wiki)
    assert len(bench.union) > 200_000
    docs, planted = _plant_documents(wiki, blocks, n_docs=600, every=4)
    hasher = WordHasher()
    planted_grams = removed = 0
    for i, text in enumerate(docs):
        res = decontaminate_text(text, bench, CFG, hasher)
        if i not in planted:
            assert res.outcome == "kept", f"false removal in clean document {i}: {res.removals}"
            continue
        assert res.outcome != "kept"
        fragments = [text[s:e] for s, e in res.fragments]
        for at, passage in planted[i]:
            assert text[at : at + len(passage)] == passage
            words, starts, ends = words_with_spans(passage)
            for j in range(len(words) - 12):  # every planted 13-gram's characters lie in a removal
                planted_grams += 1
                s, e = at + starts[j], at + ends[j + 12]
                removed += any(rs <= s and e <= re_ for rs, re_ in res.removals)
        for frag in fragments:  # nothing in what is kept still collides with the benchmark
            assert not contains(bench.union, text_ngram_hashes(frag, 13, hasher)).any()
            assert len(frag) >= 200
    assert planted_grams > 1000
    assert removed == planted_grams  # recall 100 %


# ------------------------------------------------------------------------------------------- the stage


def _rows(texts: list[str], prefix: str) -> list[dict]:
    return [
        {"id": f"{prefix}{i:04d}", "source": "plays", "text": t, "annotations": {"n": i}} for i, t in enumerate(texts)
    ]


def _out(path: str) -> list[dict]:
    return sorted(read_documents(path), key=lambda r: r["id"])


def test_stage_local_and_portable_agree_with_exact_accounting(tmp_path, shared_data, local_runner, portable_runner):
    wiki, blocks = _real(shared_data)
    docs, planted = _plant_documents(wiki, blocks, n_docs=300, every=5, seed=1)
    docs[1] = "   "  # empty_text
    eleven, _ = _planted(11)  # split too often (synthetic benchmark, given as JSONL)
    docs[2] = eleven
    docs[3] = f"{_filler(100, 7)} {PLANT} {_filler(100, 8)}"  # all fragments short
    (tmp_path / "in").mkdir()
    write_documents(_rows(docs, "d"), str(tmp_path / "in" / "part.parquet"))
    wiki_path = os.path.join(shared_data, "reference", "wikitext-2", "test.txt")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"question": PLANT, "choices": ["a", "b"]})
        + "\n"
        + json.dumps({"other": "no text field"})
        + "\n"
        + json.dumps({"question": "too short", "choices": [_filler(200, 9)]})
        + "\n"
    )
    cfg = DecontamConfig(benchmarks=[wiki_path, f"qa={qa}"], text_fields=["question", "choices"])

    stats = run_decontam([str(tmp_path / "in")], str(tmp_path / "local"), cfg, local_runner)
    again = run_decontam([str(tmp_path / "in")], str(tmp_path / "portable"), cfg, portable_runner)
    local, portable = _out(str(tmp_path / "local")), _out(str(tmp_path / "portable"))
    assert local == portable
    assert again.to_dict()["benchmarks"] == stats.to_dict()["benchmarks"]
    assert (again.read, again.kept, again.dropped) == (stats.read, stats.kept, stats.dropped)

    # exact accounting against the pure rule
    qa_set = BenchmarkSet.from_texts(13, {"qa": [PLANT, "a", "b", "too short", _filler(200, 9)]})
    bench = BenchmarkSet.from_arrays(
        13, [("test", _wikitext_set(wiki).sets["wikitext2_test"]), ("qa", qa_set.sets["qa"])]
    )
    results = [decontaminate_text(t, bench, CFG) for t in docs]
    expected_drops: dict[str, int] = {}
    for r in results:
        if r.outcome != "kept":
            expected_drops[r.outcome] = expected_drops.get(r.outcome, 0) + 1
    assert stats.read == len(docs) == stats.kept + sum(stats.dropped.values())
    assert stats.dropped == expected_drops
    assert {EMPTY, ALL_SHORT, TOO_MANY_SPLITS, SPLIT} <= set(stats.dropped)
    n_fragments = sum(len(r.fragments) for r in results)
    assert stats.extra["fragments_created"] == n_fragments > 0
    assert stats.extra["documents_split"] == stats.dropped[SPLIT]
    assert len(local) == stats.kept + n_fragments == stats.extra["documents_written"]
    chars = stats.extra["characters"]
    assert chars["read"] == sum(len(t) for t in docs) == chars["kept"] + chars["in_fragments"] + chars["removed"]
    per = stats.extra["benchmarks"]
    assert per["qa"]["records"] == 3 and per["qa"]["bad_records"] == 1 and per["qa"]["ngrams"] == len(bench.sets["qa"])
    assert per["test"]["ngrams"] == len(bench.sets["test"])
    for name in ("test", "qa"):
        assert per[name]["documents"] == sum(name in r.hits for r in results) > 0
        assert per[name]["ngrams_hit"] == sum(r.hits.get(name, 0) for r in results)
        assert per[name]["characters_removed"] == sum(r.removed_by.get(name, 0) for r in results)
        assert per[name]["documents_dropped"] == sum(name in r.hits and r.outcome != SPLIT for r in results)
        assert per[name]["characters_lost"] == sum(
            len(t) - sum(e - s for s, e in r.fragments) for t, r in zip(docs, results) if name in r.hits
        )

    # untouched documents are byte-identical; fragments are exact slices with their lineage noted
    by_id = {r["id"]: r for r in local}
    for i, (text, r) in enumerate(zip(docs, results)):
        if r.outcome == "kept":
            assert by_id[f"d{i:04d}"]["text"] == text and json.loads(by_id[f"d{i:04d}"]["annotations"]) == {"n": i}
            assert i not in planted
        for k, (s, e) in enumerate(r.fragments):
            frag = by_id[f"d{i:04d}#{k}"]
            assert frag["text"] == text[s:e] and frag["source"] == "plays"
            note = json.loads(frag["annotations"])
            assert note["n"] == i and note["decontam"] == {
                "parent": f"d{i:04d}",
                "fragment": k,
                "start": s,
                "end": e,
                "benchmarks": sorted(r.hits),
            }
    log = [
        json.loads(x) for x in open(committed_file(str(tmp_path / "local" / "contaminated.jsonl"))).read().splitlines()
    ]
    assert len(log) == sum(r.outcome not in ("kept", EMPTY) for r in results)


def test_stage_skips_when_done_and_reruns_when_a_benchmark_changes(tmp_path, local_runner):
    docs = [f"{_filler(400, 11)} {PLANT} {_filler(400, 12)}", _filler(500, 13)]
    (tmp_path / "in").mkdir()
    write_documents(_rows(docs, "s"), str(tmp_path / "in" / "part.parquet"))
    bench = tmp_path / "bench.txt"
    bench.write_text(PLANT + "\n")
    cfg = DecontamConfig(benchmarks=[str(bench)])
    out = str(tmp_path / "out")
    first = run_decontam([str(tmp_path / "in")], out, cfg, local_runner)
    assert (first.read, first.kept, first.dropped) == (2, 1, {SPLIT: 1})
    assert first.extra["fragments_created"] == 2 and first.extra["benchmarks"]["bench"]["documents"] == 1
    stamp = os.stat(os.path.join(out, "stats.json")).st_mtime_ns
    assert run_decontam([str(tmp_path / "in")], out, cfg, local_runner).to_dict() == first.to_dict()
    assert os.stat(os.path.join(out, "stats.json")).st_mtime_ns == stamp
    # the benchmark file is part of the fingerprint: changing it recomputes (here: into a clear error); the
    # failed attempt had taken the folder over, so the stale output is gone and the folder reads as unfinished
    bench.write_text("too short to give a single n-gram\n")
    with pytest.raises(DecontamError, match="gave no 13-gram"):
        run_decontam([str(tmp_path / "in")], out, cfg, local_runner)
    assert not os.path.exists(os.path.join(out, "stats.json"))
    with pytest.raises(SchemaError, match="unfinished"):
        _out(out)
    bench.write_text(PLANT + "\n")  # fixed: the rerun commits the same output as the first run
    again = run_decontam([str(tmp_path / "in")], out, cfg, local_runner)
    assert (again.read, again.kept, again.dropped) == (first.read, first.kept, first.dropped)
    assert sorted(r["id"] for r in _out(out)) == ["s0000#0", "s0000#1", "s0001"]
    assert [r["text"] for r in _out(out)][2] == docs[1]


# ------------------------------------------------------------------------------------- benchmarks from tasks


def test_task_ngram_follows_gpt3_appendix_c():
    assert task_ngram([3] * 20) == (8, 20)  # never under 8: short n-grams collide by chance
    assert task_ngram([40] * 20) == (13, 0)  # never over 13
    assert task_ngram(range(1, 101)) == (8, 7)  # 5th percentile: 5 words -> 8
    assert task_ngram([*range(200, 300), *[10] * 6]) == (10, 0)


def test_two_lengths_in_one_set():
    sentence = "What had Theresa walked through while talking about that high school"
    bench = BenchmarkSet.from_texts(13, {"pairs": [sentence], "synthetic": [PLANT]}, ngrams={"pairs": 8})
    assert bench.ngrams == {"pairs": 8, "synthetic": 13} and set(bench.unions) == {8, 13}
    text = f"{_filler(400, 21)} {sentence}? {_filler(300, 22)} {PLANT} {_filler(400, 23)}"
    res = decontaminate_text(text, bench, CFG)
    assert res.outcome == SPLIT and res.hits == {
        "pairs": len(sentence.split()) - 7,
        "synthetic": len(PLANT.split()) - 12,
    }
    assert len(res.removals) == 1 and len(res.fragments) == 2  # 300 characters apart: the margins merge the cuts


def test_stage_reads_benchmarks_from_task_files(tmp_path, shared_data, local_runner):
    with open(os.path.join(shared_data, "reference", "wikitext-2", "test.txt"), encoding="utf-8") as fh:
        article = wikitext_detokenize(split_wikitext_articles(fh.read())[3])
    passage = " ".join(article.split("\n")[2].split()[:40])
    pair = "What had Theresa walked through while talking about that high school?"  # BLiMP adjunct_island #1
    docs = [
        f"{_filler(400, 31)} {pair} {_filler(400, 32)}",
        f"{_filler(500, 33)} {passage} {_filler(500, 34)}",
        f"{_filler(100, 35)} {pair} {_filler(50, 36)}",  # only short fragments remain
        _filler(900, 37),
    ]
    (tmp_path / "in").mkdir()
    write_documents(_rows(docs, "t"), str(tmp_path / "in" / "part.parquet"))
    cfg = DecontamConfig(tasks=["blimp,wikitext2"], data_root=shared_data)
    stats = run_decontam([str(tmp_path / "in")], str(tmp_path / "out"), cfg, local_runner)
    assert stats.kept == 1 and stats.dropped == {SPLIT: 2, ALL_SHORT: 1}
    blimp, wiki = stats.extra["benchmarks"]["blimp"], stats.extra["benchmarks"]["wikitext2"]
    assert blimp["ngram"] == 8 and wiki["ngram"] == 13  # chosen per task from its short examples
    assert blimp["records"] == 67_000 and blimp["texts"] == 134_000 and wiki["records"] == 62
    assert 0 < blimp["texts_shorter_than_ngram"] < blimp["texts"] and wiki["texts_shorter_than_ngram"] == 0
    assert (blimp["documents"], blimp["documents_split"], blimp["documents_dropped"]) == (2, 1, 1)
    assert (wiki["documents"], wiki["documents_split"], wiki["documents_dropped"]) == (1, 1, 0)
    assert blimp["ngrams_hit"] == 2 * (len(pair.split()) - 7) and wiki["ngrams_hit"] >= 40 - 12
    assert blimp["task_file"].endswith("schemas/task_files/blimp.yaml")
    with pytest.raises(DecontamError, match="unknown task 'blimpp'"):
        run_decontam([str(tmp_path / "in")], str(tmp_path / "bad"), DecontamConfig(tasks=["blimpp"]), local_runner)
    with pytest.raises(DecontamError, match="at least one benchmark file"):
        run_decontam([str(tmp_path / "in")], str(tmp_path / "bad"), DecontamConfig(), local_runner)


def test_both_sides_read_the_same_task_examples(tmp_path, shared_data):
    """``schemas.tasks`` parses; the pipeline reads the files through ``pipeline.fs`` and the trainer through
    ``train.tasks``: the same subtasks and examples, and the same errors, from either side."""
    import io
    import tarfile

    from pipeline import benchmarks
    from schemas.tasks import TaskError
    from train import tasks as train_tasks

    for name in ("blimp", "wikitext2"):
        (p_task,), (t_task,) = benchmarks.load_tasks(name), train_tasks.load_tasks(name)
        assert p_task == t_task and p_task.source.endswith(f"schemas/task_files/{name}.yaml")
        assert benchmarks.read_examples(p_task, shared_data) == train_tasks.read_examples(t_task, shared_data)

    archive = tmp_path / "pairs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member, lines in {"data/a.jsonl": 2, "data/b.jsonl": 1, "README": 1}.items():
            body = "".join(json.dumps({"g": f"good {i}", "b": f"bad {i}"}) + "\n" for i in range(lines)).encode()
            info = tarfile.TarInfo(member)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    spec = "version: 1\nname: pairs\nformat: minimal_pairs\ndata: {path: pairs.tar.gz, members: [data/*.jsonl]}\n"
    spec += "fields: {good: g, bad: b}\n"
    (tmp_path / "pairs.yaml").write_text(spec)
    (p_task,), (t_task,) = (
        benchmarks.load_tasks(str(tmp_path / "pairs.yaml")),
        train_tasks.load_tasks(str(tmp_path / "pairs.yaml")),
    )
    subs = benchmarks.read_examples(p_task, str(tmp_path))
    assert subs == train_tasks.read_examples(t_task, str(tmp_path))
    assert [(s.name, len(s.examples)) for s in subs] == [("pairs_a", 2), ("pairs_b", 1)]

    (tmp_path / "plain.yaml").write_text(spec.replace("name: pairs", "name: plain").replace("pairs.tar.gz", "x.gz"))
    (tmp_path / "x.gz").write_bytes(b"not a tar")
    (tmp_path / "glob.yaml").write_text(spec.replace("name: pairs", "name: glob").replace("data/*.jsonl", "none/*"))
    for reader, load in ((benchmarks.read_examples, benchmarks.load_tasks), (train_tasks.read_examples, None)):
        load = load or train_tasks.load_tasks
        (plain,), (glob,) = load(str(tmp_path / "plain.yaml")), load(str(tmp_path / "glob.yaml"))
        with pytest.raises(TaskError, match="is not a tar archive"):
            reader(plain, str(tmp_path))
        with pytest.raises(TaskError, match="no member of .* matches 'none/\\*'"):
            reader(glob, str(tmp_path))
        with pytest.raises(TaskError, match="data file .* not found"):
            reader(glob, str(tmp_path / "elsewhere"))
        with pytest.raises(TaskError, match="unknown task 'nope'.*blimp"):
            load("nope")
        with pytest.raises(TaskError, match="does not exist"):
            load(str(tmp_path / "missing.yaml"))
