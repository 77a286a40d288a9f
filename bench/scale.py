"""The scale curve of the whole curation (curate -> quality filter -> dedup -> mix) and the cost model of a crawl.

Run by hand from the repository root (tens of minutes on 2 cores for the default sizes)::

    .venv/bin/python -m bench.scale                                   # 10k, 30k, 100k documents
    .venv/bin/python -m bench.scale --sizes 500 1500 5000             # a dry run
    .venv/bin/python -m bench.scale --report                          # docs/SCALE.md from the last results

The first form measures and then writes the page; ``--report`` only rewrites ``docs/SCALE.md`` from
``bench/results/scale.json`` (the cost model's prices and assumptions live in ``bench/scale_page.py``, so a
changed price needs no rerun). ``python -m bench.run_all --only scale`` runs the first form.

**Input** (built once in ``--work``, not timed): WARC files of 500 HTML responses each, per-record gzip as
Common Crawl writes them. Every page is a real page from ``../shared/data/html`` (newspaper, goose3 and
trafilatura's evaluation set: site templates, navigation, scripts and all) whose ``<p>`` paragraphs are
replaced by one document of ``bench.dedup``'s corpus: three 60-word chunks of real WikiText-2 text, 30 % of
them with near copies (word edits) and exact copies (case and spacing changed), so dedup has real work at the
same rate at every size. Only templates whose own boilerplate extracts to a few words are used, so two pages
are near duplicates only when their inserted texts are. Documents come in blocks of 10,000 (one corpus seed
per block); the curve's sizes are prefixes of the same files, so a larger size holds the smaller ones.

**Stages**, each in a process of its own (``python -m bench.scale --stage NAME``) on Beam's local runner with
2 worker processes, in the order a run takes them:

- ``curate``: resiliparse extraction, English at 0.65, the default filters, raw documents written as a run
  writes them (the quality classifier's negatives), input-file groups of 256 MiB (``CURATE_GROUP_BYTES``).
- ``quality_filter``: the threshold rule at 0.5, which keeps most of the bench's pages so that dedup and mix
  see most of them (it scores every document, as GPT-3's Pareto rule does, at the same cost). The fastText
  model is trained once per work folder, outside the curve, on WikiText-2 paragraphs (detokenised, as the
  pages carry them) against pages of the same archives.
- ``dedup``: exact + MinHash-LSH at Jaccard 0.8.
- ``mix``: GPT-2's tokenizer from ``../shared/data/tokenizer``, every kept token once, 1,024-token rows.

**Measured per stage and size**:

- ``seconds``: wall time of the stage's ``run_*`` call; ``cpu_seconds``: user + system CPU time of the stage's
  whole process tree (the stage process and every worker it started and waited for: ``RUSAGE_CHILDREN`` of
  this process around it), start-up included. CPU seconds are what a cluster bills per core, and they are
  less sensitive than wall time to other work on a shared machine.
- ``peak_process_mb``: the largest resident set of any single process of the stage's tree (driver or worker),
  polled every 0.2 s with psutil; ``driver_mb`` and ``worker_mb`` split it by role.
- ``shuffle_bytes``: the bytes Beam's FnApiRunner reports for the PCollections that enter a ``GroupByKey``
  (``CoGroupByKey``, ``Reshuffle`` and combiners included): each PCollection's element count times the mean
  of its ``beam:metric:sampled_byte_size:v1`` distribution (the coder's size of a sample of its elements, as
  the runner samples them). For combiners this is the input before Beam's pre-combining, an upper bound of
  what crosses the shuffle; ``shuffle_combiner_bytes`` says how much of the total that part is.
- ``out_bytes``: the bytes of the stage's output folder on disk.

The page turns these into the cost of one crawl with the constants below (prices and published figures each
name their source and date, or say they are assumptions) and checks the issue's bars: time within 1.3x of
linear and per-process memory within 1.5x from the smallest to the largest size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html as html_lib
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
RESULTS = os.path.join(REPO, "bench", "results", "scale.json")
PAGE = os.path.join(REPO, "docs", "SCALE.md")
STAGES = ("curate", "quality_filter", "dedup", "mix")
BLOCK = 10_000  # documents per corpus seed
PER_WARC = 500  # HTML responses per WARC file (sizes are multiples of it)
WORKERS = 2
# curate's work unit here: a group per pipeline as the default 8 GiB is of a crawl, scaled down with the data, so
# the curve crosses groups as a crawl does (the local runner holds one pipeline's shuffle in its driver)
CURATE_GROUP_BYTES = 256 << 20
MAX_BOILERPLATE_WORDS = 40  # a template's own extracted text, without the inserted document
TIME_BAR = 1.3  # time may grow at most this much faster than linear from the smallest to the largest size
MEMORY_BAR = 1.5  # per-process peak memory may grow at most this much over the same range
ARCHIVES = ("newspaper.tar.gz", "goose3.tar.gz", "trafilatura-eval.tar.gz")
PARAGRAPH = re.compile(rb"<p[\s>].*?</p>", re.S | re.I)

# --- input ------------------------------------------------------------------------------------------------------


def detokenize(text: str) -> str:
    """WikiText-2's tokenised text as running prose: ``@-@`` joins, punctuation attached, ``<unk>`` dropped.
    Spacing and case are otherwise kept, so the corpus's exact copies (case and spacing changed) stay."""
    text = re.sub(r" ?<unk>", "", text, flags=re.I)
    text = re.sub(r" @([-,.])@ ", r"\1", text)
    text = re.sub(r" ([,.;:!?)])", r"\1", text)
    return re.sub(r"([(]) ", r"\1", text).replace(" 's", "'s")


