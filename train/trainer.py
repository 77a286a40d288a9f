"""The pretraining loop: ``train(cfg) -> summary``.

GPT-3's recipe at any scale: AdamW with warmup and cosine decay (:mod:`train.optim`), global gradient-norm
clipping at 1.0, gradient accumulation to reach the global batch, bf16 autocast on CUDA. Launched by
``torchrun`` the model is data-parallel, by DDP or FSDP2 (:mod:`train.parallel`); the loader gives every rank a
disjoint share of one global sample stream, so N ranks with batch b train like one process with batch N*b.
``compile=true`` wraps the (wrapped) model in ``torch.compile``: ``norm_impl=auto`` then means PyTorch's
LayerNorm (inductor generates its own fused kernel), and the chunked / fused loss runs outside the compiled
graph (one graph break at the model's end).

Resumption is exact: ``out/checkpoints/step-N/`` (:mod:`train.checkpoint`, sharded DCP folders) holds everything
a step depends on, so on CPU a run of N steps and a run of N/2 steps + resume + N/2 steps produce bit-identical
losses; a resume may also change the world size at the same global batch.

Outputs in ``cfg.out``: ``checkpoints/``, ``log.jsonl`` and ``tensorboard/`` (:mod:`train.metrics`),
``summary.json`` (the returned summary).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule

from train.attention import FLEX_MIN_HEAD_DIM
from train.checkpoint import (
    CHECKPOINTS_DIR,
    Progress,
    full_model_on_main,
    latest_checkpoint,
    load_tensors,
    restore_progress,
    write_training_state,
)
from train.config import ModelConfig, TrainConfig
from train.data import Batch, ShardLoader, resolve_model_config
from train.eval import LiveTasks
from train.metrics import LOG_NAME, RunLog, Throughput, peak_flops_per_device, start_log
from train.model import GPT
from train.optim import build_optimizer, lr_at, set_lr
from train.parallel import (
    Dist,
    close_distributed,
    gradient_sync,
    init_distributed,
    max_over_ranks,
    mean_over_ranks,
    sum_over_ranks,
    wrap_model,
)
from train.storage import atomic_write_text, find_tokenizer_beside


# --------------------------------------------------------------------------------------------- device checks
def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA (when the card has bf16), none elsewhere; CPU training stays float32."""
    if dtype == "float32":
        return None
    if device.type != "cuda":
        if dtype == "bfloat16":
            raise ValueError("dtype=bfloat16 uses CUDA autocast; on CPU train with dtype float32 (or auto)")
        return None
    if dtype == "auto" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16


def _autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()


def check_device_support(model_cfg: ModelConfig, device: torch.device) -> None:
    """Refuse, before any data is read, implementation choices that cannot train on ``device``."""
    if device.type != "cuda" and model_cfg.attention_impl == "flex":
        raise ValueError(
            "attention_impl=flex cannot train on CPU (PyTorch has no FlexAttention backward there); use sdpa or auto"
        )
    if device.type == "cuda" and model_cfg.attention_impl == "flex" and model_cfg.head_dim < FLEX_MIN_HEAD_DIM:
        raise ValueError(
            f"attention_impl=flex needs a head dimension of at least {FLEX_MIN_HEAD_DIM} on CUDA "
            f"(this model's is {model_cfg.head_dim}); use sdpa or auto"
        )
    if device.type != "cuda" and model_cfg.loss_impl == "fused":
        raise ValueError("loss_impl=fused runs Triton kernels on CUDA; on CPU use chunked, eager or auto")
    if device.type != "cuda" and model_cfg.norm_impl == "triton":
        raise ValueError("norm_impl=triton runs Triton kernels on CUDA; on CPU use torch or auto")


