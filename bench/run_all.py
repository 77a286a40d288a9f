"""Run every benchmark in ``bench/`` and write ``docs/BENCHMARKS.md``: each ratio against its peer, with the date
and the machine of the run that measured it.

``docs/BENCHMARKS.md`` is the one place the project's measured figures live: README, ARCHITECTURE.md and
DEDUP.md link to its sections instead of copying numbers (``tests/test_docs_figures.py`` checks that), and
the bench scripts' docstrings say what they measure, not what they measured.

Run by hand from the repository root (minutes to an hour, depending on ``--size``)::

    .venv/bin/python -m bench.run_all                 # every benchmark this machine can run, at its quick size
    .venv/bin/python -m bench.run_all --size full     # each benchmark's full arguments (adds the long ones)
    .venv/bin/python -m bench.run_all --only curate dedup   # rerun these, keep the page's other sections

Each benchmark runs in its own subprocess (so one's peak RSS or crash cannot touch the others) with the
arguments in ``BENCHES``. Benchmarks print their comparisons as lines holding ``<number>x``; those lines are
the page's summary, and the whole output follows under each benchmark so no figure is lost in parsing. A
benchmark that fails or runs out of time is listed with its exit status and the end of its output: the page
never hides a missing result.

The page is updated, never replaced: every section this run did not produce stays as it was, with the date
and machine of the run that wrote it. That keeps what this machine cannot measure (a GPU benchmark on a
CPU machine, a scale run too long for ``--size quick``) and any section added by hand.

Timings vary with machine load. The page records the load average before and after each benchmark so a
reader can judge that; compare ratios, which are measured inside one run, rather than absolute rates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATIO = re.compile(r"(?<![\w.])\d+(?:\.\d+)?x\b")
PAGE_INTRO = [
    "# Benchmarks",
    "",
    "Written by `python -m bench.run_all` (see its docstring): the project's measured figures live here, and the",
    "other documents link to these sections. Each section is one benchmark run in its own process and names the",
    "date and machine of that run; a run updates the sections it measures and keeps the others (a GPU benchmark",
    "on a CPU machine, a scale run too long to repeat). Ratios compare ccgpt with its peer measured in the same",
    "run, on the same machine and data.",
]


@dataclass
class Bench:
    name: str
    what: str
    quick: list[str]
    full: list[str]
    module: str = ""  # the bench module when it is not bench.<name>
    needs: str = ""  # "cuda": measured only where torch sees a GPU; elsewhere the page keeps its section
    full_only: bool = False  # too long for --size quick: runs with --size full or --only NAME

    @property
    def command(self) -> str:
        return f"bench.{self.module or self.name}"


BENCHES = [
    Bench(
        "curate",
        "WARC → extract → language ID → filters, ccgpt vs datatrove (same filters), one core each; "
        "extraction quality on trafilatura's evaluation snippets",
        ["--pages", "150", "--eval-pages", "150"],
        [],
    ),
    Bench(
        "quality",
        "fastText quality scoring, ccgpt vs datatrove's FastTextClassifierFilter (same model)",
        ["--docs", "1500", "--repeat", "2"],
        [],
    ),
    Bench(
        "dedup",
        "exact + MinHash-LSH dedup, ccgpt (Beam local runner) vs datasketch MinHashLSH vs datatrove",
        ["--sizes", "10000", "--no-news"],
        ["--sizes", "10000", "40000", "100000"],
    ),
    Bench(
        "dedup-scale",
        "ccgpt dedup alone from 10k to 1M documents: time, docs/s, peak memory and F1 (the scale curve)",
        [],
        ["--sizes", "10000", "40000", "100000", "300000", "1000000", "--tools", "ccgpt", "--no-news"],
        module="dedup",
        full_only=True,
    ),
    Bench(
        "dedup-settings",
        "ccgpt dedup (Beam local runner) with the boilerplate-aware defaults (`ccgpt`: boilerplate lines counted "
        "per host, core sketches, containment verification) vs the earlier plain settings (`ccgpt-plain`: full "
        "texts, Jaccard) on the same synthetic corpus in one run: docs/s, peak memory and F1",
        ["--sizes", "20000", "--tools", "ccgpt-plain", "ccgpt", "--no-news"],
        ["--sizes", "100000", "--tools", "ccgpt-plain", "ccgpt", "--no-news"],
        module="dedup",
    ),
    Bench(
        "dedup-labelled",
        "near-duplicate quality on the labelled sets (syndicated-news v1 and v2, the trafilatura set that "
        "`bench.dedup_sets` builds, the synthetic corpus) in one process (`ccgpt dedup eval`): the Beam stage's "
        "earlier plain settings (`plain`: full texts, Jaccard) vs the boilerplate-aware defaults (`default`), and a "
        "boilerplate.min_docs sweep; the trafilatura set also through the Beam stage itself (`via: beam` rows), "
        "beside the eval",
        ["--labelled"],
        ["--labelled"],
        module="dedup",
    ),
    Bench(
        "dedup-crawl",
        "dedup removal rates on the demo's real crawl (the sample `ccgpt sample` builds from registry packages, "
        "curated as the demo curates it): the earlier plain settings (`plain`: full texts, Jaccard) vs the "
        "boilerplate-aware defaults (`default`): exact and near duplicates removed, template-line share, and the "
        "most frequent boilerplate lines",
        [],
        [],
        module="dedup_crawl",
    ),
    Bench(
        "object-store",
        "curate and dedup with inputs and outputs on an S3 API (moto_server, local emulation) vs local disk: "
        "the cost of the object-store code path",
        ["--pages", "300", "--docs", "20000"],
        ["--pages", "1000", "--docs", "100000"],
        module="object_store",
    ),
    Bench(
        "resume",
        "`ccgpt curate` over 40 WARC files of real pages, killed once 90 % of its input is read and rerun: "
        "what the rerun costs against the full run, and whether its outputs are the uninterrupted run's bytes; "
        "and the same input as one group (one pipeline, one commit): what committing by group costs a run",
        ["--quick"],
        ["--one-group"],
        full_only=True,
    ),
    Bench(
        "shards", "tokenize + pack (ccgpt mix vs datatrove DocumentTokenizer), random-row reads vs np.memmap", [], []
    ),
    Bench("train", "training step throughput and peak memory, ccgpt vs HF transformers GPT2LMHeadModel", [], []),
    Bench(
        "train-cuda",
        "training step throughput, peak memory and MFU on a GPU (GPT-3 Small, bf16), ccgpt vs HF "
        "GPT2LMHeadModel; ccgpt's fused cross-entropy and Triton LayerNorm against eager PyTorch",
        ["--device", "cuda"],
        ["--device", "cuda"],
        module="train",
        needs="cuda",
    ),
    Bench(
        "demo",
        "`ccgpt run configs/demo.yaml` end to end (sample → report, the sample's downloads cached): seconds "
        "per stage and in all",
        [],
        [],
        full_only=True,
    ),
    Bench(
        "scale",
        "curate → quality filter → dedup → mix at 10k, 30k and 100k documents: time, CPU time, per-process peak "
        "memory and shuffle bytes per stage; the page with the cost of one crawl is docs/SCALE.md",
        [],
        [],
        full_only=True,
    ),
    Bench(
        "eval",
        "zero-shot evaluation (BLiMP + WikiText-2), ccgpt eval vs lm-eval --model hf on the same untrained model",
        ["--blimp-pairs", "20", "--wikitext-articles", "4"],
        [],
    ),
]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def why_not(b: Bench, size: str, only: list[str] | None) -> str:
    """Why this run leaves ``b`` out (its section is kept), or "" when it runs it."""
    if only and b.name not in only:
        return "not asked for (--only)"
    if b.needs == "cuda" and not cuda_available():
        return "needs a CUDA GPU"
    if b.full_only and size == "quick" and not only:
        return "too long for --size quick (run with --size full or --only " + b.name + ")"
    return ""


def machine() -> dict[str, str]:
    """What the figures were measured on: CPU model and count, memory, GPU if torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kb = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "gpu": gpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def describe(info: dict[str, str]) -> str:
    return f"{info['cpu']}, {info['cores']} cores, {info['memory']} memory, GPU: {info['gpu']}"


