"""Read WARC / WET files into raw page records: the first step of ``ccgpt curate``.

Why it looks like this:

* **One DoFn call per file, streaming.** A Common Crawl WARC is ~1 GiB compressed; a file is opened as a stream
  (local ``open`` or ``fsspec`` for ``s3://``, ``gs://``, ``https://``) and FastWARC iterates it record by
  record, so memory is bounded by the largest *kept* record (itself capped by ``max_bytes``), never the file.
* **Every record gets exactly one outcome.** Records we do not turn into documents are counted by reason
  (``request``, ``metadata``, ``revisit``, ``warcinfo``, ``http_status``, ``not_html``, ...), so
  ``read == kept + dropped`` holds over WARC records, not just over the pages that survived.
* **Damaged files never stop the run, and damage costs only the damaged bytes.** FastWARC raises ``OSError``
  at a bad header or a corrupt gzip member, stops *silently* at an empty gzip member, and at a truncated gzip
  stream or a cut-off plain WARC just returns a short last record. So each record block is read to its end and
  compared with its ``Content-Length`` (short: the file was cut, ``truncated_file``), and whenever FastWARC
  stops, we look behind the end of the last record it finished (one gzip member or header block re-read).
  Blank lines only: a clean end. Anything else is a bad region: the file is scanned forward in 1 MiB chunks
  to the next record start (a ``WARC/1.0``/``WARC/1.1`` line, or a gzip member that decompresses to one),
  the region counts as one ``garbage_skipped`` outcome with its offset and byte count, and a new FastWARC
  iterator resumes there. FastWARC stays the fast path: on a clean file the look behind the end is the only
  extra work. A region that runs to the end of the file is ``truncated_file`` if it begins like a record,
  else ``garbage_skipped``; a file without any record is ``unreadable_file`` (ARC files, the pre-2009
  format, land there). Every such event is also a line in ``failed_files.jsonl``, the retry list. Streams
  that cannot seek (rare: an HTTP server without range requests) cannot resync; there the first stop ends
  the file as before.
* **Offsets are the ones Common Crawl's index uses**: the byte position of the record (of its gzip member
  for per-record-gzip files) in the file, identical to warcio's ``get_record_offset`` (checked in tests).
  A whole-file gzip (not per record, as in ``example-bad.warc.gz.bad``) is read completely, but its offsets
  only point to the end of that single member.

``read`` in the stage stats therefore counts WARC records seen plus failure events (a record cut by
truncation, or lying inside a skipped region, is part of that event, not an extra one).
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam

from pipeline import fs
from pipeline.accounting import OUTCOMES, dropped
from pipeline.fs import READ_ONLY, check_path, scheme
from pipeline.ledger import DEFAULT_GROUP_BYTES
from pipeline.tables import UNLISTED_INPUT_BYTES

# Extra tagged outputs every curate DoFn may use besides OUTCOMES (see pipeline.accounting).
EXAMPLES = "examples"  # (reason, {"reason", "url", "text"}) for examples.jsonl
COUNTERS = "counters"  # free-form counter names ("record_type:response", "language:en") for stats extra
FAILED = "failed"  # one dict per damaged/unreadable file, for failed_files.jsonl

WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz")
HTML_CONTENT_TYPES = ["text/html", "application/xhtml+xml"]
_CHUNK = 1 << 20


@dataclass
class ReadConfig:
    source: str = field(default="crawl", metadata={"help": "mix source name written into every document"})
    max_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata={
            "help": "records whose WARC Content-Length, or decoded HTTP payload, exceeds this are dropped as too_large"
        },
    )
    group_bytes: int = field(
        default=DEFAULT_GROUP_BYTES,
        metadata={
            "help": "input bytes per work unit: the input files are grouped up to this size and each group is "
            "committed on its own, so a rerun after a kill reads none of the groups done (pipeline/ledger.py)"
        },
    )
    html_content_types: list[str] = field(
        default_factory=lambda: list(HTML_CONTENT_TYPES),
        metadata={"help": "HTTP Content-Type values (without parameters) treated as HTML"},
    )


class ReadEvent(NamedTuple):
    """What reading one file produces, in order: ``kind`` is "record" (a raw page to extract), "dropped"
    (a record with a ``reason``) or "failed" (damage: ``garbage_skipped`` and reading goes on, or
    ``truncated_file`` / ``unreadable_file`` and the file ends; ``info`` has file, error, records before it,
    and for a region its ``offset`` and ``bytes``)."""

    kind: str
    reason: str | None
    info: dict[str, Any]


def expand_inputs(inputs: list[str]) -> list[tuple[str, int]]:
    """Turn paths, folders, globs and URLs into a sorted, de-duplicated list of ``(file, bytes)``.

    Folders contribute their WARC/WET files (``WARC_SUFFIXES``, recursively); an explicit file is taken
    whatever its name (so a ``.bad`` or ``.arc`` file given by hand is read and, if broken, reported).
    An input that matches nothing is an error: a typo must not silently produce an empty corpus. Sizes come
    from the same listing (an ``https://`` file, never listed, counts as one Common Crawl WARC): the input-file
    groups of :mod:`pipeline.ledger` are cut by them."""
    files: dict[str, int] = {}
    for inp in inputs:
        check_path(inp, "curate input")
        if scheme(inp) in READ_ONLY:
            found = [(inp, UNLISTED_INPUT_BYTES)]  # https:// (Common Crawl's public endpoint): no listing
        elif any(c in inp for c in "*?["):
            found = [(f.path, f.size) for f in fs.expand(fs.local_path(inp))]
        elif fs.is_dir(inp):  # a folder (or prefix) of WARC/WET files
            found = [(f.path, f.size) for f in fs.expand(fs.local_path(inp)) if f.path.endswith(WARC_SUFFIXES)]
        else:
            found = [(fs.local_path(inp), f.size) for f in fs.match(fs.local_path(inp))] if fs.is_file(inp) else []
        if not found:
            raise FileNotFoundError(f"curate input {inp!r} matches no WARC/WET file")
        for path, size in found:
            files.setdefault(path, size)
    return sorted(files.items())


def open_stream(path: str):
    """A binary file object for a local path or URL; never read whole. Object stores (s3://, gs://, hdfs://)
    through Beam's ``FileSystems`` (the runner hands every worker its options and credentials); https://
    through fsspec's HTTP filesystem, which Beam has none of, with retries (:mod:`pipeline.http`)."""
    if scheme(path) in READ_ONLY:
        from pipeline.http import RetryingReader

        return RetryingReader(path)
    return fs.open_read(path)


def doc_id(record_id: str | None, source_file: str, offset: int) -> str:
    """Stable document id: sha1 of the WARC-Record-ID (globally unique by the WARC spec), else of file+offset."""
    key = record_id if record_id else f"{os.path.basename(source_file)}:{offset}"
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


def _record_type_name(rec) -> str:
    return str(rec.record_type).rsplit(".", 1)[-1]


def _read_block(reader, limit: int) -> tuple[bytes | None, int]:
    """Read a record block to its end. Returns (bytes if it fit in ``limit`` else None, total length)."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = reader.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total <= limit:
            parts.append(chunk)
        else:
            parts = []  # too large: keep counting to detect truncation, hold nothing
    return (b"".join(parts) if total <= limit else None), total


def _target_uri(rec) -> str | None:
    uri = rec.headers.get("WARC-Target-URI")
    if uri is None:
        return None
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):  # WARC/0.x style
        uri = uri[1:-1]
    return uri


_DECODE_MODES = ("all", "content", "transfer", "none")


def parse_http_response(block: bytes, limit: int | None = None) -> tuple[int, str, str | None, bytes] | None:
    """Parse an HTTP response block: (status, mime type, declared charset, decoded payload), None if malformed.

    With ``limit``, at most ``limit + 1`` payload bytes are decoded, so a caller sees an over-long payload
    without ever holding it: a gzip- or brotli-encoded body a few hundred KB long can decode to gigabytes.

    Archived headers often lie about encodings: crawlers store the body de-chunked (or un-gzipped) but keep
    ``Transfer-Encoding: chunked`` (``iana.warc.gz`` does this for half its pages). So we try FastWARC's full
    decoding first and fall back to fewer decoding steps instead of losing the page. Parsing happens on a
    separate record built from the block: re-using the iterator's record would end the iteration early.
    """
    from fastwarc.warc import WarcRecord

    head = b"WARC/1.1\r\nWARC-Type: response\r\nContent-Type: application/http; msgtype=response\r\n"
    raw = head + b"Content-Length: %d\r\n\r\n" % len(block) + block + b"\r\n\r\n"
    for mode in _DECODE_MODES:
        try:
            rec = WarcRecord.from_bytes(raw)
            rec.parse_http(auto_decode=mode, quirks_mode=True)
            status = int(rec.http_headers.status_code)
            ctype = (rec.http_content_type or "").split(";")[0].strip().lower()
            payload = rec.reader.read() if limit is None else rec.reader.read(limit + 1)
            return status, ctype, (rec.http_charset or None), bytes(payload)
        except Exception:  # noqa: BLE001 - invalid header or a body the declared encoding cannot decode
            continue
    return None


_GZIP_MAGIC = b"\x1f\x8b\x08"
_WARC_MAGIC = b"WARC/1."
_WARC_VERSION_LINE = re.compile(rb"WARC/1\.[01]\r?\n")
_PROBE = 1 << 16  # bytes read to check a candidate record start (a gzip member's first deflate block)
_MAX_HEADER = 1 << 20  # a plain WARC header block longer than this is not looked for when resyncing


def _is_record_start(data: bytes) -> bool:
    """Do these bytes (from a candidate position on) begin a WARC record, plain or as a gzip member?"""
    if data.startswith(_GZIP_MAGIC):
        try:
            head = zlib.decompressobj(31).decompress(data, 16)
        except zlib.error:
            return False
        return _WARC_VERSION_LINE.match(head) is not None
    return _WARC_VERSION_LINE.match(data) is not None


class _CutMember(Exception):
    """The last gzip member ends before its gzip trailer: the file was cut inside a record."""


def _record_end(stream, offset: int, length: int) -> int | None:
    """Byte position right after the record (its gzip member) that starts at ``offset``; None if unknown.

    Only called after the reader stopped, on the last record it finished: one gzip member decompressed (output
    discarded as it comes), or one plain header block read (``length`` is its Content-Length), never the file.
    """
    stream.seek(offset)
    first = stream.read(_PROBE)
    if first.startswith(_GZIP_MAGIC):
        d = zlib.decompressobj(31)
        fed, buf = 0, first
        while buf:
            try:
                d.decompress(buf, _CHUNK)
                while d.unconsumed_tail and not d.eof:
                    d.decompress(d.unconsumed_tail, _CHUNK)
            except zlib.error:
                return None
            if d.eof:
                return offset + fed + len(buf) - len(d.unused_data)
            fed += len(buf)
            buf = stream.read(_CHUNK)
        raise _CutMember(offset)  # the file ends inside this member: FastWARC read a record cut short
    if not _WARC_VERSION_LINE.match(first):
        return None
    head, buf = b"", first
    while buf and len(head) < _MAX_HEADER:
        head += buf
        cut = head.find(b"\r\n\r\n")
        if cut >= 0:
            return offset + cut + 4 + length
        buf = stream.read(_PROBE)
    return None


def _scan_for_record(stream, start: int) -> tuple[int | None, int | None]:
    """From ``start`` (the end of the last good record): (first byte that is not a blank line, next record start).

    The first is None when only blank lines follow (a clean end); the second is the first position *after* the
    first one where a WARC record starts (``WARC/1.0``/``WARC/1.1`` line, or a gzip member that decompresses to
    one), None when none follows. The file is scanned forward in ``_CHUNK`` pieces, never held whole.
    """
    stream.seek(start)
    pos = start
    bad = None
    while bad is None:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return None, None
        stripped = chunk.lstrip(b"\r\n")
        if stripped:
            bad = pos + len(chunk) - len(stripped)
        else:
            pos += len(chunk)
    pos = bad + 1
    while True:
        stream.seek(pos)
        chunk = stream.read(_CHUNK)
        if len(chunk) < len(_GZIP_MAGIC):
            return bad, None
        hits = sorted(i for magic in (_GZIP_MAGIC, _WARC_MAGIC) for i in _find_all(chunk, magic))
        for i in hits:
            probe = chunk[i : i + _PROBE]
            if len(probe) < _PROBE and len(chunk) == _CHUNK:  # the candidate runs past this chunk: read it again
                stream.seek(pos + i)
                probe = stream.read(_PROBE)
            if _is_record_start(probe):
                return bad, pos + i
        if len(chunk) < _CHUNK:  # the end of the file
            return bad, None
        pos += len(chunk) - len(_WARC_MAGIC) + 1  # overlap: a magic cut by the chunk border is seen next time


def _find_all(data: bytes, magic: bytes) -> Iterator[int]:
    i = data.find(magic)
    while i >= 0:
        yield i
        i = data.find(magic, i + 1)


def iter_warc(path: str, cfg: ReadConfig) -> Iterator[ReadEvent]:
    """Stream one WARC/WET file as :class:`ReadEvent` s: one per record, plus one "failed" event per damage.

    Kept records become raw page dicts: ``id, source, url, warc_record_id, date, source_file,
    source_offset`` (the document fields) plus ``kind`` ("html" or "text"), ``payload`` (bytes, HTTP
    transfer/content encodings removed) and ``charset`` (declared in the HTTP header, or None), ``record_type``.

    Damage (see the module docstring): FastWARC reads until it raises, or until it stops early without a word
    (an empty gzip member between records does that). Either way, and once at the normal end of every
    seekable file, we look behind the last record FastWARC finished: blank lines only means the file ended
    cleanly; anything else is a bad region, skipped up to the next record start and counted as one
    ``garbage_skipped`` event (with its byte count), after which a fresh FastWARC iterator takes over. A region
    that runs to the end of the file is ``truncated_file`` when it begins like a record (a record cut short)
    or ``garbage_skipped`` when it does not; a file with no record at all is ``unreadable_file``.
    """
    try:
        stream = open_stream(path)
    except Exception as e:  # noqa: BLE001 - missing, permission, network: all go to the retry list
        yield ReadEvent("failed", "unreadable_file", {"file": path, "error": f"{type(e).__name__}: {e}", "records": 0})
        return
    try:
        yield from _iter_segments(path, stream, cfg)
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001
            pass


def _iter_segments(path: str, stream, cfg: ReadConfig) -> Iterator[ReadEvent]:
    from fastwarc.warc import ArchiveIterator

    try:
        seekable = bool(stream.seekable())
    except Exception:  # noqa: BLE001
        seekable = False
    html_types = {t.lower() for t in cfg.html_content_types}
    seen = 0  # WARC records that got an outcome, over all segments
    segment_start = 0
    while True:
        last = None  # (offset, Content-Length) of the last record of this segment read to its end
        error = None
        try:
            for rec in ArchiveIterator(stream, parse_http=False):
                event, complete = _record_event(rec, path, cfg, html_types)
                if not complete:
                    yield ReadEvent(
                        "failed", "truncated_file" if seen else "unreadable_file", {**event.info, "records": seen}
                    )
                    return
                seen += 1
                last = (int(rec.stream_pos), int(rec.content_length))
                yield event
        except BaseException as e:  # noqa: BLE001 - OSError on bad headers / corrupt gzip; a Rust panic is a BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            error = f"{type(e).__name__}: {e}"
        try:
            if not seekable:
                raise OSError("stream cannot seek")
            try:
                end = _record_end(stream, *last) if last is not None else segment_start
            except _CutMember as cut:
                yield ReadEvent(
                    "failed",
                    "truncated_file",
                    {
                        "file": path,
                        "records": seen,
                        "offset": cut.args[0],
                        "error": f"the file ends inside the gzip member of the record at offset {cut.args[0]}",
                    },
                )
                return
            if end is None:  # the last record's extent is unknown (whole-file gzip): trust FastWARC, or resync after it
                if error is None:
                    return
                end = last[0] + 1
            bad, nxt = _scan_for_record(stream, end)
        except (OSError, ValueError):  # cannot look behind the stop: the rest is lost, say so where we know it
            if error is not None:
                yield ReadEvent(
                    "failed",
                    "truncated_file" if seen else "unreadable_file",
                    {"file": path, "error": error, "records": seen},
                )
            elif seen == 0:
                yield ReadEvent(
                    "failed", "unreadable_file", {"file": path, "error": "no WARC records found", "records": 0}
                )
            return
        if bad is None:  # only blank lines after the last record: a clean end
            if error is not None or seen == 0:
                yield ReadEvent(
                    "failed",
                    "truncated_file" if seen else "unreadable_file",
                    {"file": path, "error": error or "no WARC records found", "records": seen},
                )
            return
        why = error or "reader stopped before the end of the file"
        if nxt is None:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(bad)
            cut_record = _is_record_start(stream.read(_PROBE))
            reason = "unreadable_file" if not seen else ("truncated_file" if cut_record else "garbage_skipped")
            yield ReadEvent(
                "failed",
                reason,
                {
                    "file": path,
                    "error": f"{size - bad} bytes from offset {bad} to the end: {why}",
                    "records": seen,
                    "offset": bad,
                    "bytes": size - bad,
                },
            )
            return
        yield ReadEvent(
            "failed",
            "garbage_skipped",
            {
                "file": path,
                "error": f"{nxt - bad} bytes skipped from offset {bad} to the next record: {why}",
                "records": seen,
                "offset": bad,
                "bytes": nxt - bad,
                "resumed_at": nxt,
            },
        )
        stream.seek(nxt)
        segment_start = nxt


def _record_event(rec, path: str, cfg: ReadConfig, html_types: set[str]) -> tuple[ReadEvent, bool]:
    """One FastWARC record -> (its event, whether its block was complete). Reads the block to its end."""
    rtype = _record_type_name(rec)
    offset = int(rec.stream_pos)
    length = int(rec.content_length)
    keepable = rtype in ("response", "conversion")
    block, total = _read_block(rec.reader, cfg.max_bytes if keepable else 0)
    if total < length:
        return ReadEvent(
            "failed",
            "truncated_file",
            {
                "file": path,
                "error": f"{rtype} record at offset {offset} ends after {total} of {length} bytes",
                "offset": offset,
            },
        ), False
    url = _target_uri(rec)
    info = {"url": url, "record_type": rtype, "offset": offset}
    if not keepable:
        return ReadEvent("dropped", rtype if rtype != "unknown" else "unknown_record_type", info), True
    if block is None:
        return ReadEvent("dropped", "too_large", info), True
    charset = None
    if rtype == "response":
        parsed = parse_http_response(block, cfg.max_bytes)
        if parsed is None:
            return ReadEvent("dropped", "bad_http", info), True
        status, ctype, charset, payload = parsed
        if status != 200:
            return ReadEvent("dropped", "http_status", info), True
        if ctype not in html_types:
            return ReadEvent("dropped", "not_html", info), True
        if len(payload) > cfg.max_bytes:  # within max_bytes on disk, over it once the content encoding is undone
            return ReadEvent("dropped", "too_large", info), True
        kind = "html"
    else:  # WET conversion: already plain text, UTF-8 by Common Crawl's convention
        payload, kind, charset = block, "text", "utf-8"
    record_id = rec.headers.get("WARC-Record-ID")
    return ReadEvent(
        "record",
        None,
        {
            "id": doc_id(record_id, path, offset),
            "source": cfg.source,
            "url": url,
            "warc_record_id": record_id,
            "date": rec.headers.get("WARC-Date"),
            "source_file": path,
            "source_offset": offset,
            "kind": kind,
            "payload": bytes(payload),
            "charset": charset,
            "record_type": rtype,
        },
    ), True


class ReadWarc(beam.DoFn):
    """File path -> raw page records (main output); outcomes, examples, counters and failures on tags."""

    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg

    def process(self, path: str):
        for ev in iter_warc(path, self.cfg):
            if ev.kind == "record":
                yield beam.pvalue.TaggedOutput(COUNTERS, f"record_type:{ev.info['record_type']}")
                yield ev.info
            elif ev.kind == "dropped":
                yield beam.pvalue.TaggedOutput(COUNTERS, f"record_type:{ev.info['record_type']}")
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(ev.reason))
                yield beam.pvalue.TaggedOutput(
                    EXAMPLES, (ev.reason, {"reason": ev.reason, "url": ev.info["url"], "text": ""})
                )
            else:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(ev.reason))
                yield beam.pvalue.TaggedOutput(FAILED, {"reason": ev.reason, **ev.info})
                yield beam.pvalue.TaggedOutput(
                    EXAMPLES, (ev.reason, {"reason": ev.reason, "url": ev.info["file"], "text": ev.info["error"][:300]})
                )


class ReadWarcFiles(beam.PTransform):
    """PCollection of file paths -> tagged outputs of :class:`ReadWarc`, files spread over workers first."""

    def __init__(self, cfg: ReadConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, files):
        return (
            files
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadRecords"
            >> beam.ParDo(ReadWarc(self.cfg)).with_outputs(OUTCOMES, EXAMPLES, COUNTERS, FAILED, main="records")
        )