def paragraphs(text: str, words: int = 40) -> list[str]:
    """``text`` in paragraphs of at least ``words`` words, each ending at a sentence end where one comes."""
    out, current = [], []
    for word in text.split(" "):
        current.append(word)
        if len(current) >= words and word.endswith((".", "!", "?")):
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def fill(page: bytes, text: str) -> bytes:
    """``page`` with its first ``<p>`` replaced by ``text`` as paragraphs and its other ``<p>`` removed."""
    paras = "".join(f"<p>{html_lib.escape(p)}</p>\n" for p in paragraphs(detokenize(text)))
    done = []

    def sub(m: re.Match) -> bytes:
        if done:
            return b""
        done.append(1)
        return paras.encode("utf-8")

    return PARAGRAPH.sub(sub, page)


def templates() -> list[bytes]:
    """Real pages with a ``<p>`` where a document put in its place is what the extractor finds, with at most
    a few words of the page's own boilerplate beside it."""
    from bench.dedup import make_corpus
    from pipeline.extract import ExtractConfig, decode_html, extract_text

    cfg = ExtractConfig(extractor="resiliparse")
    probe = make_corpus(1, seed=12345)[0]["text"]
    probe_words = len(detokenize(probe).split())
    out = []
    for name in ARCHIVES:
        with tarfile.open(os.path.join(SHARED, "html", name)) as tf:
            for m in tf:
                if not (m.isfile() and m.name.endswith((".html", ".htm"))):
                    continue
                page = tf.extractfile(m).read()
                if not PARAGRAPH.search(page):
                    continue
                text = extract_text(decode_html(fill(page, probe)), cfg)
                tail = " ".join(detokenize(probe).split()[-8:])
                if tail in " ".join(text.split()) and len(text.split()) <= probe_words + MAX_BOILERPLATE_WORDS:
                    out.append(page)
    return out


