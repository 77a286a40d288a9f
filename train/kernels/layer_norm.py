"""LayerNorm as a fused op: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension.

PyTorch's eager LayerNorm is already one kernel per direction, but under bf16 autocast it runs in fp32 and
writes an fp32 output that the following Linear immediately casts to bf16 (one more read and write of the
activations, twice per block). The Triton version reads ``x`` once, keeps the row statistics in fp32 and
writes ``y`` straight in the autocast dtype; its backward computes ``dx`` row by row and reduces the
``weight`` / ``bias`` gradients per program into a small ``[programs, N]`` buffer (summed by one
``torch.sum``), which is deterministic, unlike atomics or spin locks.

Two implementations share the contract of ``torch.nn.functional.layer_norm`` (the reference):

* ``"torch"`` -- ``F.layer_norm`` (any device; the CPU default and what ``torch.compile`` fuses itself);
* ``"triton"`` -- :mod:`train.kernels.triton_layer_norm` (CUDA; on CPU only under ``TRITON_INTERPRET=1``).

``"auto"`` is ``"triton"`` on CUDA when Triton is installed, ``"torch"`` elsewhere. :class:`LayerNorm` is
an ``nn.LayerNorm`` (same parameters, same state-dict keys) whose forward dispatches on ``impl``, so a
checkpoint does not depend on the choice.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.kernels.linear_cross_entropy import triton_available

NORM_IMPLS = ("auto", "torch", "triton")


def resolve_norm_impl(impl: str, device: torch.device | str) -> str:
    """``"auto"`` is ``"triton"`` on CUDA (``"torch"`` if Triton is missing) and ``"torch"`` elsewhere."""
    if impl not in NORM_IMPLS:
        raise ValueError(f"norm_impl must be one of {NORM_IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if torch.device(device).type == "cuda" and triton_available() else "torch"
    return impl


def reference_layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


class _TritonLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        from train.kernels import triton_layer_norm

        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        y, mean, rstd = triton_layer_norm.forward(x2, weight, bias, eps, out_dtype)
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.has_bias = bias is not None
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        from train.kernels import triton_layer_norm

        x2, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = triton_layer_norm.backward(
            dy.reshape(-1, x2.shape[-1]).contiguous(),
            x2,
            weight,
            mean,
            rstd,
            ctx.has_bias,
            need_dw=weight is not None and ctx.needs_input_grad[1],
        )
        return (
            dx.view(ctx.shape),
            dw.to(weight.dtype) if dw is not None else None,
            db.to(weight.dtype if weight is not None else x2.dtype)
            if db is not None and ctx.needs_input_grad[2]
            else None,
            None,
            None,
        )


@torch.compiler.disable
def _triton_layer_norm(x, weight, bias, eps, out_dtype):
    # Opaque to torch.compile (a graph break): the compiler generates its own fused norm, so "auto" picks
    # "torch" for compiled models and this path is only compiled around when asked for explicitly.
    return _TritonLayerNorm.apply(x, weight, bias, eps, out_dtype)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    impl: str = "auto",
) -> torch.Tensor:
    """LayerNorm over the last dimension of ``x``; ``impl`` is ``"auto"``, ``"torch"`` or ``"triton"``.

    Under autocast the Triton path computes in fp32 and returns the autocast dtype (``F.layer_norm``
    returns fp32 there); without autocast both return ``x.dtype``.
    """
    impl = resolve_norm_impl(impl, x.device)
    if impl == "torch":
        return reference_layer_norm(x, weight, bias, eps)
    if not triton_available():
        raise RuntimeError("norm_impl='triton' needs Triton (pip install triton); use 'torch' instead")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise RuntimeError(
            "norm_impl='triton' runs Triton kernels on CUDA (or on CPU under TRITON_INTERPRET=1); "
            "use 'torch' or 'auto' on this device"
        )
    device_type = x.device.type
    out_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
    return _triton_layer_norm(x, weight, bias, float(eps), out_dtype)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension whose forward runs :func:`layer_norm` with ``impl``."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, bias: bool = True, impl: str = "auto"):
        super().__init__(normalized_shape, eps=eps, bias=bias)
        resolve_norm_impl(impl, "cpu")  # validates the name
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps, self.impl)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl}"
