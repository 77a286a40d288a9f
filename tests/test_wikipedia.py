"""``ccgpt source wikipedia``: MediaWiki XML exports built here from real WikiText-2 articles, wrapped in real
wikitext markup (infoboxes, citation templates, refs, links, files, tables, categories), as .xml and .bz2."""

from __future__ import annotations

import bz2
import json
import os
import re
from xml.sax.saxutils import escape

import pytest

from pipeline.commit import committed_file
from pipeline.sources.common import SourceError
from pipeline.sources.wikipedia import WikipediaConfig, run_wikipedia, wikitext_to_text
from pipeline.tables import read_documents

SITEINFO = """  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.43.0-wmf.1</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""


def _articles(shared_data: str, n: int) -> list[tuple[str, list[tuple[str | None, list[str]]]]]:
    """WikiText-2 articles as (title, [(section heading or None, [paragraphs])]), tokenisation undone."""
    raw = open(os.path.join(shared_data, "reference", "wikitext-2", "test.txt"), encoding="utf-8").read()
    raw = re.sub(r" @(.)@ ", r"\1", raw)
    out = []
    for block in re.split(r"\n (?== [^=])", raw):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if not lines or not re.fullmatch(r"= [^=].* =", lines[0]):
            continue
        title = lines[0].strip("= ").strip()
        sections: list[tuple[str | None, list[str]]] = [(None, [])]
        for ln in lines[1:]:
            m = re.fullmatch(r"= = (?!=)(.+) = =", ln)
            if m:
                sections.append((m.group(1), []))
            elif not ln.startswith("="):
                sections[-1][1].append(ln)
        if sum(len(p) for _, ps in sections for p in ps) > 2000 and all(
            not re.search(r"[\[\]{}|=]|''", p) for _, ps in sections for p in ps
        ):
            out.append((title, sections))
        if len(out) == n:
            break
    return out


def _wikitext(title: str, sections) -> str:
    """The article as an editor would write it: the prose untouched, markup around and inside it."""
    parts = [
        f"{{{{Infobox person\n| name = {title}\n| image = Portrait.jpg\n}}}}",
        f"[[File:Portrait.jpg|thumb|right|A portrait of {title}]]",
    ]
    for i, (head, paras) in enumerate(sections):
        if head:
            parts.append(f"== {head} ==")
        for j, p in enumerate(paras):
            words = p.split(" ")
            k = next((k for k, w in enumerate(words) if k >= 3 and w.isalpha() and len(w) > 3), None)
            if k is not None:  # a piped link around a real word, and a citation after the paragraph
                words[k] = f"[[{words[k].capitalize()}|{words[k]}]]"
            parts.append(
                " ".join(words) + f'<ref name="r{i}{j}">{{{{cite book |title=Source {i}.{j} |year=1999}}}}</ref>'
            )
        if i == 0:
            parts.append('{| class="wikitable"\n! Year !! Title\n|-\n| 2001 || Table cell Qzx\n|}')
    parts += [
        "== References ==",
        "{{Reflist}}",
        "* [http://example.org/x A cited page]",
        "== External links ==",
        "* [https://example.org Official site]",
        f"[[Category:Articles about {title}]]",
    ]
    return "\n\n".join(parts)


def _page(pid: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n{red}"
        f"    <revision>\n      <id>{pid * 10}</id>\n      <timestamp>2024-05-01T12:00:00Z</timestamp>\n"
        f"      <contributor><username>Editor</username><id>7</id></contributor>\n"
        f"      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
        f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
        f"      <sha1>x</sha1>\n    </revision>\n  </page>\n"
    )


def _dump(pages: list[str]) -> bytes:
    head = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">\n'
    return (head + SITEINFO + "".join(pages) + "</mediawiki>\n").encode("utf-8")


@pytest.fixture
def dump_pages(shared_data):
    arts = _articles(shared_data, 4)
    assert len(arts) == 4
    pages = [_page(100 + i, title, _wikitext(title, secs)) for i, (title, secs) in enumerate(arts)]
    pages += [
        _page(200, "Robert Unk", "#REDIRECT [[Robert]]", redirect="Robert"),  # redirect
        _page(201, "Talk:" + arts[0][0], "Discussion of the article. " * 20, ns=1),  # another namespace
        _page(202, "Stub", "{{stub}} A stub. [[Category:Stubs]]"),  # too short once markup is gone
        _page(203, "Blank", ""),  # empty
    ]
    return arts, pages


@pytest.mark.parametrize("suffix", [".xml", ".xml.bz2"])
def test_articles_from_xml_and_bz2(tmp_path, dump_pages, local_runner, suffix):
    arts, pages = dump_pages
    data = _dump(pages)
    path = tmp_path / f"enwiki-20240501-pages-articles{suffix}"
    path.write_bytes(bz2.compress(data) if suffix.endswith(".bz2") else data)
    stats = run_wikipedia([str(path)], str(tmp_path / "out"), WikipediaConfig(), local_runner)
    assert (stats.read, stats.kept) == (8, 4)
    assert stats.dropped == {"redirect": 1, "namespace": 1, "too_short": 1, "empty_text": 1}
    assert (
        open(committed_file(str(tmp_path / "out" / "failed_files.jsonl"))).read() == ""
    )  # written by the pipeline, even when empty
    docs = {json.loads(d["annotations"])["title"]: d for d in read_documents(str(tmp_path / "out"))}
    assert sorted(docs) == sorted(t for t, _ in arts)
    for title, sections in arts:
        d = docs[title]
        assert d["source"] == "wikipedia"
        assert d["url"] == "https://en.wikipedia.org/wiki/" + title.replace(" ", "_").replace("<", "%3C").replace(
            ">", "%3E"
        )
        assert d["date"].startswith("2024-05-01")
        text = d["text"]
        for head, paras in sections:  # every real paragraph survives verbatim, headings as lines
            for p in paras:
                assert p in text, (title, p[:80])
            if head:
                assert re.search(rf"\n{re.escape(head)}(\n|$)", text), (title, head)
        for markup in (
            "{{",
            "}}",
            "<ref",
            "cite book",
            "Infobox",
            "thumb",
            "Portrait.jpg",
            "Category:",
            "[[",
            "Table cell Qzx",
            "Official site",
            "A cited page",
            "References",
            "External links",
        ):
            assert markup not in text, (title, markup)
    # the id: source name, wiki and page id, not the file
    a = json.loads(docs[arts[0][0]]["annotations"])
    assert a["page_id"] == 100 and a["revision_id"] == 1000


def test_bz2_and_xml_give_the_same_documents(tmp_path, dump_pages, local_runner):
    _, pages = dump_pages
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "d.xml").write_bytes(_dump(pages))
    (tmp_path / "b" / "d.xml.bz2").write_bytes(bz2.compress(_dump(pages)))
    run_wikipedia([str(tmp_path / "a")], str(tmp_path / "oa"), WikipediaConfig(name="wiki"), local_runner)
    run_wikipedia([str(tmp_path / "b")], str(tmp_path / "ob"), WikipediaConfig(name="wiki"), local_runner)

    def rows(o):
        return sorted((d["id"], d["text"], d["url"]) for d in read_documents(str(tmp_path / o)))

    assert rows("oa") == rows("ob") and len(rows("oa")) == 4


def test_split_dump_files_in_parallel_and_a_broken_one(tmp_path, dump_pages, portable_runner):
    """Two parts of a split dump and a truncated .bz2, on the portable runner (DoFn and config pickled)."""
    _, pages = dump_pages
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p1.xml.bz2").write_bytes(bz2.compress(_dump(pages[:2])))
    (tmp_path / "in" / "p2.xml.bz2").write_bytes(bz2.compress(_dump(pages[2:])))
    whole = bz2.compress(_dump(pages))
    (tmp_path / "in" / "cut.xml.bz2").write_bytes(whole[: len(whole) // 2])
    stats = run_wikipedia([str(tmp_path / "in")], str(tmp_path / "out"), WikipediaConfig(), portable_runner)
    # the cut file: its first pages are read before the damage, then one bad_dump outcome
    assert stats.kept >= 4 and stats.dropped["bad_dump"] == 1
    assert stats.read == stats.kept + sum(stats.dropped.values())
    assert stats.extra["failed_files"] == [str(tmp_path / "in" / "cut.xml.bz2")]


def test_empty_and_unreadable_dumps_fail_clearly(tmp_path, local_runner):
    (tmp_path / "empty.xml").write_bytes(_dump([]))
    with pytest.raises(SourceError, match="no page in 1 dump file"):
        run_wikipedia([str(tmp_path / "empty.xml")], str(tmp_path / "o"), WikipediaConfig(), local_runner)
    (tmp_path / "zero.xml.bz2").write_bytes(b"")
    (tmp_path / "html.xml").write_bytes(b"<html><body>not a dump</body></html>")
    with pytest.raises(SourceError, match="no article kept.*bad_dump"):
        run_wikipedia(
            [str(tmp_path / "zero.xml.bz2"), str(tmp_path / "html.xml")],
            str(tmp_path / "o"),
            WikipediaConfig(),
            local_runner,
        )
    with pytest.raises(SourceError, match="does not exist"):
        run_wikipedia([str(tmp_path / "missing.xml.bz2")], str(tmp_path / "o"), WikipediaConfig(), local_runner)
    assert not os.path.exists(tmp_path / "o" / "stats.json")


def test_wikitext_to_text_units():
    text = wikitext_to_text(
        "{{Infobox|a=b}}'''Bold''' [[Paris|the city]] and [[Lyon]].<ref>{{cite web|url=x}}</ref>\n"
        "[[Bild:X.png|thumb|caption]]\n== Life ==\nBorn.\n== See also ==\n* [[Other]]\n[[Kategorie:X]]",
        {"file", "image", "category", "bild", "kategorie"},
        {"see also"},
    )
    assert text == "Bold the city and Lyon.\n\nLife\nBorn."


def test_dump_files_in_groups_keep_the_same_documents(tmp_path, dump_pages, local_runner):
    """A split dump read one file a group (each group committed on its own, pipeline/ledger.py): the same
    documents, ids and accounting as in one group."""
    _, pages = dump_pages
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"p{i}.xml.bz2").write_bytes(bz2.compress(_dump(pages[i::3])))
    runs = {}
    for name, group_bytes in (("one", 1 << 30), ("three", 1)):
        cfg = WikipediaConfig(name="wiki", group_bytes=group_bytes)
        stats = run_wikipedia([str(tmp_path / "in")], str(tmp_path / name), cfg, local_runner)
        rows = sorted(read_documents(str(tmp_path / name)), key=lambda r: r["id"])
        runs[name] = (stats.extra["input_groups"], stats.read, stats.kept, stats.dropped, rows)
    assert [runs[n][0] for n in ("one", "three")] == [1, 3]
    assert runs["one"][1:] == runs["three"][1:] and runs["one"][2] >= 4
