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
    got = [os.path.basename(p) for p, _ in expand_inputs([str(tmp_path)])]
    assert got == ["a.warc.gz", "b.warc", "c.warc.wet.gz", "e.wet"]  # WAT and other files are not inputs
    assert [os.path.basename(p) for p, _ in expand_inputs([str(tmp_path / "*.txt")])] == ["notes.txt"]
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
    chunked = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
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


def test_lying_content_length_is_skipped_and_reading_resumes(shared_data):
    """The 5th record of ``example.warc`` is 7 bytes longer than its Content-Length says: FastWARC stops there,
    warcio warns and goes on. We count those 7 bytes and resume at the 6th record, as warcio does."""
    events = _events(os.path.join(shared_data, "warc/pywb-sample/example.warc"))
    assert [(e.kind, e.reason) for e in events] == [
        ("dropped", "warcinfo"),
        ("record", None),
        ("dropped", "request"),
        ("dropped", "revisit"),
        ("dropped", "request"),
        ("failed", "garbage_skipped"),
        ("dropped", "http_status"),
    ]
    gap = events[5].info
    assert (gap["offset"], gap["bytes"], gap["resumed_at"], gap["records"]) == (4764, 7, 4771, 5)
    assert events[6].info["offset"] == 4771  # warcio's offset of its 6th record


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
        w.write_record(
            w.create_warc_record("http://example.com/a", "response", payload=BytesIO(body), http_headers=headers)
        )
        headers = StatusAndHeaders("301 Moved", [("Location", "/b")], protocol="HTTP/1.1")
        w.write_record(
            w.create_warc_record("http://example.com/c", "response", payload=BytesIO(b""), http_headers=headers)
        )
    events = _events(str(out))
    assert [(e.kind, e.reason) for e in events] == [("record", None), ("dropped", "http_status")]
    assert events[0].info["charset"] == "windows-1252" and events[0].info["payload"] == body
    assert gzip.decompress(out.read_bytes()).startswith(b"WARC/1")


# --- resync after garbage between records ------------------------------------------------------------------


def _record_bytes(gz: bool, n: int = 5) -> list[bytes]:
    """``n`` WARC records (response, request, ... alternating), each serialised on its own: concatenated they are
    a plain WARC or, with ``gz``, a per-record-gzip WARC as Common Crawl writes it."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = []
    for i in range(n):
        buf = BytesIO()
        w = WARCWriter(buf, gzip=gz)
        body = f"<html><body><p>page {i} ".encode() + b"text " * 50 + b"</p></body></html>"
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        rtype = "response" if i % 2 == 0 else "resource"
        rec = w.create_warc_record(
            f"http://resync.example/{i}",
            rtype,
            payload=BytesIO(body),
            http_headers=headers if rtype == "response" else None,
        )
        w.write_record(rec)
        out.append(buf.getvalue())
    return out


def _warcio_records(path):
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    with open(path, "rb") as fh:
        it = WarcioIterator(fh)
        return [(r.rec_type, it.get_record_offset(), r.rec_headers.get_header("WARC-Record-ID")) for r in it]


def _assert_resynced(tmp_path, gz, records, garbage: dict[int, bytes]):
    """Write ``records`` with ``garbage[i]`` before record i (i == len(records): after the last) and check that
    every record is read, in order, at warcio's offset in the clean file shifted by the garbage before it, and
    that each bad region is one ``garbage_skipped`` event with its exact offset and byte count."""
    suffix = ".warc.gz" if gz else ".warc"
    clean = tmp_path / ("clean" + suffix)
    clean.write_bytes(b"".join(records))
    oracle = _warcio_records(str(clean))
    assert len(oracle) == len(records)
    dirty = tmp_path / ("dirty" + suffix)
    data, expected, pos = b"", [], 0
    for i in range(len(records) + 1):
        if garbage.get(i):
            expected.append(("failed", "garbage_skipped", len(data), len(garbage[i])))
            data += garbage[i]
        if i < len(records):
            t, off, rid = oracle[i]
            assert off == pos
            expected.append((t, off + len(data) - pos, rid))
            pos += len(records[i])
            data += records[i]
    dirty.write_bytes(data)
    got = []
    for e in _events(str(dirty)):
        if e.kind == "failed":
            got.append((e.kind, e.reason, e.info["offset"], e.info["bytes"]))
        else:
            got.append(
                (e.info["record_type"], e.info.get("source_offset", e.info.get("offset")), e.info.get("warc_record_id"))
            )
    # resource records are dropped without an id in the event; compare ids where the event has one
    assert [g[:2] if g[0] != "failed" else g for g in got] == [x[:2] if x[0] != "failed" else x for x in expected]
    assert [g[2] for g in got if g[0] == "response"] == [x[2] for x in expected if x[0] == "response"]
    return got


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_garbage_between_records_is_counted_and_skipped(tmp_path, gz):
    records = _record_bytes(gz)
    garbage = {
        0: b"leading junk, not a record\r\n",
        2: b"GARBAGE between two records \x00\x01\x02" * 30,
        3: gzip.compress(b"a valid gzip member that is no WARC record"),
        5: b"trailing junk after the last record",
    }
    got = _assert_resynced(tmp_path, gz, records, garbage)
    assert sum(1 for g in got if g[0] == "failed") == 4


def test_gzip_members_that_stop_fastwarc_silently_or_are_corrupt(tmp_path):
    """An empty gzip member ends FastWARC's iteration without an error; a member whose deflate data is damaged
    makes it raise half way through a record. Both are skipped whole, and what follows is read."""
    records = _record_bytes(True)
    corrupt = bytearray(records[2])
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 8] = b"\x00" * 8
    got = _assert_resynced(tmp_path, True, records[:2] + records[3:], {1: gzip.compress(b""), 2: bytes(corrupt)})
    assert [g[1] for g in got if g[0] == "failed"] == ["garbage_skipped", "garbage_skipped"]


def test_resync_finds_a_record_start_across_scan_chunks(tmp_path):
    """Garbage longer than the scan chunk, sized so the next ``WARC/1.0`` straddles a chunk border."""
    from pipeline.read import _CHUNK

    _assert_resynced(tmp_path, False, _record_bytes(False, 3), {1: b"\x00" * (_CHUNK - 2)})
    _assert_resynced(tmp_path, True, _record_bytes(True, 3), {2: b"z" * (2 * _CHUNK + 5)})


def test_cut_or_corrupt_last_record_is_truncation_not_garbage(tmp_path):
    """A region that runs to the end of the file and begins like a record is a damaged record: ``truncated_file``
    (FastWARC's short block for a cut member, our scan for a member corrupted half way)."""
    records = _record_bytes(True, 3)
    corrupt = bytearray(records[2])
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 8] = b"\x00" * 8
    for last in (records[2][:-30] + b"junk", bytes(corrupt)):
        path = tmp_path / "last.warc.gz"
        path.write_bytes(records[0] + records[1] + last)
        events = _events(str(path))
        assert [(e.kind, e.reason) for e in events] == [
            ("record", None),
            ("dropped", "resource"),
            ("failed", "truncated_file"),
        ]
        assert events[-1].info["offset"] == len(records[0]) + len(records[1]) and events[-1].info["records"] == 2


