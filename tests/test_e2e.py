"""The whole pipeline through Beam on real data: WARC in -> curated, deduplicated, mixed shards -> a GPT.

A tiny run config over real archives and reference text from ``../shared/data`` (a few dozen documents per
source, a nano model, a few steps), run with non-loopback network access blocked: the default path must
make no network attempt. Then a rerun must skip every stage and leave the shards byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tarfile

import pyarrow as pa
import pytest

from pipeline.run import RunConfig, run_all
from pipeline.runner import RunnerConfig
from pipeline.sample import Page, write_warc
from pipeline.shards import verify_shards
from schemas.config import from_dict
from schemas.stats import StageStats


@pytest.fixture
def no_network(monkeypatch):
    """Refuse every socket connection that is not to this machine (Beam's own gRPC uses loopback)."""
    real_connect = socket.socket.connect
    attempts = []

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("/"):
            attempts.append(address)
            raise OSError(f"network blocked in tests: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def _write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t}) + "\n")


def _wikitext_articles(path, n):
    """WikiText-2 articles (split at ' = Title = ' headings), tokenisation artefacts undone."""
    text = open(path, encoding="utf-8").read()
    parts = re.split(r"\n (?== [^=])", text)
    arts = [re.sub(r" @(.)@ ", r"\1", p).strip() for p in parts if len(p) > 1500]
    return arts[:n]


@pytest.fixture
def tiny_inputs(shared_data, tmp_path):
    d = tmp_path / "inputs"
    (d / "crawl").mkdir(parents=True)
    # real news pages wrapped as WARC responses, beside real Common Crawl / web-archive WARCs as they are
    pages = []
    with tarfile.open(os.path.join(shared_data, "html", "goose3.tar.gz")) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if m.isfile() and m.name.endswith(".html"):
                pages.append(Page(url=f"https://example.org/goose3/{os.path.basename(m.name)}",
                                  body=tar.extractfile(m).read(), content_type="text/html; charset=utf-8",
                                  mtime=1700000000, origin=f"goose3:{m.name}"))
    write_warc(str(d / "crawl" / "news.warc.gz"), pages[:40], {"software": "tests"})
    warc = os.path.join(shared_data, "warc")
    crawl = [str(d / "crawl" / "news.warc.gz"),
             os.path.join(warc, "cc-main-2014-35", "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"),
             os.path.join(warc, "cc-main-2024-22-whirlwind", "whirlwind.warc.gz"),
             os.path.join(warc, "pywb-sample", "iana.warc.gz")]
    ref = os.path.join(shared_data, "reference")
    _write_jsonl(d / "reference.jsonl", _wikitext_articles(os.path.join(ref, "wikitext-2", "test.txt"), 40))
    _write_jsonl(d / "wiki.jsonl", _wikitext_articles(os.path.join(ref, "wikitext-2", "valid.txt"), 30))
    shakespeare = open(os.path.join(ref, "tinyshakespeare.txt"), encoding="utf-8").read()
    _write_jsonl(d / "books.jsonl", [shakespeare[i:i + 3000] for i in range(0, 90_000, 3000)])
    return {"crawl": crawl, "reference": [str(d / "reference.jsonl")],
            "wiki": str(d / "wiki.jsonl"), "books": str(d / "books.jsonl")}


def _config(inputs, out_dir) -> RunConfig:
    return from_dict(RunConfig, {
        "out_dir": out_dir,
        "crawl": inputs["crawl"],
        "reference": inputs["reference"],
        "sources": {"books": {"paths": [inputs["books"]], "format": "jsonl"},
                    "wiki": {"paths": [inputs["wiki"]], "format": "jsonl"}},
        "curate": {"extract": {"extractor": "resiliparse"}},
        "quality_train": {"dim": 16, "epoch": 10, "min_words": 5, "baseline": True},
        "quality_filter": {"rule": "top_fraction", "top_fraction": 0.6},
        "tokenizer": {"vocab_size": 600},
        "mix": {"weights": {"crawl": 0.5, "books": 0.3, "wiki": 0.2}, "total_tokens": 40_000, "seq_len": 64,
                "rows_per_shard": 200},
        "train": {"preset": "nano", "batch_size": 8, "max_steps": 24, "warmup_steps": 4, "lr": 0.003,
                  "eval_every": 12, "log_every": 4, "checkpoint_every": 12},
    })


@pytest.mark.slow
def test_whole_pipeline_end_to_end(tiny_inputs, tmp_path, no_network):
    cfg = _config(tiny_inputs, str(tmp_path / "run"))
    cfg.runner = RunnerConfig(runner="local", num_workers=1, running_mode="in_memory")
    summary = run_all(cfg)
    out = cfg.out_dir

    # every stage accounted for every input record
    for name in ("curate", "source-books", "source-wiki", "quality_model", "quality", "dedup", "tokenizer", "shards"):
        stats = StageStats.load(os.path.join(out, name))
        assert stats.read == stats.kept + sum(stats.dropped.values()), name
        assert stats.read > 0, name
    curate = StageStats.load(os.path.join(out, "curate"))
    assert curate.kept >= 10 and curate.dropped.get("revisit", 0) > 0 and curate.dropped.get("request", 0) > 0
    # the quality stage's input is exactly what curate kept, dedup's is quality + both sources
    quality = StageStats.load(os.path.join(out, "quality"))
    assert quality.read == curate.kept
    dedup = StageStats.load(os.path.join(out, "dedup"))
    books = StageStats.load(os.path.join(out, "source-books"))
    wiki = StageStats.load(os.path.join(out, "source-wiki"))
    assert dedup.read == quality.kept + books.kept + wiki.kept

    # shards: verified, readable with plain pyarrow, all three sources mixed
    report = verify_shards(os.path.join(out, "shards"))
    assert report
    manifest = json.load(open(os.path.join(out, "shards", "manifest.json"), encoding="utf-8"))
    assert set(manifest["sources"]) == {"crawl", "books", "wiki"}
    for name, src in manifest["sources"].items():
        assert abs(src["realised_share"] - cfg.mix.weights[name] / sum(cfg.mix.weights.values())) < 0.005, name
    first = manifest["shards"][0]
    table = pa.ipc.open_file(pa.memory_map(os.path.join(out, "shards", first["file"]))).read_all()
    assert table.num_rows == first["rows"]
    assert all(len(r) == 65 for r in table["tokens"].to_pylist())

    # the model trained on them, loss falling
    tr = summary["train"]
    assert tr["steps"] == 24 and tr["last_loss"] < tr["first_loss"] - 0.5
    assert os.path.exists(os.path.join(out, "train", "checkpoint.pt"))

    # the report shows the recorded figures
    html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert f"<td>{curate.read}</td>" in html and "Training mix" in html and "data:image/png;base64," in html

    # a rerun skips every stage and leaves the outputs byte-identical
    before = {f: open(os.path.join(out, "shards", f), "rb").read() for f in os.listdir(os.path.join(out, "shards"))}
    again = run_all(cfg)
    assert again["train"]["steps"] == 24
    after = {f: open(os.path.join(out, "shards", f), "rb").read() for f in os.listdir(os.path.join(out, "shards"))}
    assert before == after
    fresh_stage_seconds = [r["seconds"] for r in again["stages"] if r["stage"] in ("curate", "dedup", "mix")]
    assert max(fresh_stage_seconds) < 5, again["stages"]
