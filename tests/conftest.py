"""Shared fixtures: the real-data folder beside the repository, and small runner configs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import NoReturn

import pytest

from pipeline.logs import OWN_LOGGERS
from pipeline.runner import RunnerConfig
from pipeline.sample import Page, write_warc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


# The longest test files, longest first (per-file totals of pytest's --durations print, which every run shows).
# `make test` spreads whole files over processes in collection order (pytest-xdist, `--dist loadfile
# --no-loadscope-reorder`): these are collected first, so they start first and the short files fill the gaps,
# instead of a long file starting last and running alone. A stale list costs minutes, never a result.
LONG_FILES = (
    "test_determinism.py",
    "test_first_run.py",
    "test_crash.py",
    "test_engine.py",
    "test_dags.py",
    "test_object_store.py",
    "test_webtext.py",
    "test_quality.py",
    "test_trainer.py",
    "test_meta_init.py",
    "test_mix.py",
    "test_run_object_store.py",
    "test_eval.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The :data:`LONG_FILES` first, in their order; every other file after them, as collected. The sort is
    stable and keys on the file, so each file's tests stay together and in their own order."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


# a log line at INFO: ccgpt's format ("... INFO name: msg") or Python's default ("INFO:name:msg")
_INFO_LINE = re.compile(r"(?:^|\s)INFO(?:\s+|:)([\w.]+):")


def run_ccgpt(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``ccgpt ARGS...`` in a subprocess, as a user runs it (this checkout's code, output captured)."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CCGPT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


_ATTEMPT_TAG = re.compile(rb"\.attempt-[0-9a-f]{12}(?=\.)")


def without_tags(manifest: bytes) -> bytes:
    """A manifest's bytes with the attempt tags of the shard names it lists removed (each run tags its files
    anew: ``pipeline.commit``), every other byte as it is: what two runs' manifests compare by."""
    return _ATTEMPT_TAG.sub(b"", manifest)


def third_party_info(output: str) -> list[str]:
    """The lines of ``output`` logged at INFO by a logger that is not ccgpt's own."""
    return [
        ln for ln in output.splitlines() if (m := _INFO_LINE.search(ln)) and m.group(1).split(".")[0] not in OWN_LOGGERS
    ]


IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    """Something a test needs is missing: outside CI the test skips, saying what; in CI (``CI`` set, as every
    CI service does) it fails, so a CI run cannot pass by skipping what it is there to check."""
    if IN_CI:
        pytest.fail(f"{reason}; CI={os.environ['CI']}: required in CI", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def unavailable() -> Callable[[str], NoReturn]:
    """``unavailable(reason)``: skip outside CI, fail in CI (see ``_unavailable``)."""
    return _unavailable


def shared_data_dir() -> str:
    """``../shared/data`` (real Common Crawl excerpts, reference text, ...): skips without it, fails in CI."""
    if not os.path.isdir(SHARED_DATA):
        _unavailable(f"real test data not found at {SHARED_DATA} (see README: Test data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> str:
    return shared_data_dir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API for the session: ``moto_server`` (the ``moto[server]`` test extra) on 127.0.0.1 at a free port.

    Yields the endpoint URL. For the session it sets dummy credentials and a region, and ``AWS_ENDPOINT_URL``
    (read by boto3 and by ``train.storage``; pass it to Beam as ``--s3_endpoint_url``), with the user's AWS
    profile and config files out of the way, so nothing can reach a real account. Buckets: see ``s3_bucket``.
    """
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (pip install -e '.[test]')")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {endpoint}: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
                mp.delenv(name, raising=False)
            nowhere = str(log_path.parent / "no-aws-config")
            mp.setenv("AWS_CONFIG_FILE", nowhere)
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", nowhere)
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_REGION", "us-east-1")
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new, empty bucket on ``s3_server`` for one test; returns ``s3://<name>``."""
    import pyarrow.fs as pafs

    name = f"ccgpt-{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(
        endpoint_override=s3_server.split("://", 1)[1], scheme="http", region="us-east-1", allow_bucket_creation=True
    )
    fs.create_dir(name)
    return f"s3://{name}"


# the stage folders a whole run of the tiny config writes, in pipeline order (tests/test_e2e.py, test_first_run.py)
TINY_STAGE_FOLDERS = [
    "curate",
    "source-books",
    "source-wiki",
    "quality_model",
    "quality",
    "dedup",
    "decontam",
    "tokenizer",
    "shards",
    "train",
]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and a shared 2-core box makes OpenMP spin otherwise."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ONE_PROCESS_FLAGS = ["--runner", "local", "--num-workers", "1", "--running-mode", "in_memory"]


@pytest.fixture
def one_process_flags() -> list[str]:
    """The command-line flags of :func:`local_runner`: Beam's local runner in one process."""
    return list(ONE_PROCESS_FLAGS)


@pytest.fixture
def local_runner() -> RunnerConfig:
    """Beam's local runner in one process: fast for unit-sized pipelines."""
    return RunnerConfig(runner="local", num_workers=1, running_mode="in_memory")


@pytest.fixture
def portable_runner() -> RunnerConfig:
    """The portable job API with an embedded endpoint: the path Dataflow, Flink and Spark take."""
    return RunnerConfig(runner="portable")


def _write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t}) + "\n")


