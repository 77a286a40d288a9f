"""Per-source validation loss in training reads the shards' validation split, not rows of the training shards."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_data import make_shards, read_rows  # noqa: E402  (shared shard-writing helper)

from train.config import ModelConfig, TrainConfig  # noqa: E402
from train.data import ShardLoader  # noqa: E402
from train.model import GPT  # noqa: E402
from train.trainer import evaluate, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models on one thread


def test_evaluate_is_the_mean_loss_of_each_source_on_the_validation_rows(tmp_path):
    root = make_shards(str(tmp_path / "s"), val_rows=3)
    loader = ShardLoader(root, 2, seed=0, eval_rows=100)  # every validation row (3 per source)
    assert loader.eval_split == "val" and loader.eval_rows == 6
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_ctx=32))
    got = evaluate(model, loader, torch.device("cpu"), None, types.SimpleNamespace(enabled=False))
    assert got["eval_split"] == "val"
    # the same loss computed from val-00000.arrow read with plain pyarrow
    sums: dict[str, list[float]] = {}
    model.eval()
    with torch.no_grad():
        for tokens, offsets, source in read_rows(root, "val"):
            t = torch.tensor(tokens, dtype=torch.int64)[None]
            doc_ids = torch.tensor([[sum(1 for o in offsets if o <= i) for i in range(32)]], dtype=torch.int32)
            logits, _ = model(t[:, :-1], None, doc_ids)
            loss = F.cross_entropy(logits.float()[0], t[0, 1:], reduction="sum")
            acc = sums.setdefault(source, [0.0, 0])
            acc[0] += float(loss)
            acc[1] += 32
    assert set(got["eval_loss_by_source"]) == {"web", "books"}
    for source, (total, n) in sums.items():
        assert got["eval_loss_by_source"][source] == pytest.approx(total / n, rel=1e-5)
    assert got["eval_loss"] == pytest.approx(
        sum(v[0] for v in sums.values()) / sum(v[1] for v in sums.values()), rel=1e-5
    )
    loader.close()


def test_training_logs_validation_loss_per_source_and_trains_on_every_row(tmp_path):
    root = make_shards(str(tmp_path / "s"), val_rows=2)
    out = str(tmp_path / "run")
    cfg = TrainConfig(
        shards=root,
        out=out,
        preset="nano",
        batch_size=4,
        max_steps=4,
        warmup_steps=1,
        lr=3e-3,
        log_every=1,
        eval_every=2,
        eval_rows=16,
        checkpoint_every=0,
        seed=3,
    )
    summary = train(cfg)
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as fh:
        evals = [r for r in map(json.loads, fh) if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(e["eval_split"] == "val" and set(e["eval_loss_by_source"]) == {"web", "books"} for e in evals)
    assert summary["eval_rows"] == 4  # all the validation rows (2 per source), none taken from training


def test_old_manifest_without_a_split_still_evaluates_on_held_out_training_rows(tmp_path, capsys):
    root = make_shards(str(tmp_path / "s"))
    out = str(tmp_path / "run")
    cfg = TrainConfig(
        shards=root,
        out=out,
        preset="nano",
        batch_size=4,
        max_steps=2,
        warmup_steps=1,
        log_every=1,
        eval_every=2,
        eval_rows=4,
        checkpoint_every=0,
        seed=3,
    )
    summary = train(cfg)
    assert summary["eval_rows"] == 4 and set(summary["eval_loss_by_source"]) == {"web", "books"}
    assert "has no validation split" in capsys.readouterr().out
