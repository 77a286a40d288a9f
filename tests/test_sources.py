"""``ccgpt source``: real reference text and hand-broken files -> the document table, every input accounted for."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re

import pytest

from pipeline.curate import CurateConfig
from pipeline.run import RunConfig, load_run_config
from pipeline.sources.builders import parse_sources
from pipeline.sources.common import SourceError, resolve_inputs
from pipeline.sources.files import FilesSpec, SourceConfig, document_id, run_source
from pipeline.sources.webtext import WebTextSpec
from pipeline.sources.wikipedia import WikipediaSpec
from pipeline.tables import read_documents
from schemas.config import from_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _docs(out: str) -> list[dict]:
    return sorted(read_documents(out), key=lambda r: (r["source_file"], r["source_offset"]))


def test_text_blocks_from_real_plays(tmp_path, shared_data, local_runner):
    path = os.path.join(shared_data, "reference", "tinyshakespeare.txt")
    raw = open(path, encoding="utf-8").read()
    blocks = [b.strip() for b in re.split(r"\n[ \t]*\n", raw) if b.strip()]  # an independent split
    cfg = SourceConfig(name="plays", format="text", min_chars=80)
    stats = run_source([path], str(tmp_path / "out"), cfg, local_runner)

    long_ = [b for b in blocks if len(b) >= 80]
    assert stats.read == len(blocks) > 5000
    assert stats.kept == len(long_)
    assert stats.dropped == {"too_short": len(blocks) - len(long_)}
    docs = _docs(str(tmp_path / "out"))
    assert [d["text"] for d in docs] == long_
    first = docs[0]
    assert first["source"] == "plays" and first["source_file"] == path
    # the offset points at the block in the file
    assert open(path, "rb").read()[first["source_offset"] :].decode("utf-8").startswith(first["text"])
    index = blocks.index(first["text"])
    assert first["id"] == hashlib.sha1(f"plays\0tinyshakespeare.txt\0{index}".encode()).hexdigest()


def test_text_file_per_file_from_a_folder(tmp_path, shared_data, local_runner):
    folder = os.path.join(shared_data, "reference", "wikitext-2")
    stats = run_source(
        [folder],
        str(tmp_path / "out"),
        SourceConfig(name="wiki", format="text-file", max_chars=5_000_000),
        local_runner,
    )
    assert (stats.read, stats.kept, stats.dropped) == (2, 2, {})
    docs = {os.path.basename(d["source_file"]): d for d in read_documents(str(tmp_path / "out"))}
    assert sorted(docs) == ["test.txt", "valid.txt"]
    assert docs["valid.txt"]["text"] == open(os.path.join(folder, "valid.txt"), encoding="utf-8").read()
    assert docs["valid.txt"]["id"] == document_id("wiki", "valid.txt", 0)
    # ids depend on the path below the input, not on where the checkout lives
    assert document_id("wiki", "valid.txt", 0) != document_id("wiki", "test.txt", 0)


def test_jsonl_bad_lines_are_counted(tmp_path, local_runner):
    lines = [
        json.dumps({"text": "A proper document with enough text.", "origin": "o1", "url": "https://example.org/a"}),
        json.dumps({"text": "short"}),  # too_short (min_chars 10)
        json.dumps({"body": "no text field here"}),  # missing_text_field
        json.dumps({"text": 42}),  # text_not_string
        json.dumps({"text": "   \n  "}),  # empty_text
        json.dumps({"text": "x" * 500}),  # too_large (max_chars 200)
        "{not json",  # bad_json
        json.dumps(["a", "list"]),  # bad_json: not an object
        "",  # a blank line is not a record
        json.dumps({"text": "Another proper document, kept.", "origin": "o2"}),
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    data += b'{"text": "bad byte \xff here, long enough"}\n'  # invalid_utf8
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part.jsonl").write_bytes(data)
    cfg = SourceConfig(name="mixed", format="jsonl", min_chars=10, max_chars=200)
    stats = run_source([str(tmp_path / "in" / "*.jsonl")], str(tmp_path / "out"), cfg, local_runner)
    assert stats.read == 10 and stats.kept == 2
    assert stats.dropped == {
        "bad_json": 2,
        "empty_text": 1,
        "invalid_utf8": 1,
        "missing_text_field": 1,
        "text_not_string": 1,
        "too_large": 1,
        "too_short": 1,
    }
    docs = _docs(str(tmp_path / "out"))
    assert [d["text"] for d in docs] == ["A proper document with enough text.", "Another proper document, kept."]
    assert docs[0]["url"] == "https://example.org/a"
    assert json.loads(docs[0]["annotations"]) == {"origin": "o1"}
    assert docs[1]["id"] == document_id("mixed", "part.jsonl", 9)  # line number, blank lines included
    assert data[docs[1]["source_offset"] :].startswith(lines[9].encode())
    saved = json.load(open(tmp_path / "out" / "stats.json"))
    assert saved["kept"] == 2 and saved["source"] == "mixed" and saved["fingerprint"]


def test_invalid_utf8_block_and_gzip_input(tmp_path, local_runner):
    raw = b"First paragraph, fine.\n\n" + b"Second \xc3\x28 broken.\n\n\n" + b"Third, fine too.\n"
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(raw))
    stats = run_source(
        [str(tmp_path / "a.txt.gz")], str(tmp_path / "out"), SourceConfig(name="t", format="text"), local_runner
    )
    assert (stats.read, stats.kept, stats.dropped) == (3, 2, {"invalid_utf8": 1})
    assert [d["text"] for d in _docs(str(tmp_path / "out"))] == ["First paragraph, fine.", "Third, fine too."]


def test_skip_if_done_and_force(tmp_path, shared_data, local_runner):
    path = os.path.join(shared_data, "reference", "wikitext-2", "valid.txt")
    out = str(tmp_path / "out")
    cfg = SourceConfig(name="wiki", format="text-file", max_chars=5_000_000)
    first = run_source([path], out, cfg, local_runner)
    stamp = os.stat(os.path.join(out, "stats.json")).st_mtime_ns
    again = run_source([path], out, cfg, local_runner)
    assert again.to_dict() == first.to_dict()
    assert os.stat(os.path.join(out, "stats.json")).st_mtime_ns == stamp  # not recomputed
    run_source([path], out, SourceConfig(name="wiki", format="text", min_chars=1), local_runner)
    assert json.load(open(os.path.join(out, "stats.json")))["read"] > 1  # a config change recomputes


def test_errors_are_clear(tmp_path, local_runner):
    with pytest.raises(SourceError, match="matched no files"):
        run_source([str(tmp_path / "nothing-*.txt")], str(tmp_path / "o"), SourceConfig(name="x"), local_runner)
    with pytest.raises(SourceError, match="does not exist"):
        run_source([str(tmp_path / "missing.txt")], str(tmp_path / "o"), SourceConfig(name="x"), local_runner)
    with pytest.raises(SourceError, match="needs a name"):
        run_source([str(tmp_path)], str(tmp_path / "o"), SourceConfig(name=""), local_runner)
    (tmp_path / "tiny.txt").write_text("too small\n")
    with pytest.raises(SourceError, match="no document kept"):
        run_source(
            [str(tmp_path / "tiny.txt")], str(tmp_path / "o"), SourceConfig(name="x", min_chars=100), local_runner
        )
    assert not os.path.exists(tmp_path / "o" / "stats.json")  # never a silent empty source


def test_resolve_inputs_keys(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x.txt").write_text("x")
    (tmp_path / "d" / ".hidden").write_text("h")
    got = resolve_inputs([str(tmp_path / "d"), str(tmp_path / "d" / "**" / "*.txt")])
    assert got == [(str(tmp_path / "d" / "sub" / "x.txt"), os.path.join("sub", "x.txt"))]


def test_portable_runner(tmp_path, shared_data, portable_runner):
    """The portable job API pickles the DoFn and config: the path Dataflow, Flink and Spark take."""
    src = os.path.join(shared_data, "dedup", "syndicated-news.jsonl")
    n = sum(1 for line in open(src, encoding="utf-8") if line.strip())
    stats = run_source([src], str(tmp_path / "out"), SourceConfig(name="news", format="jsonl"), portable_runner)
    assert (stats.read, stats.kept, stats.dropped) == (n, n, {})
    docs = list(read_documents(str(tmp_path / "out")))
    assert len({d["id"] for d in docs}) == n
    assert {"cluster", "id", "origin"} <= set(json.loads(docs[0]["annotations"]))


# --- a run config's sources: typed specs, checked when the config loads ------------------------------------------


def test_run_config_sources_become_typed_specs():
    cfg = load_run_config(os.path.join(REPO, "configs", "demo.yaml"))
    books, webtext = cfg.sources["books"], cfg.sources["webtext"]
    assert isinstance(books, FilesSpec) and books.paths == ["{sample_dir}/sources/books/*.jsonl"]
    assert books.config == SourceConfig(name="books", format="jsonl", min_chars=200)
    assert isinstance(webtext, WebTextSpec) and webtext.config.name == "webtext" and webtext.config.min_score == 10
    assert webtext.crawl == [] and webtext.overrides == {}
    again = dataclasses.replace(cfg, out_dir="elsewhere")  # parsed specs pass through a second parse
    assert again.sources == cfg.sources
    wiki = parse_sources({"wiki": {"kind": "wikipedia", "paths": ["d.xml.bz2"], "min_chars": 50}})["wiki"]
    assert isinstance(wiki, WikipediaSpec) and (wiki.config.name, wiki.config.min_chars) == ("wiki", 50)
    assert from_dict(RunConfig, {}).sources == {} and from_dict(RunConfig, {"sources": None}).sources == {}


def test_webtext_spec_lays_its_crawl_sections_over_the_runs_curate():
    spec = parse_sources(
        {"links": {"kind": "webtext", "urls": ["l.jsonl"], "from": ["c/*.warc.gz"], "extract": {"max_chars": 500}}}
    )["links"]
    curate = from_dict(CurateConfig, {"extract": {"extractor": "resiliparse"}, "langid": {"threshold": 0.9}})
    inputs, cfg = spec.resolve(lambda paths: [p.replace("c/", "crawl/") for p in paths], ["run.warc.gz"], curate)
    assert inputs == ["crawl/*.warc.gz"] and cfg.urls == ["l.jsonl"] and cfg.name == "links"
    assert (cfg.extract.extractor, cfg.extract.max_chars, cfg.langid.threshold) == ("resiliparse", 500, 0.9)
    no_from = parse_sources({"links": {"kind": "webtext", "urls": ["l.jsonl"]}})["links"]
    assert no_from.resolve(list, ["run.warc.gz"], curate)[0] == ["run.warc.gz"]  # the run's crawl
    with pytest.raises(SourceError, match="source 'links': a webtext source needs crawl input"):
        no_from.resolve(list, [], curate)


@pytest.mark.parametrize(
    "sources, message",
    [
        ({"x": {"kind": "pdf", "paths": ["a"]}}, r"source 'x': unknown kind 'pdf' \(files \| webtext \| wikipedia\)"),
        (
            {"books": {"paths": ["a"], "fromat": "jsonl"}},
            r"source 'books': unknown option\(s\) \['fromat'\] for kind files",
        ),
        ({"books": {"paths": ["a"], "name": "other"}}, r"source 'books': unknown option\(s\) \['name'\]"),
        ({"w": {"kind": "wikipedia", "paths": ["d.xml"], "url": "x"}}, r"source 'w': unknown option\(s\) \['url'\]"),
        ({"l": {"kind": "webtext", "urls": ["l"], "form": ["c"]}}, r"source 'l': unknown option\(s\) \['form'\]"),
        ({"l": {"kind": "webtext", "urls": ["l"], "extract": {"nope": 1}}}, r"source 'l': ExtractConfig: unknown"),
        ({"books": {"format": "jsonl"}}, r"source 'books': a files source needs 'paths'"),
        ({"books": None}, r"source 'books': a files source needs 'paths'"),
        ({"books": {"paths": []}}, r"source 'books': a files source needs 'paths'"),
        ({"w": {"kind": "wikipedia"}}, r"source 'w': a wikipedia source needs 'paths'"),
        ({"l": {"kind": "webtext", "min_score": 3}}, r"source 'l': a webtext source needs 'urls'"),
        ({"books": {"paths": "books.jsonl"}}, r"source 'books': 'paths' must be a list of files"),
        ({"l": {"kind": "webtext", "urls": ["l"], "from": "c.warc"}}, r"source 'l': 'from' must be a list"),
        ({"books": {"paths": ["a"], "format": "pdf"}}, r"source 'books': SourceConfig.format: 'pdf' is not one of"),
        ({"books": {"paths": ["a"], "min_chars": 10, "max_chars": 5}}, r"source 'books': .*min_chars <= max_chars"),
        ({"w": {"kind": "wikipedia", "paths": ["d"], "min_chars": -1}}, r"source 'w': .*min_chars <= max_chars"),
        ({"l": {"kind": "webtext", "urls": ["l"], "join": "hash"}}, r"source 'l': WebTextConfig.join: 'hash'"),
        ({"l": {"kind": "webtext", "urls": ["l"], "read": 5}}, r"source 'l': 'read' must be a mapping"),
        ({"books": ["a.jsonl"]}, r"source 'books': expected a mapping of options"),
        ({"bad name": {"paths": ["a"]}}, r"a source needs a name of letters, digits.*'bad name'"),
        (["books"], r"sources: expected a mapping of source name -> options"),
    ],
)
def test_malformed_sources_fail_when_the_config_loads(sources, message):
    with pytest.raises(SourceError, match=message):
        from_dict(RunConfig, {"out_dir": "never-made", "sources": sources})
    assert not os.path.exists("never-made")


def test_malformed_source_in_a_yaml_file_fails_at_load(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sources:\n  books: {paths: [b.jsonl], format: jsonl}\n  links: {kind: webtext, min_score: 3}\n")
    with pytest.raises(SourceError, match="source 'links': a webtext source needs 'urls'"):
        load_run_config(str(path))
    with pytest.raises(SourceError, match=r"source 'books': SourceConfig.format: 'csv'"):
        load_run_config(str(tmp_path / "run.yaml"), ["sources.books.format=csv", "sources.links.urls=[l.jsonl]"])
    cfg = load_run_config(str(path), ["sources.links.urls=[l.jsonl]"])
    assert cfg.sources["links"].config.urls == ["l.jsonl"]