def build_block(folder: str, block: int, pages: list[bytes]) -> None:
    """Block ``block``: 10,000 documents of ``bench.dedup``'s corpus (seed = block) as 10 WARC files."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from bench.dedup import make_corpus

    docs = make_corpus(BLOCK, seed=block)
    for f in range(BLOCK // PER_WARC):
        path = os.path.join(folder, f"b{block:03d}-{f:02d}.warc.gz")
        if os.path.exists(path):
            continue
        tmp = f"{path}.tmp-{os.getpid()}"  # two builders of one folder write the same bytes, never one file
        with open(tmp, "wb") as fh:
            w = WARCWriter(fh, gzip=True)
            for i in range(f * PER_WARC, (f + 1) * PER_WARC):
                n = block * BLOCK + i
                body = fill(pages[(n * 7919) % len(pages)], docs[i]["text"])
                headers = StatusAndHeaders(
                    "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
                )
                url = f"http://site{n % 997}.bench.example/{block}/{docs[i]['id']}"
                w.write_record(w.create_warc_record(url, "response", payload=BytesIO(body), http_headers=headers))
        os.replace(tmp, path)


def warcs(work: str, docs: int) -> list[str]:
    """The WARC files holding the first ``docs`` documents (built when missing)."""
    if docs % PER_WARC:
        raise ValueError(f"sizes are multiples of {PER_WARC} documents (one WARC file each), not {docs}")
    folder = os.path.join(work, "warc")
    os.makedirs(folder, exist_ok=True)
    per_block = BLOCK // PER_WARC
    names = [f"b{i // per_block:03d}-{i % per_block:02d}.warc.gz" for i in range(docs // PER_WARC)]
    files = [os.path.join(folder, name) for name in names]
    pages = None
    for b in sorted({i // per_block for i in range(len(files))}):
        if not all(os.path.exists(os.path.join(folder, f"b{b:03d}-{f:02d}.warc.gz")) for f in range(per_block)):
            pages = pages or templates()
            build_block(folder, b, pages)
    return files


def quality_model(work: str) -> str:
    """A default-size quality model, trained once per work folder (not part of the curve)."""
    from bench.quality import crawl_texts, reference_texts, train_model

    folder = os.path.join(work, "quality-model")
    model = os.path.join(folder, "model", "model.bin")
    if not os.path.exists(model):
        os.makedirs(folder, exist_ok=True)
        # positives as the bench's pages carry them (running prose), so the model does not learn WikiText's
        # tokenisation as the mark of quality
        train_model(folder, crawl_texts(1200), [detokenize(t) for t in reference_texts()])
    return model


# --- one stage in its own process -------------------------------------------------------------------------------


class ShuffleMeter:
    """Catches each Beam pipeline the FnApiRunner runs in this process and sums the bytes entering its
    GroupByKeys (see the module docstring)."""

    def __init__(self) -> None:
        self.total = 0
        self.combiner = 0
        self.by_step: dict[str, int] = {}

    def install(self) -> None:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        original = FnApiRunner.run_via_runner_api
        meter = self

        def run_via_runner_api(runner, pipeline_proto, options):
            result = original(runner, pipeline_proto, options)
            meter.add(pipeline_proto, result)
            return result

        FnApiRunner.run_via_runner_api = run_via_runner_api

    def add(self, proto, result) -> None:
        from apache_beam.metrics import monitoring_infos as mi

        gbk = "beam:transform:group_by_key:v1"
        combiner_parts = set()
        for t in proto.components.transforms.values():
            if t.spec.urn == "beam:transform:combine_per_key:v1":
                combiner_parts.update(t.subtransforms)
        feeds: dict[str, tuple[str, bool]] = {}
        for tid, t in proto.components.transforms.items():
            if t.spec.urn == gbk:
                for pc in t.inputs.values():
                    feeds[pc] = (t.unique_name, tid in combiner_parts)
        counts, sizes = {}, {}
        for info in result.monitoring_infos():
            pc = info.labels.get("PCOLLECTION")
            if pc not in feeds:
                continue
            value = mi.extract_metric_result_map_value(info)
            if info.urn == mi.ELEMENT_COUNT_URN:
                counts[pc] = counts.get(pc, 0) + value
            elif info.urn == mi.SAMPLED_BYTE_SIZE_URN and value.count:
                s, c = sizes.get(pc, (0, 0))
                sizes[pc] = (s + value.sum, c + value.count)
        for pc, (name, in_combiner) in feeds.items():
            s, c = sizes.get(pc, (0, 0))
            n = round(counts.get(pc, 0) * s / c) if c else 0
            self.total += n
            self.combiner += n if in_combiner else 0
            self.by_step[name] = self.by_step.get(name, 0) + n


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def text_bytes(folder: str) -> int:
    """UTF-8 bytes of the ``text`` column of a stage's document tables, a row group at a time. Called by the
    measuring process, never the measured one: reading a table there once added its text to the dedup
    driver's peak (+180 MB at 100,000 documents)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.tables import document_files

    total = 0
    for path in document_files(folder):
        for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
            total += pc.sum(pc.binary_length(pc.cast(batch.column(0), "binary"))).as_py() or 0
    return total


