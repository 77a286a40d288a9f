"""Command line for pretraining: ``python -m train`` or ``ccgpt train``.

Every :class:`train.config.TrainConfig` field is a flag (``--lr 3e-4``, nested model overrides as
``--model.n_layer 4``), and ``--config run.yaml`` supplies the same fields from YAML; precedence is
defaults < YAML < flags. A YAML file may hold the fields at top level or under a ``train:`` section, so
one project-wide config file can carry every stage's settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from schemas.config import add_dataclass_args, dataclass_from_args, parse_yaml
from train.config import GPT3_N_CTX, GPT3_TABLE, GPT3_VOCAB_SIZE, PRESETS, TrainConfig


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the train flags to ``parser`` (used by both ``python -m train`` and ``ccgpt train``)."""
    parser.add_argument(
        "--config", metavar="YAML", default=None, help="YAML file with TrainConfig fields (top level or under 'train:')"
    )
    parser.add_argument(
        "--list-presets", action="store_true", help="print the model presets with their parameter counts and exit"
    )
    add_dataclass_args(parser, TrainConfig)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Pretrain a GPT on ccgpt token shards (single process, or under torchrun for DDP).",
    )
    return add_train_args(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    section: dict[str, Any] | None = None
    if args.config:
        with open(args.config, encoding="utf-8") as fh:  # a local file: train/ reads its own (schemas/ does no I/O)
            data = parse_yaml(fh.read(), args.config)
        section = data["train"] if isinstance(data.get("train"), dict) else data
    return dataclass_from_args(TrainConfig, args, section)


def presets_table() -> str:
    """Presets with parameter counts at GPT-3's vocabulary, so the GPT-3 rows read like Table 2.1."""
    lines = [f"{'preset':<12} {'layers':>6} {'d_model':>7} {'heads':>5} {'attention':>11} {'params':>10}  paper"]
    for name, cfg in PRESETS.items():
        sized = cfg.__class__(**{**cfg.__dict__, "vocab_size": GPT3_VOCAB_SIZE, "n_ctx": cfg.n_ctx or GPT3_N_CTX})
        row = GPT3_TABLE.get(name)
        paper = f"{row.params}, batch {row.batch_tokens / 1e6:g}M tokens, lr {row.lr:g}" if row else ""
        lines.append(
            f"{name:<12} {cfg.n_layer:>6} {cfg.n_embd:>7} {cfg.n_head:>5} {cfg.attention:>11} "
            f"{sized.num_params() / 1e6:>9.1f}M  {paper}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry for a parsed namespace (what ``ccgpt train`` calls after its own parsing)."""
    if getattr(args, "list_presets", False):
        print(presets_table())
        return 0
    from train.trainer import train  # torch-heavy import only when training

    summary = train(config_from_args(args))
    print(json.dumps({k: v for k, v in summary.items() if k != "model_config"}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