def _wikitext_articles(path, n):
    """WikiText-2 articles (split at ' = Title = ' headings), tokenisation artefacts undone."""
    text = open(path, encoding="utf-8").read()
    parts = re.split(r"\n (?== [^=])", text)
    arts = [re.sub(r" @(.)@ ", r"\1", p).strip() for p in parts if len(p) > 1500]
    return arts[:n]


@pytest.fixture
def tiny_inputs(shared_data, tmp_path):
    return make_tiny_inputs(shared_data, tmp_path / "inputs")


def make_tiny_inputs(shared_data: str, d) -> dict:
    """Real crawl archives, reference text and two sources, a few dozen documents each, under folder ``d``."""
    (d / "crawl").mkdir(parents=True)
    # real news pages wrapped as WARC responses, beside real Common Crawl / web-archive WARCs as they are
    pages = []
    with tarfile.open(os.path.join(shared_data, "html", "goose3.tar.gz")) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if m.isfile() and m.name.endswith(".html"):
                pages.append(
                    Page(
                        url=f"https://example.org/goose3/{os.path.basename(m.name)}",
                        body=tar.extractfile(m).read(),
                        content_type="text/html; charset=utf-8",
                        mtime=1700000000,
                        origin=f"goose3:{m.name}",
                    )
                )
    write_warc(str(d / "crawl" / "news.warc.gz"), pages[:40], {"software": "tests"})
    warc = os.path.join(shared_data, "warc")
    crawl = [
        str(d / "crawl" / "news.warc.gz"),
        os.path.join(warc, "cc-main-2014-35", "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"),
        os.path.join(warc, "cc-main-2024-22-whirlwind", "whirlwind.warc.gz"),
        os.path.join(warc, "pywb-sample", "iana.warc.gz"),
    ]
    ref = os.path.join(shared_data, "reference")
    _write_jsonl(d / "reference.jsonl", _wikitext_articles(os.path.join(ref, "wikitext-2", "test.txt"), 40))
    wiki = _wikitext_articles(os.path.join(ref, "wikitext-2", "valid.txt"), 30)
    _write_jsonl(d / "wiki.jsonl", wiki)
    # a "benchmark" whose passages sit inside three wiki documents: decontamination must cut them out
    _write_jsonl(d / "bench.jsonl", [a[500:1200] for a in wiki[:3]])
    shakespeare = open(os.path.join(ref, "tinyshakespeare.txt"), encoding="utf-8").read()
    _write_jsonl(d / "books.jsonl", [shakespeare[i : i + 3000] for i in range(0, 90_000, 3000)])
    return {
        "crawl": crawl,
        "reference": [str(d / "reference.jsonl")],
        "wiki": str(d / "wiki.jsonl"),
        "books": str(d / "books.jsonl"),
        "bench": str(d / "bench.jsonl"),
    }


@pytest.fixture
def tiny_run_config(tiny_inputs):
    """A run config (as a dict) for the whole pipeline on ``tiny_inputs``: seconds per stage, in one process."""
    return lambda out_dir: _tiny_config(tiny_inputs, out_dir)


def _tiny_config(inputs, out_dir) -> dict:
    return {
        "out_dir": out_dir,
        "crawl": inputs["crawl"],
        "reference": inputs["reference"],
        "sources": {
            "books": {"paths": [inputs["books"]], "format": "jsonl"},
            "wiki": {"paths": [inputs["wiki"]], "format": "jsonl"},
        },
        # the crawl in two input-file groups, so every run of the tiny pipeline commits and merges groups
        "curate": {"extract": {"extractor": "resiliparse"}, "read": {"group_bytes": 1_100_000}},
        "quality_train": {"dim": 16, "epoch": 10, "min_words": 5, "baseline": True},
        "quality_filter": {"rule": "top_fraction", "top_fraction": 0.6},
        "decontam": {"benchmarks": [inputs["bench"]]},
        "tokenizer": {"vocab_size": 600},
        "mix": {
            "weights": {"crawl": 0.5, "books": 0.3, "wiki": 0.2},
            "total_tokens": 40_000,
            "seq_len": 64,
            "rows_per_shard": 200,
            "pack_bucket_documents": 10,  # several packing buckets per source, as at crawl scale
        },
        "train": {
            "preset": "nano",
            "batch_size": 8,
            "max_steps": 24,
            "warmup_steps": 4,
            "lr": 0.003,
            "eval_every": 12,
            "log_every": 4,
            "checkpoint_every": 12,
        },
        "runner": {"runner": "local", "num_workers": 1, "running_mode": "in_memory"},
    }
