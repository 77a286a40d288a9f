"""bench/run_all.py: ratio lines found, failures shown, every row and section names its date and machine, and a
run keeps the sections it does not measure (a GPU benchmark on a CPU machine, sections written by hand)."""

from __future__ import annotations

import bench.run_all as run_all
from bench.run_all import BENCHES, machine, merge, ratio_lines, render, why_not


def _bench(name):
    return next(b for b in BENCHES if b.name == name)


def _result(name, line, rc=0):
    return {
        "bench": _bench(name),
        "cmd": f"python -m {_bench(name).command}",
        "rc": rc,
        "seconds": 12.0,
        "output": line,
        "load_before": "1.0 / 1.0 / 1.0",
        "load_after": "2.0 / 1.0 / 1.0",
    }


def test_ratio_lines_pick_comparisons_only():
    out = "pages: 150\nratio ccgpt/datatrove: 2.02x (one core each)\nversion 0.10.1\nspeed 15.3 pages/s\n1.9x faster"
    assert ratio_lines(out) == ["ratio ccgpt/datatrove: 2.02x (one core each)", "1.9x faster"]


def test_page_lists_every_bench_with_status_date_and_machine():
    ok = _result("curate", "ratio ccgpt/datatrove: 2.02x")
    bad = _result("quality", "partial line\nTraceback: boom", rc="timeout")
    info = machine()
    page = render([ok, bad], info, "2026-01-01 00:00 UTC")
    assert info["cores"] in page and info["cpu"] in page
    assert f"| curate | ok | 2026-01-01 00:00 UTC, {info['cores']} cores, GPU: {info['gpu']} | 12.0 |" in page
    assert "2.02x" in page and f"Run 2026-01-01 00:00 UTC on {info['cpu']}" in page
    assert "| quality | failed (timeout) |" in page and "**Did not finish**" in page and "Traceback: boom" in page


def test_a_run_keeps_what_it_did_not_measure():
    """``dedup`` rerun on a CPU machine: the GPU section, the other benchmarks and a hand-written section stay
    as they were, each with its own date and machine, in page order."""
    info = machine()
    gpu = {**info, "gpu": "NVIDIA H200"}
    old = render(
        [_result("curate", "old curate 2.0x"), _result("dedup", "old dedup 1.0x")], info, "2026-01-01 00:00 UTC"
    )
    old = merge(old, render([_result("train-cuda", "gpu 0.98x")], gpu, "2026-01-02 00:00 UTC"))
    old += "\n## recorded by hand\n\nA figure measured once.\n"
    page = merge(old, render([_result("dedup", "new dedup 3.0x")], info, "2026-02-02 00:00 UTC"))
    assert "old curate 2.0x" in page and "new dedup 3.0x" in page and "old dedup" not in page
    assert "gpu 0.98x" in page and "Run 2026-01-02 00:00 UTC on" in page and "GPU: NVIDIA H200" in page
    assert page.index("## curate") < page.index("## dedup") < page.index("## train-cuda") < page.index("## recorded")
    assert page.index("| curate |") < page.index("| dedup |") < page.index("| train-cuda |") < page.index("## curate")
    assert "Run 2026-01-01 00:00 UTC" in page and "Run 2026-02-02 00:00 UTC" in page
    assert page.count("| benchmark |") == 1 and "A figure measured once." in page


def test_what_a_run_leaves_out(monkeypatch):
    monkeypatch.setattr(run_all, "cuda_available", lambda: False)
    assert "GPU" in why_not(_bench("train-cuda"), "full", None)
    assert why_not(_bench("dedup-scale"), "quick", None) and not why_not(_bench("dedup-scale"), "full", None)
    assert not why_not(_bench("dedup-scale"), "quick", ["dedup-scale"])
    assert why_not(_bench("curate"), "quick", ["dedup"]) and not why_not(_bench("curate"), "quick", None)
    monkeypatch.setattr(run_all, "cuda_available", lambda: True)
    assert not why_not(_bench("train-cuda"), "quick", None)


def test_main_updates_the_page_without_dropping_a_gpu_section(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "cuda_available", lambda: False)
    ran = []

    def fake_run(b, size, timeout):
        ran.append(b.name)
        return _result(b.name, f"{b.name} now 1.5x")

    monkeypatch.setattr(run_all, "run_bench", fake_run)
    page = tmp_path / "BENCHMARKS.md"
    gpu = {**machine(), "gpu": "NVIDIA H200"}
    page.write_text(render([_result("train-cuda", "gpu 0.98x")], gpu, "2026-01-02 00:00 UTC"))
    assert run_all.main(["--out", str(page)]) == 0
    assert "train-cuda" not in ran and "dedup-scale" not in ran and "curate" in ran
    text = page.read_text()
    assert "gpu 0.98x" in text and "GPU: NVIDIA H200" in text and "curate now 1.5x" in text


