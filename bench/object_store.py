"""What the object-store path costs: ``ccgpt curate`` and ``ccgpt dedup`` with inputs and outputs on an S3
API against the same stages on local disk.

Run by hand from the repository root::

    .venv/bin/python -m bench.object_store --pages 300 --docs 20000

The S3 API is ``moto_server`` on 127.0.0.1 (the ``moto[server]`` test extra): a local emulation, so the
figures are the cost of the object-store *code path* (Beam's S3 filesystem, boto3 requests, uploads of whole
files, the commit record's checksums read back over HTTP), not of a real store's latency or bandwidth. Both
sides run in this process with Beam's local runner and 2 worker processes:

- **curate**: one per-record-gzip WARC of ``--pages`` real article pages (``bench.curate.build_warc``),
  resiliparse extractor; local WARC -> local folder vs ``s3://`` WARC -> ``s3://`` folder.
- **dedup**: the labelled synthetic corpus of ``bench.dedup`` (``--docs`` documents, two Parquet files);
  the worst case for the store, since dedup hands its sketches, per-document entries, component edges and
  labels between its steps as files (``pipeline/dedup/work.py``).

Each side runs ``--repeat`` times (``force``: no skip) and the best time counts. Prints seconds for each, the
object-store run's time as a multiple of the local one (``1.40x`` = 40 % slower), and the bytes committed.
Results: ``docs/BENCHMARKS.md``, section ``object-store`` (``python -m bench.run_all`` writes it).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def start_s3() -> tuple[subprocess.Popen, str]:
    """``moto_server`` on a free port, with dummy credentials in the environment (inherited by Beam's workers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise SystemExit(f"moto_server did not start on {endpoint}")
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return proc, endpoint


def best_of(repeat: int, run) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - t0)
    return best, result


def committed_bytes(stats) -> int:
    return sum(f["size"] for f in stats.extra["files"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=300, help="article pages in the curate WARC")
    ap.add_argument("--docs", type=int, default=20000, help="documents in the dedup corpus")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side; the best counts")
    args = ap.parse_args(argv)

    import pyarrow.fs as pafs

    from bench.curate import build_warc
    from bench.dedup import make_corpus, write_corpus
    from pipeline.curate import CurateConfig, run_curate
    from pipeline.dedup import DedupConfig, run_dedup
    from pipeline.logs import setup_logging
    from pipeline.runner import RunnerConfig
    from schemas.config import from_dict

    setup_logging()  # Beam's and the workers' INFO lines stay out of the page, as in `ccgpt`
    server, endpoint = start_s3()
    try:
        store = pafs.S3FileSystem(
            endpoint_override=endpoint.split("://", 1)[1], scheme="http", region="us-east-1", allow_bucket_creation=True
        )
        store.create_dir("bench")
        runner = RunnerConfig(runner="local", num_workers=2)
        rows = []
        with tempfile.TemporaryDirectory(prefix="ccgpt-bench-store-") as work:
            warc = os.path.join(work, "pages.warc.gz")
            build_warc(warc, args.pages)
            pafs.copy_files(warc, "bench/crawl/pages.warc.gz", destination_filesystem=store)
            cfg = from_dict(CurateConfig, {"extract": {"extractor": "resiliparse"}, "write_raw": False})

            def curate(inp: str, out: str):
                return lambda: run_curate([inp], out, cfg, runner, force=True)

            local = best_of(args.repeat, curate(warc, os.path.join(work, "curate")))
            remote = best_of(args.repeat, curate("s3://bench/crawl/pages.warc.gz", "s3://bench/curate"))
            rows.append(("curate", f"{args.pages} pages", local, remote))

            write_corpus(make_corpus(args.docs), os.path.join(work, "corpus"))
            pafs.copy_files(os.path.join(work, "corpus", "parquet"), "bench/corpus", destination_filesystem=store)

            def dedup(inp: str, out: str):
                return lambda: run_dedup([inp], out, DedupConfig(), runner, force=True)

            local = best_of(args.repeat, dedup(os.path.join(work, "corpus", "parquet"), os.path.join(work, "dedup")))
            remote = best_of(args.repeat, dedup("s3://bench/corpus", "s3://bench/dedup"))
            rows.append(("dedup", f"{args.docs} documents", local, remote))
    finally:
        server.terminate()
        server.wait()

    print(f"{'stage':<8}{'input':>18}{'local s':>10}{'s3 s':>10}{'committed':>12}  s3 / local")
    for stage, size, (t_local, s_local), (t_remote, s_remote) in rows:
        assert (s_local.read, s_local.kept) == (s_remote.read, s_remote.kept), stage  # the same work on both sides
        mib = committed_bytes(s_remote) / 2**20
        print(f"{stage:<8}{size:>18}{t_local:>10.1f}{t_remote:>10.1f}{mib:>9.1f} MiB  {t_remote / t_local:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
