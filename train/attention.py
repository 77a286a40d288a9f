"""Causal self-attention kernels: the single place that decides *how* attention is computed.

The model describes *what* a layer may see -- the whole causal prefix, or a local band of the last
``window`` tokens as in GPT-3's alternating dense / locally banded layers, optionally cut at document
boundaries of the packed row -- and :func:`causal_attention` picks an implementation:

* dense, no document masking: ``F.scaled_dot_product_attention(is_causal=True)``, which lets PyTorch
  pick its fastest fused kernel (flash / memory-efficient on CUDA, flash on CPU);
* anything else, with ``impl="sdpa"``: the same SDPA call with an explicit boolean mask (``True`` = may
  attend). This runs on every device, with backward, at the cost of materialising a ``T x T`` mask per
  batch row, and a banded layer does dense work behind that mask;
* anything else, with ``impl="flex"``: FlexAttention with a ``BlockMask`` built from the same rule
  (:func:`flex_mask_mod`). Blocks that are entirely masked (most of a banded layer, and everything
  across document boundaries) are skipped, so a banded layer costs ``O(T * window)`` -- the saving GPT-3
  got from sparsity. On CUDA the call is ``torch.compile``'d into a fused Triton kernel; on CPU PyTorch
  runs an unfused reference version that is forward-only (no FlexAttention backward on CPU), which is
  why ``attention_impl="auto"`` means flex on CUDA and SDPA elsewhere. FlexAttention has no dropout, so
  a layer with attention dropout active falls back to the SDPA mask path.

:func:`reference_attention` is the textbook masked softmax, kept so tests can check the fast paths
against it (forward and gradients).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

ATTENTION_IMPLS = ("auto", "sdpa", "flex")


FLEX_MIN_HEAD_DIM = 16  # FlexAttention's generated GPU kernel refuses smaller heads (torch 2.11)


def resolve_attention_impl(impl: str, device: torch.device | str, head_dim: int | None = None) -> str:
    """``"auto"`` is ``"flex"`` on CUDA and ``"sdpa"`` elsewhere, and ``"sdpa"`` for heads smaller than
    FlexAttention's GPU kernel takes (tiny test models); explicit choices are kept."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    if impl == "auto":
        small = head_dim is not None and head_dim < FLEX_MIN_HEAD_DIM
        return "flex" if torch.device(device).type == "cuda" and not small else "sdpa"
    return impl


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


def flex_mask_mod(window: int | None = None, doc_ids: torch.Tensor | None = None) -> Callable:
    """The :func:`build_attention_mask` rule as a FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool``."""

    def mask_mod(b, h, q_idx, kv_idx):
        ok = kv_idx <= q_idx
        if window is not None:
            ok = ok & (q_idx - kv_idx < window)
        if doc_ids is not None:
            ok = ok & (doc_ids[b, q_idx] == doc_ids[b, kv_idx])
        return ok

    return mask_mod


def build_block_mask(
    seq_len: int,
    window: int | None = None,
    doc_ids: torch.Tensor | None = None,
    device: torch.device | str | None = None,
):
    """FlexAttention ``BlockMask`` for the same visibility rule as :func:`build_attention_mask`.

    Without ``doc_ids`` the mask is shared by the whole batch (``B=None``); with them it has one row per
    sequence. On CUDA the block mask itself is built by a compiled kernel.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    if doc_ids is not None:
        if doc_ids.shape[-1] != seq_len:
            raise ValueError(f"doc_ids has length {doc_ids.shape[-1]}, expected {seq_len}")
        device = doc_ids.device
    device = torch.device(device if device is not None else "cpu")
    batch = doc_ids.shape[0] if doc_ids is not None else None
    return create_block_mask(
        flex_mask_mod(window, doc_ids), batch, None, seq_len, seq_len, device=device, _compile=device.type == "cuda"
    )


_compiled_flex: Callable | None = None


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """``flex_attention`` compiled on CUDA (the fused kernel); eager elsewhere (forward only on CPU)."""
    global _compiled_flex
    from torch.nn.attention import flex_attention as fa

    if q.device.type == "cuda":
        if _compiled_flex is None:
            _compiled_flex = torch.compile(fa.flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(
            "PyTorch has no FlexAttention backward on CPU; train on CPU with attention_impl='sdpa' (or 'auto')"
        )
    with warnings.catch_warnings():  # "called without torch.compile()": expected off CUDA
        warnings.simplefilter("ignore", UserWarning)
        return fa.flex_attention(q, k, v, block_mask=block_mask)


class AttentionContext:
    """Per-forward description of the visibility pattern, shared by all layers of one forward pass.

    Built once per batch so that layers with the same window reuse one mask (or ``BlockMask``) instead of
    rebuilding it; alternating models need at most two (dense and banded). ``impl`` is ``"sdpa"`` or
    ``"flex"`` (``"auto"`` is resolved for ``device`` and ``head_dim``, see :func:`resolve_attention_impl`).
    """

    def __init__(
        self,
        seq_len: int,
        device: torch.device,
        doc_ids: torch.Tensor | None = None,
        impl: str = "sdpa",
        head_dim: int | None = None,
    ):
        self.seq_len = seq_len
        self.device = device
        self.doc_ids = doc_ids
        self.impl = resolve_attention_impl(impl, device, head_dim)
        self._masks: dict[int | None, torch.Tensor] = {}
        self._block_masks: dict[int | None, object] = {}

    def needs_mask(self, window: int | None) -> bool:
        """Plain causal attention can use SDPA's ``is_causal`` fast path; a band wider than T is plain causal."""
        return self.doc_ids is not None or (window is not None and window < self.seq_len)

    def mask(self, window: int | None) -> torch.Tensor:
        if window is not None and window >= self.seq_len:
            window = None
        if window not in self._masks:
            self._masks[window] = build_attention_mask(self.seq_len, window, self.doc_ids, self.device)
        return self._masks[window]

    def block_mask(self, window: int | None):
        if window is not None and window >= self.seq_len:
            window = None
        if window not in self._block_masks:
            self._block_masks[window] = build_block_mask(self.seq_len, window, self.doc_ids, self.device)
        return self._block_masks[window]


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
    if ctx.impl == "flex" and dropout_p == 0.0:
        return flex_attention(q, k, v, ctx.block_mask(window))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask(window), dropout_p=dropout_p)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Textbook ``softmax(q k^T / sqrt(d) + mask) v`` with a boolean mask; slow, obviously correct."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
