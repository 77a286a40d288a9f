"""Output head + cross-entropy without the full logits: ``mean_i CE(x_i @ W^T, target_i)``.

For GPT-3 Small at batch 8 x 2048 the logits alone are 16k x 50k values -- 3.3 GB in fp32, plus as
much again for their gradient -- more than the rest of the activations. This op walks the tokens in
chunks of ``chunk_size`` rows:

* **forward**: per chunk, ``logits = x_c @ W^T`` (one matmul), then the row-wise logsumexp and the loss
  ``lse - logit[target]``; only ``lse`` (one float per token) is kept for backward;
* **backward**: per chunk, the logits are recomputed, turned in place into
  ``(softmax - onehot) * grad / n_tokens`` using the saved ``lse``, and two matmuls give this chunk's
  hidden-state gradient and its contribution to the (tied) weight gradient.

So at most one ``[chunk_size, vocab]`` block is alive at a time, at the price of one extra matmul in
backward. Three implementations share that contract:

* ``"eager"`` -- :func:`reference_linear_cross_entropy`: full logits + ``F.cross_entropy`` (the reference);
* ``"chunked"`` -- the chunked op with the softmax/CE steps in PyTorch (any device, the CPU fallback);
* ``"fused"`` -- the chunked op with the softmax/CE steps as Triton kernels
  (:mod:`train.kernels.triton_ce`: one read of the chunk for the loss, one in-place pass for the gradient).

Under autocast the matmuls run in the autocast dtype (bf16 on GPU) with fp32 softmax statistics; the
gradients come back in the inputs' own dtypes.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

LOSS_IMPLS = ("auto", "eager", "chunked", "fused")
CHUNK_BYTES = 256 * 2**20  # default budget for one chunk of logits


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def resolve_loss_impl(impl: str, device: torch.device | str) -> str:
    """``"auto"`` is ``"fused"`` on CUDA (``"chunked"`` if Triton is missing) and ``"eager"`` elsewhere."""
    if impl not in LOSS_IMPLS:
        raise ValueError(f"loss_impl must be one of {LOSS_IMPLS}, got {impl!r}")
    if impl == "auto":
        if torch.device(device).type == "cuda":
            return "fused" if triton_available() else "chunked"
        return "eager"
    return impl


def default_chunk_size(n_rows: int, vocab: int, dtype: torch.dtype) -> int:
    """Rows per chunk so one chunk of logits takes about :data:`CHUNK_BYTES`."""
    elem = torch.empty((), dtype=dtype).element_size()
    return max(1, min(n_rows, CHUNK_BYTES // max(1, vocab * elem)))


def reference_linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    n_classes: int | None = None,
) -> torch.Tensor:
    """The plain version: full logits (in fp32 at least), ``F.cross_entropy`` (mean over non-ignored targets)."""
    logits = (x @ weight.t())[:, :n_classes]
    return F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, ignore_index=ignore_index
    )


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk_size, use_triton, ignore_index, compute_dtype, block_v, n_classes):
        with torch.autocast(x.device.type, enabled=False):
            xc, wc = x.to(compute_dtype), weight.to(compute_dtype)
            n = x.shape[0]
            # softmax statistics in fp32 (fp64 when the inputs are fp64; the Triton kernels are fp32)
            stat = torch.float32 if use_triton else torch.promote_types(compute_dtype, torch.float32)
            lse = torch.empty(n, dtype=stat, device=x.device)
            loss_sum = torch.zeros((), dtype=stat, device=x.device)
            for s in range(0, n, chunk_size):
                e = min(n, s + chunk_size)
                logits = xc[s:e] @ wc.t()  # [chunk, rows of weight], the only logits alive
                t = targets[s:e]
                if use_triton:
                    from train.kernels import triton_ce

                    lse[s:e], loss = triton_ce.ce_forward(logits, t, ignore_index, block_v, n_classes)
                else:
                    lf = logits[:, :n_classes].to(stat)
                    lse[s:e] = torch.logsumexp(lf, dim=-1)
                    valid = t != ignore_index
                    target_logit = lf.gather(1, torch.where(valid, t, 0).unsqueeze(1)).squeeze(1)
                    loss = torch.where(valid, lse[s:e] - target_logit, 0.0)
                loss_sum += loss.sum()
                del logits
            n_valid = (targets != ignore_index).sum().clamp(min=1).to(stat)
        ctx.save_for_backward(x, weight, targets, lse, n_valid)
        ctx.args = (chunk_size, use_triton, ignore_index, compute_dtype, block_v, n_classes)
        return (loss_sum / n_valid).to(torch.promote_types(x.dtype, torch.float32))

    @staticmethod
    def backward(ctx, grad_loss):
        x, weight, targets, lse, n_valid = ctx.saved_tensors
        chunk_size, use_triton, ignore_index, compute_dtype, block_v, n_classes = ctx.args
        with torch.autocast(x.device.type, enabled=False):
            xc, wc = x.to(compute_dtype), weight.to(compute_dtype)
            stat = lse.dtype
            scale = (grad_loss.to(stat) / n_valid).reshape(1)
            grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
            grad_w = torch.zeros(weight.shape, dtype=stat, device=weight.device)
            n = x.shape[0]
            for s in range(0, n, chunk_size):
                e = min(n, s + chunk_size)
                logits = xc[s:e] @ wc.t()  # recomputed rather than stored
                t = targets[s:e]
                if use_triton:
                    from train.kernels import triton_ce

                    g = triton_ce.ce_backward_(logits, t, lse[s:e], scale, ignore_index, block_v, n_classes)
                    g[:, n_classes:] = 0  # padding rows of the weight (if any) get no gradient
                else:
                    p = torch.exp(logits[:, :n_classes].to(stat) - lse[s:e].unsqueeze(1))
                    valid = t != ignore_index
                    p[torch.arange(e - s, device=x.device), torch.where(valid, t, 0)] -= 1.0
                    g = (p * (scale * valid).unsqueeze(1)).to(compute_dtype)
                    g = F.pad(g, (0, logits.shape[1] - g.shape[1]))  # zero gradient for padding rows
                if grad_x is not None:
                    grad_x[s:e] = (g @ wc).to(x.dtype)
                grad_w += (g.t() @ xc[s:e]).to(stat)
                del logits, g
        grad_w = grad_w.to(weight.dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None, None, None, None, None, None, None


@torch.compiler.disable
def _chunked(x, weight, targets, chunk_size, use_triton, ignore_index, compute_dtype, block_v, n_classes):
    # Opaque to torch.compile (one graph break at the model's end): the op's whole point is the memory
    # schedule of its Python chunk loop, which the compiler would unroll and fuse away.
    return _ChunkedLinearCrossEntropy.apply(
        x, weight, targets, chunk_size, use_triton, ignore_index, compute_dtype, block_v, n_classes
    )


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    impl: str = "chunked",
    chunk_size: int | None = None,
    ignore_index: int = -100,
    block_v: int | None = None,
    n_classes: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``x @ weight.T`` (``x`` ``[N, D]``, ``weight`` ``[V, D]``) against ``targets`` ``[N]``.

    ``n_classes`` (default ``V``) counts the classes: only the first ``n_classes`` logits enter the softmax,
    so ``weight`` may carry padding rows that keep the matmuls aligned (they get a zero gradient).

    ``impl`` is ``"eager"``, ``"chunked"``, ``"fused"`` or ``"auto"`` (see :func:`resolve_loss_impl`).
    ``chunk_size`` is rows per chunk (default: about :data:`CHUNK_BYTES` of logits); ``block_v`` is the
    Triton kernels' vocabulary slice (default: the vocabulary rounded up to a power of 2, at most 4096).
    Targets equal to ``ignore_index`` contribute nothing and are not counted in the mean.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"expected x [N, D] and weight [V, D], got {tuple(x.shape)} and {tuple(weight.shape)}")
    if targets.shape != x.shape[:1]:
        raise ValueError(f"targets must be [N]={tuple(x.shape[:1])}, got {tuple(targets.shape)}")
    if n_classes is None:
        n_classes = weight.shape[0]
    if not 1 <= n_classes <= weight.shape[0]:
        raise ValueError(f"n_classes must be in [1, {weight.shape[0]}] (rows of weight), got {n_classes}")
    impl = resolve_loss_impl(impl, x.device)
    if impl == "eager":
        return reference_linear_cross_entropy(x, weight, targets, ignore_index, n_classes)
    use_triton = impl == "fused"
    if use_triton:
        if not triton_available():
            raise RuntimeError("loss_impl='fused' needs Triton (pip install triton); use 'chunked' instead")
        if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            raise RuntimeError(
                "loss_impl='fused' runs Triton kernels on CUDA (or on CPU under TRITON_INTERPRET=1); "
                "use 'chunked' or 'eager' on this device"
            )
    compute_dtype = _compute_dtype(x)
    if chunk_size is None:
        chunk_size = default_chunk_size(x.shape[0], weight.shape[0], compute_dtype)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    targets = targets.contiguous().to(torch.int64)
    return _chunked(
        x.contiguous(),
        weight,
        targets,
        int(chunk_size),
        use_triton,
        int(ignore_index),
        compute_dtype,
        block_v,
        int(n_classes),
    )
