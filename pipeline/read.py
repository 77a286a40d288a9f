"""Read WARC / WET files into raw page records: the first step of ``ccgpt curate``.

Why it looks like this:

* **One DoFn call per file, streaming.** A Common Crawl WARC is ~1 GiB compressed; a file is opened as a stream
  (local ``open`` or ``fsspec`` for ``s3://``, ``gs://``, ``https://``) and FastWARC iterates it record by
  record, so memory is bounded by the largest *kept* record (itself capped by ``max_bytes``), never the file.
* **Every record gets exactly one outcome.** Records we do not turn into documents are counted by reason
  (``request``, ``metadata``, ``revisit``, ``warcinfo``, ``http_status``, ``not_html``, ...), so
  ``read == kept + dropped`` holds over WARC records, not just over the pages that survived.
* **Damaged files never stop the run.** FastWARC raises ``OSError`` at a bad header or a corrupt gzip member,
  but it stops *silently* at a truncated gzip stream or a cut-off plain WARC (the last record is just
  short). We therefore read each record block to its end and compare with its ``Content-Length``: a short
  block means the file was cut. Records before the damage go on; the damage itself counts as one outcome
  (``truncated_file`` when records came before it, ``unreadable_file`` when none did) and is reported in
  ``failed_files.jsonl`` so the file can be fetched again. ARC files (the pre-2009 format) are not WARC and
  land there too, with FastWARC's error.
* **Offsets are the ones Common Crawl's index uses**: the byte position of the record (of its gzip member
  for per-record-gzip files) in the file, identical to warcio's ``get_record_offset`` (checked in tests).
  A whole-file gzip (not per record, as in ``example-bad.warc.gz.bad``) is read completely, but its offsets
  only point to the end of that single member.

``read`` in the stage stats therefore counts WARC records seen plus failure events (a record cut by
truncation is the failure event, not an extra one).
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple

import apache_beam as beam

from pipeline.accounting import OUTCOMES, dropped

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
        metadata={"help": "records whose WARC Content-Length exceeds this are dropped as too_large before parsing"},
    )
    html_content_types: list[str] = field(
        default_factory=lambda: list(HTML_CONTENT_TYPES),
        metadata={"help": "HTTP Content-Type values (without parameters) treated as HTML"},
    )


class ReadEvent(NamedTuple):
    """What reading one file produces, in order: ``kind`` is "record" (a raw page to extract), "dropped"
    (a record with a ``reason``) or "failed" (the file is damaged from here on; ``reason`` and ``info``)."""

    kind: str
    reason: str | None
    info: dict[str, Any]


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def expand_inputs(inputs: list[str]) -> list[str]:
    """Turn paths, folders, globs and URLs into a sorted, de-duplicated list of files.

    Folders contribute their WARC/WET files (``WARC_SUFFIXES``, recursively); an explicit file is taken
    whatever its name (so a ``.bad`` or ``.arc`` file given by hand is read and, if broken, reported).
    An input that matches nothing is an error: a typo must not silently produce an empty corpus.
    """
    files: list[str] = []
    for inp in inputs:
        if is_remote(inp):
            import fsspec

            fs, path = fsspec.core.url_to_fs(inp)
            proto = inp.split("://", 1)[0]
            if any(c in path for c in "*?["):
                found = [f"{proto}://{p}" if "://" not in p else p for p in sorted(fs.glob(path))]
            elif proto in ("http", "https"):
                found = [inp]
            elif fs.isdir(path):
                found = [f"{proto}://{p}" for p in sorted(fs.find(path)) if p.endswith(WARC_SUFFIXES)]
            else:
                found = [inp]
        else:
            local = inp[len("file://"):] if inp.startswith("file://") else inp
            if os.path.isdir(local):
                found = sorted(
                    p for p in glob.glob(os.path.join(local, "**", "*"), recursive=True)
                    if os.path.isfile(p) and p.endswith(WARC_SUFFIXES)
                )
            elif any(c in local for c in "*?["):
                found = sorted(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
            elif os.path.isfile(local):
                found = [local]
            else:
                found = []
        if not found:
            raise FileNotFoundError(f"curate input {inp!r} matches no WARC/WET file")
        files.extend(found)
    return sorted(dict.fromkeys(files))


def open_stream(path: str):
    """A binary file object for a local path or a remote URL (fsspec); never read whole."""
    if is_remote(path):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path[len("file://"):] if path.startswith("file://") else path, "rb", buffering=_CHUNK)


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


def parse_http_response(block: bytes) -> tuple[int, str, str | None, bytes] | None:
    """Parse an HTTP response block: (status, mime type, declared charset, decoded payload), None if malformed.

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
            return status, ctype, (rec.http_charset or None), bytes(rec.reader.read())
        except Exception:  # noqa: BLE001 - invalid header or a body the declared encoding cannot decode
            continue
    return None