def check_compile_support(device: torch.device) -> None:
    """``torch.compile`` with inductor generates C++ on CPU: refuse up front when no compiler is there."""
    if device.type == "cpu":
        import shutil

        if not any(shutil.which(cc) for cc in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
            raise ValueError(
                "compile=true on CPU needs a C++ compiler (g++ or clang++) for inductor; "
                "install one or train with compile=false"
            )


# --------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: GPT, loader: ShardLoader, device: torch.device, amp: torch.dtype | None, d: Dist) -> dict[str, Any]:
    """Mean next-token loss on the evaluation rows, overall and per source, summed over all ranks.

    The rows come from the shards' validation split (whole documents no training row holds) when the manifest
    lists one, else from rows held out of the training shards (``eval_split`` says which: "val" / "train").
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(loader.sources), 2, dtype=torch.float64, device=device)  # [loss sum, tokens]
    batches: Any = loader.eval_batches()
    fsdp = d.enabled and isinstance(model, FSDPModule)
    if fsdp:
        # Every FSDP forward all-gathers weights, so every rank must run as many as the busiest one: agree on
        # that count first; a rank with fewer rows then runs throwaway forwards.
        batches = list(batches)
        most = max_over_ranks(len(batches), device)
    for batch in batches:
        b = batch.to(device)
        with _autocast(device, amp):
            logits, _ = model(b.x, None, b.doc_ids)
        per_token = F.cross_entropy(logits.float().transpose(1, 2), b.y, reduction="none")  # [B, T]
        rows = torch.stack([per_token.sum(1).double(), torch.full_like(per_token[:, 0], b.y.shape[1]).double()], 1)
        sums.index_add_(0, batch.source_ids.to(device), rows)
    if fsdp:
        dummy = torch.zeros(1, 1, dtype=torch.long, device=device)
        for _ in range(most - len(batches)):
            with _autocast(device, amp):
                model(dummy, None, None)
    sum_over_ranks(sums, d)
    model.train(was_training)
    total = sums.sum(0)
    if total[1] == 0:
        return {"eval_loss": None, "eval_loss_by_source": {}, "eval_split": loader.eval_split}
    by_source = {s: float(sums[i, 0] / sums[i, 1]) for i, s in enumerate(loader.sources) if sums[i, 1] > 0}
    return {"eval_loss": float(total[0] / total[1]), "eval_loss_by_source": by_source, "eval_split": loader.eval_split}


# --------------------------------------------------------------------------------------------- bad steps
class TrainingDiverged(RuntimeError):
    """A step's loss or gradient norm was NaN/inf or spiked, and ``on_bad_step=stop``."""


class StepGuard:
    """Decides, before the optimizer step, whether a step is sound: a finite loss (averaged over ranks) and
    gradient norm, and with ``loss_spike_factor`` a loss within that factor of the running mean of the
    previous sound steps. A bad step is skipped (no update, its batch dropped) or stops the run with the
    checkpoint to resume from (written before the bad step, so the weights it holds never saw it). The check
    reads two scalars back from the device once per step."""

    WARMUP = 10  # sound steps before the spike check starts

    def __init__(self, cfg: TrainConfig, d: Dist, log: RunLog):
        self.cfg, self.d, self.log = cfg, d, log
        self.mean: float | None = None  # running mean of sound losses
        self.seen = 0
        self.skipped = 0

    def good(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        loss = mean_over_ranks(loss.detach().clone().float(), self.d)
        gn = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        value, norm = float(loss), float(gn)
        factor = self.cfg.loss_spike_factor
        if not (math.isfinite(value) and math.isfinite(norm)):
            why = f"loss {value} / gradient norm {norm} is not finite"
        elif factor and self.seen >= self.WARMUP and self.mean is not None and value > factor * self.mean:
            why = f"loss {value:.4f} is over {factor:g}x the running mean {self.mean:.4f}"
        else:
            self.seen += 1
            self.mean = value if self.mean is None else 0.9 * self.mean + 0.1 * value
            return True
        if self.cfg.on_bad_step == "skip":
            self.skipped += 1
            self.log.write({"kind": "skipped", "step": step + 1, "reason": why})
            if self.d.main:
                print(f"step {step + 1}: {why}; skipped (no update, batch dropped; on_bad_step=skip)", flush=True)
            return False
        latest = latest_checkpoint(self.cfg.out)
        resume = (
            f"resume from {latest} (--resume true)" if latest else "no checkpoint was written yet (checkpoint_every)"
        )
        raise TrainingDiverged(
            f"step {step + 1}: {why}; stopped before updating the weights (on_bad_step=stop): {resume}, "
            "e.g. with a lower --lr, or set --on_bad_step skip to drop such steps"
        )


# --------------------------------------------------------------------------------------------- training
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) as configured; returns the run summary (also written to ``out/summary.json``)."""
    d, device = init_distributed(cfg.device)
    try:
        return Trainer(cfg, d, device).fit()
    finally:
        close_distributed(d)


class Trainer:
    """One rank's training run: built (data, model, resume, parallel wrapping, optimizer) by ``__init__``,
    trained by :meth:`fit`, one method per thing a step does (step, log, evaluate, checkpoint)."""

    def __init__(self, cfg: TrainConfig, d: Dist, device: torch.device):
        self.cfg, self.d, self.device = cfg, d, device
        os.makedirs(cfg.out, exist_ok=True)
        self.ckpt_path = latest_checkpoint(cfg.out)
        if self.ckpt_path and not cfg.resume:
            raise FileExistsError(
                f"{self.ckpt_path} exists; pass --resume true to continue that run, or choose another --out"
            )
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.amp = autocast_dtype(cfg.dtype, device)
        self.loader = self._open_loader()
        self.manifest = self.loader.manifest
        self.model_cfg = self._model_config()
        self.fsdp = d.enabled and cfg.parallel == "fsdp"

        torch.manual_seed(cfg.seed)  # identical initialisation on every rank
        if self.fsdp:  # no rank holds the full model: built on meta, sharded, then each rank fills its shards
            with torch.device("meta"):
                self.raw_model = GPT(self.model_cfg)
        else:
            self.raw_model = GPT(self.model_cfg).to(device)
        self.raw_model.activation_checkpointing = cfg.activation_checkpointing
        torch.manual_seed(cfg.seed + 1 + d.rank)  # per-rank dropout streams, independent of init
        checkpoint_meta = self._resume()

        # `wrapped` is what synchronises gradients (DDP, or the FSDP2 root, which is raw_model itself, sharded in
        # place); `model` is what the loop calls (the same, or its torch.compile wrapper).
        self.wrapped = wrap_model(self.raw_model, d, device, self.fsdp, param_dtype=self.amp)
        if self.fsdp:
            self._materialise()
        self.model = torch.compile(self.wrapped, backend=cfg.compile_backend) if cfg.compile else self.wrapped
        self.optimizer = build_optimizer(self.raw_model, cfg, device)
        if checkpoint_meta is not None:  # the shards of this rank, whatever world size wrote the checkpoint
            load_tensors(self.ckpt_path, self.raw_model, self.optimizer, checkpoint_meta)

        seq_len = self.manifest.seq_len
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * d.world * seq_len
        self.flops_per_token = self.raw_model.estimate_flops_per_token(seq_len)
        peak = peak_flops_per_device(cfg, device)
        self.throughput = Throughput(self.tokens_per_step, self.flops_per_token, peak, d.world)
        self.params = self.raw_model.num_params()
        self.tasks = self._load_tasks()
        self._print_setup()
        self.log = RunLog(cfg.out, d.main, cfg.tensorboard, self.start_step if self.resumed else None)
        self.guard = StepGuard(cfg, d, self.log)
        self.last_eval: dict[str, Any] | None = None
        self.last_tasks: dict[str, Any] | None = None  # {task: {metric: value}} of the latest eval_tasks scoring
        self.checkpoint: str | None = None

    # ------------------------------------------------------------------------------------------- setup
    def _open_loader(self) -> ShardLoader:
        cfg, d = self.cfg, self.d
        loader = ShardLoader(
            cfg.shards,
            cfg.batch_size,
            seed=cfg.seed,
            rank=d.rank,
            world_size=d.world,
            num_workers=cfg.num_workers,
            eval_rows=cfg.eval_rows,
            verify_sha256=cfg.verify_sha256,
            pin_memory=self.device.type == "cuda",
            cache_dir=cfg.shard_cache,
            cache_bytes=int(cfg.shard_cache_gib * 2**30),
        )
        if d.main and cfg.eval_rows and loader.eval_split != "val":
            print(
                f"note: {cfg.shards} has no validation split (made before it existed, or with val_fraction 0): "
                f"evaluating on {loader.eval_rows} rows held out of the training shards",
                flush=True,
            )
        return loader

    def _model_config(self) -> ModelConfig:
        """The preset with the overrides, sized by the manifest, checked against the device."""
        cfg, device = self.cfg, self.device
        model_cfg = resolve_model_config(cfg.base_model_config(), self.manifest, cfg.tokenizer_hash)
        check_device_support(model_cfg, device)
        if cfg.compile:
            if cfg.compile_backend == "inductor":
                check_compile_support(device)
            if model_cfg.norm_impl == "auto":  # inductor fuses LayerNorm itself; the Triton op would break the graph
                model_cfg = dataclasses.replace(model_cfg, norm_impl="torch")
        return model_cfg

    def _resume(self) -> dict[str, Any] | None:
        """Restore the loop's counters, the loader and the RNGs from the latest checkpoint when resuming, else
        start a fresh log; returns the checkpoint's metadata (None when starting from step 0), whose tensors are
        loaded once the model is wrapped and the optimizer exists."""
        cfg, d = self.cfg, self.d
        log_path = os.path.join(cfg.out, LOG_NAME)
        self.resumed = bool(cfg.resume and self.ckpt_path)
        self.progress = Progress()
        meta = None
        if self.resumed:
            self.progress, meta = restore_progress(
                self.ckpt_path, self.loader, self.model_cfg, self.manifest, d, cfg.seed
            )
        self.start_step = self.progress.step
        if d.main:
            start_log(log_path, self.start_step if self.resumed else None)
            if self.resumed:
                print(f"resumed from {self.ckpt_path} at step {self.start_step}", flush=True)
            elif cfg.resume:
                print(f"no checkpoint in {os.path.join(cfg.out, CHECKPOINTS_DIR)}; starting from step 0", flush=True)
        return meta

    def _materialise(self) -> None:
        """Allocate this rank's shards of the meta-built model and draw GPT-2's init into them, from the same
        seed (and so the same values) as a model built whole; the run's RNG streams are left as they were."""
        rng = torch.get_rng_state()
        self.raw_model.to_empty(device=self.device)
        torch.manual_seed(self.cfg.seed)
        self.raw_model.init_weights(from_meta=True)
        torch.set_rng_state(rng)

    def _load_tasks(self) -> LiveTasks | None:
        """``eval_tasks``' examples, tokenised with the shards' tokenizer, on the main rank (None elsewhere)."""
        cfg = self.cfg
        if not (cfg.eval_tasks and self.d.main):
            return None
        tok_path = find_tokenizer_beside(cfg.shards, cfg.shard_cache)
        if tok_path is None:
            raise ValueError(f"eval_tasks needs the shards' tokenizer, and {cfg.shards} has no tokenizer.json")
        return LiveTasks(
            cfg.eval_tasks,
            tok_path,
            self.manifest.tokenizer.eot_id,
            self.model_cfg.n_ctx,
            self.model_cfg.vocab_size,
            data_root=cfg.eval_data_root or None,
            limit=cfg.eval_task_limit,
        )

    def _print_setup(self) -> None:
        cfg, d = self.cfg, self.d
        if d.main:
            print(
                f"model {cfg.preset}: {self.params / 1e6:.2f}M params, {self.flops_per_token / 1e6:.1f} MFLOP/token | "
                + (f"{cfg.parallel} | " if d.enabled else "")
                + ("compiled | " if cfg.compile else "")
                + f"world {d.world} x batch {cfg.batch_size} x accum {cfg.grad_accum} x {self.manifest.seq_len} "
                f"tokens = {self.tokens_per_step:,} tokens/step | device {self.device}"
                + (" bf16" if self.amp else " fp32"),
                flush=True,
            )

    # ------------------------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.eval_tasks and not self.resumed:
            self._evaluate_tasks(0)  # the initialisation: the baseline every later score is read against
        batches = iter(self.loader)
        self.throughput.start()
        self.model.train()
        for step in range(self.start_step, cfg.max_steps):
            lr, loss_sum, grad_norm = self._step(step, batches)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.max_steps or done == self.start_step + 1:
                self._log_train(done, lr, loss_sum, grad_norm)
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.max_steps):
                if self.loader.eval_rows:
                    self._evaluate(done)
                if cfg.eval_tasks:
                    self._evaluate_tasks(done)
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.max_steps:
                self.checkpoint = self._save()
        summary = self._summary()
        self.log.close()
        batches.close()  # stops DataLoader workers before the maps they read are closed
        self.loader.close()
        if self.d.main:
            atomic_write_text(os.path.join(cfg.out, "summary.json"), json.dumps(summary, indent=2) + "\n")
        return summary

    def _step(self, step: int, batches: Iterator[Batch]) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimizer step over ``grad_accum`` micro-batches: ``(lr, summed micro-batch losses, grad norm)``."""
        cfg = self.cfg
        lr = lr_at(step, cfg)
        set_lr(self.optimizer, lr)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            batch = next(batches).to(self.device, non_blocking=True)
            last_micro = micro == cfg.grad_accum - 1
            with gradient_sync(self.wrapped, self.raw_model, self.d, self.fsdp, last_micro):
                with _autocast(self.device, self.amp):
                    _, loss = self.model(batch.x, batch.y, batch.doc_ids)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.raw_model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
        if self.guard.good(step, loss_sum / cfg.grad_accum, grad_norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step = step + 1
        self.progress.tokens_seen += self.tokens_per_step
        self.throughput.step()
        return lr, loss_sum, grad_norm

    def _log_train(self, done: int, lr: float, loss_sum: torch.Tensor, grad_norm: torch.Tensor) -> None:
        progress = self.progress
        progress.last_loss = float(mean_over_ranks(loss_sum / self.cfg.grad_accum, self.d))
        if progress.first_loss is None:
            progress.first_loss = progress.last_loss
        tok_s, elapsed = self.throughput.measure()
        mfu = self.throughput.mfu
        gn = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        self.log.write(
            {
                "kind": "train",
                "step": done,
                "loss": progress.last_loss,
                "lr": lr,
                "tokens_per_sec": tok_s,
                "mfu": mfu,
                "grad_norm": gn,
                "tokens": progress.tokens_seen,
                "epoch": self.loader.epoch,
                "elapsed_s": elapsed,
                "samples_by_source": self.loader.source_samples(),
            }
        )
        if self.d.main:
            mfu_txt = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
            print(
                f"step {done}/{self.cfg.max_steps} | loss {progress.last_loss:.4f} | lr {lr:.2e} | "
                f"{tok_s:,.0f} tok/s | mfu {mfu_txt} | grad norm {gn:.3f}",
                flush=True,
            )

    def _evaluate(self, done: int) -> None:
        self.last_eval = evaluate(self.raw_model, self.loader, self.device, self.amp, self.d)
        self.log.write({"kind": "eval", "step": done, **self.last_eval})
        if self.d.main and self.last_eval["eval_loss"] is not None:
            per = ", ".join(f"{k} {v:.4f}" for k, v in self.last_eval["eval_loss_by_source"].items())
            print(f"eval  {done}/{self.cfg.max_steps} | loss {self.last_eval['eval_loss']:.4f} | {per}", flush=True)

    def _evaluate_tasks(self, done: int) -> None:
        """Score ``eval_tasks`` on rank 0 with the in-memory model (under FSDP a gathered copy)."""
        model = full_model_on_main(self.raw_model, self.model_cfg, self.device, self.d, self.fsdp)
        if model is None or self.tasks is None:
            return
        was_training = model.training
        model.eval()
        with _autocast(self.device, self.amp):
            self.last_tasks = self.tasks(lambda ids: model(ids)[0].float(), self.device)
        model.train(was_training)
        self.log.write({"kind": "eval_task", "step": done, "tasks": self.last_tasks})
        # each task's headline (first) metric; log.jsonl and TensorBoard hold them all
        per = ", ".join(f"{t} {next(iter(row))} {next(iter(row.values())):.4g}" for t, row in self.last_tasks.items())
        print(f"tasks {done}/{self.cfg.max_steps} | {per}", flush=True)

    def _save(self) -> str:
        """Write a checkpoint (every rank writes its own shards)."""
        return write_training_state(
            self.cfg.out,
            self.raw_model,
            self.optimizer,
            self.loader,
            self.progress,
            self.model_cfg,
            self.cfg,
            self.manifest,
            self.d,
        )

    def _summary(self) -> dict[str, Any]:
        cfg, d, progress, last_eval = self.cfg, self.d, self.progress, self.last_eval
        final_step = max(self.start_step, cfg.max_steps)
        elapsed = self.throughput.elapsed()
        run_steps = final_step - self.start_step
        return {
            "steps": final_step,
            "start_step": self.start_step,
            "first_loss": progress.first_loss,
            "last_loss": progress.last_loss,
            "eval_loss": last_eval["eval_loss"] if last_eval else None,
            "eval_loss_by_source": last_eval["eval_loss_by_source"] if last_eval else {},
            "eval_tasks": self.last_tasks or {},
            "tokens_seen": progress.tokens_seen,
            "tokens_per_sec": self.tokens_per_step * run_steps / elapsed if run_steps else None,
            "mfu": self.throughput.mfu,
            "params": self.params,
            "flops_per_token": self.flops_per_token,
            "checkpoint": self.checkpoint or latest_checkpoint(cfg.out),
            "log": self.log.path,
            "world_size": d.world,
            "parallel": cfg.parallel if d.enabled else None,
            "compiled": cfg.compile,
            "device": str(self.device),
            "model_config": dataclasses.asdict(self.model_cfg),
            "samples_by_source": self.loader.source_samples(),
            "eval_rows": self.loader.eval_rows,
            "epoch": self.loader.epoch,
            "skipped_steps": self.guard.skipped,
        }
