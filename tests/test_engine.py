"""Curation on a real Beam engine, Apache Flink, gives the same documents as the local runner.

The portable-runner tests prove the job API path in-process; this one runs the curate stage through Beam's
``FlinkRunner``: a Java job server (Beam's Flink runner, :mod:`engines`) with its embedded Flink cluster,
parallelism 2, and the stage's Python code in SDK workers started by an external worker pool: separate
processes that get the job's pipeline options as a cluster's workers do (:mod:`sdk_boot`). A second test
runs every curation stage, curate to the shards, on Flink with all inputs and outputs on an S3 server
(moto), so the workers and the driver share nothing but the bucket, and compares with the local runner:
document tables, shards, tokenizer and manifest (:mod:`s3_runs`).

Opt-in (``CCGPT_ENGINE_TESTS=1``, after ``make engines`` fetches the runner with Maven, about 150 MB, once):
fetching and running Flink takes minutes that every ``make test`` would pay. One earlier run ended a document
as ``gopher_repetition:error`` on Flink while the local runner kept it: Flink's SDK harness runs bundles on
several threads of one process, and every filter chain shared datatrove's one cached spaCy pipeline, which is
not safe across threads. Each chain now has its own (``pipeline/filters.py``, ``_Words``), and
``tests/test_filters.py`` shows the shared one giving ``:error`` decisions on threads. With the
variable set, the test skips, saying why, when Java or Maven is missing or Maven Central cannot be reached,
and in CI (``CI=true``) it fails instead.
"""

from __future__ import annotations

import os

import engines
import pytest
import s3_runs

from pipeline.commit import committed_file
from pipeline.curate import CurateConfig, run_curate
from pipeline.runner import RunnerConfig
from pipeline.tables import read_documents


@pytest.fixture(scope="module")
def flink_job_endpoint():
    """A Flink job server (Beam's Flink runner on an embedded Flink cluster) for this module's tests."""
    try:
        jar = engines.flink_job_server_jar()
    except engines.EngineUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Flink job server unavailable in CI: {e}")
        pytest.skip(f"Flink job server unavailable: {e}")
    with engines.flink_job_service(jar) as endpoint:
        yield endpoint


@pytest.fixture
def flink_runner(flink_job_endpoint, tmp_path):
    """``--runner FlinkRunner``, parallelism 2, SDK harnesses from an external worker pool."""
    with engines.worker_pool(str(tmp_path)) as pool:
        yield RunnerConfig(runner="FlinkRunner", options=engines.stage_options(flink_job_endpoint, pool))


def _rows(folder: str) -> list[dict]:
    return sorted(read_documents(folder), key=lambda r: r["id"])


def _sorted_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return sorted(fh)


OPT_IN = pytest.mark.skipif(
    os.environ.get("CCGPT_ENGINE_TESTS") != "1",
    reason="opt-in (CCGPT_ENGINE_TESTS=1, after `make engines`): fetching and running Flink takes minutes",
)


@pytest.mark.slow
@pytest.mark.timeout(600)
@OPT_IN
def test_curate_on_flink_matches_local_runner(tiny_inputs, tmp_path, local_runner, flink_runner):
    crawl = tiny_inputs["crawl"]
    local_out, flink_out = str(tmp_path / "local"), str(tmp_path / "flink")
    local = run_curate(crawl, local_out, CurateConfig(), local_runner)
    flink = run_curate(crawl, flink_out, CurateConfig(), flink_runner)

    assert local.kept > 0
    # read, kept, dropped by reason, extra: all but what names the attempt, and the same files by untagged name
    run_keys = ("seconds", "attempt", "files")
    assert s3_runs.figures(flink, *run_keys) == s3_runs.figures(local, *run_keys)
    assert set(s3_runs.untagged_files(flink)) == set(s3_runs.untagged_files(local))
    assert _rows(flink_out) == _rows(local_out)  # the document table, row for row
    assert _rows(os.path.join(flink_out, "raw")) == _rows(os.path.join(local_out, "raw"))
    # side files the workers wrote and the driver read back: same lines, in the engine's own order
    for name in ("outcomes.jsonl", "counters.jsonl"):
        flink_side, local_side = (committed_file(os.path.join(o, name)) for o in (flink_out, local_out))
        assert _sorted_lines(flink_side) == _sorted_lines(local_side)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@OPT_IN
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
    s3_runs.assert_same_outputs(fs, f"{s3_bucket}/run", local_out)
