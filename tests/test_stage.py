"""Stage plumbing: atomic output folders, lineage fingerprints, typed config flags."""

import argparse
import os
from dataclasses import dataclass, field

import pytest

from pipeline.stage import fingerprint, finish, is_complete, stage_output
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
    with stage_output(out) as tmp:
        finish(StageStats(stage="s", read=1, kept=1), tmp, "fp")
    assert is_complete(out, "fp") and not is_complete(out, "other")
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
