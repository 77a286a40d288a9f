"""The page of the scale bench: the crawl's cost model and ``docs/SCALE.md``, from the curve ``bench.scale``
measured (``bench/results/scale.json``).

Kept apart from the measuring so that a changed price or a better sentence needs no rerun:
``python -m bench.scale --report`` rewrites the page from the results alone. The cost model's constants live
here, each with its source and date or marked as an assumption; the page prints every one of them.
"""

from __future__ import annotations

import math
import os

from bench.scale import CURATE_GROUP_BYTES, MEMORY_BAR, PAGE, STAGES, TIME_BAR

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
        "come from the results file, the prices and published figures from the constants in `bench/scale_page.py`,",
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
    again = results.get("remeasured", {})
    for p in pts:
        for s in STAGES:
            r = p["stages"][s]
            if "load_before" in r or s not in again:  # a stage measured again has its own load, or none recorded
                had = r if "load_before" in r else p
                load = f"{' / '.join(map(str, had['load_before']))} → {' / '.join(map(str, had['load_after']))}"
            else:
                load = f"not recorded (measured again {again[s]})"
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
        "  zstd-compressed Arrow batches in hand-off files (`pipeline/handoff.py`), only their paths shuffled,",
        "  never as one Python object each.",
        f"- **A worker reading documents** holds one Parquet row group: at most {ROW_GROUP_TEXT_BYTES >> 20} MiB "
        "of text, as the writer cuts them.",
        f"- **A mix worker** packs one hash bucket of about {MixConfig().pack_bucket_documents:,} documents of a "
        "source, and writes one shard, each read from its hand-off files when its turn comes. (The local runner",
        "  hands a worker all of its keys of a GroupByKey in one bundle: while the documents and rows themselves",
        "  crossed the shuffle, a worker held every bucket it was given at once, and grew with the buckets.)",
        f"- **Curate** runs one Beam pipeline per input-file group ({DEFAULT_GROUP_BYTES >> 30} GiB of WARC by "
        f"default; {CURATE_GROUP_BYTES >> 20} MiB here, scaled down with the data), so what one pipeline holds "
        "is one group's.",
        "- **The local runner's driver** is also its shuffle: Beam's FnApiRunner keeps every GroupByKey's input,",
        "  decoded, and every PCollection a side input waits on, in the driver process until the next step runs,",
        "  then encodes it again and streams it to a worker through gRPC (measured: the driver's resident memory",
        "  grew by three to five times the bytes a pipeline shuffled as values). So documents, tokens, rows and",
        "  the mix plan's per-document metadata cross every shuffle as hand-off files (`pipeline/handoff.py`),",
        "  and only their paths reach the driver; what still crosses as values (the shuffle column above) is",
        "  pre-combined per bundle or one histogram bin's documents. On Dataflow, Flink and Spark the shuffle",
        "  lives outside the driver and the workers.",
        "",
        *(
            [
                "Processes outside the memory bar, each role on its own: " + "; ".join(grown) + ". A driver's "
                "growth is what still crosses the local runner's shuffle as values (above); a worker's that the "
                "bounds above do not explain is not profiled yet.",
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
