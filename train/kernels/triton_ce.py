"""Triton kernels for the cross-entropy half of :mod:`train.kernels.linear_cross_entropy`.

Both work on one chunk of logits ``[rows, vocab]`` (row-major, any float dtype), one program per row,
streaming the vocabulary in ``BLOCK_V`` slices so a row never has to fit in registers:

* :func:`ce_forward_kernel`: online (running max, rescaled sum) logsumexp over the row, then
  ``loss = lse - logit[target]`` (0 for ``ignore_index``); writes ``lse`` and ``loss`` (fp32).
* :func:`ce_backward_kernel`: overwrites the logits, in place, with the gradient of the summed loss
  times ``scale``: ``(softmax - onehot(target)) * scale`` (0 for ignored rows), ready for the two matmuls
  that give the hidden-state and weight gradients.

Imported only when the fused path runs, so the rest of training never needs Triton. With
``TRITON_INTERPRET=1`` in the environment *before* this module is imported, the kernels run in Triton's
interpreter on CPU tensors (how the tests check them without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def ce_forward_kernel(
    logits_ptr, stride_row, targets_ptr, lse_ptr, loss_ptr, n_cols, ignore_index, BLOCK_V: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    m = float("-inf")  # running max
    d = 0.0  # running sum of exp(x - m)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(base + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(d)
    target = tl.load(targets_ptr + row)
    valid = target != ignore_index
    target_logit = tl.load(base + tl.where(valid, target, 0)).to(tl.float32)
    tl.store(lse_ptr + row, lse)
    tl.store(loss_ptr + row, tl.where(valid, lse - target_logit, 0.0))


@triton.jit
def ce_backward_kernel(
    logits_ptr, stride_row, targets_ptr, lse_ptr, scale_ptr, n_cols, ignore_index, BLOCK_V: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    target = tl.load(targets_ptr + row)
    lse = tl.load(lse_ptr + row)
    scale = tl.where(target != ignore_index, tl.load(scale_ptr), 0.0)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < n_cols
        x = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
        p = tl.exp(x - lse)
        p = tl.where(cols == target, p - 1.0, p)
        tl.store(base + cols, (p * scale).to(logits_ptr.dtype.element_ty), mask=mask)


def _block_v(n_cols: int, block_v: int | None) -> int:
    return block_v or min(triton.next_power_of_2(n_cols), 4096)


def _num_warps(block: int) -> int:
    return 16 if block >= 4096 else 8 if block >= 1024 else 4


def ce_forward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    block_v: int | None = None,
    n_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lse, loss)``, both fp32 ``[rows]``, for a contiguous chunk of logits (its first ``n_classes``
    columns; default all)."""
    rows, n_cols = logits.shape
    n_cols = n_cols if n_classes is None else n_classes
    lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    block = _block_v(n_cols, block_v)
    ce_forward_kernel[(rows,)](
        logits, logits.stride(0), targets, lse, loss, n_cols, ignore_index, BLOCK_V=block, num_warps=_num_warps(block)
    )
    return lse, loss


def ce_backward_(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    scale: torch.Tensor,
    ignore_index: int,
    block_v: int | None = None,
    n_classes: int | None = None,
) -> torch.Tensor:
    """Turn ``logits`` into ``d(sum of losses * scale)/d logits`` in place and return it (only its first
    ``n_classes`` columns, default all: the caller zeroes any others)."""
    rows, n_cols = logits.shape
    n_cols = n_cols if n_classes is None else n_classes
    block = _block_v(n_cols, block_v)
    ce_backward_kernel[(rows,)](
        logits, logits.stride(0), targets, lse, scale, n_cols, ignore_index, BLOCK_V=block, num_warps=_num_warps(block)
    )
    return logits
