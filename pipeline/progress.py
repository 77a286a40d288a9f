"""Terminal progress for Beam stages: records done, rate and ETA while a pipeline runs.

Beam's local runners print nothing until a pipeline finishes, and their metrics are only readable at the end.
A stage that reads a crawl segment for an hour must show it is alive. Every stage already emits one outcome
per input record (see :mod:`pipeline.accounting`), so the outcome stream *is* the progress: a pass-through
DoFn counts it on the workers and flushes its count to a small JSON file (at most once a second, atomically)
in a folder the driver watches; a driver thread sums the files and prints.

This works wherever workers share the driver's file system: the local runner (in-process or multi-process)
and the portable runner with the loopback environment. On remote runners (Dataflow, Flink, Spark) the folder
is not visible to workers, so counting is switched off there and their own UIs show progress.

On a terminal the line is redrawn in place; otherwise (Airflow logs, CI) one structured ``key=value`` line
is printed every ``interval`` seconds, so logs stay short and greppable.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, TextIO

import apache_beam as beam

LOCAL_RUNNERS = ("local", "portable")


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class CountProgress(beam.DoFn):
    """Pass-through DoFn counting elements into ``folder`` (one file per DoFn instance, rewritten atomically)."""

    def __init__(self, folder: str | None, every: float = 1.0):
        self.folder = folder
        self.every = every

    def setup(self):
        self._n = 0
        self._name = f"{os.getpid()}-{uuid.uuid4().hex}.json"
        self._last = 0.0

    def process(self, element):
        self._n += 1
        if self.folder and time.monotonic() - self._last >= self.every:
            self._flush()
        yield element

    def finish_bundle(self):
        if self.folder:
            self._flush()

    def _flush(self):
        self._last = time.monotonic()
        path = os.path.join(self.folder, self._name)
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"n": self._n}, fh)
            os.replace(tmp, path)
        except OSError:  # the driver removed the folder (stage over): progress is best effort
            pass


def read_count(folder: str) -> int:
    total = 0
    for path in glob.glob(os.path.join(folder, "*.json")):
        try:
            with open(path, encoding="utf-8") as fh:
                total += int(json.load(fh)["n"])
        except (OSError, ValueError, KeyError):
            continue  # a file being replaced: counted at the next poll
    return total


class Progress:
    """Driver side: owns the count folder, polls it from a thread, prints ``label: N records, rate, ETA``.

    ``total`` (records expected, when known up front, e.g. Parquet row counts) turns on percent and ETA.
    Use as a context manager around the pipeline run; the final line gives the count and the elapsed time.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "records",
        interval: float | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
    ):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (1.0 if self.tty else 30.0)
        self.folder = tempfile.mkdtemp(prefix="ccgpt-progress-") if enabled else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self.last: dict[str, Any] = {}

    def counter(self) -> CountProgress:
        return CountProgress(self.folder)

    def snapshot(self) -> dict[str, Any]:
        n = read_count(self.folder) if self.folder else 0
        elapsed = max(time.monotonic() - self._started, 1e-9)
        snap: dict[str, Any] = {
            "stage": self.label,
            self.unit: n,
            "elapsed": format_seconds(elapsed),
            "rate": round(n / elapsed, 1),
        }
        if self.total:
            snap["total"] = self.total
            snap["percent"] = round(100.0 * min(n, self.total) / self.total, 1)
            if 0 < n < self.total:
                snap["eta"] = format_seconds((self.total - n) * elapsed / n)
        self.last = snap
        return snap

    def line(self, snap: dict[str, Any]) -> str:
        if self.tty:
            parts = [f"[{snap['stage']}] {snap[self.unit]:,} {self.unit}"]
            if "total" in snap:
                parts[0] += f" / {snap['total']:,} ({snap['percent']}%)"
            parts.append(f"{snap['rate']:,}/s")
            parts.append(f"elapsed {snap['elapsed']}")
            if "eta" in snap:
                parts.append(f"ETA {snap['eta']}")
            return " | ".join(parts)
        return "progress " + " ".join(f"{k}={v}" for k, v in snap.items())

    def _emit(self, final: bool = False) -> None:
        text = self.line(self.snapshot())
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.folder:
            self._thread = threading.Thread(target=self._loop, name=f"progress-{self.label}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if exc[0] is None:
                self._emit(final=True)
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
