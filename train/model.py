"""A GPT-2 / GPT-3 decoder, meant to be read top to bottom.

The architecture is GPT-2's as GPT-3 kept it: learned absolute positions, pre-LayerNorm blocks (the norm
sits before attention and before the MLP, with a final norm after the last block), a 4x GELU MLP, and an
output head tied to the token embedding. Initialisation follows GPT-2: N(0, 0.02) everywhere, with the
projections that write into the residual stream scaled by 1/sqrt(2 * n_layer) so the residual's variance
does not grow with depth. GPT-3's one change, alternating dense and locally banded attention layers, is a
per-layer window handed to :mod:`train.attention`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from train.attention import AttentionContext, causal_attention
from train.config import ModelConfig
from train.kernels import LayerNorm, linear_cross_entropy, resolve_loss_impl


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        self.n_head = cfg.n_head
        self.window = window  # None = dense causal; else the local band width
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # writes into the residual stream
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # [B, T, C] -> [B, H, T, D]
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = causal_attention(q, k, v, ctx, self.window, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()  # exact erf GELU; GPT-2 used the tanh approximation, the difference is noise
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # writes into the residual stream
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, bias=cfg.bias, impl=cfg.norm_impl)
        self.attn = CausalSelfAttention(cfg, window)
        self.ln_2 = LayerNorm(cfg.n_embd, bias=cfg.bias, impl=cfg.norm_impl)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), ctx)
        x = x + self.mlp(self.ln_2(x))
        return x


# Ops whose outputs selective checkpointing keeps: the matmuls and attention (the costly recomputation);
# everything else in a block (LayerNorm, GELU, dropout, adds, views) is recomputed in the backward.
_SAVED_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
}


def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _checkpointed(block: nn.Module, x: torch.Tensor, ctx: AttentionContext, mode: str) -> torch.Tensor:
    """``block(x, ctx)`` under activation checkpointing: "block" keeps only the block's input and recomputes the
    block in the backward; "selective" keeps the matmul and attention outputs too. The RNG state is restored
    for the recomputation, so dropout draws the same masks and the gradients equal the plain backward's."""
    if mode == "block":
        return checkpoint(block, x, ctx, use_reentrant=False)
    return checkpoint(
        block,
        x,
        ctx,
        use_reentrant=False,
        context_fn=functools.partial(create_selective_checkpoint_contexts, _selective_policy),
    )


def _local(p: torch.Tensor) -> torch.Tensor:
    """The rows this rank holds: a sharded parameter's local shard, else the tensor itself."""
    return p.to_local() if isinstance(p, DTensor) else p


