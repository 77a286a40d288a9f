"""A whole run with its inputs and every stage folder on an object store (a real S3 API: moto_server).

The curation stages up to the shards run with crawl, reference text, sources, benchmark and ``out_dir`` on
``s3://``, on the portable runner (the job API Flink and Spark take), from an empty working folder; the same
run on local disk, on the local runner, is the reference. Nothing may be written outside the bucket and the
system temp folder, and the outputs must be the same: document tables (the ``source_file`` column aside: it
records where each input was), shards byte for byte, and the manifest (its location fields aside).
"""

from __future__ import annotations

import os

import pytest
from s3_runs import assert_same_outputs, run_curation, s3_config, store

from pipeline.run import Run, RunConfig
from pipeline.runner import RunnerConfig
from schemas.config import from_dict


def test_a_run_on_s3_on_the_portable_runner_matches_local_disk(
    tiny_inputs, tiny_run_config, s3_server, s3_bucket, local_runner, tmp_path, monkeypatch
):
    fs = store(s3_server)
    local_out = str(tmp_path / "local-run")
    local = run_curation(tiny_run_config(local_out), local_runner)
    config = s3_config(fs, tiny_inputs, tiny_run_config, s3_bucket, str(tmp_path / "local-dir"))

    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    before = sorted(p for p in tmp_path.rglob("*") if "local-run" not in p.parts)
    remote = run_curation(config, RunnerConfig(runner="portable"))
    after = sorted(p for p in tmp_path.rglob("*") if "local-run" not in p.parts)
    assert after == before, "the run wrote outside the bucket and the system temp folder"

    assert_same_outputs(fs, f"{s3_bucket}/run", local_out)
    assert remote.verify()["rows"] == local.verify()["rows"]  # verify raises on any mismatch


def test_out_dir_on_gs_without_the_gcp_extra_is_a_clear_error(tiny_run_config, monkeypatch):
    """Before any work, never a local folder named after the URL."""
    import importlib.util

    from pipeline.fs import StorageError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("google") else real(name, *a)
    )
    with pytest.raises(StorageError, match=r"apache-beam\[gcp\]"):
        Run(from_dict(RunConfig, tiny_run_config("gs://bucket/run")))
    assert not os.path.exists("gs:")
