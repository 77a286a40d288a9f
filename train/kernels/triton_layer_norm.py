"""Triton kernels for :mod:`train.kernels.layer_norm` (after the Triton tutorial's fused LayerNorm).

* :func:`ln_forward_kernel`: one program per row; mean and ``rstd = 1/sqrt(var + eps)`` in fp32 from one
  load of the row (``BLOCK_N`` covers the whole row: model widths fit in registers up to 64k features),
  ``y = (x - mean) * rstd * w + b`` written in the output dtype; ``mean`` and ``rstd`` saved for backward.
* :func:`ln_backward_kernel`: each program walks ``rows_per_program`` consecutive rows. Per row, with
  ``xhat = (x - mean) * rstd`` and ``g = dy * w``: ``dx = rstd * (g - mean(g * xhat) * xhat - mean(g))``;
  the program accumulates ``dy * xhat`` (weight gradient) and ``dy`` (bias gradient) in registers and
  writes one partial row each, so the final reduction is a deterministic ``sum`` over programs.

With ``TRITON_INTERPRET=1`` set before this module is imported the kernels run in Triton's interpreter on
CPU tensors (how the tests check them without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_FUSED_BYTES = 65536  # one row (padded to a power of 2) must fit one program's block


@triton.jit
def ln_forward_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    mean_ptr,
    rstd_ptr,
    stride_x,
    stride_y,
    n_cols,
    eps,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    y = xc * rstd
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def ln_backward_kernel(
    dy_ptr,
    x_ptr,
    w_ptr,
    mean_ptr,
    rstd_ptr,
    dx_ptr,
    dw_ptr,
    db_ptr,
    stride_dy,
    stride_x,
    stride_dx,
    n_rows,
    n_cols,
    rows_per_program,
    HAS_WEIGHT: tl.constexpr,
    NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < n_cols
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program
    for i in range(0, rows_per_program):
        row = first + i
        if row < n_rows:
            x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + row)
            rstd = tl.load(rstd_ptr + row)
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            if HAS_WEIGHT:
                g = dy * w
            else:
                g = dy
            c1 = tl.sum(g * xhat, axis=0) / n_cols
            c2 = tl.sum(g, axis=0) / n_cols
            dx = (g - (xhat * c1 + c2)) * rstd
            tl.store(dx_ptr + row * stride_dx + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            dw_acc += dy * xhat
            db_acc += dy
    if NEED_DW:
        tl.store(dw_ptr + pid * n_cols + cols, dw_acc, mask=mask)
    if NEED_DB:
        tl.store(db_ptr + pid * n_cols + cols, db_acc, mask=mask)


def _block(n_cols: int, elem: int) -> int:
    block = triton.next_power_of_2(n_cols)
    if block * elem > MAX_FUSED_BYTES:
        raise ValueError(f"fused LayerNorm supports rows up to {MAX_FUSED_BYTES // elem} features, got {n_cols}")
    return block


def _num_warps(block: int) -> int:
    return min(max(block // 256, 1), 8)


def forward(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, mean, rstd)`` for a contiguous ``[rows, n]`` input; statistics are fp32 ``[rows]``."""
    rows, n = x.shape
    y = torch.empty((rows, n), dtype=out_dtype, device=x.device)
    mean = torch.empty(rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
    block = _block(n, x.element_size())
    ln_forward_kernel[(rows,)](
        x,
        y,
        weight if weight is not None else x,
        bias if bias is not None else x,
        mean,
        rstd,
        x.stride(0),
        y.stride(0),
        n,
        eps,
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        BLOCK_N=block,
        num_warps=_num_warps(block),
    )
    return y, mean, rstd


def _programs(rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 4
    return max(1, min(rows, target))


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    has_bias: bool,
    need_dw: bool = True,
    rows_per_program: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dweight, dbias)`` (the last two fp32, ``None`` when not needed) for contiguous ``[rows, n]``."""
    rows, n = x.shape
    dx = torch.empty_like(x)
    per = rows_per_program or triton.cdiv(rows, _programs(rows, x.device))
    programs = triton.cdiv(rows, per)
    need_dw = need_dw and weight is not None
    dw_part = torch.empty((programs, n), dtype=torch.float32, device=x.device) if need_dw else None
    db_part = torch.empty((programs, n), dtype=torch.float32, device=x.device) if has_bias else None
    block = _block(n, x.element_size())
    ln_backward_kernel[(programs,)](
        dy,
        x,
        weight if weight is not None else x,
        mean,
        rstd,
        dx,
        dw_part if dw_part is not None else mean,
        db_part if db_part is not None else mean,
        dy.stride(0),
        x.stride(0),
        dx.stride(0),
        rows,
        n,
        per,
        HAS_WEIGHT=weight is not None,
        NEED_DW=need_dw,
        NEED_DB=has_bias,
        BLOCK_N=block,
        num_warps=_num_warps(block),
    )
    dw = dw_part.sum(0) if dw_part is not None else None
    db = db_part.sum(0) if db_part is not None else None
    return dx, dw, db