def _local_rows(p: DTensor) -> tuple[torch.Tensor, int]:
    """A dim-0 sharded parameter's local rows and the global index of its first row (FSDP2 splits with
    ``torch.chunk``)."""
    mesh = p.device_mesh
    rank, world = mesh.get_local_rank(), mesh.size()
    per = -(-p.shape[0] // world)
    return p.to_local(), min(rank * per, p.shape[0])


def _normal(p: torch.Tensor, std: float) -> None:
    """``p`` ~ N(0, std), drawn as one process draws it whatever the sharding (see :meth:`GPT.init_weights`)."""
    if not isinstance(p, DTensor):
        nn.init.normal_(p, mean=0.0, std=std)
        return
    local, start = _local_rows(p)
    full = torch.empty(p.shape, dtype=local.dtype)  # on CPU, like GPT(cfg) built on CPU and then moved
    nn.init.normal_(full, mean=0.0, std=std)
    local.copy_(full[start : start + local.shape[0]])


def _replay_construction_draws(model: nn.Module) -> None:
    """Draw what constructing ``model``'s ``nn.Linear`` / ``nn.Embedding`` layers on CPU draws (their default
    ``reset_parameters``), in construction order, into throwaway tensors of the same sizes."""
    for module in model.modules():  # registration order = construction order
        if isinstance(module, nn.Linear):
            torch.empty(module.weight.shape).uniform_()  # kaiming_uniform_
            if module.bias is not None:
                torch.empty(module.bias.shape).uniform_()
        elif isinstance(module, nn.Embedding):
            torch.empty(module.weight.shape).normal_()


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0 or cfg.n_ctx <= 0:
            raise ValueError("ModelConfig.vocab_size and n_ctx must be resolved (from the manifest) before building")
        self.config = cfg
        # padded_vocab_size rows: aligned output matmuls; the padding's logits are dropped (config docstring)
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, cfg.layer_window(i)) for i in range(cfg.n_layer))
        self.ln_f = LayerNorm(cfg.n_embd, bias=cfg.bias, impl=cfg.norm_impl)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        # Tied embeddings: the output head reads logits off the input embedding (one matrix, one gradient).
        self.lm_head.weight = self.wte.weight
        # "none" | "block" | "selective" (TrainConfig.activation_checkpointing): what the backward recomputes
        self.activation_checkpointing = "none"
        if self.wte.weight.device.type != "meta":  # built on meta: materialised later (to_empty + init_weights)
            self.init_weights()
        self._register_load_state_dict_pre_hook(self._pad_vocab_rows)

    @torch.no_grad()
    def init_weights(self, from_meta: bool = False) -> None:
        """GPT-2's initialisation: N(0, 0.02) matmuls and embeddings, N(0, 0.02 / sqrt(2 * n_layer)) residual
        projections, unit LayerNorm scales, zero biases and zero vocabulary-padding rows.

        A parameter sharded by FSDP2 (a DTensor, dim 0 split in ``torch.chunk`` rows) is drawn whole on CPU, one
        parameter at a time, and keeps only its own rows: every rank draws the same CPU stream as one process
        building the model does, so the initial weights are identical at any world size, and the only unsharded
        memory is one parameter (every rank spends the time of drawing all of them). ``from_meta``: the model
        was built on ``meta``, where ``nn.Linear`` / ``nn.Embedding`` drew nothing, so first make those default
        draws (into throwaway tensors, one at a time) to bring the stream to where building on CPU leaves it.
        """
        if from_meta:
            _replay_construction_draws(self)
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                _normal(p, residual_std)
        wte = self.wte.weight
        vocab = self.config.vocab_size
        if isinstance(wte, DTensor):  # padding rows: never read, kept at zero
            local, start = _local_rows(wte)
            if start + local.shape[0] > vocab:
                local[max(vocab - start, 0) :].zero_()
        else:
            wte[vocab:].zero_()

    def _pad_vocab_rows(self, state_dict, prefix, *args) -> None:
        """Accept weights saved with ``vocab_size`` embedding rows (before the padding, or sliced for export)."""
        for key in (prefix + "wte.weight", prefix + "lm_head.weight"):
            t = state_dict.get(key)
            if t is not None and t.dim() == 2 and t.shape[0] == self.config.vocab_size < self.config.padded_vocab_size:
                state_dict[key] = F.pad(t, (0, 0, 0, self.config.padded_vocab_size - t.shape[0]))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            _normal(module.weight, 0.02)
            if module.bias is not None:
                _local(module.bias).zero_()
        elif isinstance(module, nn.Embedding):
            _normal(module.weight, 0.02)
        elif isinstance(module, nn.LayerNorm):
            _local(module.weight).fill_(1.0)
            if module.bias is not None:
                _local(module.bias).zero_()

    def num_params(self, include_positions: bool = True) -> int:
        """Parameters counted once (the tied head shares the token embedding), the vocabulary padding not."""
        padding = (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        n = sum(p.numel() for p in self.parameters()) - padding
        return n if include_positions else n - self.wpe.weight.numel()

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits ``[B, T, vocab]`` and, with ``targets``, the mean next-token cross-entropy.

        ``doc_ids`` (``[B, T]``, see :func:`train.attention.doc_ids_from_offsets`) is used only when the
        config enables document masking, so a batch can always carry it.

        With ``targets`` and a chunked or fused ``loss_impl`` (the default on CUDA) the loss is computed
        straight from the final hidden states by :func:`train.kernels.linear_cross_entropy`, which never
        holds the full logits, and the returned logits are ``None``.
        """
        B, T = idx.shape
        if T > self.config.n_ctx:
            raise ValueError(f"sequence of {T} tokens is longer than the model's n_ctx={self.config.n_ctx}")
        ctx = AttentionContext(
            T,
            idx.device,
            doc_ids if self.config.doc_masking else None,
            impl=self.config.attention_impl,
            head_dim=self.config.head_dim,
        )
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            if self.training and self.activation_checkpointing != "none" and torch.is_grad_enabled():
                x = _checkpointed(block, x, ctx, self.activation_checkpointing)
            else:
                x = block(x, ctx)
        x = self.ln_f(x)
        if targets is not None and resolve_loss_impl(self.config.loss_impl, idx.device) != "eager":
            impl = resolve_loss_impl(self.config.loss_impl, idx.device)
            loss = linear_cross_entropy(
                x.reshape(B * T, -1),
                self.lm_head.weight,
                targets.reshape(-1),
                impl=impl,
                n_classes=self.config.vocab_size,
            )
            return None, loss
        logits = self.lm_head(x)[..., : self.config.vocab_size]  # aligned matmul, padding columns dropped
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def configure_optimizers(
        self,
        weight_decay: float,
        lr: float,
        betas: tuple[float, float],
        device_type: str,
        eps: float = 1e-8,
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matmul weights only.

        Decay pulls weights towards 0; that is a useful prior for the Linear layers' matrices but not for
        LayerNorm gains (their neutral value is 1), biases, or embedding rows (rare tokens would be
        shrunk simply for being rare). The fused kernel is CUDA only.
        """
        no_decay_ids: set[int] = set()
        for module in self.modules():
            if isinstance(module, (nn.LayerNorm, nn.Embedding)):
                no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
        decay, no_decay = [], []
        for _, p in self.named_parameters():  # named_parameters() yields the tied matrix once
            if not p.requires_grad:
                continue
            (no_decay if id(p) in no_decay_ids or p.dim() < 2 else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        kwargs = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: ``6N + 12 L H Q T``.

        ``N`` counts every matmul weight, including the tied output head, but not the position table
        (a lookup). The attention term charges each layer for the keys it really scores: ``T`` for a
        dense layer, ``min(window, T)`` for a banded one. Like PaLM, causal layers are charged the full
        ``T`` (no halving for the masked upper triangle), which keeps MFU comparable across papers.
        """
        cfg = self.config
        T = seq_len or cfg.n_ctx
        N = self.num_params(include_positions=False)
        attended = 0
        for i in range(cfg.n_layer):
            window = cfg.layer_window(i)
            attended += T if window is None else min(window, T)
        return 6.0 * N + 12.0 * cfg.n_head * cfg.head_dim * attended
