"""Boilerplate-aware near-duplicate detection: boilerplate lines per host and corpus-wide, the core's shingles,
containment verification with its floor, character shingles for unsegmented scripts (Chinese, Japanese), and
the labelled syndicated-news sets scored with the default settings."""

from __future__ import annotations

import json
import os
import random
import zipfile

import numpy as np
import pytest
from datasketch import MinHash

from pipeline.dedup.boilerplate import (
    BoilerplateConfig,
    candidate_threshold,
    core_containment_match,
    core_shingles,
    count_lines,
    frequent_lines,
    group_of,
    normalize_line,
)
from pipeline.dedup.evaluate import default_near_config, evaluate_dedup, plain_near_config
from pipeline.dedup.exact import NormalizeConfig
from pipeline.dedup.minhash import MinHasher, ShingleConfig, is_unsegmented, shingles

HASHER = MinHasher()


def _set(items: list[bytes]) -> np.ndarray:
    return np.unique(HASHER.hash_shingles(items))


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(100_000)}" for _ in range(n))


# --- boilerplate lines ------------------------------------------------------------------------------------------


def test_normalize_line_ignores_case_punctuation_and_digits():
    assert normalize_line("  Posted 12 March 2024 -- by ADMIN! ") == normalize_line("posted 03 march 1999, by admin")
    assert normalize_line("© 2024 ...") == "0000"
    assert normalize_line("--- | ---") == ""


def test_lines_are_counted_per_host_where_documents_have_urls():
    cfg = BoilerplateConfig(enabled=True, min_docs=3)
    rng = random.Random(1)
    docs = []
    for i in range(4):  # one site's template line on four of its pages
        docs.append((f"https://www.site-a.example/news/{i}", f"Menu | Home | Sport\n{_words(rng, 40)}"))
    for i in range(4):  # one line quoted once on each of four other sites: not a template of any site
        docs.append((f"https://other-{i}.example/p", f"A line quoted everywhere today\n{_words(rng, 40)}"))
    docs.append(("https://site-a.example/about", "A line quoted everywhere today\nabout us"))
    groups = [group_of(url, cfg) for url, _ in docs]
    assert groups[0] == "site-a.example" == groups[-1]  # "www." dropped, lowercase host
    frequent = frequent_lines(count_lines(zip(groups, (t for _, t in docs))), cfg.min_docs)
    menu, quoted = (hash_of("Menu | Home | Sport"), hash_of("A line quoted everywhere today"))
    assert ("site-a.example", menu) in frequent
    assert not any(h == quoted for _, h in frequent)
    # Corpus-wide (no URLs, or per_host off): the quoted line now counts across all five documents.
    flat = BoilerplateConfig(enabled=True, min_docs=3, per_host=False)
    groups = [group_of(url, flat) for url, _ in docs]
    assert set(groups) == {""}
    frequent = frequent_lines(count_lines(zip(groups, (t for _, t in docs))), flat.min_docs)
    assert ("", quoted) in frequent and ("", menu) in frequent
    assert group_of(None, cfg) == group_of("", cfg) == group_of("not a url", cfg) == ""


def hash_of(line: str) -> int:
    lines = count_lines([("", line)])
    (key,) = lines
    return key[1]


def test_a_line_counts_once_per_document():
    counts = count_lines([("", "same\nsame\nsame\nother"), ("", "same")])
    assert sorted(counts.values()) == [1, 2]


def test_core_shingles_are_the_full_shingles_inside_kept_lines():
    rng = random.Random(2)
    body = [_words(rng, 30) for _ in range(4)]
    text = "\n".join(["Sign in to your account", body[0], body[1], "Most read this week", body[2], body[3]])
    boilerplate = {hash_of("Sign in to your account"), hash_of("Most read this week")}
    items, core = core_shingles(text, ShingleConfig(), boilerplate)
    assert items == shingles(text, ShingleConfig())  # the full set is the stage's
    assert core is not None and set(core) <= set(items)
    # exactly the shingles of the two runs of kept lines: none spans the removed line between them
    runs = (f"{body[0]}\n{body[1]}", f"{body[2]}\n{body[3]}")
    assert set(core) == {g for run in runs for g in shingles(run, ShingleConfig())}
    assert core_shingles(text, ShingleConfig(), set())[1] is None  # no boilerplate line: no separate core
    all_bp = {hash_of(line) for line in text.splitlines()}
    assert core_shingles(text, ShingleConfig(), all_bp)[1] == []


# --- containment verification -----------------------------------------------------------------------------------


def test_containment_tolerates_boilerplate_and_a_dropped_paragraph():
    rng = random.Random(3)
    paragraphs = [_words(rng, 40) for _ in range(8)]
    site_a = {hash_of("Sponsored content"), hash_of("Reprints and permissions")}
    site_b = {hash_of("Menu World Politics Markets")}
    a_text = "Sponsored content\n" + "\n".join(paragraphs) + "\nReprints and permissions"
    b_text = "Menu World Politics Markets\n" + "\n".join(paragraphs[:3] + paragraphs[4:])  # paragraph 3 dropped
    a_full, a_core = core_shingles(a_text, ShingleConfig(), site_a | site_b)
    b_full, b_core = core_shingles(b_text, ShingleConfig(), site_a | site_b)
    args = (_set(a_core), _set(a_full), _set(b_core), _set(b_full))
    assert core_containment_match(*args, 0.8, 20)
    # symmetric
    assert core_containment_match(args[2], args[3], args[0], args[1], 0.8, 20)