def load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def ratio_lines(output: str) -> list[str]:
    """The lines of a benchmark's output that state a ratio (``1.48x``), stripped."""
    return [ln.strip() for ln in output.splitlines() if RATIO.search(ln)]


def run_bench(b: Bench, size: str, timeout: float) -> dict:
    args = b.quick if size == "quick" else b.full
    cmd = [sys.executable, "-m", b.command, *args]
    before, t0 = load(), time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        rc, output = proc.returncode, proc.stdout + (("\n" + proc.stderr) if proc.returncode else "")
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    return {
        "bench": b,
        "cmd": " ".join(["python", "-m", b.command, *args]),
        "rc": rc,
        "seconds": round(time.time() - t0, 1),
        "output": output.rstrip(),
        "load_before": before,
        "load_after": load(),
    }


def render(results: list[dict], info: dict[str, str], when: str) -> str:
    """A page holding ``results``, each row and section naming the date and machine it was measured on."""
    where = describe(info)
    out = [
        *PAGE_INTRO,
        "",
        f"- date: {when}",
        f"- machine: {where}",
        f"- software: Python {info['python']}, {info['os']}",
        "",
        "| benchmark | status | measured | seconds | load before / after (1/5/15 min) | ratios |",
        "|---|---|---|---:|---|---|",
    ]
    for r in results:
        status = "ok" if r["rc"] == 0 else f"failed ({r['rc']})"
        ratios = "<br>".join(x.replace("|", "/") for x in ratio_lines(r["output"])[:6]) or "—"
        out.append(
            f"| {r['bench'].name} | {status} | {when}, {info['cores']} cores, GPU: {info['gpu']} | {r['seconds']} "
            f"| {r['load_before']} → {r['load_after']} | {ratios} |"
        )
    for r in results:
        out += ["", f"## {r['bench'].name}", "", r["bench"].what + ".", "", f"Run {when} on {where}: `{r['cmd']}`", ""]
        if r["rc"] != 0:
            out += [f"**Did not finish** (exit status {r['rc']}); the end of its output:", ""]
        tail = r["output"].splitlines()[-80:] if r["rc"] != 0 else r["output"].splitlines()
        out += ["```", *tail, "```"]
    return "\n".join(out) + "\n"


