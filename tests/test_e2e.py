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
from collections import Counter

import pyarrow as pa
import pytest
from conftest import TINY_STAGE_FOLDERS

from pipeline.commit import untagged
from pipeline.report import fmt_bytes
from pipeline.run import RunConfig, run_all
from pipeline.shards import verify_shards
from pipeline.stage import load_stats
from pipeline.tables import read_documents
from schemas.config import from_dict


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


@pytest.mark.slow
def test_whole_pipeline_end_to_end(tiny_run_config, tmp_path, no_network):
    cfg = from_dict(RunConfig, tiny_run_config(str(tmp_path / "run")))
    summary = run_all(cfg)
    out = cfg.out_dir

    # every stage accounted for every input record
    for name in TINY_STAGE_FOLDERS:
        stats = load_stats(os.path.join(out, name))
        assert stats.read == stats.kept + sum(stats.dropped.values()), name
        assert stats.read > 0, name
    curate = load_stats(os.path.join(out, "curate"))
    assert curate.kept >= 10 and curate.dropped.get("revisit", 0) > 0 and curate.dropped.get("request", 0) > 0
    # the quality stage's input is exactly what curate kept, dedup's is quality + both sources
    quality = load_stats(os.path.join(out, "quality"))
    assert quality.read == curate.kept
    dedup = load_stats(os.path.join(out, "dedup"))
    books = load_stats(os.path.join(out, "source-books"))
    wiki = load_stats(os.path.join(out, "source-wiki"))
    assert dedup.read == quality.kept + books.kept + wiki.kept
    decontam = load_stats(os.path.join(out, "decontam"))
    assert decontam.read == dedup.kept and decontam.extra["benchmarks"]["bench"]["documents"] >= 3

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
    assert os.path.exists(os.path.join(out, "train", "checkpoints", "step-00000024", ".metadata"))

    # the report shows the recorded figures
    html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert "Training mix" in html and "data:image/png;base64," in html
    for name in ("curate", "source-books", "source-wiki", "quality", "dedup", "decontam", "shards", "train"):
        st = load_stats(os.path.join(out, name))
        dropped = sum(st.dropped.values())
        assert f"<tr><td>{name}</td><td>{st.read:,}</td><td>{st.kept:,}</td><td>{dropped:,}</td>" in html, name
    text_bytes = sum(len(d["text"].encode("utf-8")) for d in read_documents(os.path.join(out, "dedup")))
    assert (
        f"<td>dedup</td><td>{dedup.read:,}</td><td>{dedup.kept:,}</td><td>{dedup.read - dedup.kept:,}</td>"
        f"<td>{fmt_bytes(text_bytes)}</td>" in html
    )
    for shard in manifest["shards"]:
        assert (
            f"<td>{untagged(shard['file'])}</td><td>{shard['rows']}</td><td>{shard['tokens']:,}</td>"
            f"<td>{shard['sha256'][:16]}…</td>" in html
        )
    for name, src in manifest["sources"].items():
        assert f"<td>{name}</td><td>{src['tokens_available']:,}</td>" in html
    bench = decontam.extra["benchmarks"]["bench"]
    assert f"<td>bench</td><td>{bench['documents']:,}</td><td>{bench['characters_removed']:,}</td>" in html
    for size, n in dedup.extra["cluster_size_histogram"].items():
        assert f"<tr><td>{size}</td><td>{n}</td></tr>" in html
    langs = Counter(d["language"] for d in read_documents(os.path.join(out, "curate")))
    top, n_top = langs.most_common(1)[0]
    assert re.search(rf"<tr><td>{top}</td><td>\d*</td><td>{n_top}</td></tr>", html)

    # a rerun skips every stage and leaves the outputs byte-identical
    before = {f: open(os.path.join(out, "shards", f), "rb").read() for f in os.listdir(os.path.join(out, "shards"))}
    again = run_all(cfg)
    assert again["train"]["steps"] == 24
    after = {f: open(os.path.join(out, "shards", f), "rb").read() for f in os.listdir(os.path.join(out, "shards"))}
    assert before == after
    fresh_stage_seconds = [r["seconds"] for r in again["stages"] if r["stage"] in ("curate", "dedup", "mix")]
    assert max(fresh_stage_seconds) < 5, again["stages"]
