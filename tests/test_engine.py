"""Curation on a real Beam engine, Apache Flink, gives the same outputs as the local runner.

The portable-runner tests prove the job API path in-process; this one runs every curation stage, curate to the
shards, through Beam's ``FlinkRunner``: a Java job server (Beam's Flink runner, :mod:`engines`) with its
embedded Flink cluster, parallelism 2, and the stages' Python code in SDK workers started by an external
worker pool: separate processes that get the job's pipeline options as a cluster's workers do
(:mod:`sdk_boot`). Every input and output is on an S3 server (moto), so the workers and the driver share
nothing but the bucket. Compared with the local runner on local disk: each stage's counts, the curate
stage's per-document outcome and counter lines, document tables, shards, tokenizer and manifest
(:mod:`s3_runs`).

``make test`` runs it: ``make engines`` fetches the runner with Maven first (about 150 MB into ``~/.m2``,
once). Without Java or Maven, or without Maven Central, the test skips saying why, and in CI (``CI=true``)
fails instead. One earlier run ended a document as ``gopher_repetition:error`` on Flink while the local
runner kept it: Flink's SDK harness runs bundles on several threads of one process, and every filter chain
shared datatrove's one cached spaCy pipeline, which is not safe across threads. Each chain now has its own
(``pipeline/filters.py``, ``_Words``), and ``tests/test_filters.py`` shows the shared one giving ``:error``
decisions on threads.
"""

from __future__ import annotations

import os

import engines
import pytest
import s3_runs

from pipeline.runner import RunnerConfig


@pytest.fixture(scope="module")
def flink_job_endpoint():
    """A Flink job server (Beam's Flink runner on an embedded Flink cluster) for this module."""
    try:
        jar = engines.flink_job_server_jar()
    except engines.EngineUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Flink job server unavailable in CI: {e}")
        pytest.skip(f"Flink job server unavailable: {e}")
    with engines.flink_job_service(jar) as endpoint:
        yield endpoint


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_curation_on_flink_with_its_data_on_s3_matches_the_local_runner(
    tiny_inputs, tiny_run_config, s3_server, s3_bucket, flink_job_endpoint, local_runner, tmp_path
):
    """Every curation stage, curate to the shards, on Flink, with every input and output on the S3 server: the
    workers share no folder with the driver here but the bucket (the store's endpoint reaches them as the
    ``--s3_endpoint_url`` pipeline option, its credentials from the environment the pool started in)."""
    fs = s3_runs.store(s3_server)
    local_out = str(tmp_path / "local-run")
    s3_runs.run_curation(tiny_run_config(local_out), local_runner)
    config = s3_runs.s3_config(fs, tiny_inputs, tiny_run_config, s3_bucket, str(tmp_path / "local-dir"))
    with engines.worker_pool(str(tmp_path)) as pool:
        options = [*engines.stage_options(flink_job_endpoint, pool), f"--s3_endpoint_url={s3_server}"]
        s3_runs.run_curation(config, RunnerConfig(runner="FlinkRunner", options=options))
    remote = f"{s3_bucket}/run"
    s3_runs.assert_same_outputs(fs, remote, local_out)
    # what each stage counted: its driver read the outcomes and counters the workers wrote to the bucket
    for folder in (*s3_runs.TABLE_STAGES, "quality_model", "tokenizer", "shards"):
        assert s3_runs.counts(fs, f"{remote}/{folder}") == s3_runs.counts(fs, f"{local_out}/{folder}"), folder
    assert s3_runs.counts(fs, f"{remote}/curate")[0] > 0
    for name in ("outcomes.jsonl", "counters.jsonl"):  # per-document lines: the same, in the engine's own order
        mine, theirs = (s3_runs.side_file(fs, f"{run}/curate", name) for run in (remote, local_out))
        assert sorted(mine.splitlines()) == sorted(theirs.splitlines()), name
