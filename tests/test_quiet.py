"""The ``ccgpt`` command prints its own lines only: no library ``INFO`` logs unless ``--verbose``, errors in one line.

Run as a user would, in a subprocess, on Beam's local runner with two worker processes: the workers are
separate processes with logging of their own, the usual source of Beam's start-up chatter.
"""

from __future__ import annotations

import json
import tempfile

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


def test_an_unexpected_error_names_its_cause_and_its_traceback_file(tmp_path, monkeypatch, capsys):
    """Not one of ccgpt's own errors (a failed pipeline, a bug): one line with the cause, one with the file that
    holds the traceback. A failed Beam pipeline's message carries the worker's traceback: its last line is the
    cause."""
    import pipeline.report
    from pipeline.cli import main

    def fail(*_):
        raise RuntimeError(
            "Pipeline failed.\nTraceback (most recent call last):\n  File 'x.py', line 1, in f\n"
            "KeyError: 'text' [while running 'Curate/Extract']"
        )

    monkeypatch.setattr(pipeline.report, "write_report", fail)
    monkeypatch.delenv("CCGPT_DEBUG", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the traceback file goes there
    assert main(["report", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "ccgpt report: error: KeyError: 'text' [while running 'Curate/Extract']"
    path = lines[1].split("full traceback in ", 1)[1]
    assert len(lines) == 2 and path.startswith(str(tmp_path)) and "Traceback" in open(path, encoding="utf-8").read()
