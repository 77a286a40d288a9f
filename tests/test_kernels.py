"""Fused kernels against their plain references: linear + cross-entropy (chunked PyTorch and Triton) and
LayerNorm (Triton), outputs and gradients.

The Triton kernels are run for real on CPU by Triton's interpreter (``TRITON_INTERPRET=1``, fp32, tiny
sizes). The interpreter is chosen when the kernels are defined, so that check runs in a fresh Python
process with the variable set; the GPU test (skipped without CUDA) runs the compiled kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from train.config import ModelConfig
from train.kernels import (
    LayerNorm,
    layer_norm,
    linear_cross_entropy,
    reference_linear_cross_entropy,
    resolve_loss_impl,
    resolve_norm_impl,
    triton_available,
)
from train.model import GPT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, V = 16, 32, 100


def problem(dtype=torch.float64, device="cpu", seed=0, n=N, d=D):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype).to(device).requires_grad_()
    w = (0.3 * torch.randn(V, d, generator=g, dtype=dtype)).to(device).requires_grad_()
    t = torch.randint(0, V, (n,), generator=g)
    t[3] = -100  # ignored target
    return x, w, t.to(device)


def loss_and_grads(fn, x, w, t, **kw):
    loss = fn(x, w, t, **kw)
    gx, gw = torch.autograd.grad(loss * 1.7, (x, w))  # an upstream gradient other than 1
    return loss.detach(), gx, gw


@pytest.mark.parametrize("impl", ["eager", "chunked"])
def test_padding_rows_beyond_n_classes_change_nothing(impl):
    """A weight with padding rows (aligned matmuls) and ``n_classes`` gives the loss and gradients of the
    unpadded weight; the padding rows get a zero gradient."""
    x, w, t = problem()
    ref = loss_and_grads(reference_linear_cross_entropy, x, w, t)
    padded = torch.cat([w.detach(), torch.randn(5, w.shape[1], dtype=w.dtype)]).requires_grad_()
    loss, gx, gw = loss_and_grads(linear_cross_entropy, x, padded, t, impl=impl, chunk_size=7, n_classes=V)
    torch.testing.assert_close(loss, ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, ref[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw[:V], ref[2], rtol=1e-10, atol=1e-12)
    assert gw[V:].abs().sum() == 0
    with pytest.raises(ValueError, match="n_classes"):
        linear_cross_entropy(x, padded, t, impl=impl, n_classes=V + 6)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 1000])
def test_chunked_matches_reference(chunk_size):
    x, w, t = problem()
    ref = loss_and_grads(reference_linear_cross_entropy, x, w, t)
    out = loss_and_grads(linear_cross_entropy, x, w, t, impl="chunked", chunk_size=chunk_size)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class _Sizes(TorchDispatchMode):
    """Records the element count of every tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


def test_chunked_never_materialises_the_full_logits():
    n, d, c = 400, 8, 20  # many tokens: the full logits (n x V) dwarf one chunk (c x V) and the weight (V x d)
    x, w, t = problem(torch.float32, n=n, d=d)
    with _Sizes() as sizes:
        loss_and_grads(linear_cross_entropy, x, w, t, impl="chunked", chunk_size=c)
    assert sizes.largest <= max(c * V, V * d, n * d)  # one chunk of logits, the weight or the hidden states
    assert sizes.largest < n * V / 10
    with _Sizes() as sizes:
        loss_and_grads(reference_linear_cross_entropy, x, w, t)
    assert sizes.largest >= n * V  # the reference does hold them (so the probe works)


def test_all_targets_ignored_gives_zero_loss_and_grads():
    x, w, t = problem()
    t[:] = -100
    loss, gx, gw = loss_and_grads(linear_cross_entropy, x, w, t, impl="chunked", chunk_size=5)
    assert loss.item() == 0.0 and gx.abs().max() == 0 and gw.abs().max() == 0


def test_chunked_under_cpu_autocast():
    x, w, t = problem(torch.float32)
    ref = reference_linear_cross_entropy(x, w, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(x, w, t, impl="chunked", chunk_size=5)
    gx, gw = torch.autograd.grad(loss, (x, w))
    assert loss.dtype == torch.float32 and gx.dtype == x.dtype and gw.dtype == w.dtype
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)


