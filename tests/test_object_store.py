"""Curation reads its WARC inputs from an object store (a real S3 API: moto_server) through Beam's FileSystems.

The same WARC read from ``s3://`` and from local disk gives the same documents (the ``source_file`` column
records where each came from, so it differs); a glob over a bucket expands through the object store, and an
object added under it reruns the stage.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.curate import CurateConfig, run_curate
from pipeline.read import expand_inputs
from schemas.config import from_dict


def _documents(folder: str) -> list[tuple]:
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".parquet"))
    table = pa.concat_tables(pq.read_table(f, columns=["id", "url", "text", "language"]) for f in files)
    return sorted(zip(*(table[c].to_pylist() for c in table.column_names)))


def test_curate_reads_warc_files_from_s3_like_local_ones(shared_data, s3_bucket, s3_server, local_runner, tmp_path):
    warc = os.path.join(shared_data, "warc", "pywb-sample", "iana.warc.gz")
    fs = pafs.S3FileSystem(endpoint_override=s3_server.split("://", 1)[1], scheme="http", region="us-east-1")
    bucket = s3_bucket[len("s3://") :]
    pafs.copy_files(warc, f"{bucket}/crawl/a.warc.gz", destination_filesystem=fs)
    assert expand_inputs([f"{s3_bucket}/crawl/*.warc.gz"]) == [f"{s3_bucket}/crawl/a.warc.gz"]
    assert expand_inputs([f"{s3_bucket}/crawl"]) == [f"{s3_bucket}/crawl/a.warc.gz"]  # a prefix: its WARC files

    cfg = from_dict(CurateConfig, {"extract": {"extractor": "resiliparse"}})
    local = run_curate([warc], str(tmp_path / "local"), cfg, local_runner)
    remote = run_curate([f"{s3_bucket}/crawl/*.warc.gz"], str(tmp_path / "s3"), cfg, local_runner)
    assert remote.read == local.read > 0 and remote.kept == local.kept and remote.dropped == local.dropped
    assert _documents(str(tmp_path / "s3")) == _documents(str(tmp_path / "local"))

    # an object added under the glob is seen: the stage reruns instead of skipping itself as complete
    pafs.copy_files(warc, f"{bucket}/crawl/b.warc.gz", destination_filesystem=fs)
    again = run_curate([f"{s3_bucket}/crawl/*.warc.gz"], str(tmp_path / "s3"), cfg, local_runner)
    assert again.extra["input_files"] == 2 and again.read == 2 * local.read