@pytest.mark.parametrize("rel", ["warc/pywb-sample/example.warc", "warc/warcio-testdata/example-trunc.warc"])
def test_real_files_with_bytes_between_records_match_warcio(shared_data, rel):
    """Two real files with stray bytes after a record (warcio reads on with a warning, FastWARC raises): after
    the resync we see warcio's records at warcio's offsets, plus one counted ``garbage_skipped`` region."""
    path = os.path.join(shared_data, rel)
    events = _events(path)
    got = [
        (e.info["record_type"], e.info["source_offset"] if e.kind == "record" else e.info["offset"])
        for e in events
        if e.kind != "failed"
    ]
    assert got == [(t, o) for t, o, _ in _warcio_records(path)]
    assert [e.reason for e in events if e.kind == "failed"] == ["garbage_skipped"]


def test_unseekable_stream_cannot_resync_and_says_so(tmp_path, monkeypatch):
    """An HTTP server without range requests gives a stream that cannot seek: the first stop ends the file,
    counted as before (records up to it kept, the rest ``truncated_file``), never a crash or a silent loss."""
    import io

    import pipeline.read as read

    records = _record_bytes(True, 3)
    path = tmp_path / "x.warc.gz"
    path.write_bytes(records[0] + b"junk" * 10 + records[1] + records[2])

    class Unseekable(io.RawIOBase):
        def __init__(self, fh):
            self.fh = fh

        def readable(self):
            return True

        def seekable(self):
            return False

        def tell(self):  # like fsspec's streaming HTTP file: knows its position, cannot seek
            return self.fh.tell()

        def readinto(self, b):
            data = self.fh.read(len(b))
            b[: len(data)] = data
            return len(data)

    class SaysSeekableButIsNot(Unseekable):
        def seekable(self):
            return True

        def seek(self, *args):
            raise io.UnsupportedOperation("seek")

    for stream in (Unseekable, SaysSeekableButIsNot):
        monkeypatch.setattr(read, "open_stream", lambda p, s=stream: s(open(p, "rb")))
        events = _events(str(path))
        assert [(e.kind, e.reason) for e in events] == [("record", None), ("failed", "truncated_file")]
        assert events[-1].info["records"] == 1 and "OSError" in events[-1].info["error"]


def test_file_cut_inside_the_last_gzip_member_is_reported(tmp_path):
    """Cut halfway through the last record's gzip member (its WARC headers only partly there): FastWARC yields a
    headless record without an error, so the reader checks the member's gzip trailer and reports the file."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = BytesIO()
    w = WARCWriter(buf, gzip=True)
    sizes = []
    for name in ("first", "second"):
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        body = (f"<html><body><p>{name} page " + "with words " * 200 + "</p></body></html>").encode()
        w.write_record(
            w.create_warc_record(f"http://cut.example/{name}", "response", payload=BytesIO(body), http_headers=headers)
        )
        sizes.append(buf.tell())
    data = buf.getvalue()
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: sizes[0] + (sizes[1] - sizes[0]) // 2])
    events = _events(str(path))
    assert events[0].kind == "record" and events[0].info["url"] == "http://cut.example/first"
    assert events[-1].kind == "failed" and events[-1].reason == "truncated_file"
    assert events[-1].info["offset"] == sizes[0] and "inside the gzip member" in events[-1].info["error"]
