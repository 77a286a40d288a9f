"""`ccgpt export`: a checkpoint as a Hugging Face GPT2LMHeadModel folder that transformers loads, same logits."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_generate import train_tiny_run  # noqa: E402

from train.config import ModelConfig  # noqa: E402
from train.export import ExportError, export, to_hf  # noqa: E402
from train.generate import load_model, load_tokenizer  # noqa: E402
from train.model import GPT  # noqa: E402

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    return train_tiny_run(tmp_path_factory.mktemp("export"), lr=1e-2, tensorboard=False)


def scrambled(cfg: ModelConfig) -> GPT:
    """A model whose every parameter (biases and LayerNorm gains included) is random, so a mapping slip shows."""
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn_like(p) + (1.0 if p.dim() == 1 and p.shape[0] == cfg.n_embd else 0.0))
    return model.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_hf_model_gives_the_same_logits(bias):
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=101, n_ctx=24, bias=bias)
    model = scrambled(cfg)
    hf = to_hf(model, eot_id=0)
    idx = torch.randint(0, 101, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(input_ids=idx).logits
    assert ours.abs().max() > 1.0  # logits far from uniform: the weights matter
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_export_folder_loads_in_transformers(run_dir, tmp_path):
    out = export(run_dir, str(tmp_path / "hf"))
    names = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]
    with open(os.path.join(out, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu"
    assert config["n_positions"] == 32 and config["vocab_size"] == 300 and config["eos_token_id"] == 0

    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    model, _ = load_model(run_dir)
    idx = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=idx).logits, model(idx)[0], rtol=0, atol=1e-5)

    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    ours = load_tokenizer(os.path.join(out, "tokenizer.json"))
    text = "the cat sat on the mat<|endoftext|>a dog"
    assert hf_tok(text)["input_ids"] == ours.encode(text).ids  # "<|endoftext|>" in text stays text
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == 0

    with pytest.raises(ExportError, match="exists"):
        export(run_dir, out)
    assert export(run_dir, out, overwrite=True) == out


def test_banded_attention_is_refused():
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_ctx=32, attention="alternating", band_width=8)
    with pytest.raises(ExportError, match="banded"):
        to_hf(GPT(cfg))
    # a band as wide as the context is dense attention: exportable, same logits
    wide = scrambled(dataclasses.replace(cfg, band_width=32))
    idx = torch.randint(0, 50, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(to_hf(wide)(input_ids=idx).logits, wide(idx)[0], rtol=0, atol=1e-5)


def test_ccgpt_export_cli(run_dir, tmp_path, capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", "--help"])
    assert e.value.code == 0 and "--out" in capsys.readouterr().out
    out = str(tmp_path / "cli")
    assert main(["export", run_dir, "--out", out]) == 0
    assert capsys.readouterr().out.strip().endswith(out) and os.path.isfile(os.path.join(out, "model.safetensors"))
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) != 0
    assert "checkpoint not found" in capsys.readouterr().err