def test_template_pages_with_different_articles_do_not_match():
    rng = random.Random(4)
    template_top, template_bottom = _words(rng, 150), _words(rng, 150)
    boilerplate = {hash_of(template_top), hash_of(template_bottom)}
    pages = [f"{template_top}\n{_words(rng, 30)}\n{template_bottom}" for _ in range(2)]
    (fa, ca), (fb, cb) = (core_shingles(p, ShingleConfig(), boilerplate) for p in pages)
    sa, sb = _set(fa), _set(fb)
    assert len(np.intersect1d(sa, sb)) / len(np.union1d(sa, sb)) > 0.7  # alike by full-text shingles
    assert not core_containment_match(_set(ca), sa, _set(cb), sb, 0.8, 20)
    # the same article in two copies of the template: a duplicate
    fc, cc = core_shingles(pages[0].replace("\n", "\n", 1), ShingleConfig(), boilerplate)
    assert core_containment_match(_set(ca), sa, _set(cc), _set(fc), 0.8, 20)


def test_the_floor_stops_tiny_cores_but_not_tiny_documents():
    rng = random.Random(5)
    template = _words(rng, 200)
    tiny = "results of the local election"  # 1 shingle, present in the other page by chance
    page_a = f"{template}\n{tiny}"
    page_b = f"{template}\nresults of the local election were announced by the council today"
    boilerplate = {hash_of(template)}
    (fa, ca), (fb, cb) = (core_shingles(p, ShingleConfig(), boilerplate) for p in (page_a, page_b))
    args = (_set(ca), _set(fa), _set(cb), _set(fb))
    assert core_containment_match(*args, 0.8, 1)  # without a floor the tiny core is "contained"
    assert not core_containment_match(*args, 0.8, 20)
    # Whole documents shorter than the floor must be contained in full instead.
    h1, h2 = _set(shingles("Hello, world!", ShingleConfig())), _set(shingles("hello world", ShingleConfig()))
    assert core_containment_match(h1, h1, h2, h2, 0.8, 20)
    # Two documents that are all boilerplate: Jaccard of the full sets.
    empty = np.empty(0, dtype=np.uint64)
    assert core_containment_match(empty, _set(fa), empty, _set(fa), 0.8, 20)
    assert not core_containment_match(empty, _set(fa), empty, _set(shingles(_words(rng, 50), ShingleConfig())), 0.8, 20)


def test_candidate_threshold_follows_the_verification():
    assert candidate_threshold(0.8, plain_near_config()) == 0.8
    assert candidate_threshold(0.8, default_near_config()) == pytest.approx(0.8 / 1.2)
    explicit = default_near_config()
    explicit.lsh_threshold = 0.7
    assert candidate_threshold(0.8, explicit) == 0.7


def test_core_signature_is_datasketchs_for_the_core_shingles():
    rng = random.Random(6)
    text = "Follow us on social media\n" + "\n".join(_words(rng, 30) for _ in range(3))
    _, core = core_shingles(text, ShingleConfig(), {hash_of("Follow us on social media")})
    m = MinHash(num_perm=128)
    m.update_batch(core)
    assert np.array_equal(HASHER.signature(HASHER.hash_shingles(core)), m.hashvalues)


# --- scripts without spaces -------------------------------------------------------------------------------------


def _udhr(shared_data: str, name: str) -> list[str]:
    with zipfile.ZipFile(os.path.join(shared_data, "reference", "nltk", "udhr2.zip")) as z:
        text = z.read(f"udhr2/{name}.txt").decode("utf-8")
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 20]
    docs, cur = [], ""
    for line in lines:  # documents of about 150 characters, whole lines each
        cur += line + "\n"
        if len(cur) >= 150:
            docs.append(cur)
            cur = ""
    return docs


def test_is_unsegmented():
    assert is_unsegmented("北京是中华人民共和国的首都。")
    assert is_unsegmented("人間が専制と圧迫とに対する最後の手段として")
    assert not is_unsegmented("Café au lait, crème brûlée")
    assert not is_unsegmented("Apple 的 iPhone and iPad and MacBook sold well")  # mostly Latin words
    assert not is_unsegmented("모든 인간은 태어날 때부터 자유로우며")  # Korean has spaces


