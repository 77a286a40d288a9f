"""The model under evaluation: a ccgpt checkpoint (or run folder) or a Hugging Face causal-LM folder.

Opening is split in two so bad input fails before any weight reaches a model: :func:`open_model` reads the
metadata (the checkpoint through the trainer's own loader, ``train.generate.read_checkpoint``; an HF
folder's ``config.json``) and the tokenizer, and checks that they belong together; only
:meth:`ModelSource.load` builds the network and moves it to the device.

Tokenisation follows lm-eval 0.4.13's ``HFLM``: continuations are encoded without special tokens, whole
documents with the tokenizer's defaults, and the token that conditions the first position (the *prefix*) is
the BOS token, else the end-of-text token. A ccgpt checkpoint's prefix is its end-of-text id, which is what
``ccgpt export`` writes as both BOS and EOS, so a checkpoint and its export score identically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from train.generate import (
    checkpoint_meta,
    find_tokenizer,
    load_tokenizer,
    model_from_checkpoint,
    read_checkpoint,
)

HF_CONFIG = "config.json"


class EvalModelError(ValueError):
    """The model cannot be evaluated: not found, unreadable, or its tokenizer does not fit it."""


@dataclass
class ModelSource:
    """A model ready to load: its tokenizer, prefix token, context length and vocabulary are known."""

    path: str
    kind: str  # "ccgpt" | "hf"
    encode_batch: Callable[[list[str], bool], list[list[int]]]  # texts, add_special_tokens -> ids
    prefix_id: int
    max_length: int
    vocab_size: int
    tokenizer_path: str
    # None for a tokenizer-only source: the trainer scores its live model and has nothing to load
    _load: Callable[[torch.device], Callable[[torch.Tensor], torch.Tensor]] | None = field(repr=False)

    def load(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network on ``device`` as a function ``ids [B, T] -> logits [B, T, vocab]`` (float32)."""
        if self._load is None:
            raise EvalModelError(f"{self.path}: a tokenizer-only source has no weights to load")
        return self._load(device)


def is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, HF_CONFIG))


def open_model(path: str, tokenizer: str | None = None) -> ModelSource:
    """Metadata and tokenizer of ``path`` (checkpoint folder, run folder, or HF folder), checked; no weights yet."""
    if is_hf_folder(path):
        return _open_hf(path)
    if not os.path.exists(path):
        raise EvalModelError(
            f"{path}: neither a ccgpt checkpoint (a checkpoint folder or a run folder holding checkpoints/) nor a "
            f"Hugging Face folder ({HF_CONFIG})"
        )
    return _open_ccgpt(path, tokenizer)


def _check_vocab(path: str, tok_path: str, tok_size: int, model_vocab: int, recorded: int | None) -> None:
    if tok_size > model_vocab:
        raise EvalModelError(
            f"{tok_path}: the tokenizer has {tok_size} tokens, the model {path} only {model_vocab}; it is not the "
            "tokenizer this model was trained with (pass --tokenizer)"
        )
    if recorded is not None and recorded != tok_size:
        raise EvalModelError(
            f"{tok_path}: the tokenizer has {tok_size} tokens, the checkpoint {path} was trained with a "
            f"{recorded}-token vocabulary; it is not the tokenizer this model was trained with (pass --tokenizer)"
        )


def _open_ccgpt(path: str, tokenizer: str | None) -> ModelSource:
    try:
        ckpt = read_checkpoint(path)
    except RuntimeError as e:  # the trainer's CheckpointError: truncated, foreign or another version
        raise EvalModelError(str(e)) from e
    meta = checkpoint_meta(ckpt)
    tok_path = tokenizer or find_tokenizer(path, meta)
    if not tok_path:
        raise EvalModelError(
            f"{path}: no tokenizer.json found beside the checkpoint or in the run's shard folder; pass --tokenizer"
        )
    cfg = meta["model_config"]
    eot = (meta.get("tokenizer") or {}).get("eot_id")
    if eot is None:
        raise EvalModelError(f"{path}: the checkpoint records no end-of-text id to condition the first token on")

    def load(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        model, _ = model_from_checkpoint(ckpt, device)
        return lambda ids: model(ids)[0].float()

    recorded = (meta.get("tokenizer") or {}).get("vocab_size")
    return ccgpt_source(path, tok_path, int(eot), int(cfg["n_ctx"]), int(cfg["vocab_size"]), load, recorded)


def ccgpt_source(
    path: str,
    tok_path: str,
    eot_id: int,
    max_length: int,
    vocab_size: int,
    load: Callable[[torch.device], Callable[[torch.Tensor], torch.Tensor]] | None,
    recorded_vocab: int | None = None,
) -> ModelSource:
    """A ccgpt model's source from its tokenizer file and shape (a checkpoint's, or the trainer's live model's)."""
    tok = load_tokenizer(tok_path)
    _check_vocab(path, tok_path, tok.get_vocab_size(), vocab_size, recorded_vocab)

    def encode_batch(texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=add_special_tokens)]

    return ModelSource(
        path=path,
        kind="ccgpt",
        encode_batch=encode_batch,
        prefix_id=eot_id,
        max_length=max_length,
        vocab_size=vocab_size,
        tokenizer_path=tok_path,
        _load=load,
    )


def _open_hf(path: str) -> ModelSource:
    try:
        with open(os.path.join(path, HF_CONFIG), encoding="utf-8") as fh:
            config: dict[str, Any] = json.load(fh)
    except (OSError, ValueError) as e:
        raise EvalModelError(f"{path}/{HF_CONFIG}: unreadable ({e})") from None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise EvalModelError(
            "evaluating a Hugging Face folder needs transformers: pip install 'ccgpt[export]'"
        ) from None
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # any failure to build the tokenizer means the folder is unusable
        raise EvalModelError(f"{path}: cannot load its tokenizer ({type(e).__name__}: {e})") from None
    text_cfg = config.get("text_config") or config
    max_length = next((text_cfg[k] for k in ("n_positions", "max_position_embeddings", "n_ctx") if k in text_cfg), None)
    if max_length is None:
        raise EvalModelError(f"{path}/{HF_CONFIG}: no context length (n_positions / max_position_embeddings)")
    vocab = int(text_cfg.get("vocab_size") or 0)
    _check_vocab(path, path, len(tok), vocab, None)
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if prefix is None:
        raise EvalModelError(
            f"{path}: the tokenizer has neither a BOS nor an EOS token to condition the first token on"
        )

    def encode_batch(texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        if not texts:
            return []
        return tok(texts, add_special_tokens=add_special_tokens)["input_ids"]

    def load(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        model.to(device=device, dtype=torch.float32).eval()
        return lambda ids: model(input_ids=ids).logits.float()

    return ModelSource(
        path=path,
        kind="hf",
        encode_batch=encode_batch,
        prefix_id=int(prefix),
        max_length=int(max_length),
        vocab_size=vocab,
        tokenizer_path=path,
        _load=load,
    )
