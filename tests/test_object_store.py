"""Curation reads its WARC inputs from an object store (a real S3 API: moto_server) through Beam's FileSystems.

The same WARC read from ``s3://`` and from local disk gives the same documents (the ``source_file`` column
records where each came from, so it differs); a glob over a bucket expands through the object store, and an
object added under it reruns the stage.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import s3_runs

from pipeline.commit import untagged
from pipeline.curate import CurateConfig, run_curate
from pipeline.read import expand_inputs
from schemas.config import from_dict


def _documents(folder: str) -> list[tuple]:
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".parquet"))
    table = pa.concat_tables(pq.read_table(f, columns=["id", "url", "text", "language"]) for f in files)
    return sorted(zip(*(table[c].to_pylist() for c in table.column_names)))


def test_curate_reads_warc_files_from_s3_like_local_ones(shared_data, s3_bucket, s3_server, local_runner, tmp_path):
    warc = os.path.join(shared_data, "warc", "pywb-sample", "iana.warc.gz")
    fs = s3_runs.store(s3_server)
    bucket = s3_bucket[len("s3://") :]
    pafs.copy_files(warc, f"{bucket}/crawl/a.warc.gz", destination_filesystem=fs)
    assert [p for p, _ in expand_inputs([f"{s3_bucket}/crawl/*.warc.gz"])] == [f"{s3_bucket}/crawl/a.warc.gz"]
    assert [p for p, _ in expand_inputs([f"{s3_bucket}/crawl"])] == [f"{s3_bucket}/crawl/a.warc.gz"]  # a prefix: WARCs

    cfg = from_dict(CurateConfig, {"extract": {"extractor": "resiliparse"}})
    local = run_curate([warc], str(tmp_path / "local"), cfg, local_runner)
    remote = run_curate([f"{s3_bucket}/crawl/*.warc.gz"], str(tmp_path / "s3"), cfg, local_runner)
    assert remote.read == local.read > 0 and remote.kept == local.kept and remote.dropped == local.dropped
    assert _documents(str(tmp_path / "s3")) == _documents(str(tmp_path / "local"))

    # an object added under the glob is seen: the stage reruns instead of skipping itself as complete
    pafs.copy_files(warc, f"{bucket}/crawl/b.warc.gz", destination_filesystem=fs)
    again = run_curate([f"{s3_bucket}/crawl/*.warc.gz"], str(tmp_path / "s3"), cfg, local_runner)
    assert again.extra["input_files"] == 2 and again.read == 2 * local.read


def test_curate_commits_its_output_on_s3_like_on_local_disk(shared_data, s3_bucket, s3_server, local_runner, tmp_path):
    """Curate writes to an object store (nothing is renamed there): the same document tables byte for byte,
    a ``stats.json`` listing every file, a rerun that skips, and a downstream stage that reads the tables from
    the committed list only, never a straggler's file."""
    from pipeline.commit import committed_files
    from pipeline.decontam import DecontamConfig, run_decontam

    warc = os.path.join(shared_data, "warc", "pywb-sample", "iana.warc.gz")
    cfg = from_dict(CurateConfig, {"extract": {"extractor": "resiliparse"}})
    local_out, remote_out = str(tmp_path / "local"), f"{s3_bucket}/runs/curate"
    local = run_curate([warc], local_out, cfg, local_runner)
    remote = run_curate([warc], remote_out, cfg, local_runner)
    assert (remote.read, remote.kept, remote.dropped) == (local.read, local.kept, local.dropped) and local.kept > 0

    store, bucket = s3_runs.store(s3_server), s3_bucket[len("s3://") :]
    listed = [f["path"] for f in remote.extra["files"]]
    on_disk = {name: f["path"] for name, f in s3_runs.untagged_files(local).items()}
    assert list(s3_runs.untagged_files(remote)) == list(on_disk)
    assert "documents-g00000-00000-of-00001.parquet" in on_disk
    for name, f in s3_runs.untagged_files(remote).items():  # every committed file is there with its size and checksum
        with store.open_input_stream(f"{bucket}/runs/curate/{f['path']}") as fh:
            data = fh.read()
        assert len(data) == f["size"]
        if name.endswith(".parquet"):
            with open(os.path.join(local_out, on_disk[name]), "rb") as lf:
                assert data == lf.read(), name  # the same bytes as on local disk
    info = store.get_file_info(pafs.FileSelector(f"{bucket}/runs/curate", recursive=True))
    assert not [i.path for i in info if "_attempt" in i.path or "beam-temp" in i.path]

    assert run_curate([warc], remote_out, cfg, local_runner).extra["attempt"] == remote.extra["attempt"]  # skipped

    # a straggler's late file under the committed folder is not read: readers take stats.json's list
    with open(os.path.join(local_out, on_disk["documents-g00000-00000-of-00001.parquet"]), "rb") as lf:
        doc_bytes = lf.read()
    with store.open_output_stream(f"{bucket}/runs/curate/documents-straggler.parquet") as fh:
        fh.write(doc_bytes)
    assert len(committed_files(remote_out)) == len(listed)
    bench = tmp_path / "bench.txt"
    bench.write_text("a benchmark passage long enough to give thirteen word n grams for the decontamination test\n")
    dcfg = DecontamConfig(benchmarks=[str(bench)])
    from_s3 = run_decontam([remote_out], str(tmp_path / "decontam-s3"), dcfg, local_runner)
    from_local = run_decontam([local_out], str(tmp_path / "decontam-local"), dcfg, local_runner)
    assert from_s3.read == from_local.read == local.kept  # the straggler's copies were never read
    assert _documents(str(tmp_path / "decontam-s3")) == _documents(str(tmp_path / "decontam-local"))


