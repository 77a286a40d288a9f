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
