"""The training checkpoint: ``out/checkpoint.pt``, everything an exact resume needs, safe to open.

It holds the model, the optimizer (moments and step counts), the step (which fixes the learning rate), the
loader's stream position and every rank's RNG states, so on CPU a run of N steps and a run of N/2 steps +
resume + N/2 steps produce bit-identical losses. It is written to a temporary file and renamed, so a crash
mid-write leaves the previous checkpoint intact, and it contains only tensors and plain Python values so it
loads with ``torch.load(weights_only=True)`` (no arbitrary code runs when a checkpoint is opened).

Checkpoints always hold full (unsharded) tensors: under FSDP the model and optimizer state are gathered to
rank 0 (``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True``) before writing, so one
checkpoint resumes under DDP, FSDP or a single process, and ``ccgpt generate`` / ``ccgpt export`` read it
like any other. The optimizer state is stored keyed by parameter name (the same API on every path).
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from schemas.atomic import atomic_path
from schemas.manifest import Manifest
from train.config import ModelConfig, TrainConfig
from train.data import ShardLoader
from train.model import GPT
from train.parallel import Dist, barrier, gather_objects

CHECKPOINT_FORMAT = "ccgpt-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"

_REQUIRED_KEYS = ("step", "model", "model_config", "optimizer", "loader", "rng", "tokenizer", "tokens_seen")


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not belong to this run."""


@dataclasses.dataclass
class Progress:
    """The loop's counters, saved in the checkpoint and restored from it."""

    step: int = 0  # optimizer steps done
    tokens_seen: int = 0
    first_loss: float | None = None
    last_loss: float | None = None


# --------------------------------------------------------------------------------------------- RNG
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


# --------------------------------------------------------------------------------------------- the file
def save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path`` (atomic on POSIX)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())


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


# --------------------------------------------------------------------------------------------- a run's state
def full_model_on_main(
    raw_model: torch.nn.Module, model_cfg: ModelConfig, device: torch.device, d: Dist, fsdp: bool
) -> torch.nn.Module | None:
    """The whole model on rank 0 (None elsewhere), for scoring it there alone.

    Without FSDP that is ``raw_model`` itself. Under FSDP the full weights are gathered as for a checkpoint (a
    collective: every rank calls it) into a fresh copy, built under a forked RNG so the run's random streams
    (and with them exact resumption) do not depend on whether it evaluated.
    """
    if not fsdp:
        return raw_model if d.main else None
    state = get_model_state_dict(raw_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not d.main:
        return None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = GPT(model_cfg)
    model.load_state_dict(state)
    return model.to(device)


def write_training_state(
    path: str,
    raw_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: ShardLoader,
    progress: Progress,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    manifest: Manifest,
    d: Dist,
    fsdp: bool,
) -> str:
    """Gather the run's state to rank 0 and write it to ``path`` (a collective: every rank calls it)."""
    rngs = gather_objects(rng_state(), d)
    # Full tensors on CPU; under FSDP a collective that leaves them on rank 0 only.
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(raw_model, options=full) if fsdp else raw_model.state_dict()
    optimizer_state = get_optimizer_state_dict(raw_model, optimizer, options=full)
    if d.main:
        save_checkpoint(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "step": progress.step,
                "tokens_seen": progress.tokens_seen,
                "first_loss": progress.first_loss,
                "last_loss": progress.last_loss,
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
    barrier(d)
    return path


def restore_training_state(
    path: str,
    raw_model: torch.nn.Module,
    loader: ShardLoader,
    model_cfg: ModelConfig,
    manifest: Manifest,
    d: Dist,
    seed: int,
) -> tuple[Progress, dict[str, Any]]:
    """Load ``path`` into the (not yet wrapped) model, the loader and this rank's RNGs, after checking it belongs
    to this run; return the loop's counters and the optimizer state (loaded once the optimizer exists)."""
    ckpt = load_checkpoint(path)
    saved_cfg = ModelConfig(**ckpt["model_config"])
    if not saved_cfg.same_model(model_cfg):
        raise CheckpointError(f"{path}: checkpoint model {saved_cfg} differs from this run's {model_cfg}")
    if ckpt["tokenizer"]["content_hash"] != manifest.tokenizer.content_hash:
        raise CheckpointError(
            f"{path}: the checkpoint was trained with tokenizer {ckpt['tokenizer']['content_hash'][:16]}..., "
            f"the shards use {manifest.tokenizer.content_hash[:16]}..."
        )
    raw_model.load_state_dict(ckpt["model"])  # full tensors, before any sharding
    loader.load_state_dict(ckpt["loader"])
    progress = Progress(int(ckpt["step"]), int(ckpt["tokens_seen"]), ckpt.get("first_loss"), ckpt.get("last_loss"))
    if len(ckpt["rng"]) == d.world:
        set_rng_state(ckpt["rng"][d.rank])
    else:  # a different world size: the per-rank streams cannot map one to one; reseed deterministically
        torch.manual_seed(seed + 1 + d.rank + 1_000_003 * progress.step)
    return progress, ckpt["optimizer"]


def load_optimizer_state(
    raw_model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], fsdp: bool
) -> None:
    """Load a checkpoint's optimizer state into the optimizer built on the (possibly sharded) parameters."""
    if state["state"] and all(isinstance(k, int) for k in state["state"]) and not fsdp:
        optimizer.load_state_dict(state)  # written by an earlier trainer: keyed by position
    else:
        set_optimizer_state_dict(raw_model, optimizer, state, options=StateDictOptions(full_state_dict=True))
