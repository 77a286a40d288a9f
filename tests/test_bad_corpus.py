"""The whole pipeline on a generated bad-input corpus: no crash, exact accounting, the expected reasons."""

from __future__ import annotations

import json
import os

import bad_corpus
import pyarrow as pa
import pytest

from pipeline.run import RunConfig, run_all
from pipeline.shards import ShardError, verify_shards
from pipeline.stage import load_stats
from pipeline.tables import read_documents
from schemas.config import from_dict


@pytest.mark.slow
def test_whole_pipeline_on_bad_input(tiny_inputs, tiny_run_config, tmp_path):
    bad = bad_corpus.build(str(tmp_path / "bad"), tiny_inputs)
    raw = tiny_run_config(str(tmp_path / "run"))
    raw["crawl"] = bad["crawl"]
    raw["sources"]["books"]["paths"] = [bad["books"]]
    raw["sources"]["wiki"]["paths"] = [bad["wiki"]]
    cfg = from_dict(RunConfig, raw)
    run_all(cfg)
    out = cfg.out_dir
    stats = {
        name: load_stats(os.path.join(out, name))
        for name in ("curate", "source-books", "source-wiki", "quality", "dedup", "decontam", "shards", "train")
    }
    for name, st in stats.items():
        assert st.read == st.kept + sum(st.dropped.values()), name

    # curate: each damaged file reported by name, each bad record under its reason, good records around kept
    cur = stats["curate"]
    crawl = os.path.join(str(tmp_path / "bad"), "crawl")
    assert {
        os.path.join(crawl, f) for f in ("bad.warc.gz", "truncated.warc.gz", "empty.warc.gz", "not-a-warc.warc.gz")
    } <= set(cur.extra["failed_files"])
    assert cur.dropped["unreadable_file"] == 2  # the empty file and the plain gzip that is no WARC
    assert cur.dropped["truncated_file"] == 1 and cur.dropped["garbage_skipped"] == 1
    assert cur.extra["garbage_bytes_skipped"] > 0
    assert cur.dropped["too_deep"] == 1 and cur.dropped["too_large"] >= 1  # the nesting bomb, the 50 MB page
    assert cur.dropped["http_status"] >= 1 and cur.dropped["not_html"] >= 1  # the 404, the PDF
    extracted = {d["url"] for d in read_documents(os.path.join(out, "curate", "raw"))}
    assert {
        "http://bad.example/good-1",
        "http://bad.example/good-2",
        "http://bad.example/bad-utf8",
        "http://bad.example/mixed",
        "http://cut.example/first",
    } <= extracted

    # sources: every malformed line counted under its own reason
    assert stats["source-books"].dropped == {
        "bad_json": 1,
        "empty_text": 1,
        "invalid_utf8": 1,
        "missing_text_field": 1,
        "text_not_string": 1,
    }
    assert stats["source-wiki"].dropped == {"empty_text": 1}

    # each stage reads exactly what the one before kept
    assert stats["quality"].read == cur.kept
    assert stats["dedup"].read == stats["quality"].kept + stats["source-books"].kept + stats["source-wiki"].kept
    assert stats["decontam"].read == stats["dedup"].kept
    # the repeated book and the book copied into wiki: exact duplicates, one survivor each
    assert stats["dedup"].dropped.get("exact_duplicate", 0) >= 2
    # the document the benchmark cuts into more than max_splits pieces is dropped whole
    assert stats["decontam"].dropped.get("contaminated_split_too_often") == 1

    # the literal end-of-text marker stayed text: no training row has the special id inside a document
    manifest = json.load(open(os.path.join(out, "shards", "manifest.json"), encoding="utf-8"))
    eot = manifest["tokenizer"]["eot_id"]
    verify_shards(os.path.join(out, "shards"))
    for shard in manifest["shards"]:
        table = pa.ipc.open_file(pa.memory_map(os.path.join(out, "shards", shard["file"]))).read_all()
        for tokens, offsets in zip(table["tokens"].to_pylist(), table["doc_offsets"].to_pylist()):
            bounds = set(offsets) | {o - 1 for o in offsets}
            assert all(i in bounds or i == len(tokens) - 1 for i, t in enumerate(tokens) if t == eot)

    # a corrupted shard after the run: a clear error naming the file, never a silent pass
    first = os.path.join(out, "shards", manifest["shards"][0]["file"])
    with open(first, "r+b") as fh:
        fh.seek(os.path.getsize(first) // 2)
        fh.write(b"\x00garbage\x00")
    with pytest.raises(ShardError, match=manifest["shards"][0]["file"]):
        verify_shards(os.path.join(out, "shards"))
