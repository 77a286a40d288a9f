"""The SDPA paths (fused causal, and explicit boolean masks) against a plain masked softmax."""

from __future__ import annotations

import pytest
import torch

from train.attention import (
    AttentionContext,
    build_attention_mask,
    causal_attention,
    doc_ids_from_offsets,
    reference_attention,
)

B, H, T, D = 2, 3, 16, 8


def loop_mask(T: int, window: int | None, docs: list[list[int]] | None) -> torch.Tensor:
    """The visibility rule written out element by element, independent of build_attention_mask."""
    rows = len(docs) if docs else 1
    m = torch.zeros(rows, 1, T, T, dtype=torch.bool)
    for b in range(rows):
        for i in range(T):
            for j in range(T):
                ok = j <= i and (window is None or i - j < window)
                if docs:
                    ok = ok and docs[b][i] == docs[b][j]
                m[b, 0, i, j] = ok
    return m if docs else m[0, 0]


def qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]


DOC_OFFSETS = [[0, 5, 11], [3, 4, 9, 15]]  # second row starts mid-document and has a 1-token document


@pytest.mark.parametrize(
    "window,doc_masked",
    [(None, False), (4, False), (None, True), (4, True), (T, False), (T + 5, True), (1, True)],
)
def test_sdpa_matches_reference_forward_and_backward(window, doc_masked):
    doc_ids = torch.stack([doc_ids_from_offsets(o, T) for o in DOC_OFFSETS]) if doc_masked else None
    docs = doc_ids.tolist() if doc_masked else None
    expected_mask = loop_mask(T, window, docs)
    ctx = AttentionContext(T, torch.device("cpu"), doc_ids)

    q, k, v = qkv()
    out = causal_attention(q, k, v, ctx, window)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, D, dtype=out.dtype)).sum(), (q, k, v))

    q2, k2, v2 = qkv()
    ref = reference_attention(q2, k2, v2, expected_mask)
    ref_grads = torch.autograd.grad((ref * torch.linspace(-1, 1, D, dtype=ref.dtype)).sum(), (q2, k2, v2))

    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-10, atol=1e-10)


def test_fast_path_only_when_plain_causal():
    ids = torch.zeros(1, T, dtype=torch.int32)
    assert not AttentionContext(T, torch.device("cpu")).needs_mask(None)
    assert not AttentionContext(T, torch.device("cpu")).needs_mask(T)  # a band covering the row is dense
    assert AttentionContext(T, torch.device("cpu")).needs_mask(T - 1)
    assert AttentionContext(T, torch.device("cpu"), ids).needs_mask(None)


def test_masks_are_built_once_per_window():
    ctx = AttentionContext(T, torch.device("cpu"), torch.zeros(2, T, dtype=torch.int32))
    assert ctx.mask(4) is ctx.mask(4)
    assert ctx.mask(None) is ctx.mask(T + 1)
    assert ctx.mask(4).shape == (2, 1, T, T)
    assert build_attention_mask(T, 4).shape == (T, T)


def test_doc_ids_from_offsets():
    assert doc_ids_from_offsets([0, 3, 5], 7).tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert doc_ids_from_offsets([2], 4).tolist() == [0, 0, 1, 1]  # row continues a document at first
    assert doc_ids_from_offsets([], 3).tolist() == [0, 0, 0]


def test_doc_masking_blocks_information_across_documents():
    """Changing an earlier document's keys/values must not move any output of a later document."""
    doc_ids = doc_ids_from_offsets([0, 6], T).unsqueeze(0)
    ctx = AttentionContext(T, torch.device("cpu"), doc_ids)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, H, T, D, generator=g) for _ in range(3))
    out = causal_attention(q, k, v, ctx)
    k2, v2 = k.clone(), v.clone()
    k2[..., :6, :] += 5.0
    v2[..., :6, :] -= 3.0
    out2 = causal_attention(q, k2, v2, ctx)
    assert torch.equal(out[..., 6:, :], out2[..., 6:, :])
    assert not torch.allclose(out[..., :6, :], out2[..., :6, :])
    # Without document masking the same change does leak forward.
    plain = AttentionContext(T, torch.device("cpu"))
    assert not torch.allclose(
        causal_attention(q, k, v, plain)[..., 6:, :], causal_attention(q, k2, v2, plain)[..., 6:, :]
    )
