"""What a kill costs ``ccgpt curate`` now that it commits by input-file group (``pipeline/ledger.py``).

Run by hand from the repository root::

    .venv/bin/python -m bench.resume                  # 40 WARC files, a full run of several minutes
    .venv/bin/python -m bench.resume --quick          # a dry run of the same steps on 8 small files

The input is ``--warcs`` per-record-gzip WARC files of ``--pages`` responses each, built here from the real web
pages of ``../shared/data/html/trafilatura-eval.tar.gz`` and ``newspaper.tar.gz``, each capture mutated (its
title and a closing paragraph name the file and page, its URL is its own), so no two responses are the same
bytes. Curate runs as the ``ccgpt curate`` command (resiliparse extractor, ``--group-bytes`` of input per
group, Beam's local runner with ``--workers`` processes), three times on the same input:

1. **uninterrupted**: the full run's wall time;
2. **killed**: the same command into a new folder, sent SIGKILL once ``--kill-at`` (0.9) of the input is read,
   by the progress the ledger shows (committed groups, and the group under way at the run's rate so far): what
   a crash mid-crawl leaves (the groups committed by then, one group part-written);
3. **rerun**: the same command again into the killed folder: it reads only the groups not committed.

Prints each wall time, how many groups the kill left committed, the rerun's time as a fraction of the full
run's (``0.12x``: the acceptance bar is 0.25x), and whether the rerun's outputs are byte-identical to the
uninterrupted run's (the document tables, curate's raw sample and its side files; ``stats.json`` but for the
attempt id and the file list, whose per-group side files hold lines in arrival order). With ``--one-group`` it
also runs the whole input as one group (one Beam pipeline, the stage's only commit), which is what grouping
costs an uninterrupted run. Results: ``docs/BENCHMARKS.md``, section ``resume`` (``python -m bench.run_all``
writes it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from urllib.parse import quote

from pipeline.commit import untagged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def real_pages() -> list[tuple[str, bytes]]:
    """Every HTML page of the trafilatura evaluation set and newspaper's tests, by name."""
    pages = []
    for archive, folder in (("trafilatura-eval.tar.gz", "eval/"), ("newspaper.tar.gz", "./tests/data/html/")):
        with tarfile.open(os.path.join(SHARED, "html", archive)) as tf:
            for m in tf:
                if m.isfile() and m.name.startswith(folder) and m.name.endswith(".html"):
                    pages.append((os.path.basename(m.name), tf.extractfile(m).read()))
    return sorted(pages)


def build_warcs(folder: str, warcs: int, per_warc: int) -> int:
    """``warcs`` WARC files of ``per_warc`` mutated real pages each; returns their total bytes."""
    from pipeline.sample import Page, write_warc

    html = real_pages()
    total = 0
    for f in range(warcs):
        pages = []
        for j in range(per_warc):
            name, body = html[(f * per_warc + j) % len(html)]
            tag = f"{f:03d}-{j:04d}".encode()
            body = body.replace(b"</title>", b" (" + tag + b")</title>", 1)
            body = body.replace(b"</body>", b"<p>Archived copy " + tag + b" of " + name.encode() + b".</p></body>", 1)
            url = f"https://bench-{f:03d}.example/{j}/{quote(name)}"
            pages.append(Page(url, body, "text/html; charset=utf-8", 1700000000 + j, f"bench:{name}"))
        path = os.path.join(folder, f"crawl-{f:03d}.warc.gz")
        write_warc(path, pages, {"software": "bench.resume"})
        total += os.path.getsize(path)
    return total


def command(crawl: str, out: str, group_bytes: int, workers: int) -> list[str]:
    flags = ["--read.group_bytes", str(group_bytes), "--extract.extractor", "resiliparse", "--no-progress"]
    return [sys.executable, "-m", "pipeline.cli", "curate", crawl, "--out", out, *flags, "--num-workers", str(workers)]


