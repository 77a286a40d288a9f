"""Export a training checkpoint as a Hugging Face ``GPT2LMHeadModel`` folder: ``ccgpt export CKPT --out DIR``.

The folder holds ``model.safetensors`` + ``config.json`` (+ ``generation_config.json``), written by
``transformers`` itself, and the run's tokenizer (``tokenizer.json`` + ``tokenizer_config.json``), so
``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)`` load it offline and
the model gives the same logits as ccgpt's (checked by the tests to 1e-5 in fp32).

The mapping is one to one because ccgpt's model *is* GPT-2's architecture:

* ``wte`` / ``wpe`` / ``ln_f`` -> ``transformer.*``; the output head is tied to ``wte`` in both;
* per block ``ln_1``, ``attn.c_attn``, ``attn.c_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj`` keep their names,
  but GPT-2 stores its projections as ``Conv1D`` with the weight ``[in, out]``, the transpose of
  ``nn.Linear``'s ``[out, in]``, so every projection weight is transposed;
* the MLP uses exact (erf) GELU, which is transformers' ``activation_function="gelu"`` (GPT-2's own
  checkpoints use the tanh approximation ``"gelu_new"``, which would shift the logits by ~1e-3);
* ``bias=false`` models get zero biases (GPT-2 always has them; adding zero changes nothing);
* LayerNorm epsilon 1e-5 and attention scaled by ``1/sqrt(head_dim)``, as in both.

What GPT-2 cannot express is refused: GPT-3's locally banded layers (``attention=alternating`` with a band
narrower than the context) would silently become dense. Document masking is a training-time mask between
documents packed in one row; on a single text (how a causal LM is used, and how ``ccgpt generate`` samples)
the exported model computes the same function.

The tokenizer is the one that made the shards (found like ``ccgpt generate`` finds it, or ``--tokenizer``).
``tokenizer_config.json`` sets ``split_special_tokens`` so that ``<|endoftext|>`` written in text stays
text, as it did when the shards were tokenized; the end-of-text id is GPT-2's ``bos`` / ``eos`` token.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

import torch

from train.checkpoint import CheckpointError
from train.config import ModelConfig
from train.generate import find_tokenizer, load_model, load_tokenizer
from train.model import GPT
from train.storage import atomic_folder


class ExportError(ValueError):
    """The checkpoint cannot be represented as GPT-2, or the export target is unusable."""


def check_exportable(cfg: ModelConfig) -> None:
    if cfg.attention == "alternating" and cfg.band_width < cfg.n_ctx:
        raise ExportError(
            f"the model alternates dense and locally banded attention layers (band_width={cfg.band_width} < "
            f"n_ctx={cfg.n_ctx}); GPT-2 has dense attention only, so the exported model would compute something "
            "else. Export models trained with attention=dense (or a band as wide as the context)."
        )


def hf_config_kwargs(cfg: ModelConfig, eot_id: int | None) -> dict[str, Any]:
    """``GPT2Config`` fields for a ccgpt model config."""
    return dict(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.n_ctx,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=4 * cfg.n_embd,
        activation_function="gelu",  # exact erf GELU, as train.model.MLP (nn.GELU())
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=1e-5,
        scale_attn_weights=True,
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
    )


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """ccgpt's weights under ``GPT2LMHeadModel``'s names (projection weights transposed for ``Conv1D``)."""
    cfg = model.config
    src = model.state_dict()
    out: dict[str, torch.Tensor] = {}

    def bias(name: str, size: int) -> torch.Tensor:
        t = src.get(name)
        return t if t is not None else torch.zeros(size, dtype=src["wte.weight"].dtype)

    d = cfg.n_embd
    wte = src["wte.weight"][: cfg.vocab_size]  # without the padding rows (ModelConfig.padded_vocab_size)
    out["transformer.wte.weight"] = wte
    out["transformer.wpe.weight"] = src["wpe.weight"]
    for i in range(cfg.n_layer):
        p, q = f"blocks.{i}.", f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[q + f"{ln}.weight"] = src[p + f"{ln}.weight"]
            out[q + f"{ln}.bias"] = bias(p + f"{ln}.bias", d)
        for name, width in (("attn.c_attn", 3 * d), ("attn.c_proj", d), ("mlp.c_fc", 4 * d), ("mlp.c_proj", d)):
            out[q + f"{name}.weight"] = (
                src[p + f"{name}.weight"].t().contiguous()
            )  # Linear [out, in] -> Conv1D [in, out]
            out[q + f"{name}.bias"] = bias(p + f"{name}.bias", width)
    out["transformer.ln_f.weight"] = src["ln_f.weight"]
    out["transformer.ln_f.bias"] = bias("ln_f.bias", d)
    out["lm_head.weight"] = wte  # tied
    return out


def to_hf(model: GPT, eot_id: int | None = None):
    """A ``transformers.GPT2LMHeadModel`` with ``model``'s weights, in eval mode."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        raise ExportError("exporting needs transformers and safetensors: pip install 'ccgpt[export]'") from None
    check_exportable(model.config)
    hf = GPT2LMHeadModel(GPT2Config(**hf_config_kwargs(model.config, eot_id)))
    weights = hf_state_dict(model)
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    expected = set(hf.state_dict())
    really_missing = [k for k in missing if k in expected and k not in weights]
    if really_missing or unexpected:
        raise ExportError(f"weight mapping mismatch: missing {really_missing}, unexpected {unexpected}")
    return hf.eval()


