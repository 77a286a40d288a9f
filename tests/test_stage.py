"""Stage plumbing: commits without rename, lineage fingerprints, typed config flags."""

import argparse
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field

import pytest

from pipeline.commit import (
    AlteredOutput,
    Attempt,
    CommitError,
    UnfinishedOutput,
    active,
    attempt_name,
    committed_file,
    committed_files,
    untagged,
    verified,
)
from pipeline.stage import Stage, fingerprint, is_complete
from pipeline.tables import WriteDocuments, document_files
from schemas.config import add_dataclass_args, dataclass_from_args, from_dict
from schemas.stats import StageStats


def _write(name: str, text: str = "x"):
    def body(out: str) -> StageStats:
        with open(os.path.join(out, name), "w") as fh:
            fh.write(text)
        return StageStats(stage="s", read=1, kept=1)

    return body


def test_stats_json_is_the_commit_and_lists_every_file(tmp_path):
    out = str(tmp_path / "stage")
    Stage("s", out, [], {"v": 1}).run(_write("done.parquet"))
    stats = json.load(open(os.path.join(out, "stats.json")))
    assert stats["files"] == [{"path": "done.parquet", "size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}]
    assert sorted(os.listdir(out)) == ["done.parquet", "stats.json"]  # the attempt marker is gone
    assert committed_files(out) == [os.path.join(out, "done.parquet")]


def test_a_failed_attempt_is_never_read_and_the_next_one_clears_it(tmp_path):
    out = str(tmp_path / "stage")
    Stage("s", out, [], {"v": 1}).run(_write("old.parquet"))

    def crash(folder: str) -> StageStats:
        _write("half.parquet")(folder)
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        Stage("s", out, [], {"v": 2}).run(crash)
    assert not os.path.exists(os.path.join(out, "stats.json"))  # the old output stopped being complete first
    with pytest.raises(UnfinishedOutput):
        committed_files(out)
    with pytest.raises(UnfinishedOutput, match="unfinished"):
        document_files(out)
    Stage("s", out, [], {"v": 2}).run(_write("new.parquet"))
    assert sorted(os.listdir(out)) == ["new.parquet", "stats.json"]  # the leftovers went before the rerun wrote
    assert document_files(out) == [os.path.join(out, "new.parquet")]


def test_a_stray_file_in_a_committed_folder_is_not_read(tmp_path):
    out = str(tmp_path / "stage")
    Stage("s", out, [], {"v": 1}).run(_write("documents-0.parquet"))
    open(os.path.join(out, "documents-straggler.parquet"), "w").write("late")  # a zombie's late write
    assert document_files(out) == [os.path.join(out, "documents-0.parquet")]


def test_a_committed_file_rewritten_after_the_commit_is_refused(tmp_path):
    """A zombie attempt that outlives the one that committed and rewrites a same-named file: readers stop
    with a clear error instead of reading bytes the commit never saw."""
    out = str(tmp_path / "stage")
    Stage("s", out, [], {"v": 1}).run(_write("documents-0.parquet"))
    with open(os.path.join(out, "documents-0.parquet"), "ab") as fh:
        fh.write(b"a late writer's bytes")
    with pytest.raises(AlteredOutput, match="changed since the commit"):
        document_files(out)
    os.remove(os.path.join(out, "documents-0.parquet"))
    with pytest.raises(AlteredOutput, match="documents-0.parquet"):
        committed_files(out)


def test_two_attempts_on_one_folder_cannot_both_commit(tmp_path):
    out = str(tmp_path / "stage")
    first, second = Attempt(out), Attempt(out)
    first.begin()
    second.begin()  # an Airflow retry takes the folder over while the first attempt still runs
    second.commit({"stage": "s"})
    with pytest.raises(CommitError, match="took this output over"):
        first.commit({"stage": "s"})
    third = Attempt(out)
    third.begin()
    open(os.path.join(out, "stats.json"), "w").write("{}")  # committed by someone else meanwhile
    with pytest.raises(CommitError, match="committed by another attempt"):
        third.commit({"stage": "s"})


def _write_tagged(text: str, also=None):
    """A body writing ``documents-0.parquet`` under its attempt's tag (as the stages' writers do), then
    calling ``also(out)``; it keeps the tagged name in ``written``."""
    written = []

    def body(out: str) -> StageStats:
        written.append(os.path.join(out, attempt_name("documents-0.parquet")))
        with open(written[-1], "w") as fh:
            fh.write(text)
        if also:
            also(out)
        return StageStats(stage="s", read=1, kept=1)

    return body, written


def test_files_of_another_attempt_are_not_listed_and_go_after_the_commit(tmp_path):
    """A straggler of another attempt (a zombie's worker) writes into the folder before this attempt commits:
    its file carries the other attempt's tag, so the commit does not list it, and deletes it."""
    out = str(tmp_path / "stage")
    straggler = Attempt(out)

    def zombie_writes(folder: str) -> None:
        with straggler.active():
            open(os.path.join(folder, attempt_name("documents-0.parquet")), "w").write("a straggler's rows")

    body, written = _write_tagged("x", zombie_writes)
    stats = Stage("s", out, [], {"v": 1}).run(body)
    mine = os.path.basename(written[0])
    assert mine.startswith("documents-0.attempt-") and untagged(mine) == "documents-0.parquet"
    assert [f["path"] for f in stats.extra["files"]] == [mine]
    assert sorted(os.listdir(out)) == [mine, "stats.json"]  # the straggler's file went after the commit
    assert document_files(out) == written


def test_a_straggler_writing_into_its_own_work_folder_is_not_listed_and_goes(tmp_path):
    """Dedup's work folder is tagged as a whole (``pipeline.dedup.work.work_folder``): the files in another
    attempt's folder are that attempt's, whatever their own names, so the commit neither lists nor keeps them."""
    from pipeline.dedup.work import work_folder

    out = str(tmp_path / "stage")
    straggler = Attempt(out)

    def zombie_writes(folder: str) -> None:
        with straggler.active():
            theirs = work_folder(folder)
        mine = work_folder(folder)
        assert theirs != mine and untagged(theirs) == untagged(mine) == os.path.join(folder, "_work")
        os.makedirs(theirs)
        open(os.path.join(theirs, "sketch-00000.parquet"), "w").write("a straggler's sketches")

    body, written = _write_tagged("x", zombie_writes)
    stats = Stage("s", out, [], {"v": 1}).run(body)
    assert [f["path"] for f in stats.extra["files"]] == [os.path.basename(written[0])]
    assert sorted(os.listdir(out)) == [os.path.basename(written[0]), "stats.json"]  # its folder's file went


def test_a_zombie_of_an_attempt_with_other_inputs_cannot_overwrite(tmp_path):
    """An attempt for other inputs (another fingerprint) outlives the one that committed and writes its
    version of the same file: under its own tag, so the committed file keeps its bytes and stays the one read."""
    out = str(tmp_path / "stage")
    zombie = []

    def cut_off(_: str) -> StageStats:
        zombie.append(active())
        raise RuntimeError("the driver is gone; its workers live on")

    with pytest.raises(RuntimeError):
        Stage("s", out, [], {"v": 1}).run(cut_off)
    body, written = _write_tagged("new")
    Stage("s", out, [], {"v": 2}).run(body)
    with zombie[0].active():
        late = os.path.join(out, attempt_name("documents-0.parquet"))
    open(late, "w").write("old")  # the zombie's late write, of the same size
    assert late != written[0] and open(written[0]).read() == "new"
    assert committed_files(out, verify=True) == written
    assert document_files(out) == written


def test_a_zombie_side_file_or_shard_written_after_the_commit_is_never_read_and_goes(tmp_path):
    """The files with fixed names a stage's workers write (outcomes, counters, shards) carry the attempt's tag
    too: a zombie of an earlier attempt writing them after this one committed writes other names, which the
    commit never listed, so readers (by the untagged name, through ``stats.json``) never take them; the next
    attempt deletes them."""
    import numpy as np

    from pipeline.accounting import WriteOutcomes, read_outcomes
    from pipeline.mix.config import MixConfig
    from pipeline.mix.pack import SHARD_PATTERN, ShardRow, WriteShard
    from pipeline.mix.stage import WriteShards
    from pipeline.tables import WriteCounters, read_counters

    out = str(tmp_path / "stage")
    zombie = []

    def cut_off(_: str) -> StageStats:
        zombie.append(active())
        raise RuntimeError("the driver is gone; its workers live on")

    def worker_files(folder: str, n: int) -> list[str]:
        """What the workers of the active attempt write: the names its writers were built with (on the driver)."""
        outcomes, counters = WriteOutcomes(folder).path, WriteCounters(folder).path
        open(outcomes, "w").write(json.dumps({"outcome": "kept", "n": n}) + "\n")
        open(counters, "w").write(json.dumps({"counter": "pages", "n": n}) + "\n")
        pattern = WriteShards(
            folder, MixConfig(), "uint16", None, True, SHARD_PATTERN, "_shards.jsonl", "shards"
        ).pattern
        row = ShardRow((0, "web", 0), "web", np.full(4, n, dtype=np.uint16).tobytes(), [0])
        (info,) = WriteShard(folder, "uint16", 3, pattern).process((0, [row]))
        return [outcomes, counters, os.path.join(folder, json.loads(info)["file"])]

    def body(folder: str) -> StageStats:
        mine.extend(worker_files(folder, 1))
        return StageStats(stage="s", read=1, kept=1)

    with pytest.raises(RuntimeError):
        Stage("s", out, [], {"v": 1}).run(cut_off)
    mine: list[str] = []
    stats = Stage("s", out, [], {"v": 2}).run(body)
    assert [untagged(os.path.basename(f)) for f in mine] == ["outcomes.jsonl", "counters.jsonl", "shard-00000.arrow"]
    assert sorted(f["path"] for f in stats.extra["files"]) == sorted(os.path.basename(f) for f in mine)
    with zombie[0].active():
        late = worker_files(out, 7)  # after the commit, the same files under the zombie's tag
    assert not set(late) & set(mine) and all(os.path.exists(f) for f in late)
    assert read_outcomes(out) == {"kept": 1} and read_counters(out) == {"pages": 1}
    assert committed_file(os.path.join(out, "shard-00000.arrow")) == mine[2]
    assert committed_files(out, verify=True) == sorted(mine)
    mine.clear()
    Stage("s", out, [], {"v": 3}).run(body)
    assert not any(os.path.exists(f) for f in late)  # gone with the next attempt
    assert read_outcomes(out) == {"kept": 1}


def test_verify_catches_a_same_size_rewrite(tmp_path):
    """Sizes catch most late writes in one listing; checksums, when a reader asks, catch a same-size one."""
    out = str(tmp_path / "stage")
    Stage("s", out, [], {"v": 1}).run(_write("model.bin", "abc"))
    open(os.path.join(out, "model.bin"), "w").write("xyz")
    assert committed_files(out) == [os.path.join(out, "model.bin")]
    with pytest.raises(AlteredOutput, match="model.bin"):
        committed_files(out, verify=True)


def test_a_small_committed_file_is_verified_before_use(tmp_path):
    """What a model's or a tokenizer's reader checks: the file as its stage committed it, to the byte."""
    out = str(tmp_path / "stage")
    Stage("s", out, [], {"v": 1}).run(_write("model.bin", "abc"))
    path = os.path.join(out, "model.bin")
    assert verified(path) == path
    open(path, "w").write("xyz")  # a late writer, same size
    with pytest.raises(AlteredOutput, match="changed since"):
        verified(path)
    open(os.path.join(out, "other.bin"), "w").write("late")
    with pytest.raises(AlteredOutput, match="not listed"):
        verified(os.path.join(out, "other.bin"))
    plain = tmp_path / "model.bin"  # not in a stage folder: as it is
    plain.write_text("abc")
    assert verified(str(plain)) == str(plain)


def test_writers_built_inside_an_attempt_tag_their_files(tmp_path):
    attempt = Attempt(str(tmp_path))
    assert WriteDocuments(str(tmp_path), 2).name == "documents-{k:05d}-of-00002.parquet"  # outside any attempt
    with attempt.active():
        name = WriteDocuments(str(tmp_path), 2, "documents-g00001").name
    assert name == f"documents-g00001-{{k:05d}}-of-00002.attempt-{attempt.tag}.parquet"
    assert active() is None


@pytest.mark.parametrize("layer", ["pipeline.fs", "train.storage"])
def test_atomic_file_writes_leave_old_or_new_never_partial(tmp_path, layer):
    """Each side's layer writes its few local-only files atomically (``schemas/`` does no I/O)."""
    module = importlib.import_module(layer)
    atomic_path, atomic_write_text = module.atomic_path, module.atomic_write_text
    path = str(tmp_path / "f.json")
    assert atomic_write_text(path, "old") == path
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed mid-write")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["f.json"]  # no temporary left behind
    with atomic_path(path) as tmp:
        assert tmp != path and os.path.dirname(tmp) == str(tmp_path)  # same folder: the rename is atomic
        open(tmp, "w").write("new")
    assert open(path).read() == "new" and os.listdir(tmp_path) == ["f.json"]


def test_fingerprint_tracks_inputs_and_config(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    fp1 = fingerprint("s", [str(f)], {"x": 1})
    assert fp1 == fingerprint("s", [str(f)], {"x": 1})
    assert fp1 != fingerprint("s", [str(f)], {"x": 2})
    f.write_text("ab")
    assert fp1 != fingerprint("s", [str(f)], {"x": 1})
    out = str(tmp_path / "out")
    stage = Stage("s", out, [str(f)], {"x": 1})
    stage.run(lambda tmp: StageStats(stage="s", read=1, kept=1))
    assert is_complete(out, stage.fingerprint) and not is_complete(out, "other")
    # a downstream stage sees an upstream folder by its fingerprint, not its mtimes
    assert fingerprint("t", [out], {}) == fingerprint("t", [out], {})


@dataclass
class Inner:
    n: int = field(default=3, metadata={"help": "a number"})
    on: bool = True


@dataclass
class Outer:
    name: str = "x"
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_config_flags_yaml_and_overrides():
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Outer)
    args = p.parse_args(["--inner.n", "7", "--tags", "a", "b", "--inner.on", "false"])
    cfg = dataclass_from_args(Outer, args, {"name": "from-yaml", "inner": {"n": 5}})
    assert cfg == Outer(name="from-yaml", tags=["a", "b"], inner=Inner(n=7, on=False))
    with pytest.raises(ValueError, match="unknown option"):
        from_dict(Outer, {"nme": 1})
    assert "a number" in p.format_help()


def test_fingerprint_hashes_nested_configs_by_their_fields():
    """A config inside a dict (the mix: config + tokenizer hash) is hashed by its fields, not its repr, so the
    order of a dict option (weights) does not matter, and any value change does."""
    import dataclasses

    from pipeline.stage import fingerprint

    @dataclasses.dataclass
    class Cfg:
        weights: dict = dataclasses.field(default_factory=dict)

    a = fingerprint("mix", [], {"config": Cfg({"a": 1, "b": 2}), "tokenizer": "h"})
    b = fingerprint("mix", [], {"config": Cfg({"b": 2, "a": 1}), "tokenizer": "h"})
    c = fingerprint("mix", [], {"config": Cfg({"a": 1, "b": 3}), "tokenizer": "h"})
    assert a == b != c
    assert fingerprint("mix", [], Cfg({"a": 1})) == fingerprint("mix", [], Cfg({"a": 1}))


def test_a_file_added_under_a_glob_or_a_changed_one_reruns_the_stage(tmp_path, caplog):
    """Inputs are identified after expansion: the pattern alone would hide a new file."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    pattern = str(tmp_path / "in" / "*.txt")
    out = str(tmp_path / "out")
    calls = []

    def body(tmp):
        calls.append(tmp)
        return StageStats(stage="s", read=1, kept=1)

    Stage("s", out, [pattern], {"x": 1}).run(body)
    Stage("s", out, [pattern], {"x": 1}).run(body)
    assert len(calls) == 1  # current: skipped
    (tmp_path / "in" / "b.txt").write_text("b")
    with caplog.at_level("INFO", logger="pipeline.stage"):
        Stage("s", out, [pattern], {"x": 1}).run(body)
    assert len(calls) == 2
    assert "s: rerun: input changed: " + pattern in caplog.text  # one line says why
    caplog.clear()
    with caplog.at_level("INFO", logger="pipeline.stage"):
        Stage("s", out, [pattern], {"x": 2}).run(body)
    assert len(calls) == 3 and "config changed" in caplog.text
    assert Stage("s", out, [pattern], {"x": 2}, force=True).complete() is False


def test_rerun_reason_names_each_part():
    from pipeline.stage import rerun_reason

    old = {"inputs": [["a", "1"], ["b", "2"]], "config": "c", "code": "k"}
    new = {"inputs": [["a", "1"], ["b", "3"], ["c", "4"]], "config": "c", "code": "k2"}
    assert rerun_reason(old, new) == "input added: c; input changed: b; code changed"
    assert rerun_reason(None, new) == "no earlier lineage recorded"


def test_a_stage_code_version_covers_its_own_imports_only():
    """Curation's code version covers the modules it imports and the libraries that decide its bytes; torch,
    which curation never imports, is not one of them."""
    from pipeline.stage import code_closure, code_version

    files, libraries = code_closure("pipeline.curate")
    names = {os.path.relpath(f, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) for f in files}
    assert {"pipeline/curate.py", "pipeline/read.py", "pipeline/filters.py", "pipeline/stage.py"} <= names
    assert not any(n.startswith("train/") for n in names)
    assert {"fastwarc", "resiliparse", "trafilatura", "datatrove"} <= set(libraries)
    assert "torch" not in libraries
    assert "torch" in code_closure("train.trainer")[1]
    assert code_version("pipeline.curate") != code_version("pipeline.mix.stage")


def test_urls_are_checked_before_any_work(tmp_path, monkeypatch):
    """An unknown scheme or a missing extra is a clear error; a URL is never a local folder named after it."""
    import importlib.util

    from pipeline.fs import StorageError, check_path

    with pytest.raises(StorageError, match="unknown scheme foo://"):
        check_path("foo://bucket/x", "input")
    with pytest.raises(StorageError, match="read-only"):
        check_path("https://example.org/x", "--out", write=True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("google") else real(name))
    with pytest.raises(StorageError, match=r"gs:// needs the apache-beam\[gcp\] extra"):
        Stage("curate", "gs://bucket/curate", [], {})
    assert not os.path.exists("gs:")


def test_a_stage_that_counts_nothing_from_real_input_fails(tmp_path, local_runner):
    """No silent zero: workers whose outcomes never reach the driver must not commit an empty stage."""
    import apache_beam as beam

    from schemas.stats import AccountingError

    warc = tmp_path / "in.warc"
    warc.write_bytes(b"WARC/1.0\r\n")
    out = str(tmp_path / "out")

    def lost_outcomes(p, tmp):  # a pipeline whose outcomes land where the driver does not look
        from pipeline.accounting import WriteOutcomes

        _ = p | beam.Create(["kept"]) | WriteOutcomes(str(tmp_path / "elsewhere"))

    with pytest.raises(AccountingError, match="read no record from non-empty inputs"):
        Stage("s", out, [str(warc)], {}).run_beam(local_runner, lost_outcomes)

    def one_outcome(p, tmp):
        from pipeline.accounting import WriteOutcomes

        _ = p | beam.Create(["kept"]) | WriteOutcomes(tmp)

    with pytest.raises(AccountingError, match="hold 3 records but the outcomes account for 1"):
        Stage("s", out, [str(warc)], {}).run_beam(local_runner, one_outcome, total=3)
    assert not os.path.exists(os.path.join(out, "stats.json"))  # nothing committed
