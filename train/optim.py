"""GPT-3's optimizer recipe: AdamW (betas 0.9/0.95, weight decay 0.1 on matmul weights), linear warmup, then
cosine decay to ``min_lr_ratio`` of the peak learning rate."""

from __future__ import annotations

import math

import torch

from train.config import TrainConfig
from train.model import GPT


def build_optimizer(raw_model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the (possibly sharded) parameters: under FSDP each rank keeps the moments of its own shard."""
    return raw_model.configure_optimizers(cfg.weight_decay, cfg.lr, cfg.betas, device.type, cfg.eps)


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
