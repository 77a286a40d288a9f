"""Training checkpoints: sharded, resharding folders written with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is ``out/checkpoints/step-NNNNNNNN/``: every rank writes its own shard of the model and of the
AdamW moments (``__<rank>_0.distcp``; under FSDP2 no rank ever holds the full model), and rank 0 writes DCP's
``.metadata`` last, after every shard is on disk: a folder without it is an interrupted write and is neither
resumed from nor read. The last ``keep_checkpoints`` complete folders are kept.

DCP stores each tensor with its global shape and the slice each rank wrote, so a checkpoint written by N ranks
loads into M ranks (or into one process with no process group, as ``ccgpt generate`` / ``ccgpt export`` /
``ccgpt eval`` do): a resume may change the world size at the same global batch (the loader's position is
counted in global samples, independent of the world size). At the same world size resumption is exact:
model, moments, step counts, the loader and every rank's RNG states are restored bit for bit.

Everything that is not a tensor -- the step, the model and run configs, the loader position, the RNG states,
the optimizer's param groups -- is one JSON document stored as a uint8 tensor (``meta``), so no part of the
payload is unpickled (DCP would ``torch.load(weights_only=False)`` non-tensor values). DCP's own ``.metadata``
index is a pickle that DCP's reader unpickles (PyTorch's ``weights_only`` unpickler cannot read its protocol-4
opcodes), so, unlike the single-file checkpoints before it, a checkpoint folder is trusted input.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from schemas.manifest import Manifest
from train.config import ModelConfig, TrainConfig
from train.data import ShardLoader
from train.model import GPT
from train.parallel import Dist, barrier, gather_objects

CHECKPOINT_FORMAT = "ccgpt-train-checkpoint"
CHECKPOINT_VERSION = 2
CHECKPOINTS_DIR = "checkpoints"
METADATA_FILE = ".metadata"  # DCP's index, written last: the commit marker
_STEP_DIR = re.compile(r"^step-(\d{8})$")

_REQUIRED_KEYS = ("step", "model_config", "loader", "rng", "tokenizer", "tokens_seen", "param_groups")


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
    """Every RNG a training step could touch, as JSON values (byte states as lists of ints)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# --------------------------------------------------------------------------------------------- the folders
def step_dir(out: str, step: int) -> str:
    return os.path.join(out, CHECKPOINTS_DIR, f"step-{step:08d}")


def is_complete(path: str) -> bool:
    """A checkpoint folder whose write finished (DCP writes ``.metadata`` after every shard)."""
    return os.path.isfile(os.path.join(path, METADATA_FILE))


def complete_checkpoints(out: str) -> list[str]:
    """The run's complete checkpoint folders, oldest first."""
    root = os.path.join(out, CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if _STEP_DIR.match(n))
    return [p for p in (os.path.join(root, n) for n in names) if is_complete(p)]


def latest_checkpoint(out: str) -> str | None:
    found = complete_checkpoints(out)
    return found[-1] if found else None


def resolve_checkpoint(path: str) -> str:
    """A checkpoint folder from what a user passes: the folder itself, or a run folder (its latest one)."""
    if is_complete(path):
        return path
    if os.path.isdir(path):
        latest = latest_checkpoint(path)
        if latest:
            return latest
        raise CheckpointError(f"{path}: no complete checkpoint (a folder holding {METADATA_FILE}) in it")
    if os.path.isfile(path):
        raise CheckpointError(
            f"{path}: cannot read the checkpoint: a ccgpt checkpoint is a folder written by "
            "torch.distributed.checkpoint (checkpoints/step-N/), not a single file; it is truncated, corrupt "
            "or from another tool"
        )
    raise CheckpointError(f"{path}: checkpoint not found")


def prune_checkpoints(out: str, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and any interrupted write older than them."""
    root = os.path.join(out, CHECKPOINTS_DIR)
    complete = complete_checkpoints(out)
    kept = set(complete[-keep:])
    newest = complete[-1] if complete else ""
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if path in kept or not _STEP_DIR.match(name):
            continue
        if path in complete or path < newest:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------- reading
def _reader(path: str) -> FileSystemReader:
    if not is_complete(path):
        raise CheckpointError(f"{path}: not a complete checkpoint (no {METADATA_FILE})")
    return FileSystemReader(path)


def _distributed() -> bool:
    """In a process group (a collective load), or alone (``generate`` / ``export`` / ``eval``, one process)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _encode(meta: dict[str, Any]) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(meta).encode("utf-8")), dtype=torch.uint8)


def _entries(path: str) -> dict[str, Any]:
    try:
        return _reader(path).read_metadata().state_dict_metadata
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint's {METADATA_FILE} ({type(e).__name__}); it is truncated or corrupt"
        ) from e