def run_stage(stage: str, work: str, docs: int) -> dict:
    """Run ``stage`` on the size-``docs`` folders of ``work``; the figures only this process can see."""
    from pipeline.runner import RunnerConfig

    runner = RunnerConfig(runner="local", num_workers=WORKERS, progress=False)
    base = os.path.join(work, f"n{docs}")
    out = os.path.join(base, stage)
    meter = ShuffleMeter()
    meter.install()
    extra: dict = {}
    t0 = time.perf_counter()
    if stage == "curate":
        from pipeline.curate import CurateConfig, run_curate

        cfg = CurateConfig()
        cfg.extract.extractor = "resiliparse"
        cfg.read.group_bytes = CURATE_GROUP_BYTES
        stats = run_curate(warcs(work, docs), out, cfg, runner, force=True)
    elif stage == "quality_filter":
        from pipeline.quality import QualityFilterConfig, run_quality_filter

        cfg = QualityFilterConfig(model=quality_model(work), rule="threshold", threshold=0.5)
        t0 = time.perf_counter()  # the model is trained once per work folder, outside the curve
        stats = run_quality_filter([os.path.join(base, "curate")], out, cfg, runner, force=True)
    elif stage == "dedup":
        from pipeline.dedup import DedupConfig, run_dedup

        stats = run_dedup([os.path.join(base, "quality_filter")], out, DedupConfig(), runner, force=True)
    elif stage == "mix":
        from pipeline.mix import MixConfig, run_mix

        cfg = MixConfig(
            tokenizer=os.path.join(SHARED, "tokenizer", "gpt2"), weights={"crawl": 1.0}, total_tokens=0, seed=0
        )
        stats = run_mix([os.path.join(base, "dedup")], out, cfg, runner, force=True)
    else:
        raise ValueError(stage)
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 2),
        "read": stats.read,
        "kept": stats.kept,
        "shuffle_bytes": meter.total,
        "shuffle_combiner_bytes": meter.combiner,
        "shuffle_by_step": meter.by_step,
        "out_bytes": folder_bytes(out),
        "in_bytes": sum(os.path.getsize(f) for f in warcs(work, docs)) if stage == "curate" else None,
        **extra,
    }