def iter_warc(path: str, cfg: ReadConfig) -> Iterator[ReadEvent]:
    """Stream one WARC/WET file as :class:`ReadEvent` s: one per record, plus one "failed" event on damage.

    Kept records become raw page dicts: ``id, source, url, warc_record_id, date, source_file,
    source_offset`` (the document fields) plus ``kind`` ("html" or "text"), ``payload`` (bytes, HTTP
    transfer/content encodings removed) and ``charset`` (declared in the HTTP header, or None), ``record_type``.
    """
    from fastwarc.warc import ArchiveIterator

    html_types = {t.lower() for t in cfg.html_content_types}
    seen = 0
    try:
        stream = open_stream(path)
    except Exception as e:  # noqa: BLE001 - missing, permission, network: all go to the retry list
        yield ReadEvent("failed", "unreadable_file", {"file": path, "error": f"{type(e).__name__}: {e}", "records": 0})
        return
    try:
        for rec in ArchiveIterator(stream, parse_http=False):
            seen += 1
            rtype = _record_type_name(rec)
            offset = int(rec.stream_pos)
            length = int(rec.content_length)
            keepable = rtype in ("response", "conversion")
            limit = cfg.max_bytes if keepable else 0
            block, total = _read_block(rec.reader, limit)
            if total < length:
                yield ReadEvent(
                    "failed",
                    "truncated_file" if seen > 1 else "unreadable_file",
                    {
                        "file": path,
                        "error": f"{rtype} record at offset {offset} ends after {total} of {length} bytes",
                        "records": seen - 1,
                    },
                )
                return
            url = _target_uri(rec)
            info = {"url": url, "record_type": rtype, "offset": offset}
            if not keepable:
                yield ReadEvent("dropped", rtype if rtype != "unknown" else "unknown_record_type", info)
                continue
            if block is None:
                yield ReadEvent("dropped", "too_large", info)
                continue
            charset = None
            if rtype == "response":
                parsed = parse_http_response(block)
                if parsed is None:
                    yield ReadEvent("dropped", "bad_http", info)
                    continue
                status, ctype, charset, payload = parsed
                if status != 200:
                    yield ReadEvent("dropped", "http_status", info)
                    continue
                if ctype not in html_types:
                    yield ReadEvent("dropped", "not_html", info)
                    continue
                kind = "html"
            else:  # WET conversion: already plain text, UTF-8 by Common Crawl's convention
                payload, kind, charset = block, "text", "utf-8"
            record_id = rec.headers.get("WARC-Record-ID")
            yield ReadEvent(
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
            )
    except Exception as e:  # noqa: BLE001 - FastWARC raises OSError on bad headers / corrupt gzip
        yield ReadEvent(
            "failed",
            "truncated_file" if seen else "unreadable_file",
            {"file": path, "error": f"{type(e).__name__}: {e}", "records": seen},
        )
        return
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001
            pass
    if seen == 0:
        yield ReadEvent("failed", "unreadable_file", {"file": path, "error": "no WARC records found", "records": 0})


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
                yield beam.pvalue.TaggedOutput(EXAMPLES, (ev.reason, {"reason": ev.reason, "url": ev.info["url"], "text": ""}))
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
            | "ReadRecords" >> beam.ParDo(ReadWarc(self.cfg)).with_outputs(OUTCOMES, EXAMPLES, COUNTERS, FAILED, main="records")
        )
