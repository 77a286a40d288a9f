"""The pretraining loop: ``train(cfg) -> summary``.

GPT-3's recipe at any scale: AdamW (betas 0.9/0.95, weight decay 0.1 on matmul weights), linear warmup
then cosine decay to 10 % of the peak learning rate, global gradient-norm clipping at 1.0, gradient
accumulation to reach the global batch, bf16 autocast on CUDA. Launched by ``torchrun`` (``WORLD_SIZE``
> 1) the model is wrapped in DistributedDataParallel, or with ``parallel=fsdp`` sharded by FSDP2
(``fully_shard`` on every block, then on the root, so parameters, gradients and AdamW moments are split
across ranks and gathered one block at a time); gloo on CPU, nccl on CUDA. The loader gives every rank a
disjoint share of one global sample stream, so N ranks with batch b train like one process with batch N*b.
``compile=true`` wraps the (wrapped) model in ``torch.compile``: ``norm_impl=auto`` then means PyTorch's
LayerNorm (inductor generates its own fused kernel), and the chunked / fused loss runs outside the compiled
graph (one graph break at the model's end).

Resumption is exact: ``out/checkpoint.pt`` holds the model, the optimizer (moments and step counts), the
step (which fixes the learning rate), the loader's stream position and every rank's RNG states. On CPU a
run of N steps and a run of N/2 steps + resume + N/2 steps produce bit-identical losses. Checkpoints are
written to a temporary file and renamed, so a crash mid-write leaves the previous checkpoint intact, and
they contain only tensors and plain Python values so they load with ``torch.load(weights_only=True)``
(no arbitrary code runs when a checkpoint is opened).

Checkpoints always hold full (unsharded) tensors: under FSDP the model and optimizer state are gathered
to rank 0 (``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True``) before writing, so
one checkpoint resumes under DDP, FSDP or a single process, and ``ccgpt generate`` / ``ccgpt export`` read
it like any other. The optimizer state is stored keyed by parameter name (the same API on every path).

Outputs in ``cfg.out``: ``checkpoint.pt``, ``log.jsonl`` (one record per log step and per evaluation),
``tensorboard/`` (the same scalars as TensorBoard events, when the package is installed), ``summary.json``
(the returned summary).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel as DDP

from schemas.atomic import atomic_path, atomic_write_text
from train.attention import FLEX_MIN_HEAD_DIM
from train.config import ModelConfig, TrainConfig
from train.data import ShardLoader, resolve_model_config
from train.model import GPT

CHECKPOINT_FORMAT = "ccgpt-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) used for MFU when --peak_flops is not given.
# Matched as substrings of torch.cuda.get_device_name(), first match wins (so PCIe/NVL before SXM).
GPU_PEAK_BF16: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
]


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not belong to this run."""


# --------------------------------------------------------------------------------------------- setup
@dataclasses.dataclass
class _Dist:
    rank: int
    local_rank: int
    world: int
    owns_group: bool  # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return device


def _init_distributed(device_spec: str) -> tuple[_Dist, torch.device]:
    """Join the job torchrun (or a test harness) set up through RANK / WORLD_SIZE / MASTER_* variables."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return _Dist(rank, local, world, owns_group=False), resolve_device(device_spec, local)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local)
    if world <= 1:
        return _Dist(0, 0, 1, owns_group=False), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), local, dist.get_world_size(), owns_group=True), device


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


class _TensorBoard:
    """The scalars of log.jsonl as TensorBoard events in ``out/tensorboard`` (rank 0 only).

    On resume the writer purges events past the checkpoint's step, as :func:`_rewrite_log` does for the
    JSONL log. Without the ``tensorboard`` package it prints one note and writes nothing.
    """

    def __init__(self, out: str, enabled: bool, purge_step: int | None):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                "note: the tensorboard package is not installed; logging to log.jsonl only "
                "(pip install tensorboard, or pass --tensorboard false to silence this)",
                flush=True,
            )
            return
        self.writer = SummaryWriter(os.path.join(out, "tensorboard"), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record["step"]
        if record.get("kind") == "train":
            for key in ("loss", "lr", "tokens_per_sec", "mfu", "grad_norm"):
                if record.get(key) is not None:
                    self.writer.add_scalar(f"train/{key}", record[key], step)
        elif record.get("kind") == "eval" and record.get("eval_loss") is not None:
            self.writer.add_scalar("eval/loss", record["eval_loss"], step)
            for source, value in (record.get("eval_loss_by_source") or {}).items():
                self.writer.add_scalar(f"eval_loss_by_source/{source}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def peak_flops_per_device(cfg: TrainConfig, device: torch.device) -> float | None:
    """The configured peak, else the card's dense bf16 peak; None (MFU not reported) when unknown."""
    if cfg.peak_flops > 0:
        return cfg.peak_flops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_BF16:
            if key in name:
                return flops
    return None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, cosine to lr * min_lr_ratio."""
    total = cfg.decay_steps or cfg.max_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= total:
        return min_lr
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


# ----------------------------------------------------------------------------------- RNG and ckpts
def rng_state() -> dict[str, Any]:
    """Every RNG a training step could touch, as tensors and plain values (weights_only-loadable)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path`` (atomic on POSIX)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())