def _tokenizer_config(tok, eot_id: int | None, n_ctx: int) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": n_ctx,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,  # "<|endoftext|>" typed in text stays text, as in the shards
    }
    if eot_id is not None:
        eot = tok.id_to_token(int(eot_id))
        if eot is not None:
            cfg.update(bos_token=eot, eos_token=eot)
    return cfg


def export(checkpoint: str, out: str, tokenizer: str | None = None, overwrite: bool = False) -> str:
    """Write ``out`` (atomically: a sibling ``.partial-<pid>`` folder renamed into place); returns ``out``."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise ExportError(f"{out} exists; choose another --out or pass --overwrite")
    try:
        model, meta = load_model(checkpoint, "cpu")
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    check_exportable(model.config)
    eot_id = (meta.get("tokenizer") or {}).get("eot_id")
    tok_path = tokenizer or find_tokenizer(checkpoint, meta)
    if not tok_path:
        raise ExportError(
            "no tokenizer.json found beside the checkpoint or in the run's shard folder; pass --tokenizer"
        )
    tok = load_tokenizer(tok_path)
    if tok.get_vocab_size() > model.config.vocab_size:
        raise ExportError(
            f"{tok_path}: the tokenizer has {tok.get_vocab_size()} tokens, the model only "
            f"{model.config.vocab_size}; it is not the tokenizer this model was trained with"
        )
    hf = to_hf(model, eot_id)
    with atomic_folder(out) as tmp:  # --overwrite: the old folder is moved aside only once the new one is complete
        hf.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(
            tok_path if os.path.isfile(tok_path) else os.path.join(tok_path, "tokenizer.json"),
            os.path.join(tmp, "tokenizer.json"),
        )
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
            json.dump(_tokenizer_config(tok, eot_id, model.config.n_ctx), fh, indent=2)
            fh.write("\n")
        with open(os.path.join(tmp, "ccgpt_export.json"), "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "checkpoint": os.path.abspath(checkpoint),
                    "step": meta.get("step"),
                    "model_config": meta.get("model_config"),
                    "tokenizer": meta.get("tokenizer"),
                },
                fh,
                indent=2,
            )
            fh.write("\n")
    return out


# ----------------------------------------------------------------------------------------------- CLI
def add_export_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "checkpoint", help="a checkpoint folder (checkpoints/step-N), or the run folder (its newest checkpoint)"
    )
    parser.add_argument("--out", required=True, help="folder to write (safetensors, config, tokenizer)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json (or its folder); default: found through the manifest beside the "
        "checkpoint or in the run's shard folder",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.export",
        description="Write a ccgpt checkpoint as a Hugging Face GPT2LMHeadModel folder (transformers loads it).",
    )
    return add_export_args(parser)


def run(args: argparse.Namespace) -> int:
    print(export(args.checkpoint, args.out, args.tokenizer, args.overwrite))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ExportError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
