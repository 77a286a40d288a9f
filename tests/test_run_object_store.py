"""A whole run with its inputs and every stage folder on an object store (a real S3 API: moto_server).

The curation stages up to the shards run with crawl, reference text, sources, benchmark and ``out_dir`` on
``s3://``, on the portable runner (the job API Flink and Spark take), from an empty working folder; the same
run on local disk, on the local runner, is the reference. Nothing may be written outside the bucket and the
system temp folder, and the outputs must be the same: document tables (the ``source_file`` column aside: it
records where each input was), shards byte for byte, and the manifest (its location fields aside).
"""

from __future__ import annotations

import dataclasses
import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.run import Run, RunConfig
from pipeline.runner import RunnerConfig
from pipeline.stages import STAGE_NAMES
from schemas.config import from_dict

CURATION = STAGE_NAMES[STAGE_NAMES.index("curate") : STAGE_NAMES.index("verify") + 1]
TABLE_STAGES = ("curate", "source-books", "source-wiki", "quality", "dedup", "decontam")


def _store(s3_server: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=s3_server.split("://", 1)[1], scheme="http", region="us-east-1")


def _upload(store, local: str, url: str) -> str:
    pafs.copy_files(local, url[len("s3://") :], destination_filesystem=store)
    return url


def _run(config: dict, runner: RunnerConfig) -> Run:
    cfg = dataclasses.replace(from_dict(RunConfig, config), runner=runner)
    run = Run(cfg)
    for stage in CURATION:
        if not run.skips(stage):
            getattr(run, stage)()
    return run


def _read(store, path: str) -> bytes:
    if path.startswith("s3://"):
        with store.open_input_stream(path[len("s3://") :]) as fh:
            return fh.read()
    with open(path, "rb") as fh:
        return fh.read()


def _committed(store, folder: str) -> list[str]:
    return [f["path"] for f in json.loads(_read(store, f"{folder}/stats.json"))["files"]]


def _table(store, folder: str) -> pa.Table:
    files = [f for f in _committed(store, folder) if f.endswith(".parquet") and "/" not in f]
    tables = [pq.read_table(pa.BufferReader(_read(store, f"{folder}/{f}"))) for f in files]
    table = pa.concat_tables(tables).drop_columns(["source_file"])
    return table.sort_by([("id", "ascending")])


def test_a_run_on_s3_on_the_portable_runner_matches_local_disk(
    tiny_inputs, tiny_run_config, s3_server, s3_bucket, local_runner, tmp_path, monkeypatch
):
    store = _store(s3_server)
    local_out = str(tmp_path / "local-run")
    local = _run(tiny_run_config(local_out), local_runner)

    # every input on the object store; out_dir too
    remote_inputs = {
        "crawl": [_upload(store, p, f"{s3_bucket}/crawl/{os.path.basename(p)}") for p in tiny_inputs["crawl"]],
        "reference": [_upload(store, tiny_inputs["reference"][0], f"{s3_bucket}/ref/reference.jsonl")],
        **{k: _upload(store, tiny_inputs[k], f"{s3_bucket}/texts/{k}.jsonl") for k in ("wiki", "books", "bench")},
    }
    config = tiny_run_config(f"{s3_bucket}/run")
    config.update(crawl=[f"{s3_bucket}/crawl/*"], reference=remote_inputs["reference"])
    config["sources"]["books"]["paths"] = [remote_inputs["books"]]
    config["sources"]["wiki"]["paths"] = [remote_inputs["wiki"]]
    config["decontam"]["benchmarks"] = [remote_inputs["bench"]]
    config["local_dir"] = str(tmp_path / "local-dir")

    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    before = sorted(p for p in tmp_path.rglob("*") if "local-run" not in p.parts)
    remote = _run(config, RunnerConfig(runner="portable"))
    after = sorted(p for p in tmp_path.rglob("*") if "local-run" not in p.parts)
    assert after == before, "the run wrote outside the bucket and the system temp folder"

    for stage in TABLE_STAGES:
        assert _table(store, f"{s3_bucket}/run/{stage}").equals(_table(store, f"{local_out}/{stage}")), stage
    shards = [f for f in _committed(store, f"{s3_bucket}/run/shards") if f.endswith(".arrow")]
    assert shards and shards == [f for f in _committed(store, f"{local_out}/shards") if f.endswith(".arrow")]
    for f in shards:
        assert _read(store, f"{s3_bucket}/run/shards/{f}") == _read(store, f"{local_out}/shards/{f}"), f
    assert _read(store, f"{s3_bucket}/run/tokenizer/tokenizer.json") == _read(
        store, f"{local_out}/tokenizer/tokenizer.json"
    )

    def without_locations(manifest: dict) -> dict:
        """The manifest's fields that say where things were (inputs in the lineage, the tokenizer's path)."""
        manifest = {k: v for k, v in manifest.items() if k != "lineage"}
        manifest["tokenizer"] = {k: v for k, v in manifest["tokenizer"].items() if k != "path"}
        return manifest

    remote_manifest = json.loads(_read(store, f"{s3_bucket}/run/shards/manifest.json"))
    local_manifest = json.loads(_read(store, f"{local_out}/shards/manifest.json"))
    assert without_locations(remote_manifest) == without_locations(local_manifest)
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
