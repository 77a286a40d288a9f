"""WARC writing: packaged pages as captures a crawl would have made, byte-identical on every rebuild.

Also the two WARC helpers the sample needs for archives it takes as they are: re-gzipping an uncompressed
WARC per record (Common Crawl's layout) and counting records per type for the provenance.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import urllib.parse
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


@dataclass(frozen=True)
class Page:
    """One capture to write: the response body as served, where it was served from, and where it came from."""

    url: str
    body: bytes
    content_type: str
    mtime: int
    origin: str  # "package:member", for provenance


def record_id(*parts: str) -> str:
    """A WARC-Record-ID derived from content, so rebuilding gives the same ids (warcio's are random)."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest[:16], version=5)}>"


def warc_date(mtime: int) -> str:
    return datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(mtime: int) -> str:
    return datetime.fromtimestamp(mtime, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def write_warc(path: str, pages: Iterable[Page], info: dict[str, str]) -> int:
    """Write ``pages`` as a gzip-per-record WARC 1.0 file: warcinfo, then request + response per page.

    Records carry ids and dates derived from the pages, so the file is byte-identical on every rebuild.
    The warcinfo's date is the newest page time. Returns the number of response records.
    """
    pages = list(pages)
    filename = os.path.basename(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    n = 0
    with open(tmp, "wb") as fh:
        writer = WARCWriter(fh, gzip=True, warc_version="1.0")
        newest = max((p.mtime for p in pages), default=0)
        fields = "".join(f"{k}: {v}\r\n" for k, v in info.items()).encode("utf-8")
        writer.write_record(
            writer.create_warc_record(
                "",
                "warcinfo",
                payload=io.BytesIO(fields),
                length=len(fields),
                warc_content_type="application/warc-fields",
                warc_headers_dict={
                    "WARC-Record-ID": record_id("warcinfo", filename, json.dumps(info, sort_keys=True)),
                    "WARC-Date": warc_date(newest),
                    "WARC-Filename": filename,
                },
            )
        )
        for page in pages:
            date = warc_date(page.mtime)
            body_digest = hashlib.sha256(page.body).hexdigest()
            resp_id = record_id("response", page.url, body_digest)
            req_id = record_id("request", page.url, body_digest)
            split = urllib.parse.urlsplit(page.url)
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
            req_headers = StatusAndHeaders(
                f"GET {target} HTTP/1.1",
                [
                    ("Host", split.netloc),
                    ("User-Agent", "ccgpt-sample (rebuilt from a package; see warcinfo)"),
                    ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
                ],
                is_http_request=True,
            )
            writer.write_record(
                writer.create_warc_record(
                    page.url,
                    "request",
                    payload=io.BytesIO(b""),
                    length=0,
                    http_headers=req_headers,
                    warc_headers_dict={"WARC-Record-ID": req_id, "WARC-Date": date, "WARC-Concurrent-To": resp_id},
                )
            )
            resp_headers = StatusAndHeaders(
                "200 OK",
                [
                    ("Content-Type", page.content_type),
                    ("Content-Length", str(len(page.body))),
                    ("Last-Modified", http_date(page.mtime)),
                ],
                protocol="HTTP/1.1",
            )
            writer.write_record(
                writer.create_warc_record(
                    page.url,
                    "response",
                    payload=io.BytesIO(page.body),
                    length=len(page.body),
                    http_headers=resp_headers,
                    warc_headers_dict={"WARC-Record-ID": resp_id, "WARC-Date": date},
                )
            )
            n += 1
    os.replace(tmp, path)
    return n


def regzip_per_record(raw: bytes) -> tuple[bytes, int]:
    """An uncompressed WARC as gzip-per-record (Common Crawl's layout), each record's bytes kept exactly.

    Record boundaries come from warcio's offsets; every member is a fresh gzip stream with no timestamp.
    Returns the new file's bytes and the number of records.
    """
    offsets = []
    it = ArchiveIterator(io.BytesIO(raw), check_digests=False)
    for record in it:
        record.content_stream().read()
        offsets.append(it.get_record_offset())
    offsets.append(len(raw))
    out = io.BytesIO()
    for start, end in zip(offsets, offsets[1:]):
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container, mtime 0
        out.write(comp.compress(raw[start:end]) + comp.flush())
    return out.getvalue(), len(offsets) - 1


def count_warc_records(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(path, "rb") as fh:
        for record in ArchiveIterator(fh, check_digests=False):
            counts[record.rec_type] = counts.get(record.rec_type, 0) + 1
    return dict(sorted(counts.items()))


_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".js": "application/javascript",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".jpg": "image/jpeg",
    ".txt": "text/plain; charset=utf-8",
    ".py": "text/x-python",
    ".pdf": "application/pdf",
}


def content_type(name: str, body: bytes) -> str:
    ext = posixpath.splitext(name)[1].lower()
    ctype = _CONTENT_TYPES.get(ext, "application/octet-stream")
    if "charset=utf-8" in ctype:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            ctype = ctype.split(";")[0]
    return ctype
