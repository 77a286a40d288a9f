"""The scale curve of the whole curation (curate -> quality filter -> dedup -> mix) and the cost model of a crawl.

Run by hand from the repository root (tens of minutes on 2 cores for the default sizes)::

    .venv/bin/python -m bench.scale                                   # 10k, 30k, 100k documents
    .venv/bin/python -m bench.scale --sizes 500 1500 5000             # a dry run
    .venv/bin/python -m bench.scale --report                          # docs/SCALE.md from the last results

The first form measures and then writes the page; ``--report`` only rewrites ``docs/SCALE.md`` from
``bench/results/scale.json`` (the cost model's prices and assumptions live in this file, so a changed price
needs no rerun). ``python -m bench.run_all --only scale`` runs the first form.

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
import math
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

# --- the crawl and the prices of the cost model ---------------------------------------------------------------
# Each entry: value, unit, and where it comes from (a source with its date, or "assumption: ..." when no source
# could be checked offline). The page prints every one of them beside the figures it produces.
CRAWL = {
    "warc_files": (90_000, "WARC files", "assumption: the size of one recent CC-MAIN crawl, as the issue states it"),
    "compressed_tb": (100, "TB of compressed WARC", "assumption: as the issue states it"),
    "pages": (3_000_000_000, "HTML pages", "assumption: as the issue states it"),
}
KEEP = {  # share of the pages entering each stage, for a real crawl (the bench's own rates are not a crawl's)
    "curate": (1.0, "every page is read", "by definition"),
    "quality_filter": (
        0.25,
        "of the crawl's pages reach the quality filter",
        "assumption: English pages (less than half of a crawl) that pass the Gopher/C4/FineWeb filters",
    ),
    "dedup": (0.5, "of those reach dedup", "assumption: what GPT-3's Pareto rule keeps at alpha 9 on a crawl"),
    "mix": (0.75, "of those reach the mix", "assumption: a quarter of the survivors removed as duplicates"),
}
PRICES = {
    "dataflow_vcpu_h": (
        0.056,
        "USD per vCPU-hour, Dataflow batch worker",
        "assumption: Dataflow list price for us-central1 as last known (cloud.google.com/dataflow/pricing, "
        "2024); not re-checked offline",
    ),
    "dataflow_gb_h": (
        0.003557,
        "USD per GB-hour of worker memory, Dataflow batch",
        "assumption: same page and date",
    ),
    "dataflow_shuffle_gb": (
        0.011,
        "USD per GB of Dataflow Shuffle data processed (batch)",
        "assumption: same page and date (list price before Dataflow's volume discounts)",
    ),
    "dataflow_gb_per_vcpu": (3.75, "GB of memory per vCPU (n1-standard workers)", "assumption: Dataflow's default"),
    "ec2_vcpu_h": (
        0.0425,
        "USD per vCPU-hour, EC2 on-demand c5.large (2 vCPU at 0.085 per hour), us-east-1, Linux",
        "assumption: aws.amazon.com/ec2/pricing/on-demand as last known (2024); not re-checked offline",
    ),
    "gce_vcpu_h": (
        0.0486,
        "USD per vCPU-hour, GCE on-demand n2-standard-2 (2 vCPU at 0.0971 per hour), us-central1",
        "assumption: cloud.google.com/compute/vm-instance-pricing as last known (2024); not re-checked offline",
    ),
    "cluster_overhead": (
        1.25,
        "x the measured core-hours on a Spark/Flink cluster (driver, job manager, idle cores at stage ends)",
        "assumption",
    ),
    "s3_get_per_1000": (
        0.0004,
        "USD per 1,000 S3 GET requests (S3 Standard, us-east-1)",
        "assumption: aws.amazon.com/s3/pricing as last known (2024); not re-checked offline. Common Crawl's "
        "bucket is part of AWS Open Data, whose requests are not billed to the reader in us-east-1",
    ),
    "s3_read_buffer_mib": (
        16,
        "MiB per ranged GET when a worker reads s3:// with Beam's S3 filesystem",
        "apache_beam/io/aws/s3io.py, read_buffer_size (Beam 2.77)",
    ),
    "aws_egress_first_10tb_gb": (
        0.09,
        "USD per GB from us-east-1 to the internet, first 10 TB of a month",
        "assumption: aws.amazon.com/ec2/pricing/on-demand, data transfer, as last known (2024); not re-checked offline",
    ),
    "aws_egress_next_40tb_gb": (0.085, "USD per GB, the next 40 TB of the month", "assumption: same page and date"),
    "aws_egress_next_100tb_gb": (0.07, "USD per GB, the next 100 TB of the month", "assumption: same page and date"),
    "aws_egress_beyond_gb": (0.05, "USD per GB beyond 150 TB in a month", "assumption: same page and date"),
    "gpu_h": (
        4.0,
        "USD per H100 80 GB GPU-hour on demand",
        "assumption: a round figure between the large clouds' on-demand H100 prices of 2024-2025",
    ),
}
NEMO_SOURCE = "NVIDIA/NeMo-Curator README.md, 'Why NeMo Curator?' (undated; read in its 2025-2026 form)"
NEMO = {
    "fuzzy_dedup_tb": (8, "TB of text (RedPajama v2, 1.78 trillion tokens)", NEMO_SOURCE),
    "fuzzy_dedup_hours_4_nodes": (
        0.50,
        "hours for fuzzy dedup on four H100 80 GB nodes (2.05 hours on one)",
        NEMO_SOURCE,
    ),
    "gpus_per_node": (8, "H100 GPUs per node", "assumption: a DGX/HGX H100 node"),
    "speedup_vs_cpu": (16, "x faster fuzzy dedup than CPU-based alternatives (its own comparison)", NEMO_SOURCE),
}


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
    """UTF-8 bytes of the ``text`` column of a stage's document tables."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.tables import document_files

    total = 0
    for path in document_files(folder):
        total += pc.sum(pc.binary_length(pc.cast(pq.read_table(path, columns=["text"])["text"], "binary"))).as_py() or 0
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

        extra["in_text_bytes"] = text_bytes(os.path.join(base, "quality_filter"))
        t0 = time.perf_counter()
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
        r = measure(stage, work, point["docs"], timeout)
        print(f"{point['docs']:>8} {stage:15s} {r['seconds']:8.1f} s  peak {r['peak_process_mb']:5d} MB", flush=True)
        point["stages"][stage] = r
    results.setdefault("remeasured", {})[stage] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return results


