"""Sample text from a training checkpoint: ``generate(...)`` and ``python -m train.generate``.

Autoregressive sampling, one token at a time: the model scores the context (cropped to its last
``n_ctx`` tokens), the last position's logits are divided by ``temperature``, optionally cut to the
``top_k`` most likely tokens, and the next token is drawn from the softmax with a seeded generator, so the
same checkpoint, prompt and seed give the same text. ``temperature=0`` is greedy decoding (argmax).

There is no key/value cache: every step re-runs the whole context, which is fine for the short samples a
pretraining run is checked with (``n_ctx`` forwards of a small model). Sampling always uses SDPA attention,
whatever implementation the run trained with: the weights are the same, and FlexAttention would recompile
for every new context length.

The tokenizer that turns text into ids (and back) is the one that made the shards: its ``tokenizer.json``
is found through ``manifest.json`` -- beside the checkpoint if one was copied there, else in the shard
folder the run was trained on (recorded in the checkpoint) -- or given with ``--tokenizer``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch

from train.checkpoint import CheckpointError, load_checkpoint
from train.config import ModelConfig
from train.model import GPT
from train.parallel import resolve_device
from train.storage import TOKENIZER_FILE, find_tokenizer_beside


class GenerateError(ValueError):
    """Unusable generation input: no tokenizer to be found, a bad prompt or sampling setting."""


def read_checkpoint(checkpoint: str) -> dict[str, Any]:
    """A checkpoint folder (or a run folder's newest), read whole into this process by the trainer's own loader:
    the shards of any number of ranks become full tensors, no process group needed."""
    return load_checkpoint(checkpoint)


def checkpoint_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says about itself (config, tokenizer, step), without tensors."""
    return {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng", "loader", "param_groups")}


def load_model(checkpoint: str, device: torch.device | str = "cpu") -> tuple[GPT, dict[str, Any]]:
    """The model of a checkpoint (or run folder) in eval mode, and the checkpoint's metadata (no tensors)."""
    return model_from_checkpoint(read_checkpoint(checkpoint), device)


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device | str = "cpu") -> tuple[GPT, dict[str, Any]]:
    """:func:`load_model` for a checkpoint already read (callers that check its metadata first)."""
    cfg = dataclasses.replace(ModelConfig(**ckpt["model_config"]), attention_impl="sdpa", norm_impl="auto", dropout=0.0)
    model = GPT(cfg)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, checkpoint_meta(ckpt)


@torch.no_grad()
def generate(
    checkpoint: str | GPT,
    prompt_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = 0,
    *,
    stop_token: int | None = None,
    device: torch.device | str | None = None,
) -> list[int]:
    """Sample ``max_new_tokens`` ids after ``prompt_ids``; returns only the new ids.

    ``checkpoint`` is a checkpoint folder, a run folder holding ``checkpoints/``, or an already loaded
    :class:`GPT` (to sample many prompts without reloading). ``temperature`` 0 means greedy; ``top_k``
    keeps only the k most likely tokens (``None`` or 0: all); ``seed`` fixes the draw (``None``: a fresh
    one). Generation stops early after ``stop_token`` (e.g. the end-of-text id), which is included.
    """
    if isinstance(checkpoint, GPT):
        model = checkpoint
        device = next(model.parameters()).device if device is None else torch.device(device)
        model.to(device)
    else:
        device = torch.device(device or "cpu")
        model, _ = load_model(checkpoint, device)
    if max_new_tokens < 0:
        raise GenerateError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise GenerateError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 0:
        raise GenerateError(f"top_k must be >= 0, got {top_k}")
    ids = torch.as_tensor(list(prompt_ids) if not isinstance(prompt_ids, torch.Tensor) else prompt_ids)
    ids = ids.to(torch.long).reshape(1, -1).to(device)
    if ids.shape[1] == 0:
        raise GenerateError("the prompt is empty; give at least one token (e.g. the end-of-text id)")
    vocab, n_ctx = model.config.vocab_size, model.config.n_ctx
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise GenerateError(f"prompt ids must lie in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}")
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    was_training = model.training
    model.eval()
    out: list[int] = []
    try:
        for _ in range(max_new_tokens):
            context = ids[:, -n_ctx:]
            logits, _ = model(context)
            logits = logits[0, -1].float()
            if temperature == 0:
                nxt = int(torch.argmax(logits))
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen))
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
            if stop_token is not None and nxt == stop_token:
                break
    finally:
        model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------- tokenizer
