"""Resume by work unit: curate killed with SIGKILL after some input-file groups committed, then rerun, reads
none of the committed groups again and ends byte-identical to an uninterrupted run (``pipeline.ledger``).

The inputs are the real web-archive files of ``warc/pywb-sample`` (damaged and ARC files among them), cut into
five groups by a small ``group_bytes``. The rerun runs in this process on the one-process local runner, so
the files its reader opens can be counted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import read
from pipeline.commit import untagged
from pipeline.curate import CurateConfig, run_curate
from pipeline.extract import ExtractConfig
from pipeline.ledger import Group, committed_groups, plan_groups
from pipeline.read import ReadConfig, expand_inputs
from pipeline.stage import Stage
from pipeline.tables import document_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUP_BYTES = 20_000  # pywb-sample: five groups, iana.warc.gz (787 kB) alone in one


def test_groups_are_consecutive_files_up_to_the_budget():
    files = [("c", 5), ("a", 4), ("b", 4), ("d", 30), ("e", 1)]
    groups = plan_groups(files, 10)
    assert [g.files for g in groups] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [g.id for g in groups] == ["g00000", "g00001", "g00002", "g00003"] and groups[2].bytes == 30
    assert plan_groups(reversed(files), 10) == groups  # the order inputs are given in never shows
    with pytest.raises(ValueError):
        plan_groups(files, 0)


def _config() -> CurateConfig:
    return CurateConfig(read=ReadConfig(group_bytes=GROUP_BYTES), extract=ExtractConfig(extractor="resiliparse"))


def _outputs(out: str) -> dict[str, bytes]:
    """What an uninterrupted and a resumed run must write alike: every file of a curate folder byte for byte,
    but a group's side files (in its workers' arrival order: compared as sorted lines) and the commit records
    (they name their attempt, and list the side files' checksums: compared without those), by names without
    the attempt tag (each attempt tags the files its workers name)."""
    files = {}
    for root, _, names in os.walk(out):
        for name in names:
            path = os.path.join(root, name)
            rel = untagged(os.path.relpath(path, out))
            data = open(path, "rb").read()
            if rel == "stats.json" or (rel.startswith("groups/") and rel.endswith(".json")):
                record = json.loads(data)
                record.pop("attempt")
                record["files"] = [
                    (untagged(f["path"]), f["sha256"]) for f in record["files"] if f["path"].endswith(".parquet")
                ]
                data = json.dumps(record, sort_keys=True).encode()
            elif rel.startswith("groups/"):
                data = b"\n".join(sorted(data.splitlines()))
            files[rel] = data
    return files


def test_kill_then_rerun_reads_no_committed_group(shared_data, tmp_path, local_runner, monkeypatch):
    inputs = [os.path.join(shared_data, "warc", "pywb-sample")]
    groups = plan_groups(expand_inputs(inputs), GROUP_BYTES)
    assert len(groups) == 5

    clean = str(tmp_path / "clean")
    stats = run_curate(inputs, clean, _config(), local_runner)
    assert stats.extra["input_groups"] == 5 and stats.read == stats.kept + sum(stats.dropped.values())

    # killed once the second group committed: two groups in the ledger, the stage uncommitted
    out = str(tmp_path / "killed")
    flags = ["--read.group_bytes", str(GROUP_BYTES), "--extract.extractor", "resiliparse"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "curate", *inputs, "--out", out, *flags, "--num-workers", "1"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(out, "groups", "g00001.json")):
        assert proc.poll() is None, f"curate ended (rc {proc.returncode}) before its second group committed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "stats.json"))
    fingerprint = Stage("curate", out, inputs, _config(), module="pipeline.curate").fingerprint
    committed = committed_groups(out, groups, fingerprint)
    assert {"g00000", "g00001"} <= set(committed) and len(committed) < 5
    # a killed attempt's leftovers of a group it never committed: a document file, a side file, Beam's temp folder
    leftovers = [
        "documents-g00004-00000-of-00001.attempt-0123456789ab.parquet",
        "groups/g00004/outcomes.jsonl",
        "beam-temp-x/y",
    ]
    for rel in leftovers:
        os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
        open(os.path.join(out, rel), "wb").write(b"partial")

    opened: list[str] = []
    real_open = read.open_stream
    monkeypatch.setattr(read, "open_stream", lambda path: opened.append(path) or real_open(path))
    resumed = run_curate(inputs, out, _config(), local_runner)

    pending = [g for g in groups if g.id not in committed]
    assert sorted(opened) == sorted(f for g in pending for f in g.files)  # each once, none of a committed group
    assert resumed.to_dict()["read"] == stats.read and resumed.dropped == stats.dropped
    assert _outputs(out) == _outputs(clean)  # leftovers cleared, every output byte-identical, stats included
    assert [untagged(f) for f in document_files(out)] == [
        os.path.join(out, untagged(os.path.basename(f))) for f in document_files(clean)
    ]
    assert len({os.path.basename(f)[:16] for f in document_files(os.path.join(out, "raw"))}) >= 3  # groups' tables

    # committed: a rerun skips the stage; a changed config invalidates every group
    opened.clear()
    run_curate(inputs, out, _config(), local_runner)
    assert opened == []
    changed = dataclasses.replace(_config(), examples_per_reason=2)
    assert (
        committed_groups(out, groups, Stage("curate", out, inputs, changed, module="pipeline.curate").fingerprint) == {}
    )
    assert len(committed_groups(out, groups, fingerprint)) == 5


def test_a_group_whose_files_changed_is_not_committed(tmp_path):
    out = str(tmp_path)
    group = Group("g00000", (("a.warc", 10),))
    (tmp_path / "groups").mkdir()
    (tmp_path / "documents-g00000-00000-of-00001.parquet").write_bytes(b"x" * 5)
    record = {
        "group": "g00000",
        "fingerprint": "fp",
        "inputs": [["a.warc", 10]],
        "files": [{"path": "documents-g00000-00000-of-00001.parquet", "size": 5, "sha256": None}],
    }
    (tmp_path / "groups" / "g00000.json").write_text(json.dumps(record))
    assert set(committed_groups(out, [group], "fp")) == {"g00000"}
    assert committed_groups(out, [group], "other") == {}  # another config, code or input set
    assert committed_groups(out, [Group("g00000", (("a.warc", 11),))], "fp") == {}  # another plan
    (tmp_path / "documents-g00000-00000-of-00001.parquet").write_bytes(b"x" * 6)
    assert committed_groups(out, [group], "fp") == {}  # a file rewritten since


def test_a_source_in_groups_keeps_the_same_documents(shared_data, tmp_path, local_runner):
    """A files source read one file a group: the same documents, ids and accounting as in one group."""
    from pipeline.sources.files import SourceConfig, run_source
    from pipeline.tables import read_documents

    text = open(os.path.join(shared_data, "reference", "tinyshakespeare.txt"), encoding="utf-8").read()
    for i in range(3):
        (tmp_path / "in").mkdir(exist_ok=True)
        lines = [json.dumps({"text": text[j : j + 2000]}) for j in range(i * 20_000, (i + 1) * 20_000, 2000)]
        (tmp_path / "in" / f"part-{i}.jsonl").write_text("\n".join(lines + ['{"no text": 1}']) + "\n")
    runs = {}
    for name, group_bytes in (("one", 1 << 30), ("three", 1)):
        cfg = SourceConfig(name="books", format="jsonl", group_bytes=group_bytes)
        stats = run_source([str(tmp_path / "in")], str(tmp_path / name), cfg, local_runner)
        rows = sorted(read_documents(str(tmp_path / name)), key=lambda r: r["id"])
        runs[name] = (stats.extra["input_groups"], stats.read, stats.kept, stats.dropped, rows)
    assert [runs[n][0] for n in ("one", "three")] == [1, 3]
    assert runs["one"][1:] == runs["three"][1:] and runs["one"][2] == 30


def test_the_stage_commit_takes_the_groups_checksums(shared_data, tmp_path, local_runner, monkeypatch):
    """Each group's files are hashed once, when the group commits; the stage's final commit takes those
    checksums instead of reading every file of the crawl back again."""
    from collections import Counter

    import pipeline.commit
    from pipeline.sources.files import SourceConfig, run_source

    text = open(os.path.join(shared_data, "reference", "tinyshakespeare.txt"), encoding="utf-8").read()
    (tmp_path / "in").mkdir()
    for i in range(3):
        lines = [json.dumps({"text": text[j : j + 2000]}) for j in range(i * 20_000, (i + 1) * 20_000, 2000)]
        (tmp_path / "in" / f"part-{i}.jsonl").write_text("\n".join(lines) + "\n")
    hashed: Counter[str] = Counter()
    real = pipeline.commit.fs.sha256

    def counting(path):
        hashed[os.path.relpath(path, tmp_path / "out")] += 1
        return real(path)

    monkeypatch.setattr(pipeline.commit.fs, "sha256", counting)
    cfg = SourceConfig(name="books", group_bytes=1)
    stats = run_source([str(tmp_path / "in")], str(tmp_path / "out"), cfg, local_runner)
    assert stats.extra["input_groups"] == 3
    tables = [p for p in hashed if p.endswith(".parquet")]
    assert len(tables) == 3 and all(hashed[p] == 1 for p in tables), hashed
    committed = {f["path"]: f["sha256"] for f in stats.extra["files"]}
    assert all(committed[p] == real(str(tmp_path / "out" / p)) for p in tables)
