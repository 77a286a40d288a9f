"""Causal self-attention kernels: the single place that decides *how* attention is computed.

The model describes *what* a layer may see -- the whole causal prefix, or a local band of the last
``window`` tokens as in GPT-3's alternating dense / locally banded layers, optionally cut at document
boundaries of the packed row -- and :func:`causal_attention` picks an implementation:

* dense, no document masking: ``F.scaled_dot_product_attention(is_causal=True)``, which lets PyTorch
  pick its fastest fused kernel (flash / memory-efficient on CUDA, flash on CPU);
* anything else: the same SDPA call with an explicit boolean mask (``True`` = may attend). This runs on
  every device, with backward, at the cost of materialising a ``T x T`` mask per batch row.

A banded layer computed this way does dense work behind a mask; the saving GPT-3 got from sparsity only
appears with a block-sparse kernel. FlexAttention (a ``BlockMask`` built from the same
:class:`AttentionContext`) or a fused Triton kernel slots in here without touching the model.

:func:`reference_attention` is the textbook masked softmax, kept so tests can check the fast paths
against it (forward and gradients).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def doc_ids_from_offsets(doc_offsets: list[int] | torch.Tensor, length: int) -> torch.Tensor:
    """Document index of every position ``0..length-1`` of a packed row.

    ``doc_offsets`` are the positions where a document starts (the shard contract). Tokens before the
    first offset belong to a document continued from the previous row; they get id 0, and each start
    bumps the id. Only equality of ids matters, so the numbering need not start at 0.
    """
    offsets = torch.as_tensor(doc_offsets, dtype=torch.int64)
    positions = torch.arange(length, dtype=torch.int64)
    return torch.searchsorted(offsets, positions, right=True).to(torch.int32)


def build_attention_mask(
    seq_len: int,
    window: int | None = None,
    doc_ids: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean mask, ``True`` where query ``i`` may attend key ``j``.

    Causal (``j <= i``); with ``window`` also local (``i - j < window``, so a query sees ``window``
    tokens, itself included); with ``doc_ids`` (``[B, T]``) also same-document. The diagonal is always
    allowed, so no softmax row is empty. Shape ``[T, T]`` without ``doc_ids``, else ``[B, 1, T, T]``
    (broadcast over heads).
    """
    if doc_ids is not None:
        device = doc_ids.device
    i = torch.arange(seq_len, device=device).unsqueeze(1)
    j = torch.arange(seq_len, device=device).unsqueeze(0)
    mask = j <= i
    if window is not None:
        mask = mask & (i - j < window)
    if doc_ids is not None:
        if doc_ids.shape[-1] != seq_len:
            raise ValueError(f"doc_ids has length {doc_ids.shape[-1]}, expected {seq_len}")
        same_doc = doc_ids.unsqueeze(-1) == doc_ids.unsqueeze(-2)  # [B, T, T]
        mask = (mask.unsqueeze(0) & same_doc).unsqueeze(1)
    return mask


class AttentionContext:
    """Per-forward description of the visibility pattern, shared by all layers of one forward pass.

    Built once per batch so that layers with the same window reuse one mask instead of rebuilding it;
    alternating models need at most two (dense and banded).
    """

    def __init__(self, seq_len: int, device: torch.device, doc_ids: torch.Tensor | None = None):
        self.seq_len = seq_len
        self.device = device
        self.doc_ids = doc_ids
        self._masks: dict[int | None, torch.Tensor] = {}

    def needs_mask(self, window: int | None) -> bool:
        """Plain causal attention can use SDPA's ``is_causal`` fast path; a band wider than T is plain causal."""
        return self.doc_ids is not None or (window is not None and window < self.seq_len)

    def mask(self, window: int | None) -> torch.Tensor:
        if window is not None and window >= self.seq_len:
            window = None
        if window not in self._masks:
            self._masks[window] = build_attention_mask(self.seq_len, window, self.doc_ids, self.device)
        return self._masks[window]


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ctx: AttentionContext,
    window: int | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention for ``q, k, v`` of shape ``[B, H, T, D]``; returns ``[B, H, T, D]``."""
    if not ctx.needs_mask(window):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask(window), dropout_p=dropout_p)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Textbook ``softmax(q k^T / sqrt(d) + mask) v`` with a boolean mask; slow, obviously correct."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