def _scale_results(planned=(10_000, 30_000, 100_000)):
    """Made-up curve: every stage costs 2 s of start-up plus 1 ms of CPU per document; dedup's largest process
    doubles from the smallest to the largest size."""

    def stage(n, mb):
        return {
            "seconds": 2 + n / 1000,
            "cpu_seconds": 2 + n / 1000,
            "read": n,
            "kept": n // 2,
            "peak_process_mb": mb,
            "driver_mb": 100,
            "worker_mb": mb,
            "shuffle_bytes": 1000 * n,
            "shuffle_combiner_bytes": 0,
            "out_bytes": 10 * n,
            "in_text_bytes": 2000 * n,
        }

    points = [
        {
            "docs": n,
            "load_before": [1.0, 1.0, 1.0],
            "load_after": [2.0, 1.0, 1.0],
            "stages": {s: stage(n, 400 * (1 + (s == "dedup") * i / 2)) for s in _scale_module().STAGES},
        }
        for i, n in enumerate((10_000, 30_000, 100_000))
    ]
    return {
        "date": "2026-01-01 00:00 UTC",
        "machine": machine(),
        "workers": 2,
        "command": "python -m bench.scale",
        "planned": list(planned),
        "points": points,
    }


def _scale_module():
    """The scale bench's page module (cost model, ratios, render; its STAGES are the bench's own)."""
    import bench.scale_page

    return bench.scale_page


def test_scale_cost_model_arithmetic():
    scale = _scale_module()
    cm = scale.cost_model(_scale_results())
    pages = scale.CRAWL["pages"][0]
    # the slope (1 ms per document) times the documents each stage sees; start-up left out
    assert abs(cm["stages"]["curate"]["core_hours"] - 0.001 * pages / 3600) < 1e-6
    docs_dedup = pages * scale.KEEP["quality_filter"][0] * scale.KEEP["dedup"][0]
    assert abs(cm["stages"]["dedup"]["docs_in"] - docs_dedup) < 1
    assert abs(cm["stages"]["dedup"]["shuffle_tb"] - 1000 * docs_dedup / 1e12) < 1e-9
    assert abs(cm["core_hours"] - sum(v["core_hours"] for v in cm["stages"].values())) < 1e-6
    p = {k: v[0] for k, v in scale.PRICES.items()}
    assert abs(cm["ec2"] - cm["core_hours"] * p["cluster_overhead"] * p["ec2_vcpu_h"]) < 1e-6
    parts = cm["dataflow_parts"]
    assert abs(cm["dataflow"] - (parts["vcpu"] + parts["memory"] + parts["shuffle"])) < 1e-6
    files = scale.CRAWL["warc_files"][0]
    assert cm["gets"] % files == 0 and cm["gets"] >= scale.CRAWL["compressed_tb"][0] * 1e12 / (16 * 2**20)
    assert abs(cm["dedup_text_tb"] - docs_dedup * 2000 / 1e12) < 1e-9
    tiers = [p[f"aws_egress_{t}_gb"] for t in ("first_10tb", "next_40tb", "next_100tb", "beyond")]
    assert abs(scale.egress_cost(5_000) - 5_000 * tiers[0]) < 1e-6
    assert (
        abs(
            scale.egress_cost(200_000)
            - (10_000 * tiers[0] + 40_000 * tiers[1] + 100_000 * tiers[2] + 50_000 * tiers[3])
        )
        < 1e-6
    )


def test_scale_page_says_what_fails_and_names_every_source():
    scale = _scale_module()
    rat = scale.ratios(_scale_results())
    assert rat["dedup"]["memory"] == 2.0 and rat["curate"]["memory"] == 1.0
    assert abs(rat["curate"]["marginal_cpu"] - 1.0) < 1e-9 and rat["curate"]["time_vs_linear"] < 1
    page = scale.render(_scale_results())
    assert "| dedup |" in page and "**no**: memory" in page and "Outside the bars: dedup" in page
    assert "partial curve" not in page
    for table in (scale.CRAWL, scale.KEEP, scale.PRICES, scale.NEMO):
        for name, (_, _, source) in table.items():
            assert f"| `{name}` |" in page and source in page
    partial = scale.render(_scale_results(planned=(10_000, 30_000, 100_000, 300_000)))
    assert "**partial curve**" in partial