def run(cmd: list[str]) -> float:
    """Wall seconds of ``cmd``, run to its end."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.decode()[-3000:]}")
    return time.perf_counter() - t0


def run_and_kill(cmd: list[str], out: str, total: int, at: float) -> tuple[float, float]:
    """Run ``cmd`` and SIGKILL it once ``at`` of the input is read, by the progress the ledger shows: the bytes
    of the committed groups plus, for the group under way, the bytes read at the rate the run has had so far
    (a kill by wall time alone would land elsewhere whenever the machine's load changes). Returns the wall
    seconds and the share of the input estimated read at the kill."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        records = glob.glob(os.path.join(out, "groups", "g*.json"))
        done = last = 0.0
        for path in records:
            with open(path, encoding="utf-8") as fh:
                done += json.load(fh)["bytes"]
            last = max(last, os.path.getmtime(path))
        now = time.perf_counter()
        if records:
            since = time.time() - last
            estimate = done + done / max(now - t0 - since, 1e-9) * since
            if estimate >= at * total:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return now - t0, estimate / total
        time.sleep(0.2)
    raise SystemExit("the run ended before the kill: lower --kill-at or raise the input size")


def outputs(out: str) -> dict[str, bytes]:
    """A curate folder's final outputs: every file but the groups' own (ledger records, per-group side files), by
    its name without the attempt tag (each attempt tags the files it writes), ``stats.json`` without its attempt
    and file list."""
    files = {}
    for path in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        rel = os.path.relpath(path, out)
        if os.path.isfile(path) and not rel.startswith("groups" + os.sep):
            with open(path, "rb") as fh:
                files[untagged(rel)] = fh.read()
    stats = json.loads(files.pop("stats.json"))
    for key in ("attempt", "files"):
        stats.pop(key)
    files["stats.json"] = json.dumps(stats, sort_keys=True).encode()
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warcs", type=int, default=40, help="WARC files in the crawl")
    ap.add_argument("--pages", type=int, default=45, help="responses per WARC file")
    ap.add_argument("--group-bytes", type=int, default=0, help="input bytes per group (0: two WARC files' worth)")
    ap.add_argument("--workers", type=int, default=2, help="local runner worker processes")
    ap.add_argument("--kill-at", type=float, default=0.9, help="kill once this share of the input is read")
    ap.add_argument("--one-group", action="store_true", help="also time the whole input as one group")
    ap.add_argument("--quick", action="store_true", help="a dry run: 8 WARC files of 4 pages")
    args = ap.parse_args(argv)
    if args.quick:
        args.warcs, args.pages = 8, 4
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        crawl = os.path.join(tmp, "crawl")
        os.makedirs(crawl)
        total = build_warcs(crawl, args.warcs, args.pages)
        group_bytes = args.group_bytes or -(-2 * total // args.warcs)
        print(f"input: {args.warcs} WARC files, {args.warcs * args.pages} responses, {total / 2**20:.1f} MiB")
        print(f"groups of up to {group_bytes / 2**20:.2f} MiB; local runner, {args.workers} worker processes")

        clean = os.path.join(tmp, "clean")
        full = run(command(crawl, clean, group_bytes, args.workers))
        with open(os.path.join(clean, "stats.json"), encoding="utf-8") as fh:
            stats = json.load(fh)
        groups = stats["input_groups"]
        print(f"uninterrupted: {full:.1f} s, {groups} groups, {stats['read']} records, {stats['kept']} kept")
        if args.one_group:
            whole = run(command(crawl, os.path.join(tmp, "whole"), 2 * total, args.workers))
            print(f"one group (one pipeline, one commit): {whole:.1f} s; grouped / one group: {full / whole:.2f}x")

        killed = os.path.join(tmp, "killed")
        at, share = run_and_kill(command(crawl, killed, group_bytes, args.workers), killed, total, args.kill_at)
        done = len(glob.glob(os.path.join(killed, "groups", "g*.json")))
        print(
            f"killed after {at:.1f} s ({at / full:.0%} of the full run's time, {share:.0%} of the input read by the "
            f"ledger's progress): {done} of {groups} groups committed"
        )
        rerun = run(command(crawl, killed, group_bytes, args.workers))
        print(f"rerun after the kill: {rerun:.1f} s")
        print(f"rerun / uninterrupted: {rerun / full:.2f}x (the bar: at most 0.25x)")
        same = outputs(killed) == outputs(clean)
        print(f"rerun outputs byte-identical to the uninterrupted run's: {'yes' if same else 'NO'}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
