"""Reading WARC/WET files: record classification, offsets (warcio as the oracle), damaged files."""

from __future__ import annotations

import gzip
import os
from collections import Counter

import pytest

from pipeline.read import ReadConfig, doc_id, expand_inputs, iter_warc, parse_http_response

CC2014 = "warc/cc-main-2014-35/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"


def _events(path, cfg=None):
    return list(iter_warc(path, cfg or ReadConfig()))


def _summary(events):
    return Counter(f"{e.kind}:{e.reason or e.info['kind']}" for e in events)


def test_expand_inputs_folders_globs_and_missing(tmp_path):
    for name in ("a.warc.gz", "b.warc", "c.warc.wet.gz", "d.warc.wat.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.wet").write_bytes(b"x")
    got = [os.path.basename(p) for p in expand_inputs([str(tmp_path)])]
    assert got == ["a.warc.gz", "b.warc", "c.warc.wet.gz", "e.wet"]  # WAT and other files are not inputs
    assert [os.path.basename(p) for p in expand_inputs([str(tmp_path / "*.txt")])] == ["notes.txt"]
    # explicit file + folder overlap: de-duplicated
    assert len(expand_inputs([str(tmp_path / "a.warc.gz"), str(tmp_path)])) == 4
    with pytest.raises(FileNotFoundError):
        expand_inputs([str(tmp_path / "nope-*.warc.gz")])


def test_doc_id_is_stable_and_falls_back_to_file_and_offset():
    a = doc_id("<urn:uuid:1>", "x.warc.gz", 10)
    assert a == doc_id("<urn:uuid:1>", "other/path.warc.gz", 99)  # identity is the record, not where it sits
    assert len(a) == 40 and a != doc_id("<urn:uuid:2>", "x.warc.gz", 10)
    assert doc_id(None, "dir/x.warc.gz", 10) == doc_id(None, "x.warc.gz", 10) != doc_id(None, "x.warc.gz", 11)


def test_parse_http_response_tolerates_lying_transfer_encoding():
    body = b"<html><body>hello</body></html>"
    block = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=ISO-8859-1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body  # body stored de-chunked, header kept (common in archives)
    )
    status, ctype, charset, payload = parse_http_response(block)
    assert (status, ctype, charset.lower(), payload) == (200, "text/html", "iso-8859-1", body)
    chunked = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert parse_http_response(chunked) == (404, "text/plain", None, b"hello")
    assert parse_http_response(b"\x00\x01 not http at all") is None


def test_cc_main_2014_record_classification(shared_data):
    events = _events(os.path.join(shared_data, CC2014))
    assert _summary(events) == Counter(
        {"dropped:warcinfo": 1, "dropped:request": 4, "dropped:metadata": 4, "dropped:not_html": 1, "record:html": 3}
    )
    rec = next(e.info for e in events if e.kind == "record")
    assert rec["url"].startswith("http") and rec["warc_record_id"].startswith("<urn:uuid:")
    assert rec["date"].startswith("2014-08") and rec["source"] == "crawl" and rec["payload"].lstrip()[:1] == b"<"
    wet = _events(os.path.join(shared_data, CC2014 + ".wet"), ReadConfig(source="cc"))
    assert _summary(wet) == Counter({"dropped:warcinfo": 1, "record:text": 3})
    assert all(e.info["source"] == "cc" and e.info["charset"] == "utf-8" for e in wet if e.kind == "record")


def test_revisits_requests_and_statuses_in_pywb_iana(shared_data):
    s = _summary(_events(os.path.join(shared_data, "warc/pywb-sample/iana.warc.gz")))
    assert s["dropped:revisit"] == 123 and s["dropped:request"] == 171 and s["dropped:warcinfo"] == 1
    # the 48 responses: HTML pages with status 200, the rest by reason
    assert s["record:html"] + s["dropped:not_html"] + s["dropped:http_status"] == 48
    assert s["record:html"] == 16 and sum(s.values()) == 343


