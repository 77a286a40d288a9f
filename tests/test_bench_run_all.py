"""bench/run_all.py: ratio lines found, failures shown, the page names date and machine (no timing here)."""

from __future__ import annotations

from bench.run_all import BENCHES, machine, merge, ratio_lines, render


def test_ratio_lines_pick_comparisons_only():
    out = "pages: 150\nratio ccgpt/datatrove: 2.02x (one core each)\nversion 0.10.1\nspeed 15.3 pages/s\n1.9x faster"
    assert ratio_lines(out) == ["ratio ccgpt/datatrove: 2.02x (one core each)", "1.9x faster"]


def test_page_lists_every_bench_with_status_and_machine():
    ok = {
        "bench": BENCHES[0],
        "cmd": "python -m bench.curate",
        "rc": 0,
        "seconds": 12.0,
        "output": "ratio ccgpt/datatrove: 2.02x",
        "load_before": "1.0 / 1.0 / 1.0",
        "load_after": "2.0 / 1.0 / 1.0",
    }
    bad = {**ok, "bench": BENCHES[1], "rc": "timeout", "output": "partial line\nTraceback: boom"}
    info = machine()
    page = render([ok, bad], info, "2026-01-01 00:00 UTC")
    assert "2026-01-01 00:00 UTC" in page and info["cores"] in page and info["cpu"] in page
    assert "| curate | ok | 12.0 |" in page and "2.02x" in page
    assert "| quality | failed (timeout) |" in page and "**Did not finish**" in page and "Traceback: boom" in page


def test_only_rerun_keeps_the_other_sections():
    """``--only dedup`` replaces dedup's row and section and keeps every other benchmark's, in page order."""
    info = machine()

    def result(i, line):
        return {
            "bench": BENCHES[i],
            "cmd": f"python -m bench.{BENCHES[i].name}",
            "rc": 0,
            "seconds": 1.0,
            "output": line,
            "load_before": "1 / 1 / 1",
            "load_after": "1 / 1 / 1",
        }

    dedup = next(i for i, b in enumerate(BENCHES) if b.name == "dedup")
    old = render([result(0, "old curate 2.0x"), result(dedup, "old dedup 1.0x")], info, "2026-01-01 00:00 UTC")
    new = render([result(dedup, "new dedup 3.0x")], info, "2026-02-02 00:00 UTC")
    page = merge(old, new)
    assert "old curate 2.0x" in page and "new dedup 3.0x" in page and "old dedup" not in page
    assert page.index("## curate") < page.index("## dedup")
    assert page.index("| curate |") < page.index("| dedup |") < page.index("## curate")
    assert "Run 2026-01-01 00:00 UTC" in page and "Run 2026-02-02 00:00 UTC" in page
    assert page.count("| benchmark |") == 1
