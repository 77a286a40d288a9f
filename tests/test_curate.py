"""``ccgpt curate`` end to end on real WARC/WET files: exact accounting, reasons, side outputs, runners."""

from __future__ import annotations

import json
import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline.commit import committed_file
from pipeline.curate import CurateConfig, run_curate
from pipeline.read import ReadConfig, iter_warc
from pipeline.tables import document_files, read_documents
from schemas.documents import DOCUMENT_SCHEMA, validate_document_schema

FILES = [
    "warc/cc-main-2014-35/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc",
    "warc/cc-main-2014-35/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wet",
    "warc/cc-main-2024-22-whirlwind/whirlwind.warc.gz",
    "warc/pywb-sample/example.warc",  # lying Content-Length at the end
    "warc/pywb-sample/example-bad.warc.gz.bad",  # whole-file gzip with a revisit
    "warc/pywb-sample/example.arc",  # not WARC
]


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warcs")
    data = open(os.path.join(shared_data, "warc/pywb-sample/iana.warc.gz"), "rb").read()
    cut = tmp / "iana-cut.warc.gz"
    cut.write_bytes(data[:200_000])  # truncated gzip made here
    return [os.path.join(shared_data, f) for f in FILES] + [str(cut)]


def _lines(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _expected_read_outcomes(paths):
    """Per-record reasons straight from the reader (no Beam): what the pipeline's read step must report."""
    c = Counter()
    for p in paths:
        for ev in iter_warc(p, ReadConfig()):
            c[ev.reason if ev.kind != "record" else "record"] += 1
    return c


def test_curate_local_exact_accounting(inputs, tmp_path, local_runner):
    out = str(tmp_path / "curated")
    stats = run_curate(inputs, out, CurateConfig(), local_runner)
    expected = _expected_read_outcomes(inputs)
    assert stats.read == sum(expected.values()) == stats.kept + sum(stats.dropped.values())
    for reason in (
        "warcinfo",
        "request",
        "metadata",
        "revisit",
        "http_status",
        "not_html",
        "truncated_file",
        "unreadable_file",
        "garbage_skipped",
    ):
        assert stats.dropped.get(reason) == expected[reason], reason
    # records that reached extraction end as kept or a later-stage reason
    later = {k: v for k, v in stats.dropped.items() if k not in expected}
    assert stats.kept + sum(later.values()) == expected["record"]
    assert all(k in ("empty_text", "extract_error", "language") or ":" in k for k in later), later
    assert stats.kept > 0 and any(
        k.startswith("gopher_") or k.startswith("fineweb") or k.startswith("c4") for k in later
    )

    # failed files: the ARC file, the lying example.warc (7 bytes skipped, then read on) and our cut gzip,
    # with errors (the retry list)
    failed = _lines(committed_file(os.path.join(out, "failed_files.jsonl")))
    assert sorted((os.path.basename(f["file"]), f["reason"]) for f in failed) == [
        ("example.arc", "unreadable_file"),
        ("example.warc", "garbage_skipped"),
        ("iana-cut.warc.gz", "truncated_file"),
    ]
    assert all(f["error"] for f in failed) and stats.extra["garbage_bytes_skipped"] == 7
    assert sorted(os.path.basename(f) for f in stats.extra["failed_files"]) == sorted(
        os.path.basename(f["file"]) for f in failed
    )

    # kept documents: valid table, unique stable ids, traceable, English above the threshold
    docs = list(read_documents(out))
    assert len(docs) == stats.kept and len({d["id"] for d in docs}) == len(docs)
    for f in document_files(out):
        validate_document_schema(pq.read_schema(f), f)
    for d in docs:
        assert d["language"] == "en" and d["language_score"] >= 0.65 and d["source"] == "crawl"
        assert d["url"] and d["warc_record_id"] and d["date"] and d["source_offset"] >= 0 and d["text"].strip()
    # the raw sample: every extracted document, before language id and filters
    raw = list(read_documents(os.path.join(out, "raw")))
    assert len(raw) == stats.extra["extracted"] >= stats.kept
    assert {d["id"] for d in docs} <= {d["id"] for d in raw} and all(d["language"] is None for d in raw)
    assert sum(stats.extra["languages"].values()) == stats.extra["extracted"]
    damage = sum(stats.dropped[r] for r in ("truncated_file", "unreadable_file", "garbage_skipped"))
    assert sum(stats.extra["record_types"].values()) + damage == stats.read

    examples = _lines(committed_file(os.path.join(out, "examples.jsonl")))
    per_reason = Counter(e["reason"] for e in examples)
    assert set(per_reason) == set(stats.dropped) and max(per_reason.values()) <= 5
    assert all(len(e["text"]) <= 300 for e in examples)
    assert sum(r["n"] for r in _lines(committed_file(os.path.join(out, "outcomes.jsonl")))) == stats.read

    # lineage: a rerun with the same inputs and config is skipped; a config change recomputes
    mtime = os.path.getmtime(os.path.join(out, "stats.json"))
    again = run_curate(inputs, out, CurateConfig(), local_runner)
    assert again.to_dict() == stats.to_dict() and os.path.getmtime(os.path.join(out, "stats.json")) == mtime


def test_curate_filters_configurable_and_raw_optional(shared_data, tmp_path, local_runner):
    paths = [os.path.join(shared_data, FILES[0]), os.path.join(shared_data, FILES[2])]
    cfg = CurateConfig(write_raw=False)
    cfg.langid.languages = []
    cfg.langid.threshold = 0.0
    for name in ("gopher_repetition", "gopher_quality", "c4", "fineweb_quality"):
        getattr(cfg.filters, name).enabled = False
    cfg.filters.url_blocklist.domains = ["wikipedia.org"]
    out = str(tmp_path / "c")
    stats = run_curate(paths, out, cfg, local_runner)
    assert not os.path.exists(os.path.join(out, "raw"))
    assert stats.dropped.get("url_blocklist") == 1  # the whirlwind page is an.wikipedia.org
    assert stats.kept == stats.extra["extracted"] - 1 and "language" not in stats.dropped
    assert stats.extra["languages"].get("an") == 1  # Aragonese page identified, then blocked by URL
    assert {d["language"] for d in read_documents(out)} <= set(stats.extra["languages"])


def test_curate_portable_runner_matches_local(shared_data, tmp_path, local_runner, portable_runner):
    paths = [os.path.join(shared_data, f) for f in FILES[:4]]
    local = run_curate(paths, str(tmp_path / "local"), CurateConfig(), local_runner)
    portable = run_curate(paths, str(tmp_path / "portable"), CurateConfig(), portable_runner)
    assert (portable.read, portable.kept, portable.dropped) == (local.read, local.kept, local.dropped)
    ids = lambda d: sorted(r["id"] for r in read_documents(d))  # noqa: E731
    assert ids(str(tmp_path / "portable")) == ids(str(tmp_path / "local"))
    assert len(DOCUMENT_SCHEMA.names) == pq.read_schema(document_files(str(tmp_path / "portable"))[0]).names.__len__()


def test_curate_one_and_two_workers_give_identical_documents(shared_data, tmp_path):
    """The local runner with 1 worker and with 2 worker processes (multi_processing): same documents, same
    text, same stats; only the order of rows in the files may differ."""
    from pipeline.runner import RunnerConfig

    paths = [os.path.join(shared_data, f) for f in FILES[:3]]
    cfg = CurateConfig(write_raw=False)
    cfg.langid.languages = []
    for name in ("gopher_repetition", "gopher_quality", "fineweb_quality"):
        getattr(cfg.filters, name).enabled = False  # keep enough documents to compare (C4 still rewrites text)
    runs = {}
    for workers in (1, 2):
        out = str(tmp_path / f"w{workers}")
        stats = run_curate(
            paths, out, cfg, RunnerConfig(runner="local", num_workers=workers, running_mode="multi_processing")
        )
        rows = sorted(read_documents(out), key=lambda r: r["id"])
        runs[workers] = (stats.read, stats.kept, stats.dropped, rows)
    assert runs[1][3] and runs[1] == runs[2]


def _bad_input_warc(path) -> list[str]:
    """A per-record-gzip WARC of bad records between good ones, junk between two records, then raw garbage
    after the last record."""
    import gzip
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    good = (
        "<html><body><article>" + "<p>The river town kept its old mill, its market and its walls for many "
        "centuries, and visitors still come to see them every summer.</p>" * 8 + "</article></body></html>"
    )
    pages = [
        ("good-1", "text/html; charset=utf-8", good.encode()),
        ("png-as-html", "text/html", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40),
        (
            "bad-utf8",
            "text/html; charset=utf-8",
            good.encode()[:400] + b"\xff\xfe\xc3\x28\xa0\xa1" + good.encode()[400:],
        ),
        ("mixed", "text/html", good.encode("utf-8")[:500] + "Café déjà vu".encode("cp1252") + good.encode()[500:]),
        ("empty", "text/html", b""),
        ("bomb", "text/html", b"<div>" * 15_000 + b"deep" + b"</div>" * 15_000),  # under max_chars below
        ("huge", "text/html", b"<p>" + b"a" * (50 * 1024 * 1024) + b"</p>"),
        ("gzip-bomb", "text/html", gzip.compress(b"<p>" + b"a" * (20 * 1024 * 1024) + b"</p>")),
        ("long", "text/html", ("<html><body><p>" + "many words " * 30_000 + "</p></body></html>").encode()),
        ("good-2", "text/html; charset=utf-8", good.encode()),
    ]
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for name, ctype, body in pages:
            extra = [("Content-Encoding", "gzip")] if name == "gzip-bomb" else []
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype), *extra], protocol="HTTP/1.1")
            rec = w.create_warc_record(
                f"http://bad.example/{name}", "response", payload=BytesIO(body), http_headers=headers
            )
            w.write_record(rec)
            if name == "mixed":
                fh.write(b"junk between two records: must cost these bytes only\r\n" * 3)
        fh.write(b"this is garbage after the last record\r\n\r\n")
    return [name for name, _, _ in pages]


