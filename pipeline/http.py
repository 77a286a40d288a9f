"""Reading WARC files over ``https://`` (Common Crawl's public endpoint) with retries.

Beam has no HTTP filesystem, so these inputs go through fsspec's (range requests, a block cache). Common
Crawl's endpoint answers 503 "slow down" under load and connections drop in the middle of a 1 GB file; one
such error must not turn a whole WARC into ``unreadable_file``. :class:`RetryingReader` retries opening and
reading on a connection error, a timeout or a 429/5xx answer, with exponential backoff, and resumes a broken
read at the byte it had reached (a range request, or reading past the bytes already delivered when the
server gives no ranges). A 404, a 403 or the last failed attempt is raised, and the reader counts the file
as ``unreadable_file`` or ``truncated_file`` as for any other input.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
ATTEMPTS = 6
BACKOFF_SECONDS = 1.0  # 1, 2, 4, 8, 16 s between the six attempts: about half a minute in all
BLOCK_SIZE = 8 << 20  # bytes per range request (fsspec's read-ahead block)

log = logging.getLogger(__name__)


def retriable(error: BaseException | None) -> bool:
    """Whether an HTTP error may go away on its own: dropped connections, timeouts, 408/425/429/5xx.

    fsspec reports any failure to learn a file's size as ``FileNotFoundError``, a 503 included, so the
    cause chain decides: a ``FileNotFoundError`` is retried only when what caused it is."""
    import aiohttp

    if error is None:
        return False
    if isinstance(error, aiohttp.ClientResponseError):
        return error.status in RETRY_STATUS
    if isinstance(error, FileNotFoundError):
        return retriable(error.__cause__)
    if isinstance(error, PermissionError):
        return False
    return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | TimeoutError | ConnectionError)


class RetryingReader(io.RawIOBase):
    """A read-only, seekable (when the server allows ranges) file object for one URL that survives transient
    errors. ``attempts`` tries per open or read, sleeping ``backoff * 2**k`` seconds between them."""

    def __init__(self, url: str, attempts: int | None = None, backoff: float | None = None):
        super().__init__()
        self.url = url
        self.attempts = attempts or ATTEMPTS
        self.backoff = BACKOFF_SECONDS if backoff is None else backoff
        self.retries = 0  # transient errors survived, for logs and tests
        self._pos = 0
        self._fh: Any = self._retry(self._open, "open")

    def _open(self) -> Any:
        import fsspec

        fh = fsspec.open(self.url, "rb", block_size=BLOCK_SIZE, client_kwargs={"trust_env": True}).open()
        if self._pos:
            if fh.seekable():
                fh.seek(self._pos)
            else:  # no range requests: skip what was already delivered
                left = self._pos
                while left:
                    chunk = fh.read(min(left, 1 << 20))
                    if not chunk:
                        raise ConnectionError(f"{self.url}: the reopened stream ended before byte {self._pos}")
                    left -= len(chunk)
        return fh

    def _retry(self, action, what: str) -> Any:
        for attempt in range(self.attempts):
            try:
                return action()
            except Exception as e:  # noqa: BLE001 - only retriable errors are retried, the rest re-raised
                if not retriable(e) or attempt == self.attempts - 1:
                    raise
                self.retries += 1
                delay = self.backoff * 2**attempt
                log.warning("%s: %s failed (%s: %s); retrying in %.1f s", self.url, what, type(e).__name__, e, delay)
                time.sleep(delay)
                if what == "read":
                    self._reopen()
        raise AssertionError("unreachable")

    def _reopen(self) -> None:
        try:
            self._fh.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass
        self._fh = self._retry(self._open, "open")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._retry(lambda: self._fh.read(len(buffer)), "read")
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def seekable(self) -> bool:
        return bool(self._fh.seekable())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._fh.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            try:
                self._fh.close()
            finally:
                super().close()