# --- the page ---------------------------------------------------------------------------------------------------


def _slope(a: dict, b: dict, key: str) -> float:
    """``key`` per document read between two points of one stage: the marginal cost, start-up left out."""
    if b["read"] > a["read"] and b[key] > a[key]:
        return (b[key] - a[key]) / (b["read"] - a["read"])
    return b[key] / max(b["read"], 1)


def ratios(results: dict) -> dict[str, dict[str, float]]:
    """Per stage, from the smallest to the largest size: time growth over linear and memory growth; with three
    sizes or more, how the marginal CPU time per document changed (last interval over first)."""
    pts = sorted(results["points"], key=lambda p: p["docs"])
    lo, hi = pts[0], pts[-1]
    scale = hi["docs"] / lo["docs"]
    out = {}
    for s in STAGES:
        a, b = lo["stages"][s], hi["stages"][s]
        out[s] = {
            "time_vs_linear": (b["seconds"] / a["seconds"]) / scale,
            "cpu_vs_linear": (b["cpu_seconds"] / a["cpu_seconds"]) / scale,
            "memory": b["peak_process_mb"] / a["peak_process_mb"],
            "driver_memory": b["driver_mb"] / a["driver_mb"],
            "worker_memory": b["worker_mb"] / a["worker_mb"],
        }
        if len(pts) >= 3:
            first = _slope(pts[0]["stages"][s], pts[1]["stages"][s], "cpu_seconds")
            last = _slope(pts[-2]["stages"][s], pts[-1]["stages"][s], "cpu_seconds")
            out[s]["marginal_cpu"] = last / first
    return out


