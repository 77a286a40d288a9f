"""What a run reports: ``log.jsonl`` and TensorBoard events (rank 0), throughput and MFU.

``log.jsonl`` holds one record per log step (``kind: train``: loss, lr, tokens/s, MFU, grad norm, tokens,
epoch, samples per source), per evaluation (``kind: eval``: loss overall and per source) and per scoring of
``eval_tasks`` (``kind: eval_task``: ``tasks -> task -> metric``, TensorBoard ``eval/<task>/<metric>``);
``tensorboard/`` the same scalars as TensorBoard events, when the package is installed. On resume both
drop what lies past the checkpoint's step, since those steps are trained (and logged) again.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch

from train.config import TrainConfig
from train.storage import atomic_write_text

LOG_NAME = "log.jsonl"

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


class Throughput:
    """Tokens per second and model FLOPs utilisation over the steps since the last measurement."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak: float | None, world: int):
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak = peak
        self.world = world
        self.mfu: float | None = None  # of the latest measurement
        self.t_start = self.t_last = 0.0
        self.steps = 0

    def start(self) -> None:
        """Start the clock: the loop begins."""
        self.t_start = self.t_last = time.perf_counter()
        self.steps = 0

    def step(self) -> None:
        self.steps += 1

    def measure(self) -> tuple[float, float]:
        """``(tokens per second, seconds since start)``; sets :attr:`mfu` (None without a known peak)."""
        now = time.perf_counter()
        tok_s = self.tokens_per_step * self.steps / max(now - self.t_last, 1e-9)
        self.t_last, self.steps = now, 0
        self.mfu = self.flops_per_token * tok_s / (self.peak * self.world) if self.peak else None
        return tok_s, now - self.t_start

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start


def start_log(path: str, resumed_at: int | None) -> None:
    """An empty log for a new run; on resume, the log without records past the checkpoint's step (those steps
    are about to be trained, and logged, again)."""
    if resumed_at is None:
        open(path, "w").close()
        return
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        keep = [line for line in fh if line.strip() and json.loads(line).get("step", 0) <= resumed_at]
    atomic_write_text(path, "".join(keep))


class _TensorBoard:
    """The scalars of log.jsonl as TensorBoard events in ``out/tensorboard``.

    On resume the writer purges events past the checkpoint's step, as :func:`start_log` does for the JSONL
    log. Without the ``tensorboard`` package it prints one note and writes nothing.
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
        elif record.get("kind") == "eval_task":
            for task, row in record["tasks"].items():
                for metric, value in row.items():
                    self.writer.add_scalar(f"eval/{task}/{metric}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunLog:
    """Records to ``out/log.jsonl`` and, with ``tensorboard``, to TensorBoard; only on the main rank."""

    def __init__(self, out: str, main: bool, tensorboard: bool, purge_step: int | None):
        self.path = os.path.join(out, LOG_NAME)
        self.main = main
        self.tensorboard = _TensorBoard(out, tensorboard and main, purge_step)

    def write(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            self.tensorboard.write(record)

    def close(self) -> None:
        self.tensorboard.close()
