"""``ccgpt source``: real reference text and hand-broken files -> the document table, every input accounted for."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re

import pytest

from pipeline.sources import SourceConfig, SourceError, document_id, resolve_inputs, run_source
from schemas.documents import read_documents


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
    assert not os.path.exists(tmp_path / "o")  # never a silent empty source
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]


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