def measure(stage: str, work: str, docs: int, timeout: float) -> dict:
    """Run one stage in a child process while polling every process of its tree for its resident set."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.scale", "--stage", stage, "--work", work, "--docs", str(docs)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peaks: dict[int, list] = {}  # pid -> [peak bytes, role, last CPU seconds seen]
    stop = threading.Event()

    def poll() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in tree:
                try:
                    rss, cpu = p.memory_info().rss, p.cpu_times()
                except psutil.Error:
                    continue
                entry = peaks.setdefault(p.pid, [0, "driver" if p.pid == proc.pid else "worker", 0.0])
                entry[0] = max(entry[0], rss)
                entry[2] = cpu.user + cpu.system
            stop.wait(0.2)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    stop.set()
    watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} at {docs} documents failed ({proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    if stage == "dedup":
        result["in_text_bytes"] = text_bytes(os.path.join(work, f"n{docs}", "quality_filter"))
    mb = 1 << 20
    driver = max((v[0] for v in peaks.values() if v[1] == "driver"), default=0)
    worker = max((v[0] for v in peaks.values() if v[1] == "worker"), default=0)
    result.update(
        process_seconds=round(wall, 2),
        # what the tree's reaped processes report, or the sum last polled (a lower bound) if that is larger
        cpu_seconds=round(
            max(
                (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                sum(v[2] for v in peaks.values()),
            ),
            2,
        ),
        peak_process_mb=round(max(driver, worker) / mb),
        driver_mb=round(driver / mb),
        worker_mb=round(worker / mb),
        processes=len(peaks),
    )
    return result


# --- the curve -------------------------------------------------------------------------------------------------


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_curve(sizes: list[int], work: str, timeout: float, save=None) -> dict:
    """Measure every stage at every size; ``save(results)`` after each size, so a run stopped part way leaves
    the sizes it finished (the page says the curve is partial)."""
    from bench.run_all import machine

    t0 = time.perf_counter()
    quality_model(work)
    print(f"quality model ready in {time.perf_counter() - t0:.0f} s", flush=True)
    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "workers": WORKERS,
        "command": "python -m bench.scale --sizes " + " ".join(map(str, sizes)),
        "planned": sizes,
        "points": [],
    }
    for n in sizes:
        t0 = time.perf_counter()
        warcs(work, n)  # the inputs of this size, built before it is measured: not timed
        print(f"inputs of {n:,} documents ready in {time.perf_counter() - t0:.0f} s", flush=True)
        point = {"docs": n, "load_before": load_avg(), "stages": {}}
        for stage in STAGES:
            r = measure(stage, work, n, timeout)
            point["stages"][stage] = r
            print(
                f"{n:>8} {stage:15s} {r['seconds']:8.1f} s  cpu {r['cpu_seconds']:8.1f} s  "
                f"peak {r['peak_process_mb']:5d} MB  shuffle {r['shuffle_bytes'] / 2**20:9.1f} MiB  "
                f"read {r['read']:>7} kept {r['kept']:>7}",
                flush=True,
            )
        point["load_after"] = load_avg()
        results["points"].append(point)
        results["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if save is not None:
            save(results)
    return results


def remeasure(results: dict, stage: str, work: str, timeout: float) -> dict:
    """``results`` with ``stage`` measured again at every size, on the earlier stage outputs kept in ``work``."""
    for point in sorted(results["points"], key=lambda p: p["docs"]):
        before = load_avg()
        r = measure(stage, work, point["docs"], timeout)
        r["load_before"], r["load_after"] = before, load_avg()  # the point's own load was another run's
        print(f"{point['docs']:>8} {stage:15s} {r['seconds']:8.1f} s  peak {r['peak_process_mb']:5d} MB", flush=True)
        point["stages"][stage] = r
    results.setdefault("remeasured", {})[stage] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return results


# --- the page ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    ap.add_argument(
        "--work", default=os.path.join(tempfile.gettempdir(), "ccgpt-scale"), help="inputs and stage outputs (kept)"
    )
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--page", default=PAGE)
    ap.add_argument("--report", action="store_true", help="only write the page from --results")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per stage")
    ap.add_argument(
        "--remeasure",
        choices=STAGES,
        help="measure this stage again at every size of --results (its inputs kept in --work), e.g. after "
        "changing it; the page names the date of each stage measured apart",
    )
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--docs", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from bench.scale_page import ratios, write_page  # the page imports this module's constants

    if args.stage:
        print(json.dumps(run_stage(args.stage, os.path.abspath(args.work), args.docs)))
        return 0

    def save(results: dict) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        tmp = f"{args.results}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
        os.replace(tmp, args.results)
        write_page(results, args.page)

    if args.remeasure:
        with open(args.results, encoding="utf-8") as fh:
            save(remeasure(json.load(fh), args.remeasure, os.path.abspath(args.work), args.timeout))
    elif not args.report:
        run_curve(sorted(args.sizes), os.path.abspath(args.work), args.timeout, save)
        print(f"wrote {os.path.relpath(args.results)}")
    with open(args.results, encoding="utf-8") as fh:
        results = json.load(fh)
    write_page(results, args.page)
    for s, r in (ratios(results) if len(results["points"]) > 1 else {}).items():
        print(f"{s}: time {r['time_vs_linear']:.2f}x linear, CPU {r['cpu_vs_linear']:.2f}x, memory {r['memory']:.2f}x")
    print(f"wrote {os.path.relpath(args.page)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
