"""A generated corpus of bad input for every stage, written beside the real tiny inputs (see conftest).

Each bad item names the stage and the reason it must end under, so the whole-pipeline test can check that
nothing crashed, nothing went missing and every failure was counted where it belongs.
"""

from __future__ import annotations

import gzip
import io
import json
import os

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

GOOD_PAGE = (
    "<html><head><title>Mill town</title></head><body><article>"
    + "".join(
        f"<p>The river town kept its old mill number {i}, its market and its walls for many centuries, and "
        f"visitors still come every summer to see the stones, the water wheel and the narrow lanes.</p>"
        for i in range(10)
    )
    + "</article></body></html>"
).encode()


def _record(
    w: WARCWriter,
    url: str,
    body: bytes,
    ctype: str = "text/html; charset=utf-8",
    status: str = "200 OK",
    rtype: str = "response",
) -> None:
    headers = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
    w.write_record(w.create_warc_record(url, rtype, payload=io.BytesIO(body), http_headers=headers))


def bad_warc(path: str) -> None:
    """Bad records between good ones (per-record gzip, as Common Crawl writes), then a damaged tail."""
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        _record(w, "http://bad.example/good-1", GOOD_PAGE)
        _record(w, "http://bad.example/png-as-html", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, "text/html")
        _record(w, "http://bad.example/bad-utf8", GOOD_PAGE[:400] + b"\xff\xfe\xc3\x28" + GOOD_PAGE[400:])
        _record(
            w,
            "http://bad.example/mixed",
            GOOD_PAGE[:500] + "Café déjà vu".encode("cp1252") + GOOD_PAGE[500:],
            "text/html",
        )
        _record(w, "http://bad.example/empty", b"", "text/html")
        _record(w, "http://bad.example/bomb", b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000, "text/html")
        _record(w, "http://bad.example/huge", b"<p>" + b"a" * (50 * 1024 * 1024) + b"</p>", "text/html")
        _record(w, "http://bad.example/missing", GOOD_PAGE, status="404 Not Found")
        _record(w, "http://bad.example/report.pdf", b"%PDF-1.4 not html", "application/pdf")
        _record(w, "http://bad.example/good-2", GOOD_PAGE.replace(b"Mill town", b"Mill town II"))
        fh.write(b"this is garbage after the last record\r\n\r\n")


def truncated_warc(path: str) -> None:
    """A good two-record file cut inside its second gzip member."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    _record(w, "http://cut.example/first", GOOD_PAGE.replace(b"Mill town", b"First page"))
    first_len = buf.tell()
    _record(w, "http://cut.example/second", GOOD_PAGE.replace(b"Mill town", b"Second page"))
    data = buf.getvalue()
    with open(path, "wb") as fh:
        fh.write(data[: first_len + (len(data) - first_len) // 2])


def build(root: str, tiny: dict) -> dict:
    """Bad files in ``root`` merged with the tiny real inputs; returns a run config's inputs and the expectations."""
    os.makedirs(root, exist_ok=True)
    crawl = os.path.join(root, "crawl")
    os.makedirs(crawl, exist_ok=True)
    bad_warc(os.path.join(crawl, "bad.warc.gz"))
    truncated_warc(os.path.join(crawl, "truncated.warc.gz"))
    open(os.path.join(crawl, "empty.warc.gz"), "wb").close()
    with open(os.path.join(crawl, "not-a-warc.warc.gz"), "wb") as fh:
        fh.write(gzip.compress(b"<html>a plain gzip file, not a WARC</html>\n" * 20))

    # sources: malformed lines among the real documents; a book repeated (exact dup) and one copied into wiki
    books = [json.loads(line)["text"] for line in open(tiny["books"], encoding="utf-8")]
    wiki = [json.loads(line)["text"] for line in open(tiny["wiki"], encoding="utf-8")]
    books_path, wiki_path = os.path.join(root, "books.jsonl"), os.path.join(root, "wiki.jsonl")
    with open(books_path, "wb") as fh:
        for t in books + [books[0]]:
            fh.write(json.dumps({"text": t}).encode() + b"\n")
        fh.write(b"{not json\n")
        fh.write(json.dumps({"text": ""}).encode() + b"\n")
        fh.write(json.dumps({"text": 42}).encode() + b"\n")
        fh.write(json.dumps({"title": "no text field"}).encode() + b"\n")
        fh.write(b'{"text": "invalid \xff utf-8 bytes in an otherwise fine line of text"}\n')
    # a literal end-of-text marker inside a document: it must stay text, never become the special token
    marker = wiki[5][:600] + " <|endoftext|> " + wiki[5][600:]
    bench = [json.loads(line)["text"] for line in open(tiny["bench"], encoding="utf-8")]
    # a document the benchmark cuts into more than max_splits pieces: dropped whole by decontamination
    shredded = " ".join(
        f"Filler paragraph {i} " + "with ordinary words " * 50 + bench[0][i * 20 : i * 20 + 300] for i in range(12)
    )
    with open(wiki_path, "wb") as fh:
        for t in wiki[:5] + [marker] + wiki[6:] + [books[1], shredded]:
            fh.write(json.dumps({"text": t}).encode() + b"\n")
        fh.write(json.dumps({"text": "   "}).encode() + b"\n")
    return {
        "crawl": tiny["crawl"] + [os.path.join(crawl, "*.warc.gz")],
        "books": books_path,
        "wiki": wiki_path,
        "marker_doc": marker,
    }
