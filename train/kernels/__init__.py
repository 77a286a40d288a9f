"""Fused kernels for training, each beside a plain PyTorch reference it is tested against.

* :mod:`train.kernels.linear_cross_entropy` -- the output head and the cross-entropy in one op that never
  holds the full ``[tokens, vocab]`` logits: chunked PyTorch everywhere, Triton kernels on CUDA.
* :mod:`train.kernels.layer_norm` -- LayerNorm forward and backward as Triton kernels (CUDA), with
  ``F.layer_norm`` as the reference and the fallback.
"""

from train.kernels.layer_norm import (
    NORM_IMPLS,
    LayerNorm,
    layer_norm,
    reference_layer_norm,
    resolve_norm_impl,
)
from train.kernels.linear_cross_entropy import (
    LOSS_IMPLS,
    linear_cross_entropy,
    reference_linear_cross_entropy,
    resolve_loss_impl,
    triton_available,
)

__all__ = [
    "LOSS_IMPLS",
    "NORM_IMPLS",
    "LayerNorm",
    "layer_norm",
    "reference_layer_norm",
    "resolve_norm_impl",
    "linear_cross_entropy",
    "reference_linear_cross_entropy",
    "resolve_loss_impl",
    "triton_available",
]
