"""How long ``make demo``'s run takes: ``ccgpt run configs/demo.yaml`` end to end, seconds per stage and in all.

Run by hand from the repository root (``bench.run_all`` runs it with ``--size full``)::

    .venv/bin/python -m bench.demo
    .venv/bin/python -m bench.demo --set train.max_steps=50     # any ``ccgpt run --set`` override

The run goes into a temporary folder (``runs/demo`` is left alone) with the demo config as it is: the sample
is built into ``data/sample`` from the download cache ``data/cache`` (the first run downloads the pinned
packages; later runs reuse them, so the figure is the run, not the network). Prints the wall-clock seconds
of each stage from the run's ``summary.json`` and the total; installation (``make install``) is not counted.
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
    print(f"{'stage':<24}{'seconds':>9}")
    for row in summary["stages"]:
        print(f"{row['stage']:<24}{row['seconds']:>9.1f}")
    print(f"{'ccgpt run (all stages)':<24}{summary['seconds']:>9.1f}")
    print(f"{'wall clock (process)':<24}{seconds:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
