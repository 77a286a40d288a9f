"""Stage plumbing: atomic output folders, lineage fingerprints, typed config flags."""

import argparse
import os
from dataclasses import dataclass, field

import pytest

from pipeline.stage import Stage, fingerprint, is_complete, stage_output
from schemas.atomic import atomic_path, atomic_write_text
from schemas.config import add_dataclass_args, dataclass_from_args, from_dict
from schemas.stats import StageStats


def test_stage_output_is_atomic(tmp_path):
    out = str(tmp_path / "stage")
    with pytest.raises(RuntimeError):
        with stage_output(out) as tmp:
            open(os.path.join(tmp, "half"), "w").write("x")
            raise RuntimeError("crash mid-stage")
    assert not os.path.exists(out) and os.listdir(tmp_path) == []
    with stage_output(out) as tmp:
        open(os.path.join(tmp, "done"), "w").write("x")
    assert os.listdir(out) == ["done"]
    with stage_output(out) as tmp:  # a rerun replaces the old output whole
        open(os.path.join(tmp, "new"), "w").write("y")
    assert os.listdir(out) == ["new"]


def test_stale_partial_folders_of_killed_writers_are_removed(tmp_path):
    out = tmp_path / "stage"
    stale = tmp_path / "stage.partial-99999999"  # a writer killed before its rename
    stale.mkdir()
    (stale / "half").write_text("x")
    with stage_output(str(out)) as tmp:
        open(os.path.join(tmp, "done"), "w").write("x")
    assert sorted(os.listdir(tmp_path)) == ["stage"]


def test_atomic_file_writes_leave_old_or_new_never_partial(tmp_path):
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


def test_urls_are_checked_before_any_work(tmp_path):
    """An unknown scheme or a missing extra is a clear error; a URL is never a local folder named after it."""
    import importlib.util

    from pipeline.fs import StorageError, check_path

    with pytest.raises(StorageError, match="unknown scheme foo://"):
        check_path("foo://bucket/x", "input")
    with pytest.raises(StorageError, match="read-only"):
        check_path("https://example.org/x", "--out", write=True)
    if importlib.util.find_spec("google.cloud.storage") is None:
        with pytest.raises(StorageError, match=r"gs:// needs the apache-beam\[gcp\] extra"):
            Stage("curate", "gs://bucket/curate", [], {})
    with pytest.raises(StorageError, match="cannot be written to s3:// yet"):
        Stage("curate", "s3://bucket/curate", [], {})
    assert not os.path.exists("gs:") and not os.path.exists("s3:")


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
    assert not os.path.exists(out)
