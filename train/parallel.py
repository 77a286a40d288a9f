"""Data parallelism: joining the ``torchrun`` job, wrapping the model, and the few collectives the loop needs.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel, or with
``parallel=fsdp`` sharded by FSDP2 (``fully_shard`` on every block, then on the root, so parameters,
gradients and AdamW moments are split across ranks and gathered one block at a time); gloo on CPU, nccl on
CUDA. Every helper is a no-op in a single process, so the trainer reads the same either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclasses.dataclass
class Dist:
    """This process's place in the job."""

    rank: int
    local_rank: int
    world: int
    owns_group: bool  # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0 writes the log, the checkpoint and the summary."""
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return device


def init_distributed(device_spec: str) -> tuple[Dist, torch.device]:
    """Join the job torchrun (or a test harness) set up through RANK / WORLD_SIZE / MASTER_* variables."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return Dist(rank, local, world, owns_group=False), resolve_device(device_spec, local)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local)
    if world <= 1:
        return Dist(0, 0, 1, owns_group=False), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), local, dist.get_world_size(), owns_group=True), device


def close_distributed(d: Dist) -> None:
    """Leave the job: destroy the process group when :func:`init_distributed` created it."""
    if d.owns_group:
        dist.destroy_process_group()


def wrap_model(
    raw_model: torch.nn.Module, d: Dist, device: torch.device, fsdp: bool, param_dtype: torch.dtype | None = None
) -> torch.nn.Module:
    """What synchronises gradients: DDP around the model, or the FSDP2 root, which is the model itself,
    sharded in place (every block, then the root: embeddings tied with the head, positions, final norm).

    Under FSDP ``param_dtype`` (bf16 when training in bf16) is FSDP2's mixed precision: the gathered weights
    and the compute are in that dtype, the sharded master weights, the optimizer and the gradient reduction
    stay float32."""
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device.type, (d.world,))
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
        for block in raw_model.blocks:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(raw_model, mesh=mesh, mp_policy=mp)
        return raw_model
    if d.enabled:
        return DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    return raw_model


def gradient_sync(
    wrapped: torch.nn.Module, raw_model: torch.nn.Module, d: Dist, fsdp: bool, last_micro: bool
) -> contextlib.AbstractContextManager:
    """The context of one micro-batch's backward: gradients are all-reduced (DDP) or reduce-scattered (FSDP)
    only on the last micro-batch of a step."""
    if fsdp:
        raw_model.set_requires_gradient_sync(last_micro)
    return contextlib.nullcontext() if (not d.enabled or fsdp or last_micro) else wrapped.no_sync()


def mean_over_ranks(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of ``value`` over all ranks (in place)."""
    if d.enabled:
        dist.all_reduce(value)
        value /= d.world
    return value


def sum_over_ranks(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The sum of ``value`` over all ranks (in place)."""
    if d.enabled:
        dist.all_reduce(value)
    return value


def max_over_ranks(n: int, device: torch.device) -> int:
    """The largest ``n`` of any rank (a collective: every rank must call it)."""
    most = torch.tensor([n], device=device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most)


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order (a collective)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
