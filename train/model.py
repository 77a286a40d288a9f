"""A GPT-2 / GPT-3 decoder, meant to be read top to bottom.

The architecture is GPT-2's as GPT-3 kept it: learned absolute positions, pre-LayerNorm blocks (the norm
sits before attention and before the MLP, with a final norm after the last block), a 4x GELU MLP, and an
output head tied to the token embedding. Initialisation follows GPT-2: N(0, 0.02) everywhere, with the
projections that write into the residual stream scaled by 1/sqrt(2 * n_layer) so the residual's variance
does not grow with depth. GPT-3's one change, alternating dense and locally banded attention layers, is a
per-layer window handed to :mod:`train.attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

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
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_std)
        with torch.no_grad():
            self.wte.weight[cfg.vocab_size :].zero_()  # padding rows: never read, kept at zero
        self._register_load_state_dict_pre_hook(self._pad_vocab_rows)

    def _pad_vocab_rows(self, state_dict, prefix, *args) -> None:
        """Accept weights saved with ``vocab_size`` embedding rows (before the padding, or sliced for export)."""
        for key in (prefix + "wte.weight", prefix + "lm_head.weight"):
            t = state_dict.get(key)
            if t is not None and t.dim() == 2 and t.shape[0] == self.config.vocab_size < self.config.padded_vocab_size:
                state_dict[key] = F.pad(t, (0, 0, 0, self.config.padded_vocab_size - t.shape[0]))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

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
