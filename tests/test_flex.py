"""The FlexAttention path (block masks for GPT-3's banded layers and document masking) against the reference.

PyTorch implements FlexAttention's backward only on GPU: on CPU these tests check the forward pass (and
that asking for a CPU backward is a clear error); the CUDA test, skipped without a GPU, checks forward and
gradients against the plain masked softmax.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from train.attention import (
    AttentionContext,
    build_attention_mask,
    build_block_mask,
    causal_attention,
    doc_ids_from_offsets,
    reference_attention,
    resolve_attention_impl,
)
from train.config import ModelConfig
from train.model import GPT
from train.trainer import check_device_support

B, H, D = 2, 3, 8


def qkv(T: int, seed: int = 0, dtype=torch.float64, device="cpu", requires_grad=False, head_dim: int = D):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, H, T, head_dim, generator=g, dtype=dtype).to(device).requires_grad_(requires_grad)
        for _ in range(3)
    ]


def doc_ids(T: int) -> torch.Tensor:
    # row 0: documents starting at 0, T//3, T//2; row 1 starts mid-document and has a 1-token document
    offsets = [[0, T // 3, T // 2], [3, 4, T // 2 + 1, T - 1]]
    return torch.stack([doc_ids_from_offsets(o, T) for o in offsets])


CASES = [  # (T, window, doc_masked); T=300 spans several 128-token blocks, most of them skipped
    (16, 4, True),
    (16, 1, True),
    (300, 64, False),
    (300, None, True),
    (300, 64, True),
    (300, 300, True),
]


@pytest.mark.parametrize("T,window,doc_masked", CASES)
def test_flex_forward_matches_reference_on_cpu(T, window, doc_masked):
    ids = doc_ids(T) if doc_masked else None
    ctx = AttentionContext(T, torch.device("cpu"), ids, impl="flex")
    q, k, v = qkv(T)
    with torch.no_grad():  # no FlexAttention backward on CPU
        out = causal_attention(q, k, v, ctx, window)
        ref = reference_attention(q, k, v, build_attention_mask(T, window, ids))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_block_mask_skips_blocks_outside_the_band():
    T = 1024
    dense = build_block_mask(T)
    banded = build_block_mask(T, window=128)
    assert banded.sparsity() > dense.sparsity() > 0  # causal already skips ~half; a 128-band far more
    docs = build_block_mask(T, doc_ids=torch.repeat_interleave(torch.arange(8), T // 8).view(1, T))
    assert docs.sparsity() > dense.sparsity()  # 8 documents of 128 tokens: only diagonal blocks survive


def test_context_caches_one_block_mask_per_window():
    ctx = AttentionContext(32, torch.device("cpu"), doc_ids(32), impl="flex")
    assert ctx.block_mask(4) is ctx.block_mask(4)
    assert ctx.block_mask(None) is ctx.block_mask(40)


def test_flex_backward_on_cpu_is_a_clear_error():
    T = 16
    ctx = AttentionContext(T, torch.device("cpu"), doc_ids(T), impl="flex")
    q, k, v = qkv(T, requires_grad=True)
    with pytest.raises(NotImplementedError, match="no FlexAttention backward on CPU"):
        causal_attention(q, k, v, ctx, 4)


def test_attention_dropout_falls_back_to_sdpa():
    """FlexAttention has no dropout; a layer with dropout active takes the SDPA mask path (and trains)."""
    T = 16
    ctx = AttentionContext(T, torch.device("cpu"), None, impl="flex")
    q, k, v = qkv(T, requires_grad=True)
    causal_attention(q, k, v, ctx, 4, dropout_p=0.1).sum().backward()
    assert q.grad is not None


def test_auto_picks_flex_on_cuda_only():
    assert resolve_attention_impl("auto", "cpu") == "sdpa"
    assert resolve_attention_impl("auto", "cuda") == "flex"
    assert resolve_attention_impl("sdpa", "cuda") == "sdpa"
    assert resolve_attention_impl("auto", "cuda", head_dim=8) == "sdpa"  # below FlexAttention's GPU minimum
    assert resolve_attention_impl("auto", "cuda", head_dim=64) == "flex"
    assert resolve_attention_impl("flex", "cuda", head_dim=8) == "flex"  # asked for: kept, fails loudly there
    with pytest.raises(ValueError):
        resolve_attention_impl("xformers", "cpu")
    with pytest.raises(ValueError, match="attention_impl"):
        ModelConfig(attention_impl="xformers")


def test_model_flex_equals_sdpa_forward_on_cpu():
    T = 16  # the shapes of the T=16 cases above, so FlexAttention's tracing cache is reused
    base = ModelConfig(
        n_layer=2,
        n_head=H,
        n_embd=H * D,
        vocab_size=50,
        n_ctx=T,
        attention="alternating",
        band_width=4,
        doc_masking=True,
    )
    torch.manual_seed(0)
    sdpa = GPT(dataclasses.replace(base, attention_impl="sdpa")).double().eval()
    flex = GPT(dataclasses.replace(base, attention_impl="flex")).double().eval()
    flex.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 50, (B, T))
    with torch.no_grad():
        a, _ = sdpa(idx, None, doc_ids(T))
        b, _ = flex(idx, None, doc_ids(T))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_implementation_fields_do_not_change_the_model():
    a = ModelConfig(attention_impl="flex", loss_impl="fused", vocab_size=10, n_ctx=8)
    b = ModelConfig(attention_impl="sdpa", loss_impl="eager", vocab_size=10, n_ctx=8)
    assert a.same_model(b)
    assert not a.same_model(dataclasses.replace(b, band_width=7))


def test_trainer_refuses_flex_on_cpu():
    with pytest.raises(ValueError, match="no FlexAttention backward"):
        check_device_support(ModelConfig(attention_impl="flex"), torch.device("cpu"))
    check_device_support(ModelConfig(attention_impl="auto"), torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention backward needs a CUDA GPU")
@pytest.mark.parametrize("T,window,doc_masked", [(256, 64, False), (256, None, True), (300, 64, True)])
def test_flex_forward_and_backward_match_reference_on_gpu(T, window, doc_masked):
    ids = doc_ids(T).cuda() if doc_masked else None
    ctx = AttentionContext(T, torch.device("cuda"), ids, impl="flex")
    # FlexAttention's GPU kernel needs a head dimension of at least 16; GPT-3's is 64 or more
    q, k, v = qkv(T, dtype=torch.float32, device="cuda", requires_grad=True, head_dim=64)
    w = torch.linspace(-1, 1, 64, device="cuda")
    out = causal_attention(q, k, v, ctx, window)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference_attention(q2, k2, v2, build_attention_mask(T, window, ids, "cuda"))
    ref_grads = torch.autograd.grad((ref * w.double()).sum(), (q2, k2, v2))
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-3)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), rg, rtol=1e-3, atol=1e-3)
