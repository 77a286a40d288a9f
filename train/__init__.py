"""Pretraining: a GPT-2/GPT-3 decoder trained on the token shards that ``pipeline/`` writes.

Reads only the contracts in ``schemas/`` (manifest + shard files) and depends on torch, numpy and pyarrow,
never on ``pipeline/``, so a training machine needs neither Beam nor the curation stack.
"""

from train.checkpoint import CheckpointError, load_checkpoint
from train.config import PRESETS, ModelConfig, ModelOverrides, TrainConfig, get_preset
from train.data import Batch, DataError, ShardLoader, check_compatibility, resolve_model_config
from train.model import GPT
from train.trainer import train

__all__ = [
    "Batch",
    "CheckpointError",
    "DataError",
    "GPT",
    "ModelConfig",
    "ModelOverrides",
    "PRESETS",
    "ShardLoader",
    "TrainConfig",
    "check_compatibility",
    "get_preset",
    "load_checkpoint",
    "resolve_model_config",
    "train",
]
