"""WARC files over https:// survive what Common Crawl's endpoint does under load: 503 answers and connections
dropped in the middle of a file. A local HTTP server with range support plays that endpoint."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import pipeline.http
from pipeline.http import RetryingReader
from pipeline.read import ReadConfig, iter_warc


class FlakyServer:
    """Serves one file with HEAD and Range GETs; ``fail_first`` requests get a 503 and ``cut_once`` makes the
    first ranged GET past the start send half its body and drop the connection. ``missing`` paths get 404."""

    def __init__(self, data: bytes, fail_first: int = 0, cut_once: bool = False):
        self.data, self.fail_left, self.cut_left = data, fail_first, int(cut_once)
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _range(self):
                header = self.headers.get("Range")
                if not header:
                    return 0, len(outer.data) - 1
                start, _, end = header.removeprefix("bytes=").partition("-")
                return int(start), min(int(end) if end else len(outer.data) - 1, len(outer.data) - 1)

            def _answer(self, body: bool):
                outer.requests.append(f"{self.command} {self.headers.get('Range')}")
                if self.path.endswith("missing.warc.gz"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = self._range()
                chunk = outer.data[start : end + 1]
                self.send_response(206 if self.headers.get("Range") else 200)
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                if self.headers.get("Range"):
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(outer.data)}")
                self.end_headers()
                if not body:
                    return
                if outer.cut_left and start > 0:
                    outer.cut_left -= 1
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def warc_bytes(shared_data):
    with open(os.path.join(shared_data, "warc", "cc-main-2024-22-whirlwind", "whirlwind.warc.gz"), "rb") as fh:
        return fh.read()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(pipeline.http, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(pipeline.http, "BLOCK_SIZE", 4096)  # several range requests per test file


def _events(path: str) -> list[tuple]:
    out = []
    for e in iter_warc(path, ReadConfig()):
        info = {k: v for k, v in e.info.items() if k not in ("source_file", "id", "file", "payload")}
        out.append((e.kind, e.reason, info.get("source_offset"), info.get("url"), len(e.info.get("payload") or b"")))
    return out


def test_503_answers_and_a_dropped_connection_are_retried(warc_bytes, tmp_path):
    local = tmp_path / "w.warc.gz"
    local.write_bytes(warc_bytes)
    server = FlakyServer(warc_bytes, fail_first=4, cut_once=True)
    try:
        reader = RetryingReader(server.url + "/w.warc.gz", backoff=0.01)
        reader.read(1000)
        reader.seek(len(warc_bytes) // 3)
        assert reader.read() == warc_bytes[len(warc_bytes) // 3 :]
        assert reader.retries == 3  # two opens answered 503 (size asked by HEAD, then GET), one cut connection
        server.fail_left, server.cut_left = 4, 1
        assert _events(server.url + "/w.warc.gz") == _events(str(local))
    finally:
        server.close()


def test_a_missing_file_is_not_retried_and_is_counted_unreadable(warc_bytes):
    server = FlakyServer(warc_bytes)
    try:
        events = list(iter_warc(server.url + "/missing.warc.gz", ReadConfig()))
        assert [(e.kind, e.reason) for e in events] == [("failed", "unreadable_file")]
        assert len(server.requests) <= 2  # no retry loop on a 404
    finally:
        server.close()


def test_an_endpoint_that_keeps_failing_gives_up(warc_bytes):
    server = FlakyServer(warc_bytes, fail_first=100)
    try:
        events = list(iter_warc(server.url + "/w.warc.gz", ReadConfig()))
        assert [(e.kind, e.reason) for e in events] == [("failed", "unreadable_file")]
        assert len(server.requests) >= pipeline.http.ATTEMPTS
    finally:
        server.close()
