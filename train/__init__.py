"""Pretraining: a GPT-2/GPT-3 decoder trained on the token shards that ``pipeline/`` writes.

Reads only the contracts in ``schemas/`` (manifest + shard files) and depends on torch, numpy and pyarrow,
never on ``pipeline/``, so a training machine needs neither Beam nor the curation stack.

The names below are imported on first use (PEP 562), not when the package loads: ``pipeline.run`` reads
``train.config`` to validate a run config, and a curation-only install (``ccgpt[curate]``, no torch) must be
able to do that.
"""

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "train.checkpoint",
    "load_checkpoint": "train.checkpoint",
    "PRESETS": "train.config",
    "ModelConfig": "train.config",
    "ModelOverrides": "train.config",
    "TrainConfig": "train.config",
    "get_preset": "train.config",
    "Batch": "train.data",
    "DataError": "train.data",
    "ShardLoader": "train.data",
    "check_compatibility": "train.data",
    "resolve_model_config": "train.data",
    "GPT": "train.model",
    "train": "train.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