def test_objects_that_hold_bytes_but_give_no_record_fail_the_stage(s3_bucket, s3_server, local_runner, tmp_path):
    """No silent zero on object stores either: workers that cannot read the objects (here: they are not WARC
    files; on a cluster: missing credentials or endpoint) fail the stage instead of committing nothing."""
    import pytest

    from schemas.stats import AccountingError

    with s3_runs.store(s3_server).open_output_stream(f"{s3_bucket[len('s3://') :]}/crawl/x.warc.gz") as fh:
        fh.write(b"not a WARC file at all\n" * 10)
    with pytest.raises(AccountingError, match="none of the 1 input files could be read"):
        run_curate([f"{s3_bucket}/crawl/*.warc.gz"], str(tmp_path / "out"), CurateConfig(), local_runner)


def test_curate_killed_mid_write_on_s3_reruns_to_the_same_bytes(tiny_inputs, s3_bucket, s3_server, tmp_path):
    """kill -9 while the workers write to the object store, then rerun: the rerun commits, nothing from the
    killed attempt is read or left, and the output is byte for byte the uninterrupted run's."""
    import signal
    import subprocess
    import sys
    import time

    store, bucket = s3_runs.store(s3_server), s3_bucket[len("s3://") :]
    args = [*tiny_inputs["crawl"], "--extract.extractor", "resiliparse", "--num-workers", "1"]
    command = [sys.executable, "-m", "pipeline.cli", "curate", *args, "--out"]
    assert subprocess.run([*command, str(tmp_path / "clean")], capture_output=True).returncode == 0

    out = f"{s3_bucket}/run/curate"
    proc = subprocess.Popen([*command, out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None:
        listed = store.get_file_info(pafs.FileSelector(f"{bucket}/run/curate", recursive=True, allow_not_found=True))
        if any("beam-temp" in i.path or "outcomes" in i.path for i in listed if i.is_file):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, f"the run ended (rc {proc.returncode}) before writing anything to the store"
    leftovers = store.get_file_info(pafs.FileSelector(f"{bucket}/run/curate", recursive=True))
    assert "stats.json" not in {os.path.basename(i.path) for i in leftovers}

    rerun = subprocess.run([*command, out], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = json.loads(store.open_input_stream(f"{bucket}/run/curate/stats.json").read())
    committed = {f["path"] for f in stats["files"]}
    present = {
        i.path[len(f"{bucket}/run/curate/") :]
        for i in store.get_file_info(pafs.FileSelector(f"{bucket}/run/curate", recursive=True))
        if i.is_file
    }
    assert present == committed | {"stats.json"}  # the killed attempt's files are gone
    clean = s3_runs.by_name(s3_runs.local_files(str(tmp_path / "clean")))
    assert {untagged(name) for name in committed} | {"stats.json"} == set(clean)
    for name in sorted(committed):
        if name.endswith(".parquet"):
            with store.open_input_stream(f"{bucket}/run/curate/{name}") as fh:
                assert fh.read() == clean[untagged(name)], name


def test_curate_on_s3_resumes_by_input_file_group(
    shared_data, s3_bucket, s3_server, local_runner, tmp_path, monkeypatch
):
    """The ledger on an object store: a rerun of an uncommitted stage whose groups but one were committed
    (their records under ``groups/``, as a kill after them leaves) reads only that one group's files, clears a
    killed writer's leftover object, and commits the same files."""
    from pipeline import read
    from pipeline.extract import ExtractConfig
    from pipeline.read import ReadConfig

    warcs = [
        os.path.join(shared_data, "warc", "pywb-sample", name)
        for name in ("dupes.warc.gz", "example.warc.gz", "example-wget-1-14.warc.gz", "post-test.warc.gz")
    ]
    cfg = CurateConfig(read=ReadConfig(group_bytes=1), extract=ExtractConfig(extractor="resiliparse"))
    out = f"{s3_bucket}/runs/resume"
    first = run_curate(warcs, out, cfg, local_runner)
    assert first.extra["input_groups"] == 4
    store, bucket = s3_runs.store(s3_server), s3_bucket[len("s3://") :]
    store.delete_file(f"{bucket}/runs/resume/stats.json")  # the stage uncommitted, and the last group too
    store.delete_file(f"{bucket}/runs/resume/groups/g00003.json")
    with store.open_output_stream(f"{bucket}/runs/resume/documents-g00003-leftover.parquet") as fh:
        fh.write(b"partial")

    opened: list[str] = []
    real_open = read.open_stream
    monkeypatch.setattr(read, "open_stream", lambda path: opened.append(path) or real_open(path))
    again = run_curate(warcs, out, cfg, local_runner)
    assert opened == [sorted(warcs)[3]]
    assert list(s3_runs.untagged_files(again)) == list(s3_runs.untagged_files(first))
    assert (again.read, again.kept, again.dropped) == (first.read, first.kept, first.dropped)
