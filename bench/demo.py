"""How long ``make demo``'s run takes: ``ccgpt run configs/demo.yaml`` end to end, seconds per stage and in all.

Run by hand from the repository root (``bench.run_all`` runs it with ``--size full``)::

    .venv/bin/python -m bench.demo
    .venv/bin/python -m bench.demo --set train.max_steps=50     # any ``ccgpt run --set`` override

The run goes into a temporary folder (``runs/demo`` is left alone) with the demo config as it is: the sample
is built into ``data/sample`` from the download cache ``data/cache`` (the first run downloads the pinned
packages; later runs reuse them, so the figure is the run, not the network). Prints the wall-clock seconds
of each stage from the run's ``summary.json`` and the total; installation (``make install``) is not counted.
Then the zero-shot results of the demo's eval stage (``eval/scores.json``, the subset ``eval.limit`` sets): the
trained model beside the same architecture at initialisation and chance, so the page records what the demo's
model learned, not only how long it took.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to ccgpt run --set")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ccgpt-bench-demo-") as out:
        cmd = [sys.executable, "-m", "pipeline.cli", "run", args.config, "--out-dir", out]
        for item in args.set:
            cmd += ["--set", item]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        seconds = time.time() - t0
        if proc.returncode != 0:
            print(proc.stdout[-4000:] + proc.stderr[-4000:])
            return proc.returncode
        with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
            summary = json.load(fh)
        scores_path = os.path.join(out, "eval", "scores.json")
        scores = None
        if os.path.exists(scores_path):
            with open(scores_path, encoding="utf-8") as fh:
                scores = json.load(fh)
    print(f"{'stage':<24}{'seconds':>9}")
    for row in summary["stages"]:
        print(f"{row['stage']:<24}{row['seconds']:>9.1f}")
    print(f"{'ccgpt run (all stages)':<24}{summary['seconds']:>9.1f}")
    print(f"{'wall clock (process)':<24}{seconds:>9.1f}")
    print_scores(scores)
    return 0


def print_scores(scores: dict | None) -> None:
    """The eval stage's figures, trained vs initialisation (and chance where the task has one)."""
    if not scores:
        print("eval: not run (the task data under ../shared/data is not there)")
        return
    n, limit, step = scores["examples"], scores["limit"], scores["step"]
    print(f"eval: {n} examples, at most {limit} per task or subtask, after {step} steps")
    for task, metrics in scores["trained"].items():
        for metric, value in metrics.items():
            init = scores["initialisation"].get(task, {}).get(metric)
            chance = scores.get("chance", {}).get(task, {}).get(metric)
            line = f"{task} {metric}: trained {value:.4g}, initialisation {init:.4g}"
            print(line + (f", chance {chance:.4g}" if chance is not None else ""))


if __name__ == "__main__":
    sys.exit(main())
