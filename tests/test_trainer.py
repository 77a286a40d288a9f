"""The training loop: learning, bit-exact resume, DDP equivalence, checkpoint safety, clear errors, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sys

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_data import load_manifest, make_shards, save_manifest  # noqa: E402  (shared shard-writing helpers)

from train.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from train.cli import build_parser, config_from_args, main  # noqa: E402
from train.config import ModelOverrides, TrainConfig  # noqa: E402
from train.data import DataError  # noqa: E402
from train.optim import lr_at  # noqa: E402
from train.trainer import autocast_dtype, train  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return make_shards(str(tmp_path_factory.mktemp("data") / "shards"), rows_per_shard=(96, 96))


def tiny(shards: str, out: str, **kw) -> TrainConfig:
    base = dict(
        shards=shards,
        out=out,
        preset="nano",
        batch_size=4,
        max_steps=8,
        warmup_steps=2,
        lr=3e-3,
        log_every=1,
        eval_every=0,
        eval_rows=0,
        checkpoint_every=0,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def records(out: str, kind: str = "train") -> list[dict]:
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as fh:
        return [r for r in map(json.loads, fh) if r["kind"] == kind]


def losses(out: str) -> list[float]:
    return [r["loss"] for r in records(out)]


def test_loss_falls_on_repetitive_data(shards, tmp_path):
    out = str(tmp_path / "run")
    cfg = tiny(shards, out, batch_size=8, max_steps=30, warmup_steps=5, eval_every=15, eval_rows=16, peak_flops=1e12)
    summary = train(cfg)
    curve = losses(out)
    assert len(curve) == 30 and summary["steps"] == 30
    assert sum(curve[-5:]) / 5 < 0.6 * curve[0], curve
    assert summary["first_loss"] == curve[0] and summary["last_loss"] == curve[-1]
    assert summary["tokens_seen"] == 30 * 8 * 32
    assert summary["tokens_per_sec"] > 0
    # Logged learning rates follow the schedule; MFU is measured against the configured peak.
    for r in records(out):
        assert r["lr"] == lr_at(r["step"] - 1, cfg)
        assert r["grad_norm"] > 0
        assert r["mfu"] == pytest.approx(summary["flops_per_token"] * r["tokens_per_sec"] / 1e12)
    evals = records(out, "eval")
    assert [e["step"] for e in evals] == [15, 30]
    assert set(evals[-1]["eval_loss_by_source"]) == {"web", "books"}
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert sum(summary["samples_by_source"].values()) == 30 * 8
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        assert json.load(fh)["last_loss"] == curve[-1]
    ckpt = load_checkpoint(summary["checkpoint"])  # weights_only load
    assert ckpt["step"] == 30 and ckpt["loader"]["consumed_samples"] >= 0
    # The same scalars as TensorBoard events, read back with TensorBoard's own reader.
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(os.path.join(out, "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "train/lr",
        "train/tokens_per_sec",
        "train/mfu",
        "train/grad_norm",
        "eval/loss",
        "eval_loss_by_source/web",
        "eval_loss_by_source/books",
    } <= tags
    tb_loss = events.Scalars("train/loss")
    assert [e.step for e in tb_loss] == list(range(1, 31))
    assert [e.value for e in tb_loss] == pytest.approx(curve, rel=1e-6)  # float32 in the event file
    assert [(e.step, e.value) for e in events.Scalars("eval_loss_by_source/web")] == [
        (r["step"], pytest.approx(r["eval_loss_by_source"]["web"], rel=1e-6)) for r in evals
    ]


def test_without_tensorboard_installed_training_logs_jsonl_only(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    out = str(tmp_path / "run")
    train(tiny(shards, out, max_steps=2))
    assert "tensorboard package is not installed" in capsys.readouterr().out
    assert len(losses(out)) == 2 and not os.path.exists(os.path.join(out, "tensorboard"))


def test_compiled_model_trains_like_eager(shards, tmp_path):
    """compile=true goes through TorchDynamo graph capture and AOTAutograd; 'aot_eager' skips only inductor's
    code generation (minutes of C++ builds on a small CPU), so the losses must match eager closely."""
    eager = str(tmp_path / "eager")
    train(tiny(shards, eager, max_steps=3, tensorboard=False))
    compiled = str(tmp_path / "compiled")
    summary = train(tiny(shards, compiled, max_steps=3, tensorboard=False, compile=True, compile_backend="aot_eager"))
    assert summary["compiled"] is True
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-5)
    a = load_checkpoint(eager)["model"]
    b = load_checkpoint(compiled)["model"]
    assert set(a) == set(b)  # the checkpoint holds the plain module's names, not the compiled wrapper's
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=1e-4, atol=1e-6)


def test_resume_is_bit_exact(shards, tmp_path):
    """N steps straight == N/2 steps, stop, resume, N/2 steps: same losses and weights, bit for bit.

    Dropout, gradient accumulation, alternating banded layers, document masking and periodic evaluation
    are all on, so RNG, optimizer, loader and schedule state must all be restored exactly. The halves use
    DataLoader workers and the straight run does not: workers must change neither the stream nor the RNG.
    """
    model = ModelOverrides(dropout=0.1, attention="alternating", band_width=8, doc_masking=True)
    common = dict(model=model, grad_accum=2, max_steps=8, decay_steps=8, eval_every=3, eval_rows=8)
    straight = str(tmp_path / "straight")
    train(tiny(shards, straight, **common))
    split = str(tmp_path / "split")
    first = train(tiny(shards, split, **{**common, "max_steps": 4}, num_workers=2))
    assert first["steps"] == 4
    second = train(tiny(shards, split, **common, resume=True, num_workers=1))
    assert second["start_step"] == 4 and second["steps"] == 8
    assert losses(split) == losses(straight)
    assert len(losses(split)) == 8
    assert second["first_loss"] == losses(straight)[0]
    a = load_checkpoint(straight)
    b = load_checkpoint(split)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, state in a["optimizer"]["state"].items():
        for slot, tensor in state.items():
            assert torch.equal(tensor, b["optimizer"]["state"][name][slot]), (name, slot)
    assert a["loader"] == b["loader"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    train(cfg)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(shards, tmp_path):
    """2 gloo ranks x batch 2 train like 1 process x batch 4 (same global batch, same samples)."""
    single = str(tmp_path / "single")
    train(tiny(shards, single, batch_size=4, max_steps=4, grad_accum=2))
    ddp = str(tmp_path / "ddp")
    mp.spawn(
        _ddp_worker,
        args=(2, _free_port(), tiny(shards, ddp, batch_size=2, max_steps=4, grad_accum=2)),
        nprocs=2,
        join=True,
    )
    assert losses(ddp) == pytest.approx(losses(single), rel=1e-5)
    a = load_checkpoint(single)
    b = load_checkpoint(ddp)
    assert b["world_size"] == 2 and len(b["rng"]) == 2
    assert a["loader"]["consumed_samples"] == b["loader"]["consumed_samples"]
    for name, tensor in a["model"].items():
        # Adam divides by sqrt(v): reduction-order noise in near-zero gradients moves weights by ~lr * 1e-3.
        torch.testing.assert_close(tensor, b["model"][name], rtol=1e-4, atol=2e-5)


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process_and_resume(shards, tmp_path):
    """FSDP2 (2 gloo ranks, sharded weights and moments) == 1 process at the same global batch, through a
    checkpoint: 2 steps, a full (gathered) checkpoint, resume under FSDP, 2 more steps."""
    single = str(tmp_path / "single")
    # 9 held-out rows: rank 0 evaluates 3 batches, rank 1 only 2 (FSDP forwards are collectives, so must not hang)
    train(tiny(shards, single, batch_size=4, max_steps=4, grad_accum=2, eval_every=2, eval_rows=9))
    fsdp = str(tmp_path / "fsdp")
    common = dict(batch_size=2, grad_accum=2, parallel="fsdp", eval_every=2, eval_rows=9)
    mp.spawn(_ddp_worker, args=(2, _free_port(), tiny(shards, fsdp, max_steps=2, **common)), nprocs=2, join=True)
    half = load_checkpoint(fsdp)
    assert half["step"] == 2 and half["world_size"] == 2
    a = load_checkpoint(single)
    assert set(half["model"]) == set(a["model"])  # the shards read back as full tensors: what generate and export read
    assert all(half["model"][k].shape == v.shape for k, v in a["model"].items())
    mp.spawn(
        _ddp_worker, args=(2, _free_port(), tiny(shards, fsdp, max_steps=4, resume=True, **common)), nprocs=2, join=True
    )
    assert len(losses(fsdp)) == 4
    assert losses(fsdp) == pytest.approx(losses(single), rel=1e-5)
    evals = [r["eval_loss"] for r in records(fsdp, "eval")]
    assert evals == pytest.approx([r["eval_loss"] for r in records(single, "eval")], rel=1e-5)
    b = load_checkpoint(fsdp)
    assert b["step"] == 4 and b["train_config"]["parallel"] == "fsdp"
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], rtol=1e-4, atol=2e-5)
    for name, state in a["optimizer"]["state"].items():  # the moments, gathered from both shards
        torch.testing.assert_close(state["exp_avg"], b["optimizer"]["state"][name]["exp_avg"], rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_resume_reshards_between_world_sizes(shards, tmp_path):
    """A sharded checkpoint written by 2 FSDP ranks resumes in 1 process, and one written by 1 process resumes on
    2 FSDP ranks; both at the same global batch match an uninterrupted run's losses (the loader's position is
    counted in global samples, so it does not depend on the world size)."""
    common = dict(max_steps=4, decay_steps=4, grad_accum=1)
    straight = str(tmp_path / "straight")
    train(tiny(shards, straight, batch_size=4, **common))
    two = dict(batch_size=2, parallel="fsdp")

    down = str(tmp_path / "down")  # 2 -> 1
    mp.spawn(_ddp_worker, args=(2, _free_port(), tiny(shards, down, **two, **{**common, "max_steps": 2})), nprocs=2)
    assert load_checkpoint(down)["world_size"] == 2
    assert train(tiny(shards, down, batch_size=4, resume=True, **common))["start_step"] == 2
    assert losses(down) == pytest.approx(losses(straight), rel=1e-5)

    up = str(tmp_path / "up")  # 1 -> 2
    train(tiny(shards, up, batch_size=4, **{**common, "max_steps": 2}))
    mp.spawn(_ddp_worker, args=(2, _free_port(), tiny(shards, up, **two, resume=True, **common)), nprocs=2)
    assert len(losses(up)) == 4 and load_checkpoint(up)["world_size"] == 2
    assert losses(up) == pytest.approx(losses(straight), rel=1e-5)
    a, b = load_checkpoint(straight), load_checkpoint(up)
    assert a["loader"] == b["loader"]
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], rtol=1e-4, atol=2e-5)


def test_corrupt_checkpoint_is_a_clear_error(shards, tmp_path):
    out = str(tmp_path / "run")
    train(tiny(shards, out, max_steps=2))
    path = os.path.join(out, "checkpoints", "step-00000002")
    (shard,) = [os.path.join(path, f) for f in os.listdir(path) if f.endswith(".distcp")]
    with open(shard, "rb") as fh:
        data = fh.read()
    with open(shard, "wb") as fh:
        fh.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny(shards, out, max_steps=4, resume=True))
    dcp.save({"weights": torch.zeros(2)}, checkpoint_id=path)
    with pytest.raises(CheckpointError, match="not a ccgpt training checkpoint"):
        train(tiny(shards, out, max_steps=4, resume=True))


def test_checkpoints_commit_with_metadata_and_the_last_k_are_kept(shards, tmp_path):
    out = str(tmp_path / "run")
    train(tiny(shards, out, max_steps=3, checkpoint_every=1, keep_checkpoints=2))
    assert sorted(os.listdir(out)) == ["checkpoints", "log.jsonl", "summary.json", "tensorboard"]
    root = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(root)) == ["step-00000002", "step-00000003"]
    assert load_checkpoint(out)["step"] == 3
    # a write interrupted before DCP's .metadata (the commit marker) is not a checkpoint: resume skips it
    os.rename(os.path.join(root, "step-00000003", ".metadata"), os.path.join(root, "step-00000003", "partial"))
    assert load_checkpoint(out)["step"] == 2
    summary = train(tiny(shards, out, max_steps=4, checkpoint_every=1, keep_checkpoints=2, resume=True))
    assert summary["start_step"] == 2 and summary["checkpoint"].endswith("step-00000004")
    assert sorted(os.listdir(root)) == ["step-00000003", "step-00000004"]  # the partial step 3 was rewritten
    assert load_checkpoint(os.path.join(root, "step-00000003"))["step"] == 3


def test_existing_run_needs_resume_flag(shards, tmp_path):
    out = str(tmp_path / "run")
    train(tiny(shards, out, max_steps=1))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(shards, out, max_steps=2))


def test_resume_with_another_model_shape_is_refused(shards, tmp_path):
    out = str(tmp_path / "run")
    train(tiny(shards, out, max_steps=1))
    with pytest.raises(CheckpointError, match="differs"):
        train(tiny(shards, out, max_steps=2, resume=True, model=ModelOverrides(n_layer=3)))


def test_wrong_vocab_size_fails_before_training(shards, tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(DataError, match="vocab_size=16 is smaller"):
        train(tiny(shards, out, model=ModelOverrides(vocab_size=16)))
    assert not os.path.exists(os.path.join(out, "checkpoints"))
    with pytest.raises(DataError, match="tokenizer"):
        train(tiny(shards, out, tokenizer_hash="cd" * 32))


def test_resume_on_shards_of_another_tokenizer_is_refused(tmp_path):
    first = make_shards(str(tmp_path / "a"))
    out = str(tmp_path / "run")
    train(tiny(first, out, max_steps=1))
    other = make_shards(str(tmp_path / "b"))
    manifest = load_manifest(other)
    manifest.tokenizer.content_hash = "ef" * 32
    save_manifest(manifest, other)
    with pytest.raises(CheckpointError, match="tokenizer"):
        train(tiny(other, out, max_steps=2, resume=True))
    assert len(losses(out)) == 1  # refused before any step


def test_missing_shard_fails_before_training(tmp_path):
    root = make_shards(str(tmp_path / "shards"))
    os.remove(os.path.join(root, "shard-00000.arrow"))
    with pytest.raises(DataError, match="missing"):
        train(tiny(root, str(tmp_path / "run")))


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)  # half way down the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)
    after = [lr_at(s, cfg) for s in range(9, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    longer = dataclasses.replace(cfg, decay_steps=210)
    assert lr_at(109, longer) > lr_at(109, cfg)


def test_triton_norm_on_cpu_is_refused_before_training(shards, tmp_path):
    with pytest.raises(ValueError, match="norm_impl=triton"):
        train(tiny(shards, str(tmp_path / "run"), model=ModelOverrides(norm_impl="triton")))
    with pytest.raises(ValueError, match="parallel"):
        TrainConfig(parallel="zero3")


def test_bf16_is_cuda_only():
    assert autocast_dtype("auto", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="CUDA"):
        autocast_dtype("bfloat16", torch.device("cpu"))


def test_cli_help_yaml_and_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--model.n_layer" in capsys.readouterr().out
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("train:\n  preset: nano\n  lr: 0.01\n  betas: [0.8, 0.9]\n  model:\n    n_layer: 3\n")
    args = build_parser().parse_args(["--config", str(cfg_file), "--lr", "0.02", "--model.doc_masking", "true"])
    cfg = config_from_args(args)
    assert cfg.lr == 0.02 and cfg.preset == "nano" and cfg.betas == (0.8, 0.9)
    assert cfg.model.n_layer == 3 and cfg.model.doc_masking is True
    model_cfg = cfg.base_model_config()
    assert (model_cfg.n_layer, model_cfg.n_embd, model_cfg.doc_masking) == (3, 64, True)


def test_shipped_configs_parse():
    names = [n for n in os.listdir(os.path.join(REPO, "configs")) if n.startswith("model-") and n.endswith(".yaml")]
    assert names
    for name in names:
        cfg = config_from_args(build_parser().parse_args(["--config", os.path.join(REPO, "configs", name)]))
        cfg.base_model_config()


def test_cli_trains(shards, tmp_path, capsys):
    out = str(tmp_path / "run")
    rc = main(
        [
            "--shards",
            shards,
            "--out",
            out,
            "--preset",
            "nano",
            "--max_steps",
            "2",
            "--batch_size",
            "2",
            "--eval_rows",
            "0",
            "--log_every",
            "1",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "step 2/2" in printed and json.loads(printed[printed.index("{") :])["steps"] == 2


def test_a_nan_step_is_skipped_or_stops_with_a_checkpoint_to_resume_from(shards, tmp_path, monkeypatch):
    from train.model import GPT
    from train.trainer import TrainingDiverged

    forward, calls = GPT.forward, {"n": 0}

    def poisoned(self, idx, targets=None, doc_ids=None):  # the 3rd training step's loss is NaN
        logits, loss = forward(self, idx, targets, doc_ids)
        calls["n"] += 1
        return logits, loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    skip = str(tmp_path / "skip")
    summary = train(tiny(shards, skip, max_steps=4, on_bad_step="skip"))
    assert summary["skipped_steps"] == 1 and summary["steps"] == 4
    assert [r["step"] for r in records(skip, "skipped")] == [3]
    assert math.isfinite(losses(skip)[3])  # the weights never saw the NaN

    calls["n"] = 0
    stop = str(tmp_path / "stop")
    with pytest.raises(TrainingDiverged, match=r"step 3: .*not finite.*resume from .*step-00000002"):
        train(tiny(shards, stop, max_steps=4, checkpoint_every=1))
    monkeypatch.setattr(GPT, "forward", forward)
    assert train(tiny(shards, stop, max_steps=4, resume=True))["start_step"] == 2