@pytest.mark.parametrize(
    "rel",
    [
        CC2014,
        "warc/cc-main-2024-22-whirlwind/whirlwind.warc.gz",
        "warc/pywb-sample/iana.warc.gz",
        "warc/pywb-sample/dupes.warc.gz",
        "warc/warcio-testdata/example-iana.org-chunked.warc",
        "warc/warcio-testdata/example-wget-bad-target-uri.warc.gz",
    ],
)
def test_record_types_and_offsets_match_warcio(shared_data, rel):
    """warcio (the reference reader) and our FastWARC reader agree record by record on well-formed files."""
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    path = os.path.join(shared_data, rel)
    expected = []
    with open(path, "rb") as fh:
        it = WarcioIterator(fh)
        for r in it:
            expected.append((r.rec_type, it.get_record_offset(), r.rec_headers.get_header("WARC-Record-ID")))
    got = []
    for e in _events(path):
        assert e.kind != "failed", e.info
        offset = e.info["source_offset"] if e.kind == "record" else e.info["offset"]
        rid = e.info.get("warc_record_id")
        got.append((e.info["record_type"], offset, rid))
    assert [(t, o) for t, o, _ in got] == [(t, o) for t, o, _ in expected]
    assert [g[2] for g in got if g[2]] == [x[2] for x, g in zip(expected, got) if g[2]]


def test_truncated_gzip_keeps_records_before_the_cut(shared_data, tmp_path):
    data = open(os.path.join(shared_data, "warc/pywb-sample/iana.warc.gz"), "rb").read()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: len(data) // 2])
    events = _events(str(cut))
    assert events[-1].kind == "failed" and events[-1].reason == "truncated_file"
    assert "ends after" in events[-1].info["error"] and events[-1].info["records"] == len(events) - 1 > 10
    assert sum(e.kind == "failed" for e in events) == 1


def test_garbage_empty_and_arc_files_are_unreadable(shared_data, tmp_path):
    garbage = tmp_path / "garbage.warc.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip" * 20)
    text = tmp_path / "text.warc"
    text.write_bytes(b"hello world\n" * 10)
    empty = tmp_path / "empty.warc"
    empty.write_bytes(b"")
    for p in (garbage, text, empty, os.path.join(shared_data, "warc/pywb-sample/example.arc")):
        events = _events(str(p))
        assert [(e.kind, e.reason) for e in events] == [("failed", "unreadable_file")], p
    assert _events(str(tmp_path / "missing.warc"))[0].reason == "unreadable_file"


def test_lying_content_length_counts_damage_after_good_records(shared_data):
    events = _events(os.path.join(shared_data, "warc/pywb-sample/example.warc"))
    assert [e.kind for e in events[:-1]] == ["dropped", "record", "dropped", "dropped", "dropped"]
    assert (events[-1].kind, events[-1].reason, events[-1].info["records"]) == ("failed", "truncated_file", 5)


def test_whole_file_gzip_is_read(shared_data):
    """``example-bad.warc.gz.bad`` is gzipped as one member (warcio refuses it); every record is still read."""
    s = _summary(_events(os.path.join(shared_data, "warc/pywb-sample/example-bad.warc.gz.bad")))
    assert s == Counter(
        {"dropped:warcinfo": 1, "dropped:request": 2, "dropped:revisit": 1, "dropped:http_status": 1, "record:html": 1}
    )


def test_too_large_is_dropped_before_parsing(shared_data):
    path = os.path.join(shared_data, "warc/pywb-sample/iana.warc.gz")
    s = _summary(_events(path, ReadConfig(max_bytes=2000)))
    assert s["dropped:too_large"] > 0 and s["record:html"] < 16
    assert sum(s.values()) == 343  # still one outcome per record


def test_plain_gzip_written_here_roundtrips(tmp_path):
    """A WARC we write ourselves (warcio writer), gzip per record, with a non-UTF-8 page."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = tmp_path / "mine.warc.gz"
    with open(out, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        body = "<html><body><p>Café crème brûlée</p></body></html>".encode("cp1252")
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=windows-1252")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record("http://example.com/a", "response", payload=BytesIO(body), http_headers=headers))
        headers = StatusAndHeaders("301 Moved", [("Location", "/b")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record("http://example.com/c", "response", payload=BytesIO(b""), http_headers=headers))
    events = _events(str(out))
    assert [(e.kind, e.reason) for e in events] == [("record", None), ("dropped", "http_status")]
    assert events[0].info["charset"] == "windows-1252" and events[0].info["payload"] == body
    assert gzip.decompress(out.read_bytes()).startswith(b"WARC/1")
