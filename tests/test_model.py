"""The GPT model: shapes, tied embeddings, GPT-2 initialisation, parameter counts, optimizer groups, FLOPs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from train.config import GPT3_TABLE, GPT3_VOCAB_SIZE, PRESETS, ModelConfig, get_preset
from train.model import GPT

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=97, n_ctx=32)


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    x = torch.randint(0, 97, (3, 20))
    y = torch.randint(0, 97, (3, 20))
    logits, loss = model(x, y)
    assert logits.shape == (3, 20, 97)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 97), y.reshape(-1)))
    # An untrained GPT-2-initialised model predicts close to uniform.
    assert abs(loss.item() - math.log(97)) < 0.2
    assert model(x)[1] is None
    with pytest.raises(ValueError, match="longer than"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_embeddings_are_tied():
    model = GPT(TINY)
    assert model.lm_head.weight is model.wte.weight
    _, loss = model(torch.randint(0, 97, (2, 8)), torch.randint(0, 97, (2, 8)))
    loss.backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0
    names = [n for n, _ in model.named_parameters()]
    assert "wte.weight" in names and "lm_head.weight" not in names  # counted and optimised once


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("attention", ["dense", "alternating"])
def test_analytic_param_count_matches_the_module(bias, attention):
    cfg = dataclasses.replace(TINY, bias=bias, attention=attention, n_layer=3)
    model = GPT(cfg)
    padding = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd  # aligned embedding rows, not counted
    assert cfg.padded_vocab_size == 128 and padding > 0
    assert model.num_params() == cfg.num_params() == sum(p.numel() for p in model.parameters()) - padding
    assert model.num_params(include_positions=False) == cfg.num_params(include_positions=False)


def test_vocab_padding_keeps_the_function_of_vocab_size_classes():
    """The embedding is padded to a multiple of 64 rows for aligned matmuls; the padding changes nothing:
    logits have vocab_size columns, every loss path equals the unpadded computation, padding rows stay
    zero with zero gradient, and weights saved without the padding still load."""
    cfg = dataclasses.replace(TINY, n_layer=2, vocab_size=97)
    assert cfg.padded_vocab_size == 128 and dataclasses.replace(cfg, vocab_size=128).padded_vocab_size == 128
    torch.manual_seed(0)
    model = GPT(cfg).double()
    assert model.wte.weight.shape[0] == 128 and model.wte.weight[97:].abs().sum() == 0
    idx = torch.randint(0, 97, (2, 16))
    tgt = torch.randint(0, 97, (2, 16))
    hidden = []
    model.ln_f.register_forward_hook(lambda mod, args, out: hidden.append(out.detach()))
    logits, loss = model(idx, tgt)
    assert logits.shape == (2, 16, 97)
    # the unpadded reference: the final hidden states against the first 97 rows only
    ref = F.cross_entropy((hidden[0] @ model.wte.weight[:97].detach().t()).reshape(-1, 97), tgt.reshape(-1))
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-6)  # the eager loss is taken in fp32
    chunked = GPT(dataclasses.replace(cfg, loss_impl="chunked")).double()
    chunked.load_state_dict(model.state_dict())
    _, loss_chunked = chunked(idx, tgt)
    torch.testing.assert_close(loss_chunked, ref, rtol=1e-12, atol=1e-12)
    loss_chunked.backward()
    assert chunked.wte.weight.grad[97:].abs().sum() == 0  # never read, never moved
    unpadded = {k: (v[:97] if k in ("wte.weight", "lm_head.weight") else v) for k, v in model.state_dict().items()}
    again = GPT(cfg).double()
    again.load_state_dict(unpadded)
    torch.testing.assert_close(again(idx, tgt)[1], loss, rtol=0, atol=0)


def test_gpt3_small_has_125m_parameters():
    cfg = dataclasses.replace(get_preset("gpt3-small"), vocab_size=GPT3_VOCAB_SIZE)
    with torch.device("meta"):  # build the real module without allocating its weights
        model = GPT(cfg)
    assert model.num_params() == cfg.num_params()
    assert abs(cfg.num_params() - 125e6) / 125e6 < 0.01
    assert len(model.blocks) == 12 and model.blocks[0].attn.n_head == 12


@pytest.mark.parametrize("name", list(GPT3_TABLE))
def test_gpt3_presets_match_table_2_1(name):
    row = GPT3_TABLE[name]
    cfg = dataclasses.replace(PRESETS[name], vocab_size=GPT3_VOCAB_SIZE)
    stated = float(row.params[:-1]) * (1e6 if row.params.endswith("M") else 1e9)
    assert abs(cfg.num_params() - stated) / stated < 0.05, (name, cfg.num_params())
    assert cfg.n_ctx == 2048 and cfg.attention == "alternating"


def test_preset_aliases_and_unknown():
    assert get_preset("XL") == PRESETS["gpt3-xl"]
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("gpt5")


def test_gpt2_initialisation():
    cfg = ModelConfig(n_layer=8, n_head=4, n_embd=256, vocab_size=512, n_ctx=64)
    torch.manual_seed(0)
    model = GPT(cfg)
    proj = model.blocks[3].mlp.c_proj.weight
    assert abs(proj.std().item() - 0.02 / math.sqrt(2 * cfg.n_layer)) < 5e-4
    assert abs(model.blocks[3].mlp.c_fc.weight.std().item() - 0.02) < 5e-4
    assert abs(model.wte.weight.std().item() - 0.02) < 1e-3
    assert torch.equal(model.blocks[0].ln_1.weight, torch.ones(256))
    assert torch.count_nonzero(model.blocks[0].attn.c_attn.bias) == 0


def test_optimizer_groups():
    model = GPT(TINY)
    opt = model.configure_optimizers(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95), device_type="cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert not decayed & kept
    assert decayed | kept == set(names.values())
    assert all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in decayed)
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias", "blocks.0.attn.c_attn.bias"} <= kept
    assert opt.defaults["betas"] == (0.9, 0.95) and not opt.defaults.get("fused")


def test_flops_per_token_palm_formula():
    dense = GPT(dataclasses.replace(TINY, n_layer=4))
    N = dense.num_params(include_positions=False)
    H, Q, L, T = 2, 32, 4, 32
    assert dense.estimate_flops_per_token() == 6 * N + 12 * L * H * Q * T
    assert dense.estimate_flops_per_token(16) == 6 * N + 12 * L * H * Q * 16
    banded = GPT(dataclasses.replace(TINY, n_layer=4, attention="alternating", band_width=8))
    assert [b.attn.window for b in banded.blocks] == [None, 8, None, 8]
    # Two banded layers each score 8 keys instead of 32.
    assert banded.estimate_flops_per_token() == 6 * N + 12 * H * Q * (32 + 8 + 32 + 8)
    wide = GPT(dataclasses.replace(TINY, n_layer=4, attention="alternating", band_width=1000))
    assert wide.estimate_flops_per_token() == dense.estimate_flops_per_token()


@pytest.mark.parametrize("doc_masking", [True, False])
def test_document_masking_in_the_model(doc_masking):
    """With masking, logits in the second document ignore the first document's tokens."""
    torch.manual_seed(1)
    model = GPT(dataclasses.replace(TINY, doc_masking=doc_masking, attention="alternating", band_width=6)).eval()
    x = torch.randint(1, 97, (1, 24))
    doc_ids = torch.tensor([[0] * 10 + [1] * 14], dtype=torch.int32)
    x2 = x.clone()
    x2[0, :10] = torch.randint(1, 97, (10,))
    with torch.no_grad():
        a, _ = model(x, doc_ids=doc_ids)
        b, _ = model(x2, doc_ids=doc_ids)
    assert torch.equal(a[0, 10:], b[0, 10:]) == doc_masking


def test_unresolved_config_is_rejected():
    with pytest.raises(ValueError, match="resolved"):
        GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(n_layer=1, n_head=3, n_embd=8)


def test_adamw_is_fused_on_cuda_only():
    model = GPT(TINY)
    cuda = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device_type="cuda")
    assert cuda.defaults["fused"] is True  # one multi-tensor kernel per step on the GPU
    cpu = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device_type="cpu")
    assert not cpu.defaults["fused"]


@pytest.mark.parametrize("mode", ["block", "selective"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(mode):
    """Recomputing activations in the backward (with dropout on: the RNG is replayed) changes nothing."""
    cfg = dataclasses.replace(TINY, dropout=0.1, attention="alternating", band_width=4)
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    results = []
    for ac in ("none", mode):
        torch.manual_seed(0)
        model = GPT(cfg)
        model.activation_checkpointing = ac
        _, loss = model(x, y)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}, torch.rand(1)))
    (loss_a, grads_a, after_a), (loss_b, grads_b, after_b) = results
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(after_a, after_b)  # the run's RNG stream is where it would be without checkpointing
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=0, atol=1e-7, msg=name)
