"""Progress lines while Beam stages run: counts equal the stage's records, on the local and portable runners."""

from __future__ import annotations

import io
import json
import os
import re

import pytest

from pipeline.progress import CountProgress, Progress, format_seconds, read_count
from pipeline.runner import RunnerConfig
from pipeline.sources.files import SourceConfig, run_source
from pipeline.tables import count_rows


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _jsonl(path, n):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"document number {i} with some words"}) + "\n")


def test_counter_files_sum_and_eta():
    stream = io.StringIO()
    with Progress("stage", total=400, stream=stream, interval=3600) as prog:
        a, b = prog.counter(), prog.counter()
        for fn, n in ((a, 100), (b, 60)):
            fn.setup()
            for i in range(n):
                assert list(fn.process(i)) == [i]  # pass-through
            fn.finish_bundle()
        assert read_count(prog.folder) == 160
        snap = prog.snapshot()
        assert snap["records"] == 160 and snap["total"] == 400 and snap["percent"] == 40.0
        assert re.fullmatch(r"\d+:\d\d:\d\d", snap["eta"])
        folder = prog.folder
    assert not os.path.exists(folder)  # the count folder is removed with the stage
    line = stream.getvalue().strip().splitlines()[-1]
    assert line.startswith("progress stage=stage records=160 ") and "total=400 percent=40.0" in line


def test_terminal_line_is_redrawn_in_place():
    stream = _Tty()
    with Progress("curate", stream=stream, interval=3600) as prog:
        fn = prog.counter()
        fn.setup()
        for _ in range(7):
            list(fn.process("x"))
        fn.finish_bundle()
    out = stream.getvalue()
    assert out.startswith("\r\033[K[curate] 7 records | ") and out.endswith("\n")
    assert "ETA" not in out  # no total given: no ETA is made up


def test_disabled_counter_is_a_plain_pass_through():
    fn = CountProgress(None)
    fn.setup()
    assert list(fn.process(1)) == [1]
    fn.finish_bundle()


def test_format_seconds():
    assert format_seconds(0) == "0:00:00" and format_seconds(3725.4) == "1:02:05"


@pytest.mark.parametrize(
    "runner",
    [
        RunnerConfig(runner="local", num_workers=2, running_mode="multi_processing"),
        RunnerConfig(runner="portable"),
    ],
    ids=["local-2-processes", "portable"],
)
def test_stage_progress_counts_every_record(tmp_path, capsys, runner):
    for k in range(3):
        _jsonl(tmp_path / f"part{k}.jsonl", 50 + k)
    stats = run_source(
        [str(tmp_path / "*.jsonl")], str(tmp_path / "out"), SourceConfig(name="prog", format="jsonl"), runner
    )
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("progress stage=source prog ")]
    assert lines, "the stage printed no progress line"
    assert f"records={stats.read} " in lines[-1] and stats.read == 153


def test_progress_off_and_remote_runners_print_nothing(tmp_path, capsys):
    _jsonl(tmp_path / "a.jsonl", 5)
    run_source(
        [str(tmp_path / "a.jsonl")],
        str(tmp_path / "out"),
        SourceConfig(name="quiet", format="jsonl"),
        RunnerConfig(runner="local", num_workers=1, running_mode="in_memory", progress=False),
    )
    assert "progress" not in capsys.readouterr().err


def test_count_rows_reads_footers_only(tmp_path, local_runner):
    _jsonl(tmp_path / "a.jsonl", 12)
    run_source([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), SourceConfig(name="c", format="jsonl"), local_runner)
    assert count_rows([str(tmp_path / "out")]) == 12


def test_cli_prints_progress_unless_told_not_to(tmp_path, capsys, one_process_flags):
    from pipeline.cli import main

    _jsonl(tmp_path / "a.jsonl", 9)
    base = [
        "source",
        "jsonl",
        str(tmp_path / "a.jsonl"),
        "--name",
        "cli",
        *one_process_flags,
    ]
    assert main(base + ["--out", str(tmp_path / "one")]) == 0
    assert "progress stage=source cli records=9 " in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "two"), "--no-progress"]) == 0
    assert "progress" not in capsys.readouterr().err
