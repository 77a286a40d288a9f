"""Crash safety: ``ccgpt run`` killed with SIGKILL mid-stage, then rerun, ends byte-identical to a clean run.

Every stage commits by writing ``stats.json`` last (``pipeline.commit``): a killed stage leaves a folder
without it, which the rerun clears and redoes, and the trainer resumes exactly from its checkpoint. The
test kills the run, on the default multi-worker local runner, while three Beam stages write their files
(once curate's document table, dedup's hand-off files and the first shard exist), and again while the model
trains, and compares with an uninterrupted run:
document tables, dedup clusters and index, shards, manifest and tokenizer byte for byte, training losses
step for step (timings inside stats may differ; data may not).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import without_tags

from pipeline.commit import untagged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(config: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", config],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_when(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if glob.glob(pattern):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"run finished before {pattern} appeared (rc {proc.returncode})")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{pattern} never appeared")


def _data_files(run: str) -> dict[str, bytes]:
    """What must be byte-identical: document tables, dedup clusters and index, shards, manifest, mix table,
    tokenizer; by names without the attempt tag (each attempt tags the files its workers name)."""
    files = {}
    for pattern in (
        "shards/*.arrow",
        "shards/manifest.json",
        "shards/mix_table.md",
        "tokenizer/tokenizer.json",
        "*/*.parquet",
        "dedup/clusters-*.jsonl",
        "dedup/index/*.parquet",
    ):
        for path in sorted(glob.glob(os.path.join(run, pattern))):
            with open(path, "rb") as fh:
                data = fh.read()
            files[untagged(os.path.relpath(path, run))] = without_tags(data) if path.endswith("manifest.json") else data
    return files


@pytest.mark.slow
def test_kill_and_rerun_is_byte_identical(tiny_run_config, tmp_path):
    cfg = tiny_run_config(str(tmp_path / "run"))
    cfg["runner"] = {"runner": "local"}  # the default: one worker process per core
    cfg["train"]["max_steps"] = 60
    cfg["train"]["checkpoint_every"] = 10
    config = str(tmp_path / "run.yaml")
    with open(config, "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg, fh)

    # the uninterrupted run, moved aside; the interrupted one then runs in the same place with the same config
    assert (
        subprocess.run([sys.executable, "-m", "pipeline.cli", "run", config], cwd=REPO, capture_output=True).returncode
        == 0
    )
    os.rename(tmp_path / "run", tmp_path / "clean")
    killed = str(tmp_path / "run")
    # Beam stages mid-write, once some of their files exist: the first stage's document table, dedup's hand-off
    # files between its steps, the first shard
    for stage, written in (("curate", "documents-*.parquet"), ("dedup", "_work*/*"), ("shards", "shard-*.arrow")):
        _kill_when(_start(config), os.path.join(killed, stage, written))
        assert os.path.exists(os.path.join(killed, stage, "_attempt.json")), stage
        assert not os.path.exists(os.path.join(killed, stage, "stats.json")), stage
    _kill_when(_start(config), os.path.join(killed, "train", "checkpoints", "*", ".metadata"))  # training mid-way
    with open(os.path.join(killed, "train", "log.jsonl"), encoding="utf-8") as fh:
        assert len(fh.readlines()) < 20  # it really stopped part way
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", config], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    clean_files, killed_files = _data_files(str(tmp_path / "clean")), _data_files(killed)
    assert clean_files.keys() == killed_files.keys() and len(clean_files) > 5
    assert clean_files == killed_files
    assert not glob.glob(os.path.join(killed, "*", "_attempt.json"))  # every stage committed
    assert not glob.glob(os.path.join(killed, "*", "beam-temp-*"))  # the killed attempts' files were cleared
    # training resumed exactly: the same loss at every logged step (a restart also logs its first step)
    losses = [
        {
            r["step"]: r["loss"]
            for r in map(json.loads, open(os.path.join(run, "train", "log.jsonl")))
            if r["kind"] == "train"
        }
        for run in (str(tmp_path / "clean"), killed)
    ]
    assert max(losses[0]) == max(losses[1]) == 60
    assert {step: losses[1][step] for step in losses[0]} == losses[0]