_REQUIRED_KEYS = ("step", "model", "model_config", "optimizer", "loader", "rng", "tokenizer", "tokens_seen")


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load with ``weights_only=True``; any unreadable or foreign file is a :class:`CheckpointError`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, disallowed global: all mean "not a usable checkpoint"
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "it is truncated or corrupt. Delete it to start over, or restore a good copy."
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a ccgpt training checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt.get('version')!r}, this trainer reads {CHECKPOINT_VERSION}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return ckpt


def _gather_rng(d: _Dist) -> list[dict[str, Any]]:
    mine = rng_state()
    if not d.enabled:
        return [mine]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, mine)
    return out


def _rewrite_log(path: str, upto_step: int) -> None:
    """Drop log records past the checkpoint: those steps are about to be trained (and logged) again."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        keep = [line for line in fh if line.strip() and json.loads(line).get("step", 0) <= upto_step]
    atomic_write_text(path, "".join(keep))


# ---------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: GPT, loader: ShardLoader, device: torch.device, amp: torch.dtype | None, d: _Dist
) -> dict[str, Any]:
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
        most = torch.tensor([len(batches)], device=device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
    for batch in batches:
        b = batch.to(device)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            logits, _ = model(b.x, None, b.doc_ids)
        per_token = F.cross_entropy(logits.float().transpose(1, 2), b.y, reduction="none")  # [B, T]
        rows = torch.stack([per_token.sum(1).double(), torch.full_like(per_token[:, 0], b.y.shape[1]).double()], 1)
        sums.index_add_(0, batch.source_ids.to(device), rows)
    if fsdp:
        dummy = torch.zeros(1, 1, dtype=torch.long, device=device)
        for _ in range(int(most) - len(batches)):
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                model(dummy, None, None)
    if d.enabled:
        dist.all_reduce(sums)
    model.train(was_training)
    total = sums.sum(0)
    if total[1] == 0:
        return {"eval_loss": None, "eval_loss_by_source": {}, "eval_split": loader.eval_split}
    by_source = {s: float(sums[i, 0] / sums[i, 1]) for i, s in enumerate(loader.sources) if sums[i, 1] > 0}
    return {"eval_loss": float(total[0] / total[1]), "eval_loss_by_source": by_source, "eval_split": loader.eval_split}


# ------------------------------------------------------------------------------------------- training
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) as configured; returns the run summary (also written to ``out/summary.json``)."""
    d, device = _init_distributed(cfg.device)
    try:
        return _train(cfg, d, device)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: _Dist, device: torch.device) -> dict[str, Any]:
    main = d.rank == 0
    os.makedirs(cfg.out, exist_ok=True)
    ckpt_path = os.path.join(cfg.out, CHECKPOINT_NAME)
    log_path = os.path.join(cfg.out, "log.jsonl")
    if os.path.exists(ckpt_path) and not cfg.resume:
        raise FileExistsError(f"{ckpt_path} exists; pass --resume true to continue that run, or choose another --out")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = autocast_dtype(cfg.dtype, device)

    loader = ShardLoader(
        cfg.shards,
        cfg.batch_size,
        seed=cfg.seed,
        rank=d.rank,
        world_size=d.world,
        num_workers=cfg.num_workers,
        eval_rows=cfg.eval_rows,
        verify_sha256=cfg.verify_sha256,
        pin_memory=device.type == "cuda",
    )
    if main and cfg.eval_rows and loader.eval_split != "val":
        print(
            f"note: {cfg.shards} has no validation split (made before it existed, or with val_fraction 0): "
            f"evaluating on {loader.eval_rows} rows held out of the training shards",
            flush=True,
        )
    manifest = loader.manifest
    model_cfg = resolve_model_config(cfg.base_model_config(), manifest, cfg.tokenizer_hash)
    check_device_support(model_cfg, device)
    if cfg.compile:
        if cfg.compile_backend == "inductor":
            check_compile_support(device)
        if model_cfg.norm_impl == "auto":  # inductor fuses LayerNorm itself; the Triton op would break the graph
            model_cfg = dataclasses.replace(model_cfg, norm_impl="torch")
    fsdp = d.enabled and cfg.parallel == "fsdp"

    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    raw_model = GPT(model_cfg).to(device)
    torch.manual_seed(cfg.seed + 1 + d.rank)  # per-rank dropout streams, independent of init

    start_step, tokens_seen = 0, 0
    first_loss: float | None = None
    last_loss: float | None = None
    resumed = cfg.resume and os.path.exists(ckpt_path)
    if resumed:
        ckpt = load_checkpoint(ckpt_path)
        saved_cfg = ModelConfig(**ckpt["model_config"])
        if not saved_cfg.same_model(model_cfg):
            raise CheckpointError(f"{ckpt_path}: checkpoint model {saved_cfg} differs from this run's {model_cfg}")
        if ckpt["tokenizer"]["content_hash"] != manifest.tokenizer.content_hash:
            raise CheckpointError(
                f"{ckpt_path}: the checkpoint was trained with tokenizer {ckpt['tokenizer']['content_hash'][:16]}..., "
                f"the shards use {manifest.tokenizer.content_hash[:16]}..."
            )
        raw_model.load_state_dict(ckpt["model"])  # full tensors, before any sharding
        optimizer_state = ckpt["optimizer"]
        loader.load_state_dict(ckpt["loader"])
        start_step, tokens_seen = int(ckpt["step"]), int(ckpt["tokens_seen"])
        first_loss, last_loss = ckpt.get("first_loss"), ckpt.get("last_loss")
        if len(ckpt["rng"]) == d.world:
            set_rng_state(ckpt["rng"][d.rank])
        else:  # a different world size: the per-rank streams cannot map one to one; reseed deterministically
            torch.manual_seed(cfg.seed + 1 + d.rank + 1_000_003 * start_step)
        del ckpt
        if main:
            _rewrite_log(log_path, start_step)
            print(f"resumed from {ckpt_path} at step {start_step}", flush=True)
    elif main:
        open(log_path, "w").close()
        if cfg.resume:
            print(f"no checkpoint in {cfg.out}; starting from step 0", flush=True)

    # `wrapped` is what synchronises gradients (DDP, or the FSDP2 root, which is raw_model itself, sharded in
    # place); `model` is what the loop calls (the same, or its torch.compile wrapper).
    wrapped: torch.nn.Module = raw_model
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (d.world,))
        for block in raw_model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(raw_model, mesh=mesh)  # embeddings (tied with the head), positions and the final norm
    elif d.enabled:
        wrapped = DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    model: torch.nn.Module = torch.compile(wrapped, backend=cfg.compile_backend) if cfg.compile else wrapped
    # Built on the (possibly sharded) parameters: under FSDP each rank keeps the moments of its own shard.
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.lr, cfg.betas, device.type, cfg.eps)
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if resumed:
        if optimizer_state["state"] and all(isinstance(k, int) for k in optimizer_state["state"]) and not fsdp:
            optimizer.load_state_dict(optimizer_state)  # written by an earlier trainer: keyed by position
        else:
            set_optimizer_state_dict(
                raw_model, optimizer, optimizer_state, options=StateDictOptions(full_state_dict=True)
            )
        del optimizer_state

    seq_len = manifest.seq_len
    tokens_per_step = cfg.batch_size * cfg.grad_accum * d.world * seq_len
    flops_per_token = raw_model.estimate_flops_per_token(seq_len)
    peak = peak_flops_per_device(cfg, device)
    params = raw_model.num_params()
    if main:
        print(
            f"model {cfg.preset}: {params / 1e6:.2f}M params, {flops_per_token / 1e6:.1f} MFLOP/token | "
            + (f"{cfg.parallel} | " if d.enabled else "")
            + ("compiled | " if cfg.compile else "")
            + f"world {d.world} x batch {cfg.batch_size} x accum {cfg.grad_accum} x {seq_len} tokens "
            f"= {tokens_per_step:,} tokens/step | device {device}" + (" bf16" if amp else " fp32"),
            flush=True,
        )

    tensorboard = _TensorBoard(cfg.out, cfg.tensorboard and main, start_step if resumed else None)

    def log(record: dict[str, Any]) -> None:
        if main:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            tensorboard.write(record)

    def write_checkpoint(step: int) -> str:
        rngs = _gather_rng(d)  # collective: every rank takes part, rank 0 writes
        # Full tensors on CPU; under FSDP a collective that leaves them on rank 0 only.
        model_state = get_model_state_dict(raw_model, options=full) if fsdp else raw_model.state_dict()
        optimizer_state = get_optimizer_state_dict(raw_model, optimizer, options=full)
        if main:
            save_checkpoint(
                ckpt_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "step": step,
                    "tokens_seen": tokens_seen,
                    "first_loss": first_loss,
                    "last_loss": last_loss,
                    "model": model_state,
                    "model_config": dataclasses.asdict(model_cfg),
                    "optimizer": optimizer_state,
                    "loader": loader.state_dict(),
                    "rng": rngs,
                    "world_size": d.world,
                    "tokenizer": {
                        "content_hash": manifest.tokenizer.content_hash,
                        "vocab_size": manifest.tokenizer.vocab_size,
                        "eot_id": manifest.tokenizer.eot_id,
                    },
                    "train_config": dataclasses.asdict(cfg),
                },
            )
        if d.enabled:
            dist.barrier()
        return ckpt_path

    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    batches = iter(loader)
    last_eval: dict[str, Any] | None = None
    last_mfu: float | None = None
    checkpoint = None
    t_start = t_last = time.perf_counter()
    steps_since_log = 0
    step = start_step
    model.train()
    for step in range(start_step, cfg.max_steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            batch = next(batches).to(device, non_blocking=True)
            # Gradients are all-reduced (DDP) or reduce-scattered (FSDP) only on the last micro-batch.
            last_micro = micro == cfg.grad_accum - 1
            if fsdp:
                raw_model.set_requires_gradient_sync(last_micro)
            sync = contextlib.nullcontext() if (not d.enabled or fsdp or last_micro) else wrapped.no_sync()
            with sync:
                with autocast():
                    _, loss = model(batch.x, batch.y, batch.doc_ids)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            raw_model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += tokens_per_step
        steps_since_log += 1
        done = step + 1

        if done % cfg.log_every == 0 or done == cfg.max_steps or done == start_step + 1:
            mean_loss = loss_sum / cfg.grad_accum
            if d.enabled:
                dist.all_reduce(mean_loss)
                mean_loss /= d.world
            last_loss = float(mean_loss)
            if first_loss is None:
                first_loss = last_loss
            now = time.perf_counter()
            tok_s = tokens_per_step * steps_since_log / max(now - t_last, 1e-9)
            t_last, steps_since_log = now, 0
            last_mfu = flops_per_token * tok_s / (peak * d.world) if peak else None
            gn = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            log(
                {
                    "kind": "train",
                    "step": done,
                    "loss": last_loss,
                    "lr": lr,
                    "tokens_per_sec": tok_s,
                    "mfu": last_mfu,
                    "grad_norm": gn,
                    "tokens": tokens_seen,
                    "epoch": loader.epoch,
                    "elapsed_s": now - t_start,
                    "samples_by_source": loader.source_samples(),
                }
            )
            if main:
                mfu_txt = f"{100 * last_mfu:.1f}%" if last_mfu is not None else "n/a"
                print(
                    f"step {done}/{cfg.max_steps} | loss {last_loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s | "
                    f"mfu {mfu_txt} | grad norm {gn:.3f}",
                    flush=True,
                )

        if cfg.eval_every and loader.eval_rows and (done % cfg.eval_every == 0 or done == cfg.max_steps):
            last_eval = evaluate(raw_model, loader, device, amp, d)
            log({"kind": "eval", "step": done, **last_eval})
            if main and last_eval["eval_loss"] is not None:
                per = ", ".join(f"{k} {v:.4f}" for k, v in last_eval["eval_loss_by_source"].items())
                print(f"eval  {done}/{cfg.max_steps} | loss {last_eval['eval_loss']:.4f} | {per}", flush=True)

        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.max_steps:
            checkpoint = write_checkpoint(done)

    final_step = max(start_step, cfg.max_steps)
    elapsed = time.perf_counter() - t_start
    run_steps = final_step - start_step
    summary = {
        "steps": final_step,
        "start_step": start_step,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "eval_loss": last_eval["eval_loss"] if last_eval else None,
        "eval_loss_by_source": last_eval["eval_loss_by_source"] if last_eval else {},
        "tokens_seen": tokens_seen,
        "tokens_per_sec": tokens_per_step * run_steps / elapsed if run_steps else None,
        "mfu": last_mfu,
        "params": params,
        "flops_per_token": flops_per_token,
        "checkpoint": checkpoint or (ckpt_path if os.path.exists(ckpt_path) else None),
        "log": log_path,
        "world_size": d.world,
        "parallel": cfg.parallel if d.enabled else None,
        "compiled": cfg.compile,
        "device": str(device),
        "model_config": dataclasses.asdict(model_cfg),
        "samples_by_source": loader.source_samples(),
        "eval_rows": loader.eval_rows,
        "epoch": loader.epoch,
    }
    tensorboard.close()
    batches.close()  # stops DataLoader workers before the maps they read are closed
    loader.close()
    if main:
        atomic_write_text(os.path.join(cfg.out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary
