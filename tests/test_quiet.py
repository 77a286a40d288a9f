"""The ``ccgpt`` command prints its own lines only: no library ``INFO`` logs unless ``--verbose``, errors in one line.

Run as a user would, in a subprocess, on Beam's local runner with two worker processes: the workers are
separate processes with logging of their own, the usual source of Beam's start-up chatter.
"""

from __future__ import annotations

import json

from conftest import run_ccgpt, third_party_info


def test_quiet_by_default_and_verbose_brings_the_logs_back(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"paragraph {i} " * 40}) + "\n" for i in range(40)), encoding="utf-8")
    stage = ["source", str(src), "--name", "books", "--format", "jsonl"]
    stage += ["--num-workers", "2", "--running-mode", "multi_processing"]

    quiet = run_ccgpt(*stage, "--out", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["kept"] == 40
    assert third_party_info(quiet.stdout + quiet.stderr) == []
    assert "WARNING" not in quiet.stderr, quiet.stderr  # Beam's routine start-up warnings are not shown either

    verbose = run_ccgpt(*stage, "--out", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert any("apache_beam" in ln for ln in third_party_info(verbose.stderr)), verbose.stderr[-2000:]


def test_an_error_is_one_line_naming_the_cause(tmp_path):
    missing = tmp_path / "no-such-file.jsonl"
    res = run_ccgpt("source", str(missing), "--name", "x", "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ccgpt source: error:") and str(missing) in lines[0], res.stderr