def test_impl_resolution_and_errors():
    assert resolve_loss_impl("auto", "cpu") == "eager"
    assert resolve_loss_impl("auto", "cuda") == ("fused" if triton_available() else "chunked")
    with pytest.raises(ValueError):
        resolve_loss_impl("liger", "cpu")
    x, w, t = problem()
    if triton_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(RuntimeError, match="CUDA"):
            linear_cross_entropy(x, w, t, impl="fused")
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(x, w, t[:-1])


def test_model_chunked_loss_equals_eager():
    cfg = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=V, n_ctx=16)
    torch.manual_seed(0)
    eager = GPT(ModelConfig(**cfg, loss_impl="eager"))
    chunked = GPT(ModelConfig(**cfg, loss_impl="chunked"))
    chunked.load_state_dict(eager.state_dict())
    idx, y = torch.randint(0, V, (2, 16)), torch.randint(0, V, (2, 16))
    logits, loss_a = eager(idx, y)
    none, loss_b = chunked(idx, y)
    assert logits.shape == (2, 16, V) and none is None  # the chunked path hands back no logits
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
    for (name, pa), pb in zip(eager.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert chunked(idx)[0].shape == (2, 16, V)  # without targets: logits, as always


def _interpreter_env() -> dict[str, str]:
    """The environment of a ``TRITON_INTERPRET=1`` child: the repository first on its path, the caller's kept."""
    path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}


_INTERPRETED = """
import json, torch
from train.kernels import linear_cross_entropy, reference_linear_cross_entropy
from tests.test_kernels import problem, loss_and_grads
x, w, t = problem(torch.float32)
ref = loss_and_grads(reference_linear_cross_entropy, x, w, t)
# block_v=32 makes each row span 4 vocabulary slices, the last one ragged; chunk_size=5 leaves a ragged chunk
out = loss_and_grads(linear_cross_entropy, x, w, t, impl="fused", chunk_size=5, block_v=32)
# padding rows beyond n_classes (an aligned weight): same loss and gradients, zero gradient on the padding
padded = torch.cat([w.detach(), torch.randn(7, w.shape[1])]).requires_grad_()
pl, pgx, pgw = loss_and_grads(linear_cross_entropy, x, padded, t, impl="fused", chunk_size=5, block_v=32,
                              n_classes=w.shape[0])
pad = [float((pl - ref[0]).abs()), float((pgx - ref[1]).abs().max()), float((pgw[: w.shape[0]] - ref[2]).abs().max()),
       float(pgw[w.shape[0]:].abs().max())]
print(json.dumps([float((a - b).abs().max()) for a, b in zip(out, ref)] + [float(ref[0])] + pad))
"""


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_kernels_interpreted_on_cpu_match_reference():
    env = _interpreter_env()
    res = subprocess.run(
        [sys.executable, "-c", _INTERPRETED],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    d_loss, d_x, d_w, ref_loss, p_loss, p_x, p_w, p_pad = json.loads(res.stdout.strip().splitlines()[-1])
    assert ref_loss > 1.0  # a real loss (about log(100) for random weights)
    assert d_loss < 1e-5 and d_x < 1e-6 and d_w < 1e-6, (d_loss, d_x, d_w)
    assert p_loss < 1e-5 and p_x < 1e-6 and p_w < 1e-6 and p_pad == 0.0, (p_loss, p_x, p_w, p_pad)


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and triton")
@pytest.mark.parametrize("amp", [False, True])
def test_fused_on_gpu_matches_reference(amp):
    g = torch.Generator().manual_seed(0)
    n, d, v = 1000, 256, 50257  # GPT-2's vocabulary: rows span many BLOCK_V slices
    x = torch.randn(n, d, generator=g).cuda().requires_grad_()
    w = (0.02 * torch.randn(v, d, generator=g)).cuda().requires_grad_()
    t = torch.randint(0, v, (n,), generator=g).cuda()
    ref = loss_and_grads(reference_linear_cross_entropy, x, w, t)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = loss_and_grads(linear_cross_entropy, x, w, t, impl="fused", chunk_size=300)
    tol = 2e-2 if amp else 1e-4
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * b.abs().max().item())


