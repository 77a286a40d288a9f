"""Test helpers for the S3 server (``s3_server``): a client, uploads and reads, every object of a folder; and a
tiny run's curation stages with every input and output in a bucket, compared with local disk.

The run is shared by ``test_run_object_store.py`` (the portable runner) and ``test_engine.py`` (Apache Flink):
the inputs of ``tiny_inputs`` uploaded to a bucket, the run config pointed at them, and the comparison of two
runs' outputs — document tables (their ``source_file`` column aside: it records where each input was),
shards and tokenizer byte for byte, and the manifest (its location fields aside).
"""

from __future__ import annotations

import dataclasses
import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.commit import untagged
from pipeline.run import Run, RunConfig
from pipeline.runner import RunnerConfig
from pipeline.stages import STAGE_NAMES
from schemas.config import from_dict

CURATION = STAGE_NAMES[STAGE_NAMES.index("curate") : STAGE_NAMES.index("verify") + 1]
TABLE_STAGES = ("curate", "source-books", "source-wiki", "quality", "dedup", "decontam")


def store(s3_server: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=s3_server.split("://", 1)[1], scheme="http", region="us-east-1")


def upload(fs: pafs.S3FileSystem, local: str, url: str) -> str:
    pafs.copy_files(local, url[len("s3://") :], destination_filesystem=fs)
    return url


def objects(fs: pafs.S3FileSystem, url: str) -> dict[str, bytes]:
    """Every object under the ``s3://`` folder ``url``, by its path relative to it."""
    prefix = url[len("s3://") :]
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(prefix, recursive=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path, compression=None) as fh:
                out[info.path[len(prefix) + 1 :]] = fh.read()
    return out


def untagged_files(stats) -> dict[str, dict]:
    """A commit's file records by their names without the attempt tag (``pipeline.commit.untagged``): what two
    runs' files are compared by, since each attempt tags the files its workers name."""
    return {untagged(f["path"]): f for f in stats.extra["files"]}


def by_name(files: dict[str, bytes]) -> dict[str, bytes]:
    """:func:`objects` or :func:`local_files` keyed by names without the attempt tag."""
    return {untagged(path): data for path, data in files.items()}


def local_files(folder: str) -> dict[str, bytes]:
    """Every file under a local folder, by its path relative to it (``/``-separated)."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as fh:
                out[os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")] = fh.read()
    return out


def figures(stats, *leave_out: str) -> tuple:
    """What a stage counted and measured, without the ``extra`` keys that name the run or its paths."""
    extra = {k: v for k, v in stats.extra.items() if k not in leave_out}
    return stats.read, stats.kept, stats.dropped, extra


def s3_config(fs: pafs.S3FileSystem, tiny_inputs: dict, tiny_run_config, bucket: str, local_dir: str) -> dict:
    """The tiny run config with its crawl, reference text, sources, benchmark and ``out_dir`` in ``bucket``."""
    for path in tiny_inputs["crawl"]:
        upload(fs, path, f"{bucket}/crawl/{path.rsplit('/', 1)[-1]}")
    texts = {k: upload(fs, tiny_inputs[k], f"{bucket}/texts/{k}.jsonl") for k in ("wiki", "books", "bench")}
    config = tiny_run_config(f"{bucket}/run")
    config.update(crawl=[f"{bucket}/crawl/*"], local_dir=local_dir)
    config["reference"] = [upload(fs, tiny_inputs["reference"][0], f"{bucket}/ref/reference.jsonl")]
    config["sources"]["books"]["paths"] = [texts["books"]]
    config["sources"]["wiki"]["paths"] = [texts["wiki"]]
    config["decontam"]["benchmarks"] = [texts["bench"]]
    return config


def run_curation(config: dict, runner: RunnerConfig) -> Run:
    run = Run(dataclasses.replace(from_dict(RunConfig, config), runner=runner))
    for stage in CURATION:
        if not run.skips(stage):
            getattr(run, stage)()
    return run


def read(fs: pafs.S3FileSystem, path: str) -> bytes:
    if path.startswith("s3://"):
        with fs.open_input_stream(path[len("s3://") :]) as fh:
            return fh.read()
    with open(path, "rb") as fh:
        return fh.read()


def committed(fs: pafs.S3FileSystem, folder: str) -> list[str]:
    return [f["path"] for f in json.loads(read(fs, f"{folder}/stats.json"))["files"]]


def counts(fs: pafs.S3FileSystem, folder: str) -> tuple:
    """A committed stage's ``read``, ``kept`` and ``dropped`` counts (its ``stats.json``)."""
    stats = json.loads(read(fs, f"{folder}/stats.json"))
    return stats["read"], stats["kept"], stats["dropped"]


def side_file(fs: pafs.S3FileSystem, folder: str, name: str) -> str:
    """The text of the file a committed stage's workers wrote as ``name`` (found by its untagged name in the
    stage's file list)."""
    (path,) = [f for f in committed(fs, folder) if untagged(f) == name]
    return read(fs, f"{folder}/{path}").decode("utf-8")


def table(fs: pafs.S3FileSystem, folder: str) -> pa.Table:
    files = [f for f in committed(fs, folder) if f.endswith(".parquet") and "/" not in f]
    tables = [pq.read_table(pa.BufferReader(read(fs, f"{folder}/{f}"))) for f in files]
    return pa.concat_tables(tables).drop_columns(["source_file"]).sort_by([("id", "ascending")])


def untagged_shards(manifest: dict) -> dict:
    """The manifest with its shards' file names untagged (each run tags its files anew), all else as it is."""
    manifest = dict(manifest)
    manifest["shards"] = [{**s, "file": untagged(s["file"])} for s in manifest["shards"]]
    if manifest.get("validation"):
        val = manifest["validation"]
        manifest["validation"] = {**val, "shards": [{**s, "file": untagged(s["file"])} for s in val["shards"]]}
    return manifest


def _without_locations(manifest: dict) -> dict:
    """The manifest's fields that say where things were (inputs in the lineage, the tokenizer's path) left out,
    its shard names untagged (:func:`untagged_shards`)."""
    manifest = {k: v for k, v in untagged_shards(manifest).items() if k != "lineage"}
    manifest["tokenizer"] = {k: v for k, v in manifest["tokenizer"].items() if k != "path"}
    return manifest


def assert_same_outputs(fs: pafs.S3FileSystem, remote: str, local: str) -> None:
    """Two runs' curation outputs are the same (see the module docstring)."""
    for stage in TABLE_STAGES:
        assert table(fs, f"{remote}/{stage}").equals(table(fs, f"{local}/{stage}")), stage
    shards = {run: [f for f in committed(fs, f"{run}/shards") if f.endswith(".arrow")] for run in (remote, local)}
    assert shards[remote] and [untagged(f) for f in shards[remote]] == [untagged(f) for f in shards[local]]
    pairs = [(f"shards/{mine}", f"shards/{theirs}") for mine, theirs in zip(shards[remote], shards[local])]
    for mine, theirs in [*pairs, ("tokenizer/tokenizer.json",) * 2]:
        assert read(fs, f"{remote}/{mine}") == read(fs, f"{local}/{theirs}"), mine
    manifests = [json.loads(read(fs, f"{run}/shards/manifest.json")) for run in (remote, local)]
    assert _without_locations(manifests[0]) == _without_locations(manifests[1])
