"""The ``ccgpt`` command: every subcommand has ``--help``; stage commands run from flags; verify fails loudly."""

import json
import os

import pytest

from pipeline.cli import _COMMANDS, main
from pipeline.tables import read_documents


@pytest.mark.parametrize(
    "argv",
    [[]]
    + [[name] for name, _, _ in _COMMANDS]
    + [
        ["quality", "train"],
        ["quality", "score"],
        ["quality", "filter"],
        ["tokenizer", "train"],
        ["tokenizer", "encode"],
        ["shards", "verify"],
    ],
)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--help"])
    assert exc.value.code == 0
    assert "usage: ccgpt" in capsys.readouterr().out


def test_stage_command_runs_from_flags(tmp_path, capsys, one_process_flags):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "a real enough paragraph " * 20}) + "\n" + "{broken\n", encoding="utf-8")
    out = tmp_path / "books"
    rc = main(
        [
            "source",
            str(src),
            "--out",
            str(out),
            "--name",
            "books",
            "--format",
            "jsonl",
            *one_process_flags,
        ]
    )
    assert rc == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["read"] == 2 and stats["kept"] == 1 and stats["dropped"] == {"bad_json": 1}
    assert [d["source"] for d in read_documents(str(out))] == ["books"]


def test_shards_verify_reports_failure(tmp_path, capsys):
    os.makedirs(tmp_path / "shards")
    assert main(["shards", "verify", str(tmp_path / "shards")]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_run_config_overrides(tmp_path):
    from pipeline.run import load_run_config

    demo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.yaml")
    cfg = load_run_config(demo, ["mix.seq_len=512", "train.max_steps=7", "curate.langid.languages=[de, fr]"])
    assert cfg.mix.seq_len == 512 and cfg.train.max_steps == 7 and cfg.curate.langid.languages == ["de", "fr"]
    with pytest.raises(ValueError, match="unknown option"):
        load_run_config(demo, ["mix.seq_lenn=1"])
    with pytest.raises(ValueError, match="dotted.key=value"):
        load_run_config(demo, ["mix.seq_len"])


def test_dedup_eval_is_routed(tmp_path, capsys):
    path = tmp_path / "labelled.jsonl"
    text = "the quick brown fox jumps over the lazy dog near the quiet river bank today " * 3
    rows = [
        {"id": "a", "text": text, "cluster": 1},
        {"id": "b", "text": text + " again", "cluster": 1},
        {"id": "c", "text": "an entirely different document about the weather in spring and autumn", "cluster": 2},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert main(["dedup", "eval", str(path), "--threshold", "0.5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == 1.0 and result["recall"] == 1.0 and "ari" in result


def test_given_quality_model_skips_training(tmp_path):
    from pipeline.run import Run, RunConfig

    run = Run(RunConfig(out_dir=str(tmp_path / "run"), quality_model="models/q/model.bin"))
    assert run.quality_train() is None
    assert not os.path.exists(tmp_path / "run" / "quality_model")