_INTERPRETED_LN = """
import json, torch
from train.config import ModelConfig
from train.kernels import layer_norm, reference_layer_norm
from train.kernels import triton_layer_norm
from train.model import GPT
out = []
g = torch.Generator().manual_seed(0)
# width 48 pads to a 64-wide block; 37 rows over programs of 5 leave a ragged last program; no-bias variant
for n, bias, per in [(48, True, None), (48, False, 5)]:
    x = (3.0 + 2.0 * torch.randn(37, n, generator=g)).requires_grad_()
    w = (1 + 0.3 * torch.randn(n, generator=g)).requires_grad_()
    b = (0.3 * torch.randn(n, generator=g)).requires_grad_() if bias else None
    dy = torch.randn(37, n, generator=g)
    ins = [x, w] + ([b] if bias else [])
    ref = reference_layer_norm(x, w, b, 1e-5)
    ref_g = torch.autograd.grad(ref, ins, dy)
    y = layer_norm(x, w, b, 1e-5, impl="triton")
    got_g = torch.autograd.grad(y, ins, dy)
    if per:  # the kernel-level backward with another split of rows over programs
        _, mean, rstd = triton_layer_norm.forward(x.detach(), w.detach(), None, 1e-5, torch.float32)
        dx, dw, db = triton_layer_norm.backward(dy, x.detach(), w.detach(), mean, rstd, False, rows_per_program=per)
        got_g = (dx, dw)
    out.append([float((y - ref).abs().max())] + [float((a - c).abs().max()) for a, c in zip(got_g, ref_g)]
               + [float(ref_g[1].abs().max())])
# the whole model: Triton LayerNorms (3-D activations) against torch's, loss and every gradient
cfg = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_ctx=8)
torch.manual_seed(0)
a = GPT(ModelConfig(**cfg, norm_impl="torch"))
b = GPT(ModelConfig(**cfg, norm_impl="triton"))
b.load_state_dict(a.state_dict())
idx = torch.randint(0, 50, (2, 8), generator=g)
la, lb = a(idx, idx)[1], b(idx, idx)[1]
la.backward(); lb.backward()
grads = max(float((pa.grad - pb.grad).abs().max()) for pa, pb in zip(a.parameters(), b.parameters()))
out.append([float((la - lb).abs()), grads])
print(json.dumps(out))
"""


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_layer_norm_interpreted_on_cpu_matches_reference():
    env = _interpreter_env()
    res = subprocess.run(
        [sys.executable, "-c", _INTERPRETED_LN],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    biased, unbiased, model = json.loads(res.stdout.strip().splitlines()[-1])
    d_y, d_x, d_w, d_b, w_scale = biased
    assert w_scale > 1.0  # real gradients (the sum of dy * xhat over 37 rows)
    assert d_y < 1e-5 and d_x < 1e-5 and d_w < 1e-4 and d_b < 1e-4, biased
    assert max(unbiased[:3]) < 1e-4, unbiased
    assert model[0] < 1e-5 and model[1] < 1e-5, model


def test_layer_norm_module_and_impl_resolution():
    assert resolve_norm_impl("auto", "cpu") == "torch"
    assert resolve_norm_impl("auto", "cuda") == ("triton" if triton_available() else "torch")
    with pytest.raises(ValueError, match="norm_impl"):
        resolve_norm_impl("apex", "cpu")
    ln = LayerNorm(8, bias=False, impl="torch")
    assert isinstance(ln, torch.nn.LayerNorm) and ln.bias is None and set(ln.state_dict()) == {"weight"}
    x = torch.randn(3, 8)
    torch.testing.assert_close(ln(x), torch.nn.functional.layer_norm(x, (8,), ln.weight, None, 1e-5))
    if triton_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(RuntimeError, match="CUDA"):
            layer_norm(x, ln.weight, None, impl="triton")


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and triton")
@pytest.mark.parametrize("amp", [False, True])
def test_triton_layer_norm_on_gpu_matches_reference(amp):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1000, 768, generator=g).cuda().requires_grad_()
    w = (1 + 0.1 * torch.randn(768, generator=g)).cuda().requires_grad_()
    b = (0.1 * torch.randn(768, generator=g)).cuda().requires_grad_()
    dy = torch.randn(8, 1000, 768, generator=g).cuda()
    ref = torch.nn.functional.layer_norm(x, (768,), w, b)
    ref_g = torch.autograd.grad(ref, (x, w, b), dy)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        y = layer_norm(x, w, b, impl="triton")
    assert y.dtype == (torch.bfloat16 if amp else torch.float32)
    got_g = torch.autograd.grad(y, (x, w, b), dy.to(y.dtype))
    tol = 2e-2 if amp else 1e-4
    for a, r in zip((y, *got_g), (ref, *ref_g)):
        torch.testing.assert_close(a.float(), r, rtol=tol, atol=tol * r.abs().max().item())