def cost_model(results: dict) -> dict:
    """The cost of one crawl from the curve: per stage, the marginal CPU seconds per document entering it (the
    slope from the smallest to the largest size, so the start-up a stage pays once per job is left out) and
    the shuffle bytes per document at the largest size, times the documents a crawl sends into it."""
    pts = sorted(results["points"], key=lambda p: p["docs"])
    lo, hi = pts[0], pts[-1]
    pages = CRAWL["pages"][0]
    docs_in, share = {}, 1.0
    for s in STAGES:
        share *= KEEP[s][0]
        docs_in[s] = pages * share
    stages = {}
    for s in STAGES:
        r = hi["stages"][s]
        per_doc_cpu = (
            _slope(lo["stages"][s], r, "cpu_seconds") if len(pts) > 1 else r["cpu_seconds"] / max(r["read"], 1)
        )
        per_doc_shuffle = r["shuffle_bytes"] / max(r["read"], 1)
        stages[s] = {
            "docs_in": docs_in[s],
            "cpu_s_per_doc": per_doc_cpu,
            "core_hours": per_doc_cpu * docs_in[s] / 3600,
            "shuffle_tb": per_doc_shuffle * docs_in[s] / 1e12,
            "peak_process_mb": r["peak_process_mb"],
        }
    core_h = sum(v["core_hours"] for v in stages.values())
    # curate's cost follows the bytes of HTML more than the count of pages: the same slope per compressed WARC byte
    c_lo, c_hi = lo["stages"]["curate"], hi["stages"]["curate"]
    by_bytes = None
    if c_hi.get("in_bytes") and c_lo.get("in_bytes") and c_hi["in_bytes"] > c_lo["in_bytes"]:
        per_byte = (c_hi["cpu_seconds"] - c_lo["cpu_seconds"]) / (c_hi["in_bytes"] - c_lo["in_bytes"])
        by_bytes = per_byte * CRAWL["compressed_tb"][0] * 1e12 / 3600
    shuffle_tb = sum(v["shuffle_tb"] for v in stages.values())
    p = {k: v[0] for k, v in PRICES.items()}
    peak_gb = max(v["peak_process_mb"] for v in stages.values()) / 1024
    compressed_bytes = CRAWL["compressed_tb"][0] * 1e12
    per_file = compressed_bytes / CRAWL["warc_files"][0]
    gets = CRAWL["warc_files"][0] * math.ceil(per_file / (p["s3_read_buffer_mib"] * 2**20))
    egress_gb = compressed_bytes / 1e9
    dataflow = (
        core_h * p["dataflow_vcpu_h"]
        + core_h * p["dataflow_gb_per_vcpu"] * p["dataflow_gb_h"]
        + shuffle_tb * 1000 * p["dataflow_shuffle_gb"]
    )
    cluster_h = core_h * p["cluster_overhead"]
    nemo = {k: v[0] for k, v in NEMO.items()}
    nemo_gpu_h_per_tb = nemo["fuzzy_dedup_hours_4_nodes"] * 4 * nemo["gpus_per_node"] / nemo["fuzzy_dedup_tb"]
    d = hi["stages"]["dedup"]
    mix_in_tb = stages["dedup"]["docs_in"] * d.get("in_text_bytes", 0) / max(d["read"], 1) / 1e12
    return {
        "stages": stages,
        "core_hours": core_h,
        "curate_core_hours_by_bytes": by_bytes,
        "bench_bytes_per_page": c_hi["in_bytes"] / max(c_hi["read"], 1) if c_hi.get("in_bytes") else None,
        "shuffle_tb": shuffle_tb,
        "peak_gb": peak_gb,
        "gets": gets,
        "get_cost": gets / 1000 * p["s3_get_per_1000"],
        "egress_gb": egress_gb,
        "egress_cost": egress_cost(egress_gb),
        "dataflow": dataflow,
        "dataflow_parts": {
            "vcpu": core_h * p["dataflow_vcpu_h"],
            "memory": core_h * p["dataflow_gb_per_vcpu"] * p["dataflow_gb_h"],
            "shuffle": shuffle_tb * 1000 * p["dataflow_shuffle_gb"],
        },
        "ec2": cluster_h * p["ec2_vcpu_h"],
        "gce": cluster_h * p["gce_vcpu_h"],
        "cluster_core_hours": cluster_h,
        "nemo_gpu_h_per_tb": nemo_gpu_h_per_tb,
        "dedup_text_tb": mix_in_tb,
        "nemo_dedup_gpu_h": nemo_gpu_h_per_tb * mix_in_tb,
        "nemo_dedup_cost": nemo_gpu_h_per_tb * mix_in_tb * p["gpu_h"],
        "ccgpt_dedup_cost_ec2": stages["dedup"]["core_hours"] * p["cluster_overhead"] * p["ec2_vcpu_h"],
    }


