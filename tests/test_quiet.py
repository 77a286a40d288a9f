"""The ``ccgpt`` command prints its own lines only: no library ``INFO`` logs unless ``--verbose``, errors in one line.

Run as a user would, in a subprocess, on Beam's local runner with two worker processes: the workers are
separate processes with logging of their own, the usual source of Beam's start-up chatter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from pipeline.logs import OWN_LOGGERS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a log line at INFO: ccgpt's format ("... INFO name: msg") or Python's default ("INFO:name:msg")
INFO = re.compile(r"(?:^|\s)INFO(?:\s+|:)([\w.]+):")


def _ccgpt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CCGPT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _third_party_info(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if (m := INFO.search(ln)) and m.group(1).split(".")[0] not in OWN_LOGGERS]


def test_quiet_by_default_and_verbose_brings_the_logs_back(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"paragraph {i} " * 40}) + "\n" for i in range(40)), encoding="utf-8")
    stage = ["source", str(src), "--name", "books", "--format", "jsonl"]
    stage += ["--num-workers", "2", "--running-mode", "multi_processing"]

    quiet = _ccgpt(*stage, "--out", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["kept"] == 40
    assert _third_party_info(quiet.stdout + quiet.stderr) == []
    assert "WARNING" not in quiet.stderr, quiet.stderr  # Beam's routine start-up warnings are not shown either

    verbose = _ccgpt(*stage, "--out", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert any("apache_beam" in ln for ln in _third_party_info(verbose.stderr)), verbose.stderr[-2000:]


def test_an_error_is_one_line_naming_the_cause(tmp_path):
    missing = tmp_path / "no-such-file.jsonl"
    res = _ccgpt("source", str(missing), "--name", "x", "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ccgpt source: error:") and str(missing) in lines[0], res.stderr