def _split(page: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A rendered page -> (header up to the table, table row per benchmark, section per ``## `` heading)."""
    head, rows, sections = [], {}, {}
    current = None
    for line in page.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = line
        elif current is not None:
            sections[current] += "\n" + line
        elif line.startswith("| ") and not line.startswith("| benchmark |"):
            rows[line[2:].split(" |", 1)[0]] = line
        else:
            head.append(line)
    return "\n".join(head).rstrip() + "\n", rows, {k: v.rstrip() for k, v in sections.items()}


def merge(old: str, new: str) -> str:
    """``new`` (the benchmarks this run measured) over ``old``: every row and section of ``old`` that ``new``
    does not replace is kept as it is, with its own date and machine; benchmarks in ``BENCHES`` order, then
    any other section of ``old`` (written by hand) in its place. The header (date, machine) is the new run's."""
    head, rows, sections = _split(new)
    _, old_rows, old_sections = _split(old)
    names = [b.name for b in BENCHES]
    order = [n for n in names if n in rows or n in old_rows]
    table = [rows.get(n) or old_rows[n] for n in order]
    body = [sections.get(n) or old_sections.get(n, "") for n in order]
    body += [text for name, text in old_sections.items() if name not in names]
    head = head.replace("- date:", "- date of the latest run (each section names its own):")
    return head + "\n".join(table) + "\n\n" + "\n\n".join(b for b in body if b) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--size",
        choices=["quick", "full"],
        default="quick",
        help="quick: small inputs (minutes each); full: each benchmark's full arguments, the long ones included",
    )
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run these benchmarks only")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "BENCHMARKS.md"))
    args = ap.parse_args(argv)
    chosen = []
    for b in BENCHES:
        why = why_not(b, args.size, args.only)
        if not why:
            chosen.append(b)
        elif not args.only or b.name in args.only:
            print(f"{b.name}: not run here ({why}); the page keeps its section", flush=True)
    info, when = machine(), dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for i, b in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {b.name} ({b.command}) ...", flush=True)
        res = run_bench(b, args.size, args.timeout)
        print(f"    {'ok' if res['rc'] == 0 else 'FAILED ' + str(res['rc'])} in {res['seconds']} s", flush=True)
        for line in ratio_lines(res["output"]):
            print(f"    {line}")
        results.append(res)
    page = render(results, info, when)
    if os.path.exists(args.out):  # keep every section this run did not measure
        with open(args.out, encoding="utf-8") as fh:
            page = merge(fh.read(), page)
    tmp = f"{args.out}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, args.out)
    print(f"wrote {os.path.relpath(args.out)}")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