@pytest.mark.parametrize("language", ["cmn_hans", "jpn"])
def test_chinese_and_japanese_duplicates_are_found_and_distinct_texts_are_not(shared_data, tmp_path, language):
    docs = _udhr(shared_data, language)
    assert len(docs) >= 12
    rng = random.Random(7)
    rows = []
    for i, text in enumerate(docs[:12]):
        rows.append({"id": f"d{i}", "text": text, "cluster": i})
        if i % 2 == 0:  # a copy with two characters replaced and a line of site boilerplate
            chars = list(text)
            for _ in range(2):
                j = rng.randrange(len(chars))
                chars[j] = "的" if chars[j] != "的" else "人"
            rows.append({"id": f"d{i}c", "text": "".join(chars) + "\n版权所有", "cluster": i})
    path = tmp_path / "cjk.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    got = evaluate_dedup(str(path), 0.8, default_near_config(), NormalizeConfig())
    assert got["recall"] == 1.0 and got["precision"] == 1.0, got
    # By space-separated runs (a clause is one "word") the copies are missed.
    by_word = default_near_config()
    by_word.shingles = ShingleConfig(unsegmented="word")
    assert evaluate_dedup(str(path), 0.8, by_word, NormalizeConfig())["recall"] < 0.5


# --- the labelled sets with the default settings ----------------------------------------------------------------


def test_syndicated_news_sets_with_the_defaults(shared_data):
    v1 = evaluate_dedup(os.path.join(shared_data, "dedup", "syndicated-news.jsonl"), exact=NormalizeConfig())
    assert v1["f1"] >= 0.99, v1
    v2 = evaluate_dedup(os.path.join(shared_data, "dedup", "syndicated-news-v2.jsonl"), exact=NormalizeConfig())
    assert v2["f1"] >= 0.95, v2
    assert v2["documents_by_kind"] == {"original": 101, "syndicated": 193, "template": 49}
    assert v2["syndicated_recall"] >= 0.95
    # Four template pairs are identical texts (labelled apart): no method can keep them apart.
    assert v2["template_fp_pairs"] <= 10 and v2["template_other_fp_pairs"] == 0, v2
    assert v2["boilerplate"]["enabled"] and v2["boilerplate"]["lines"] > 0


def test_eval_cli_scores_kinds_and_runs_the_stage_algorithm_on_request(tmp_path, capsys):
    from pipeline.dedup import eval_main

    rng = random.Random(8)
    template_top, template_bottom = _words(rng, 120), _words(rng, 120)
    article = "\n".join(_words(rng, 40) for _ in range(5))
    rows = [
        {"id": "a", "text": article, "cluster": "A", "kind": "original"},
        {"id": "a1", "text": "Subscribe now\n" + article, "cluster": "A", "kind": "syndicated"},
    ]
    rows += [
        {
            "id": f"t{i}",
            "text": f"{template_top}\n{_words(rng, 12)}\n{template_bottom}",
            "cluster": f"t{i}",
            "kind": "template",
        }
        for i in range(7)
    ]
    path = tmp_path / "kinds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert eval_main([str(path)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["f1"] == 1.0 and got["template_fp_pairs"] == 0 and got["syndicated_recall"] == 1.0
    assert got["documents_by_kind"] == {"original": 1, "syndicated": 1, "template": 7}
    assert got["boilerplate"]["lines"] == 2 and got["verify"] == "containment"
    assert eval_main([str(path), "--plain"]) == 0  # full texts, Jaccard: the template pages look alike
    stage = json.loads(capsys.readouterr().out)
    assert stage["template_fp_pairs"] == 21 and not stage["boilerplate"]["enabled"] and stage["verify"] == "jaccard"
    assert eval_main([str(path), "--min-docs", "8"]) == 0  # a template on 7 pages is not boilerplate at 8
    assert json.loads(capsys.readouterr().out)["template_fp_pairs"] == 21


def test_eval_groups_lines_by_url_host(tmp_path):
    """An article syndicated to 8 sites is not boilerplate of any of them; one site's template on its 7 pages is."""
    rng = random.Random(9)
    paragraphs = [_words(rng, 40) for _ in range(6)]
    top, bottom = _words(rng, 120), _words(rng, 120)
    rows = []
    for i in range(8):  # each copy with one word edited and its site's own menu line
        edited = list(paragraphs)
        words = edited[i % 6].split()
        words[rng.randrange(len(words))] = "edited"
        edited[i % 6] = " ".join(words)
        text = f"Menu of site {'abcdefgh'[i]}\n" + "\n".join(edited)
        rows.append({"id": f"a{i}", "text": text, "cluster": "A", "url": f"https://site-{i}.example/story"})
    for i in range(7):
        text = f"{top}\n{_words(rng, 15)}\n{bottom}"
        rows.append({"id": f"t{i}", "text": text, "cluster": f"t{i}", "url": f"https://www.portal.example/{i}"})
    path = tmp_path / "hosts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = evaluate_dedup(str(path))
    assert got["boilerplate"]["groups"] == 9 and got["boilerplate"]["lines"] == 2, got  # the portal's two halves
    assert got["recall"] == 1.0 and got["precision"] == 1.0, got
    # Without URLs the whole file is one group: the article's own unedited paragraphs become boilerplate too.
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "url"}) + "\n" for r in rows))
    flat = evaluate_dedup(str(path))
    assert flat["boilerplate"]["groups"] == 1 and flat["boilerplate"]["lines"] > 2
