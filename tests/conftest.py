"""Shared fixtures: the real-data folder beside the repository, and small runner configs."""

from __future__ import annotations

import os

import pytest

from pipeline.runner import RunnerConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


@pytest.fixture(scope="session")
def shared_data() -> str:
    """``../shared/data`` (real Common Crawl excerpts, reference text, ...); skip when it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("real test data not found at ../shared/data (see README: Test data)")
    return SHARED_DATA


@pytest.fixture
def local_runner() -> RunnerConfig:
    """Beam's local runner in one process: fast for unit-sized pipelines."""
    return RunnerConfig(runner="local", num_workers=1, running_mode="in_memory")


@pytest.fixture
def portable_runner() -> RunnerConfig:
    """The portable job API with an embedded endpoint: the path Dataflow, Flink and Spark take."""
    return RunnerConfig(runner="portable")
