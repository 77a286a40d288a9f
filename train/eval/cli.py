"""``ccgpt eval CHECKPOINT_OR_HF_DIR --tasks blimp,wikitext2 --out DIR`` (also ``python -m train.eval``)."""

from __future__ import annotations

import argparse
import sys

from schemas.tasks import DATA_ROOT_ENV, TaskError
from train.tasks import available_tasks


def add_eval_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "model",
        help="a checkpoint folder (checkpoints/step-N), a run folder (its newest), or a Hugging Face causal-LM folder",
    )
    parser.add_argument(
        "--tasks",
        required=True,
        help=f"comma-separated shipped task names ({', '.join(available_tasks())}) or task-file paths",
    )
    parser.add_argument("--out", default=None, help="folder for results.json and samples_<task>.jsonl")
    parser.add_argument(
        "--data-root", default=None, help=f"where task data paths start (default ${DATA_ROOT_ENV}, else ../shared/data)"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many examples per subtask")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1'")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (default 64)")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=16384, help="padded tokens per forward pass (default 16384)"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="ccgpt checkpoints: tokenizer.json (default: found through the manifest)"
    )
    parser.add_argument(
        "--sliding-stride",
        type=int,
        default=None,
        help="rolling-perplexity tasks: also report GPT-2's sliding-window metrics (<metric>_sliding) with this stride",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from train.eval.runner import evaluate, summary_lines

    payload = evaluate(
        args.model,
        args.tasks,
        args.out,
        data_root=args.data_root,
        limit=args.limit,
        device=args.device,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        tokenizer=args.tokenizer,
        sliding_stride=args.sliding_stride,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print("\n".join(summary_lines(payload)))
    timing = payload["timing"]
    print(f"{timing['examples']} examples in {timing['score_seconds']} s ({timing['examples_per_second']} examples/s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_eval_args(argparse.ArgumentParser(prog="python -m train.eval", description=__doc__))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (TaskError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