def test_curate_generated_bad_input_completes_with_reasons(tmp_path, local_runner):
    warc = tmp_path / "bad.warc.gz"
    _bad_input_warc(str(warc))
    out = str(tmp_path / "out")
    cfg = CurateConfig()
    cfg.langid.languages = []
    cfg.langid.threshold = 0.0
    cfg.extract.max_chars = 200_000
    for name in ("gopher_repetition", "gopher_quality", "c4", "fineweb_quality"):
        getattr(cfg.filters, name).enabled = False  # this test is about reading and extraction
    stats = run_curate([str(warc)], out, cfg, local_runner)
    # 10 records + the junk between two of them + the garbage tail
    assert stats.read == stats.kept + sum(stats.dropped.values()) == 10 + 2
    assert stats.dropped["garbage_skipped"] == 2
    assert stats.extra["garbage_bytes_skipped"] == 3 * 54 + len(b"this is garbage after the last record\r\n\r\n")
    # the 50 MB page (WARC block) and the 20 MB gzip-encoded page (decoded payload) are over max_bytes
    assert stats.dropped["too_large"] == 2
    assert stats.dropped["too_deep"] == 1 and stats.dropped["too_many_chars"] == 1  # the bomb; the long page
    urls = {r["url"] for r in read_documents(out)}
    # good pages around the bad ones survive (good-2 only thanks to the resync after the junk), and so does
    # text with invalid / mixed-encoding bytes
    assert {f"http://bad.example/{n}" for n in ("good-1", "good-2", "bad-utf8", "mixed")} <= urls
    # the PNG labelled text/html and the 0-byte page yield no text: counted, not crashed
    assert stats.dropped.get("empty_text", 0) + stats.dropped.get("extract_error", 0) == 10 - 4 - len(urls)
    assert stats.extra["failed_files"] == [str(warc)]  # both bad regions: the file reported once, by name
    failed = _lines(committed_file(os.path.join(out, "failed_files.jsonl")))
    assert sorted((f["reason"], f["bytes"]) for f in failed) == sorted(
        [("garbage_skipped", 3 * 54), ("garbage_skipped", len(b"this is garbage after the last record\r\n\r\n"))]
    )