def egress_cost(gb: float) -> float:
    """AWS's tiered price of ``gb`` GB leaving us-east-1 for the internet in one month."""
    p = {k: v[0] for k, v in PRICES.items()}
    tiers = [
        (10_000, p["aws_egress_first_10tb_gb"]),
        (40_000, p["aws_egress_next_40tb_gb"]),
        (100_000, p["aws_egress_next_100tb_gb"]),
        (math.inf, p["aws_egress_beyond_gb"]),
    ]
    cost, left = 0.0, gb
    for size, price in tiers:
        part = min(left, size)
        cost += part * price
        left -= part
    return cost


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _src(entries: dict) -> list[str]:
    return [f"| `{k}` | {v[0]:,} | {v[1]} | {v[2]} |" for k, v in entries.items()]


def render(results: dict) -> str:
    m = results["machine"]
    pts = sorted(results["points"], key=lambda p: p["docs"])
    lo, hi = pts[0]["docs"], pts[-1]["docs"]
    rat = ratios(results) if len(pts) > 1 else {}
    cm = cost_model(results)
    done = [p["docs"] for p in pts]
    planned = sorted(results.get("planned", done))
    out = [
        "# Scale and cost",
        "",
        "Written by `python -m bench.scale` (see its docstring; `python -m bench.scale --report` rewrites this page",
        "from `bench/results/scale.json` without measuring). Nothing here is typed by hand: the measured figures",
        "come from the results file, the prices and published figures from the constants in `bench/scale.py`,",
        "each with its source and date or marked as an assumption.",
        "",
        f"- measured: {results['date']}, `{results['command']}`",
        *(
            f"- `{stage}` measured again on {date}, after a change of the stage: "
            f"`python -m bench.scale --remeasure {stage}`"
            for stage, date in sorted(results.get("remeasured", {}).items())
        ),
        *(
            [
                f"- **partial curve**: the run finished {', '.join(f'{p:,}' for p in done)} of the planned "
                f"{', '.join(f'{p:,}' for p in planned)} documents; the figures below are from the sizes it finished",
            ]
            if done != planned
            else []
        ),
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']} memory, GPU: {m['gpu']}; Python {m['python']}, "
        f"{m['os']}",
        f"- Beam's local runner with {results['workers']} worker processes. The machine is shared: other work may",
        "  have run beside the bench (load averages below), which lengthens wall time more than CPU time.",
        "",
        "## The curve",
        "",
        "Per stage and size: wall seconds of the stage call, CPU seconds of its whole process tree, the largest",
        "resident set of any one process (driver or worker), and the bytes that entered Beam's GroupByKeys",
        "(element count times the sampled mean size; for combiners, before pre-combining: an upper bound).",
        "",
        "| documents | stage | read | kept | wall s | CPU s | peak MB / process (driver, worker) | shuffle MiB "
        "| output MiB | load before / after |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for p in pts:
        load = f"{' / '.join(map(str, p['load_before']))} → {' / '.join(map(str, p['load_after']))}"
        for s in STAGES:
            r = p["stages"][s]
            out.append(
                f"| {p['docs']:,} | {s} | {r['read']:,} | {r['kept']:,} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} "
                f"| {r['peak_process_mb']} ({r['driver_mb']}, {r['worker_mb']}) | {r['shuffle_bytes'] / 2**20:,.1f} "
                f"| {r['out_bytes'] / 2**20:,.1f} | {load} |"
            )
    if len(pts) < 2:
        out += ["", "## Does it scale?", "", "One size only so far: no growth to measure.", ""]
    else:
        out += [
            "",
            f"## Does it scale? ({lo:,} → {hi:,} documents)",
            "",
            f"Time may grow at most {TIME_BAR}x faster than linear (wall time at {hi:,} documents divided by "
            f"{hi // lo} times the wall time at {lo:,}), and the largest process may grow at most {MEMORY_BAR}x. "
            "The verdict is on wall time, as the bar is set; CPU time, beside it, is the steadier measure on a "
            "shared machine.",
            "",
            "| stage | wall time vs linear | CPU time vs linear | per-process peak memory (driver, largest worker) "
            "| within the bars | marginal CPU / document, last interval vs first |",
            "|---|---:|---:|---:|---|---:|",
        ]
        failing = []
        for s in STAGES:
            r = rat[s]
            ok_t, ok_m = r["time_vs_linear"] <= TIME_BAR, r["memory"] <= MEMORY_BAR
            verdict = (
                "yes"
                if ok_t and ok_m
                else "**no**: " + ", ".join(x for x, ok in (("wall time", ok_t), ("memory", ok_m)) if not ok)
            )
            if not ok_t and r["cpu_vs_linear"] <= TIME_BAR:
                verdict += " (CPU time within)"
            if not (ok_t and ok_m):
                failing.append(s)
            marginal = f"{r['marginal_cpu']:.2f}x" if "marginal_cpu" in r else "—"
            out.append(
                f"| {s} | {r['time_vs_linear']:.2f}x | {r['cpu_vs_linear']:.2f}x | {r['memory']:.2f}x "
                f"({r['driver_memory']:.2f}x, {r['worker_memory']:.2f}x) | {verdict} | {marginal} |"
            )
        out += [
            "",
            (
                "Every stage is within both bars."
                if not failing
                else "Outside the bars: " + ", ".join(failing) + " (see the table; not hidden, not rounded away)."
            ),
            "",
            *memory_notes(pts),
            "Wall time depends on the load beside the bench: compare the load columns of the curve, a size measured",
            "under less load looks faster than it is.",
            "",
            "Values below 1 mean the stage's fixed cost (runner start-up, process start, model loading) still",
            "weighs at the smallest size, which hides part of any growth; the last column takes the fixed cost out:",
            "the CPU seconds each further document costs between the two largest sizes over the same between the two",
            "smallest (1 = linear). The 1M-document point of the dedup stage alone is measured by",
            "`bench/dedup.py`: [BENCHMARKS.md, dedup-scale](BENCHMARKS.md#dedup-scale).",
            "",
        ]
    big = pts[-1]
    steps = [
        (s, step, b)
        for s in STAGES
        for step, b in sorted(big["stages"][s].get("shuffle_by_step", {}).items(), key=lambda kv: -kv[1])
        if b >= 0.01 * big["stages"][s]["shuffle_bytes"]
    ]
    if steps:
        out += [
            f"Where the shuffle bytes go at {hi:,} documents (each GroupByKey's input; the writers group documents "
            "into output files, so every kept document crosses one):",
            "",
            "| stage | GroupByKey | MiB |",
            "|---|---|---:|",
            *[f"| {s} | `{step}` | {b / 2**20:,.1f} |" for s, step, b in steps],
            "",
            "(GroupByKeys below 1 % of their stage's shuffle bytes left out.)",
            "",
        ]
    out += [
        "## One crawl",
        "",
        f"Per stage, the CPU seconds each further document costs from {lo:,} to {hi:,} documents (the slope:",
        "the start-up a stage pays once per job left out) and the shuffle bytes per document at",
        f"{hi:,}, times the documents a crawl sends into it. The crawl and the share of it each stage sees:",
        "",
        "| name | value | unit | source |",
        "|---|---:|---|---|",
        *_src(CRAWL),
        *_src(KEEP),
        "",
        "| stage | documents in | CPU ms / document | core-hours | shuffle TB | peak MB / process |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in STAGES:
        v = cm["stages"][s]
        out.append(
            f"| {s} | {v['docs_in']:,.0f} | {v['cpu_s_per_doc'] * 1000:.2f} | {_n(v['core_hours'])} "
            f"| {v['shuffle_tb']:,.2f} | {v['peak_process_mb']} |"
        )
    out += [
        f"| **all** | | | **{_n(cm['core_hours'])}** | **{cm['shuffle_tb']:,.2f}** | {cm['peak_gb'] * 1024:.0f} |",
        "",
        *(
            [
                f"The bench's pages average {cm['bench_bytes_per_page'] / 1024:,.1f} KiB of compressed WARC; "
                "the crawl's "
                f"average {CRAWL['compressed_tb'][0] * 1e12 / CRAWL['pages'][0] / 1024:,.1f} KiB. Scaled by compressed "
                f"bytes instead of pages, curate costs {_n(cm['curate_core_hours_by_bytes'])} core-hours instead of "
                f"{_n(cm['stages']['curate']['core_hours'])}: the truth for a real crawl is likely between the two, "
                "and the prices below use the page count.",
                "",
            ]
            if cm.get("curate_core_hours_by_bytes")
            else []
        ),
        "Reading the crawl: with Beam's S3 filesystem a worker fetches a WARC file in ranged GETs of",
        f"{PRICES['s3_read_buffer_mib'][0]} MiB, so about {_n(cm['gets'])} GET requests "
        f"(USD {_n(cm['get_cost'])} at the S3 request price, nothing when the crawl's AWS Open Data bucket is read "
        f"from us-east-1). Running in us-east-1, beside the crawl, moves no byte out of AWS; anywhere else "
        f"(Dataflow) the {_n(cm['egress_gb'])} GB of compressed WARC leave AWS: about USD {_n(cm['egress_cost'])} "
        "of egress at AWS's tiered internet price below (one month).",
        "",
        "The prices (list prices, on demand, no committed-use or spot discount):",
        "",
        "| name | value | unit | source |",
        "|---|---:|---|---|",
        *_src(PRICES),
        "",
        "| where | what is billed | USD |",
        "|---|---|---:|",
        f"| Dataflow (batch, us-central1) | {_n(cm['core_hours'])} vCPU-hours, their memory, "
        f"{cm['shuffle_tb']:,.2f} TB of Dataflow Shuffle | {_n(cm['dataflow'])} |",
        f"| Dataflow, plus egress of the crawl out of AWS | as above + egress | "
        f"{_n(cm['dataflow'] + cm['egress_cost'])} |",
        f"| Spark/Flink on EC2 on-demand (us-east-1, beside the crawl) | {_n(cm['cluster_core_hours'])} vCPU-hours "
        f"(measured core-hours x {PRICES['cluster_overhead'][0]}) | {_n(cm['ec2'])} |",
        f"| Spark/Flink on GCE on-demand (us-central1) | the same vCPU-hours | {_n(cm['gce'])} |",
        f"| Spark/Flink on GCE, plus egress of the crawl out of AWS | | {_n(cm['gce'] + cm['egress_cost'])} |",
        "",
        "Dataflow's share: vCPU USD "
        + _n(cm["dataflow_parts"]["vcpu"])
        + ", memory USD "
        + _n(cm["dataflow_parts"]["memory"])
        + ", shuffle USD "
        + _n(cm["dataflow_parts"]["shuffle"])
        + ". The cluster rows bill the shuffle as the cores and disks that do it (already in the measured CPU",
        "time); they leave out storage of the outputs and the cluster's disks.",
        "",
        "## Beside NeMo Curator's published GPU figures",
        "",
        "NeMo Curator publishes fuzzy dedup only, on GPUs. Its figure, turned into GPU-hours per TB of text and",
        "applied to the text a crawl sends into dedup (the documents entering dedup times the UTF-8 bytes of text",
        f"per document entering dedup measured here, {cm['dedup_text_tb']:,.2f} TB):",
        "",
        "| name | value | unit | source |",
        "|---|---:|---|---|",
        *_src(NEMO),
        "",
        "| dedup of one crawl | hours | USD |",
        "|---|---:|---:|",
        f"| NeMo Curator fuzzy dedup (H100 GPU-hours at {cm['nemo_gpu_h_per_tb']:.1f} per TB) "
        f"| {_n(cm['nemo_dedup_gpu_h'], 1)} GPU-hours | {_n(cm['nemo_dedup_cost'])} |",
        f"| ccgpt dedup (exact + MinHash-LSH, CPU), EC2 on-demand | "
        f"{_n(cm['stages']['dedup']['core_hours'] * PRICES['cluster_overhead'][0], 1)} vCPU-hours "
        f"| {_n(cm['ccgpt_dedup_cost_ec2'])} |",
        "",
        "The two are not the same work: NeMo Curator's figure is for RedPajama v2's text (already extracted), with",
        "its own MinHash settings; ccgpt's is exact + near dedup at Jaccard 0.8 with verification, on the",
        "bench's documents. Extraction (curate), which dominates the CPU bill, has no published GPU figure to",
        "compare with.",
        "",
        "## Caveats",
        "",
        "- The figures come from a 2-core machine shared with other work; per-core rates on a cluster's",
        "  dedicated cores are likely better, and CPU time (used above) is less sensitive to contention than",
        "  wall time.",
        "- The inputs are real pages with real text, but the text is WikiText-2 and the duplicates are made:",
        "  keep rates, document lengths and duplicate structure differ from a crawl's, which is why the cost",
        "  model takes each stage's per-document cost and uses stated keep rates rather than the bench's.",
        "- The peak memory of a process is polled every 0.2 s; a spike shorter than that can be missed.",
        "- Shuffle bytes are Beam's encoded sizes on the local runner; Dataflow Shuffle bills its own encoding",
        "  of the same records.",
    ]
    return "\n".join(out) + "\n"


def memory_notes(pts: list[dict]) -> list[str]:
    """What bounds each process's memory, from the code's own constants, and where the measured growth lies."""
    from pipeline.ledger import DEFAULT_GROUP_BYTES
    from pipeline.mix.config import MixConfig
    from pipeline.tables import CRAWL_FILE_BYTES, DOCUMENT_FILE_BYTES, ROW_GROUP_TEXT_BYTES

    lo, hi = pts[0], pts[-1]
    grown = [
        f"{s}'s {role} ({lo['stages'][s][key]} → {hi['stages'][s][key]} MB)"
        for s in STAGES
        for role, key in (("driver", "driver_mb"), ("largest worker", "worker_mb"))
        if hi["stages"][s][key] / lo["stages"][s][key] > MEMORY_BAR
    ]
    return [
        "What bounds a process, by design (the constants are read from the code):",
        "",
        f"- **A worker writing documents** holds one output file's rows, as one Arrow table: a file per "
        f"{DOCUMENT_FILE_BYTES >> 20} MiB of input table ({CRAWL_FILE_BYTES >> 30} GiB of WARC for curate), rows",
        "  picked by a hash of their id (`pipeline/tables.py`, `WriteDocuments`). Rows cross the shuffle as",
        "  zstd-compressed Arrow batches, never as one Python object each.",
        f"- **A worker reading documents** holds one Parquet row group: at most {ROW_GROUP_TEXT_BYTES >> 20} MiB "
        "of text, as the writer cuts them.",
        f"- **A mix worker** packs one hash bucket of about {MixConfig().pack_bucket_documents:,} documents of a "
        "source.",
        f"- **Curate** runs one Beam pipeline per input-file group ({DEFAULT_GROUP_BYTES >> 30} GiB of WARC by "
        f"default; {CURATE_GROUP_BYTES >> 20} MiB here, scaled down with the data), so what one pipeline holds "
        "is one group's.",
        "- **The local runner's driver** is also its shuffle: Beam's FnApiRunner keeps every GroupByKey's input,",
        "  decoded, and every PCollection a side input waits on, in the driver process until the next step runs.",
        "  For the stages that run as one pipeline (quality filter, dedup, mix) the driver therefore grows with",
        "  the shuffle column above; on Dataflow, Flink and Spark the shuffle lives outside the driver and the",
        "  workers.",
        "",
        *(
            [
                "Processes outside the memory bar, each role on its own: " + "; ".join(grown) + ". A driver's "
                "growth is the local runner's shuffle above; a worker's that the bounds above do not explain is "
                "not profiled yet.",
                "",
            ]
            if grown
            else ["Every process, driver and workers, stays within the memory bar.", ""]
        ),
    ]


def write_page(results: dict, path: str = PAGE) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(render(results))
    os.replace(tmp, path)


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
