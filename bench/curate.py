"""Throughput of ``ccgpt curate`` vs datatrove's WarcReader + Trafilatura + the same filters, same input.

Run by hand from the repository root::

    .venv/bin/python -m bench.curate --pages 300

The input is a per-record-gzip WARC built here from the real article pages in
``../shared/data/html/newspaper.tar.gz`` (repeated to ``--pages`` responses), so both sides read the same
bytes. Both run in one process on one core: ccgpt through Beam's local runner (1 worker, so Beam's own
overhead is included), datatrove by chaining its pipeline steps' ``run`` generators (no executor) behind a warcio loop equivalent
to its WarcReader (which needs cchardet/python-magic, not installed here). ccgpt
additionally runs language id (``languages=[]``, ``threshold=0``: the model runs, nothing is dropped);
datatrove's LanguageFilter is left out because it downloads its model. Prints pages/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from io import BytesIO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def build_warc(path: str, pages: int) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    html = []
    with tarfile.open(os.path.join(SHARED, "html", "newspaper.tar.gz")) as tf:
        for m in tf:
            if m.name.startswith("./tests/data/html/") and m.name.endswith(".html"):
                html.append((os.path.basename(m.name), tf.extractfile(m).read()))
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for i in range(pages):
            name, body = html[i % len(html)]
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            rec = w.create_warc_record(f"http://bench.example/{i}/{name}", "response", payload=BytesIO(body), http_headers=headers)
            w.write_record(rec)
    return pages


def run_ccgpt(warc: str, out: str) -> tuple[float, int]:
    from pipeline.curate import CurateConfig, run_curate
    from pipeline.runner import RunnerConfig

    cfg = CurateConfig(write_raw=False)
    cfg.langid.languages = []
    cfg.langid.threshold = 0.0
    t0 = time.perf_counter()
    stats = run_curate([warc], out, cfg, RunnerConfig(runner="local", num_workers=1, running_mode="in_memory"), force=True)
    return time.perf_counter() - t0, stats.kept


def _warc_documents(folder: str):
    """What datatrove's WarcReader does (warcio, decode, one Document per HTML response). WarcReader itself
    needs ``cchardet`` and ``python-magic``, which ccgpt does not install, so its loop is reproduced here."""
    from datatrove.data import Document
    from warcio.archiveiterator import ArchiveIterator

    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type != "response" or "html" not in (rec.http_headers.get_header("Content-Type") or ""):
                    continue
                html = rec.content_stream().read().decode("utf-8", "replace")
                yield Document(text=html, id=rec.rec_headers.get_header("WARC-Record-ID"),
                               metadata={"url": rec.rec_headers.get_header("WARC-Target-URI")})


def run_datatrove(folder: str) -> tuple[float, int]:
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    steps = [
        Trafilatura(favour_precision=True, timeout=10.0),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]
    t0 = time.perf_counter()
    data = _warc_documents(folder)
    for step in steps:
        data = step.run(data)
    kept = sum(1 for _ in data)
    return time.perf_counter() - t0, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "in")
        os.makedirs(folder)
        warc = os.path.join(folder, "bench.warc.gz")
        n = build_warc(warc, args.pages)
        import resource

        dt_s, dt_kept = run_datatrove(folder)
        rss_dt = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cc_s, cc_kept = run_ccgpt(warc, os.path.join(tmp, "out"))
        rss_all = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pages: {n}")
    print(f"ccgpt curate : {n / cc_s:8.1f} pages/s ({cc_s:.1f} s, kept {cc_kept})")
    print(f"datatrove    : {n / dt_s:8.1f} pages/s ({dt_s:.1f} s, kept {dt_kept})")
    print(f"ratio ccgpt/datatrove: {dt_s / cc_s:.2f}x (one core each: pages/s = pages/s per core)")
    print(f"peak RSS: {rss_dt:.0f} MiB after datatrove, {rss_all:.0f} MiB after both (one process)")


if __name__ == "__main__":
    main()