def read_meta(path: str) -> dict[str, Any]:
    """A checkpoint's non-tensor state (readable with or without a process group)."""
    entry = _entries(path).get("meta")
    if not isinstance(entry, TensorStorageMetadata):
        raise CheckpointError(f"{path}: not a ccgpt training checkpoint")
    buf = torch.empty(entry.size, dtype=torch.uint8)
    _load({"meta": buf}, path)
    try:
        meta = json.loads(bytes(buf.numpy()).decode("utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{path}: the checkpoint's metadata is corrupt ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a ccgpt training checkpoint")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {meta.get('version')!r}, this trainer reads {CHECKPOINT_VERSION}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return meta


def _load(state: dict[str, Any], path: str) -> None:
    try:
        with warnings.catch_warnings():  # DCP warns that one process without a process group loads alone
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, storage_reader=_reader(path), no_dist=not _distributed())
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as e:  # a missing or truncated shard (DCP's is a BaseException)
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "it is truncated or corrupt. Delete it to resume from an earlier one, or restore a good copy."
        ) from e


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint folder (or a run folder's latest) read whole into this process, no process group needed:
    its metadata keys, plus ``model`` (full tensors by name) and ``optimizer`` (``state`` by parameter name,
    ``param_groups``)."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    flat = {
        key: torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in _entries(path).items()
        if isinstance(entry, TensorStorageMetadata) and key != "meta"
    }
    _load(flat, path)
    model: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        if key.startswith("model."):
            model[key[len("model.") :]] = tensor
        elif key.startswith("optimizer.state."):
            name, slot = key[len("optimizer.state.") :].rsplit(".", 1)
            state.setdefault(name, {})[slot] = tensor
    return {**meta, "path": path, "model": model, "optimizer": {"state": state, "param_groups": meta["param_groups"]}}


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
    out: str,
    raw_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: ShardLoader,
    progress: Progress,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    manifest: Manifest,
    d: Dist,
) -> str:
    """Write the run's state to ``out/checkpoints/step-N/`` (a collective: every rank writes its shards), then
    keep the newest ``cfg.keep_checkpoints``. Returns the folder."""
    path = step_dir(out, progress.step)
    if d.main and os.path.exists(path):  # an interrupted write of this step, by an earlier attempt
        shutil.rmtree(path)
    barrier(d)
    rngs = gather_objects(rng_state(), d)
    model_state, optimizer_state = get_state_dict(raw_model, optimizer)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": progress.step,
        "tokens_seen": progress.tokens_seen,
        "first_loss": progress.first_loss,
        "last_loss": progress.last_loss,
        "model_config": dataclasses.asdict(model_cfg),
        "param_groups": optimizer_state["param_groups"],
        "loader": loader.state_dict(),
        "rng": rngs,
        "world_size": d.world,
        "tokenizer": {
            "content_hash": manifest.tokenizer.content_hash,
            "vocab_size": manifest.tokenizer.vocab_size,
            "eot_id": manifest.tokenizer.eot_id,
        },
        "train_config": dataclasses.asdict(cfg),
    }
    state = {"model": model_state, "optimizer": {"state": optimizer_state["state"]}, "meta": _encode(meta)}
    with warnings.catch_warnings():  # DCP warns that one process without a process group saves alone
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, storage_writer=FileSystemWriter(path, sync_files=True), no_dist=not d.enabled)
    if d.main:
        prune_checkpoints(out, cfg.keep_checkpoints)
    barrier(d)
    return path


def restore_progress(
    path: str, loader: ShardLoader, model_cfg: ModelConfig, manifest: Manifest, d: Dist, seed: int
) -> tuple[Progress, dict[str, Any]]:
    """Check that ``path`` belongs to this run, restore the loader and this rank's RNGs, and return the loop's
    counters and the checkpoint's metadata (the tensors are loaded by :func:`load_tensors` once the model is
    wrapped and the optimizer exists)."""
    meta = read_meta(path)
    saved_cfg = ModelConfig(**meta["model_config"])
    if not saved_cfg.same_model(model_cfg):
        raise CheckpointError(f"{path}: checkpoint model {saved_cfg} differs from this run's {model_cfg}")
    if meta["tokenizer"]["content_hash"] != manifest.tokenizer.content_hash:
        raise CheckpointError(
            f"{path}: the checkpoint was trained with tokenizer {meta['tokenizer']['content_hash'][:16]}..., "
            f"the shards use {manifest.tokenizer.content_hash[:16]}..."
        )
    loader.load_state_dict(meta["loader"])
    progress = Progress(int(meta["step"]), int(meta["tokens_seen"]), meta.get("first_loss"), meta.get("last_loss"))
    if len(meta["rng"]) == d.world:
        set_rng_state(meta["rng"][d.rank])
    else:  # a different world size: the per-rank streams cannot map one to one; reseed deterministically
        torch.manual_seed(seed + 1 + d.rank + 1_000_003 * progress.step)
    return progress, meta


def load_tensors(path: str, raw_model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> None:
    """Load the checkpoint's model and moments into the (possibly sharded) model and its optimizer: each rank
    reads the slices of its own shards, whatever world size wrote them (a collective)."""
    rng = torch.get_rng_state()  # building the optimizer's state templates must not move any stream
    model_state, optimizer_state = get_state_dict(raw_model, optimizer)  # also creates the moments to fill
    _load({"model": model_state, "optimizer": {"state": optimizer_state["state"]}}, path)
    optimizer_state = {"state": optimizer_state["state"], "param_groups": meta["param_groups"]}
    set_state_dict(raw_model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)
    torch.set_rng_state(rng)