def find_tokenizer(checkpoint: str, meta: dict[str, Any] | None = None) -> str | None:
    """``tokenizer.json`` for a checkpoint (a checkpoint folder, or the folder it was copied into): via
    ``manifest.json`` in that folder, else the run's shard folder (local, or on an object store: then copied into
    the run's shard cache folder)."""
    found = find_tokenizer_beside(os.path.abspath(checkpoint)) if os.path.isdir(checkpoint) else None
    train_config = (meta or {}).get("train_config") or {}
    if found is None and train_config.get("shards"):
        found = find_tokenizer_beside(train_config["shards"], train_config.get("shard_cache", ""))
    return found


def load_tokenizer(path: str):
    """A Hugging Face ``tokenizers`` file (what the mix stage writes beside the shards)."""
    from tokenizers import Tokenizer

    if os.path.isdir(path):
        path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(path):
        raise GenerateError(f"{path}: tokenizer not found")
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:
        raise GenerateError(f"{path}: not a tokenizers file ({e})") from None
    tok.encode_special_tokens = True  # text "<|endoftext|>" in a prompt stays text, as when the shards were made
    return tok


# ----------------------------------------------------------------------------------------------- CLI
def add_generate_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The generate flags (shared by ``python -m train.generate`` and a ``ccgpt generate`` subcommand)."""
    parser.add_argument(
        "checkpoint", help="a checkpoint folder (checkpoints/step-N), or the run folder (its newest checkpoint)"
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--prompt", default=None, help="prompt text (encoded with the run's tokenizer)")
    src.add_argument("--prompt-ids", default=None, help="prompt as comma-separated token ids, e.g. 50256,464")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="tokens to sample (default 100)")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default 0.8)")
    parser.add_argument(
        "--top-k", type=int, default=200, help="sample from the k most likely tokens; 0 = all (default 200)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--num-samples", type=int, default=1, help="samples to draw, with seeds seed, seed+1, ...")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json (or its folder); default: found through the manifest beside the "
        "checkpoint or in the run's shard folder",
    )
    parser.add_argument(
        "--stop-at-eot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop a sample after the end-of-text token (default: on)",
    )
    parser.add_argument("--device", default="auto", help="'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1'")
    parser.add_argument("--json", action="store_true", help="print one JSON object per sample (ids and text)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.generate",
        description="Sample text from a ccgpt training checkpoint.",
    )
    return add_generate_args(parser)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    tok_path = args.tokenizer or find_tokenizer(args.checkpoint, meta)
    tok = load_tokenizer(tok_path) if tok_path else None
    if tok is not None and tok.get_vocab_size() > model.config.vocab_size:
        raise GenerateError(
            f"{tok_path}: the tokenizer has {tok.get_vocab_size()} tokens, the model only {model.config.vocab_size}; "
            "it is not the tokenizer this model was trained with"
        )
    eot = (meta.get("tokenizer") or {}).get("eot_id")
    if args.prompt_ids is not None:
        try:
            prompt = [int(x) for x in args.prompt_ids.replace(" ", "").split(",") if x]
        except ValueError:
            raise GenerateError(f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}") from None
    elif args.prompt is not None:
        if tok is None:
            raise GenerateError(
                "a text --prompt needs the tokenizer: none found through the manifest; pass --tokenizer"
            )
        prompt = tok.encode(args.prompt).ids
    else:  # unconditional: start from end-of-text, as at a document boundary
        if eot is None:
            raise GenerateError("no prompt given and the checkpoint records no end-of-text id; pass --prompt-ids")
        prompt = [int(eot)]
    for i in range(args.num_samples):
        new = generate(
            model,
            prompt,
            args.max_new_tokens,
            args.temperature,
            args.top_k or None,
            args.seed + i,
            stop_token=eot if args.stop_at_eot else None,
            device=device,
        )
        text = tok.decode(prompt + new, skip_special_tokens=False) if tok is not None else None
        if args.json:
            print(json.dumps({"sample": i, "seed": args.seed + i, "prompt_ids": prompt, "ids": new, "text": text}))
        else:
            if i:
                print("-" * 40)
            print(text if text is not None else ",".join(map(str, prompt + new)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (GenerateError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
