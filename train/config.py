"""Configuration for pretraining: the model shape (:class:`ModelConfig`) and the run (:class:`TrainConfig`).

Both are plain dataclasses so that ``schemas.config`` can turn every field into a ``--flag`` and load the
same fields from YAML; a run is fully described by one YAML file plus the flags given on top of it.

Model shapes come from named presets (:data:`PRESETS`): the GPT-3 family exactly as in Table 2.1 of
"Language Models are Few-Shot Learners" (Brown et al., 2020), plus tiny shapes that train on a laptop CPU.
A run picks a preset and may override single fields through :class:`ModelOverrides` (``--model.n_layer 4``);
fields left at ``None`` keep the preset's value. ``vocab_size`` and ``n_ctx`` of 0 mean "take it from the
shard manifest", so one preset serves every tokenizer and sequence length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from schemas.tasks import split_task_list
from train.storage import DEFAULT_CACHE_GIB, check_scheme

AttentionPattern = Literal["dense", "alternating"]
AttentionImpl = Literal["auto", "sdpa", "flex"]
LossImpl = Literal["auto", "eager", "chunked", "fused"]
NormImpl = Literal["auto", "torch", "triton"]
ParallelMode = Literal["ddp", "fsdp"]
ActivationCheckpointing = Literal["none", "block", "selective"]
BadStepAction = Literal["stop", "skip"]

# Fields that choose *how* the model computes, not *what*: a checkpoint trained with one value loads and
# resumes under another (e.g. trained with FlexAttention on a GPU, sampled with SDPA on a laptop).
IMPLEMENTATION_FIELDS = ("attention_impl", "loss_impl", "norm_impl")
VOCAB_MULTIPLE = 64  # embedding rows are padded to this (see ModelConfig.padded_vocab_size)


@dataclass
class ModelConfig:
    """Shape of a GPT-2/GPT-3 style decoder-only transformer."""

    n_layer: int = field(default=12, metadata={"help": "number of transformer blocks"})
    n_head: int = field(default=12, metadata={"help": "attention heads per block (n_embd must divide evenly)"})
    n_embd: int = field(default=768, metadata={"help": "model width d_model"})
    vocab_size: int = field(
        default=0,
        metadata={"help": "embedding rows; 0 = the tokenizer's vocab_size from the manifest (may be padded up)"},
    )
    n_ctx: int = field(default=0, metadata={"help": "learned positions; 0 = the manifest's seq_len"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on embeddings, attention and residuals"})
    bias: bool = field(default=True, metadata={"help": "biases in Linear layers and LayerNorms (GPT-2 has them)"})
    attention: AttentionPattern = field(
        default="dense",
        metadata={"help": "'dense' causal in every layer, or GPT-3's 'alternating' dense / locally banded layers"},
    )
    band_width: int = field(
        default=256,
        metadata={"help": "tokens a banded layer sees, itself included (only with attention=alternating)"},
    )
    doc_masking: bool = field(
        default=False,
        metadata={"help": "a token attends only to tokens of its own document in the packed row"},
    )
    attention_impl: AttentionImpl = field(
        default="auto",
        metadata={
            "help": "masked layers via 'sdpa' (explicit mask) or 'flex' (FlexAttention block mask); "
            "'auto' = flex on CUDA, sdpa elsewhere (FlexAttention has no CPU backward)"
        },
    )
    loss_impl: LossImpl = field(
        default="auto",
        metadata={
            "help": "output head + cross-entropy: 'eager' (full logits), 'chunked' (PyTorch, never holds "
            "all logits), 'fused' (Triton kernels, CUDA); 'auto' = fused on CUDA, eager elsewhere"
        },
    )
    norm_impl: NormImpl = field(
        default="auto",
        metadata={
            "help": "LayerNorms: 'torch' (F.layer_norm) or 'triton' (fused kernel, CUDA); "
            "'auto' = triton on CUDA, torch elsewhere and under torch.compile"
        },
    )

    def __post_init__(self) -> None:
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd < 1:
            raise ValueError(f"n_layer, n_head and n_embd must be positive, got {self}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.vocab_size < 0 or self.n_ctx < 0:
            raise ValueError("vocab_size and n_ctx must be >= 0 (0 = take from the manifest)")
        if self.attention not in ("dense", "alternating"):
            raise ValueError(f"attention must be 'dense' or 'alternating', got {self.attention!r}")
        if self.attention_impl not in ("auto", "sdpa", "flex"):
            raise ValueError(f"attention_impl must be 'auto', 'sdpa' or 'flex', got {self.attention_impl!r}")
        if self.loss_impl not in ("auto", "eager", "chunked", "fused"):
            raise ValueError(f"loss_impl must be 'auto', 'eager', 'chunked' or 'fused', got {self.loss_impl!r}")
        if self.norm_impl not in ("auto", "torch", "triton"):
            raise ValueError(f"norm_impl must be 'auto', 'torch' or 'triton', got {self.norm_impl!r}")
        if self.band_width < 1:
            raise ValueError(f"band_width must be >= 1, got {self.band_width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def same_model(self, other: ModelConfig) -> bool:
        """Equal up to :data:`IMPLEMENTATION_FIELDS`, i.e. the same weights mean the same function."""
        drop = {name: "auto" for name in IMPLEMENTATION_FIELDS}
        return dataclasses.replace(self, **drop) == dataclasses.replace(other, **drop)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding / output head: ``vocab_size`` rounded up to :data:`VOCAB_MULTIPLE`.

        An output matmul whose width is not a multiple of 8 (GPT-2's 50,257) misses cuBLAS's aligned
        tensor-core kernels: profiled on an H200, GPT-3 Small spent about 60 % of its GPU time in the
        output head's fallback (sm75) GEMMs. The extra rows are never looked up and their logits are
        dropped before the softmax, so the model computes exactly the function of ``vocab_size`` classes.
        """
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    def layer_window(self, layer: int) -> int | None:
        """How many past tokens (itself included) layer ``layer`` sees; ``None`` = the whole causal prefix.

        GPT-3 alternates dense and locally banded layers; the paper does not say which comes first, so
        even layers are dense (the first layer then sees the full context, as in the Sparse Transformer's
        dense-first stacks) and odd layers are banded.
        """
        if self.attention == "alternating" and layer % 2 == 1:
            return self.band_width
        return None

    def num_params(self, include_positions: bool = True) -> int:
        """Exact parameter count of :class:`train.model.GPT` with this config, computed without allocating.

        The token embedding is counted once because the output head shares it (tied weights).
        ``include_positions=False`` drops the position table, the convention of the scaling-law and
        FLOP-count literature (positions are a lookup, not a matmul).
        """
        if self.vocab_size <= 0 or self.n_ctx <= 0:
            raise ValueError("resolve vocab_size and n_ctx (from the manifest) before counting parameters")
        d, b = self.n_embd, int(self.bias)
        ln = d + b * d
        attn = d * 3 * d + b * 3 * d + d * d + b * d
        mlp = d * 4 * d + b * 4 * d + 4 * d * d + b * d
        block = 2 * ln + attn + mlp
        total = self.vocab_size * d + self.n_layer * block + ln
        if include_positions:
            total += self.n_ctx * d
        return total


@dataclass
class ModelOverrides:
    """Per-field overrides on top of a preset; ``None`` keeps the preset's value."""

    n_layer: int | None = field(default=None, metadata={"help": "override the preset's n_layer"})
    n_head: int | None = field(default=None, metadata={"help": "override the preset's n_head"})
    n_embd: int | None = field(default=None, metadata={"help": "override the preset's n_embd"})
    vocab_size: int | None = field(default=None, metadata={"help": "override vocab_size (0 = manifest)"})
    n_ctx: int | None = field(default=None, metadata={"help": "override n_ctx (0 = manifest seq_len)"})
    dropout: float | None = field(default=None, metadata={"help": "override dropout"})
    bias: bool | None = field(default=None, metadata={"help": "override bias"})
    attention: AttentionPattern | None = field(default=None, metadata={"help": "override the attention pattern"})
    band_width: int | None = field(default=None, metadata={"help": "override the banded layers' width"})
    doc_masking: bool | None = field(default=None, metadata={"help": "override document masking"})
    attention_impl: AttentionImpl | None = field(
        default=None, metadata={"help": "override the attention implementation (auto, sdpa, flex)"}
    )
    loss_impl: LossImpl | None = field(
        default=None, metadata={"help": "override the loss implementation (auto, eager, chunked, fused)"}
    )
    norm_impl: NormImpl | None = field(
        default=None, metadata={"help": "override the LayerNorm implementation (auto, torch, triton)"}
    )

    def apply(self, base: ModelConfig) -> ModelConfig:
        changes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class Gpt3Row:
    """One row of GPT-3's Table 2.1: the shape and the paper's own batch size and learning rate."""

    params: str
    n_layer: int
    n_embd: int
    n_head: int
    batch_tokens: int
    lr: float


# Table 2.1 of Brown et al. (2020). Two rows are inconsistent as printed, and the presets follow the
# columns that agree with the row's parameter count:
# * XL prints n_heads = 24 with d_head = 128 and d_model = 2048, but 24 * 128 = 3072 and 2048 / 24 is not
#   an integer. With d_model = 2048 the model has 1.3B parameters as stated, so the preset keeps d_model
#   and d_head = 128, i.e. 16 heads.
# * 13B prints d_model = 5140 with 40 heads of d_head = 128; 40 * 128 = 5120 (and 5140 / 40 is not an
#   integer), which gives the stated 13B parameters, so the preset uses 5120.
GPT3_TABLE: dict[str, Gpt3Row] = {
    "gpt3-small": Gpt3Row("125M", 12, 768, 12, 500_000, 6.0e-4),
    "gpt3-medium": Gpt3Row("350M", 24, 1024, 16, 500_000, 3.0e-4),
    "gpt3-large": Gpt3Row("760M", 24, 1536, 16, 500_000, 2.5e-4),
    "gpt3-xl": Gpt3Row("1.3B", 24, 2048, 16, 1_000_000, 2.0e-4),
    "gpt3-2.7b": Gpt3Row("2.7B", 32, 2560, 32, 1_000_000, 1.6e-4),
    "gpt3-6.7b": Gpt3Row("6.7B", 32, 4096, 32, 2_000_000, 1.2e-4),
    "gpt3-13b": Gpt3Row("13B", 40, 5120, 40, 2_000_000, 1.0e-4),
    "gpt3-175b": Gpt3Row("175B", 96, 12288, 96, 3_200_000, 0.6e-4),
}

# The GPT-3 vocabulary (GPT-2's byte-level BPE); only used to quote parameter counts comparable to the paper.
GPT3_VOCAB_SIZE = 50257
GPT3_N_CTX = 2048

PRESETS: dict[str, ModelConfig] = {
    # GPT-3 used alternating dense / locally banded layers "similar to the Sparse Transformer"; the band
    # width is not published, 256 is the default here.
    **{
        name: ModelConfig(
            n_layer=row.n_layer, n_head=row.n_head, n_embd=row.n_embd, n_ctx=GPT3_N_CTX, attention="alternating"
        )
        for name, row in GPT3_TABLE.items()
    },
    # CPU-sized shapes for smoke runs and tests. Non-embedding parameters: nano ~0.1M, tiny ~0.8M, mini ~4.7M;
    # the embedding adds vocab_size * n_embd on top.
    "nano": ModelConfig(n_layer=2, n_head=2, n_embd=64),
    "tiny": ModelConfig(n_layer=4, n_head=4, n_embd=128),
    "mini": ModelConfig(n_layer=6, n_head=8, n_embd=256),
}

# Short names as the paper's text uses them ("GPT-3 Small", "GPT-3 XL", ...).
PRESET_ALIASES: dict[str, str] = {
    "small": "gpt3-small",
    "medium": "gpt3-medium",
    "large": "gpt3-large",
    "xl": "gpt3-xl",
    "2.7b": "gpt3-2.7b",
    "6.7b": "gpt3-6.7b",
    "13b": "gpt3-13b",
    "175b": "gpt3-175b",
    "gpt3": "gpt3-175b",
}


def get_preset(name: str) -> ModelConfig:
    key = name.lower()
    key = PRESET_ALIASES.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)} (aliases: {sorted(PRESET_ALIASES)})")
    return dataclasses.replace(PRESETS[key])


@dataclass
class TrainConfig:
    """One pretraining run. Batch sizes are per process; the global batch is batch_size * grad_accum * world."""

    shards: str = field(
        default="runs/shards",
        metadata={
            "help": "folder holding manifest.json and the shard files: a local path, or s3:// gs:// hdfs:// "
            "(fetched into shard_cache as they are read, each verified against the manifest's sha256)"
        },
    )
    shard_cache: str = field(
        default="",
        metadata={
            "help": "local folder for shards fetched from an object store ('' = <system temp>/ccgpt-shards/"
            "<manifest hash>); local shards are read in place"
        },
    )
    shard_cache_gib: float = field(
        default=DEFAULT_CACHE_GIB,
        metadata={
            "help": "size cap of shard_cache in GiB: least recently used shards are evicted beyond it "
            "(a shard larger than the cap is an error)"
        },
    )
    out: str = field(
        default="runs/train", metadata={"help": "output folder: checkpoints/step-N/, log.jsonl, summary.json"}
    )
    preset: str = field(default="tiny", metadata={"help": "model shape: gpt3-small ... gpt3-175b, nano, tiny, mini"})
    model: ModelOverrides = field(default_factory=ModelOverrides, metadata={"help": "per-field model overrides"})
    batch_size: int = field(default=8, metadata={"help": "rows per micro-batch on each process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    lr: float = field(default=6e-4, metadata={"help": "peak learning rate (GPT-3 small used 6e-4)"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine decays to lr * this (GPT-3: 10%%)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warmup steps"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer step at which this run stops"})
    decay_steps: int = field(
        default=0,
        metadata={
            "help": "length of warmup + cosine schedule; 0 = max_steps (set it to stop early on a longer schedule)"
        },
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decoupled weight decay on matmul weights"})
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata={"help": "AdamW betas (GPT-3: 0.9 0.95)"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the global gradient norm to this; 0 = no clipping"})
    seed: int = field(default=1337, metadata={"help": "seed for initialisation, data order and dropout"})
    eval_every: int = field(
        default=200, metadata={"help": "held-out evaluation every N steps (and at the end); 0 = never"}
    )
    eval_rows: int = field(
        default=256,
        metadata={
            "help": (
                "evaluation rows, stratified by source: from the shards' validation split; for manifests without "
                "one, held out of the training rows (capped at 10%% of rows)"
            )
        },
    )
    eval_tasks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "downstream tasks (names in schemas/task_files or task files, e.g. blimp wikitext2) scored on the "
            "in-memory model after each held-out evaluation, on a subset of eval_task_limit examples"
        },
    )
    eval_task_limit: int = field(
        default=20, metadata={"help": "examples per task or subtask (per BLiMP paradigm) scored during training"}
    )
    eval_data_root: str = field(
        default="", metadata={"help": "folder the task files' data paths are relative to ('' = CCGPT_DATA_ROOT)"}
    )
    log_every: int = field(default=10, metadata={"help": "write a log.jsonl record and a progress line every N steps"})
    checkpoint_every: int = field(
        default=500, metadata={"help": "write a checkpoint every N steps (and at the end); 0 = end only"}
    )
    keep_checkpoints: int = field(
        default=2, metadata={"help": "keep the newest N checkpoints (sharded DCP folders under out/checkpoints/)"}
    )
    device: str = field(
        default="auto", metadata={"help": "'auto' (cuda if present, else cpu), 'cpu', 'cuda', 'cuda:1'"}
    )
    dtype: Literal["auto", "float32", "bfloat16"] = field(
        default="auto", metadata={"help": "'auto' = bf16 autocast on CUDA, float32 elsewhere"}
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per rank"})
    resume: bool = field(
        default=False,
        metadata={"help": "continue from the newest checkpoint in out/checkpoints/ (fresh start if none)"},
    )
    peak_flops: float = field(
        default=0.0,
        metadata={"help": "peak FLOP/s of one device for MFU; 0 = the known bf16 peak on CUDA, MFU null on CPU"},
    )
    verify_sha256: bool = field(
        default=True,
        metadata={
            "help": "hash every local shard against the manifest before the first step (each rank a disjoint share);"
            " shards on an object store are verified as each is fetched, whatever this says"
        },
    )
    tokenizer_hash: str = field(
        default="", metadata={"help": "require this tokenizer content_hash in the manifest ('' = accept any)"}
    )
    parallel: ParallelMode = field(
        default="ddp",
        metadata={
            "help": "with several processes (torchrun): 'ddp' (replicated weights) or 'fsdp' "
            "(FSDP2 fully_shard per block + root: weights, gradients, optimizer state sharded)"
        },
    )
    on_bad_step: BadStepAction = field(
        default="stop",
        metadata={
            "help": "a step whose loss or gradient norm is NaN/inf, or whose loss spikes (loss_spike_factor): "
            "'stop' (an error naming the checkpoint to resume from) or 'skip' (no update; the batch is dropped)"
        },
    )
    loss_spike_factor: float = field(
        default=0.0,
        metadata={
            "help": "a loss above this many times the running mean of the previous losses is a bad step "
            "(after 10 steps; 0 = only NaN/inf are)"
        },
    )
    activation_checkpointing: ActivationCheckpointing = field(
        default="none",
        metadata={
            "help": "recompute activations in the backward instead of keeping them: 'none', 'block' (keep only "
            "each block's input), 'selective' (keep matmul and attention outputs, recompute norms, GELU, dropout)"
        },
    )
    compile: bool = field(
        default=False, metadata={"help": "wrap the model in torch.compile (inductor needs a C++ compiler on CPU)"}
    )
    compile_backend: str = field(
        default="inductor",
        metadata={
            "help": "torch.compile backend: 'inductor' (generated kernels), or e.g. 'aot_eager' to check "
            "graph capture without code generation"
        },
    )
    tensorboard: bool = field(
        default=True,
        metadata={
            "help": "also write the logged scalars as TensorBoard events to out/tensorboard "
            "(skipped with a note when the tensorboard package is not installed)"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelOverrides(**self.model)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2:
            raise ValueError(f"betas needs two values, got {self.betas}")
        self.eval_tasks = split_task_list(self.eval_tasks)
        for name in ("batch_size", "grad_accum", "max_steps", "eval_task_limit", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "warmup_steps",
            "decay_steps",
            "eval_every",
            "eval_rows",
            "log_every",
            "checkpoint_every",
            "num_workers",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.on_bad_step not in ("stop", "skip"):
            raise ValueError(f"on_bad_step must be 'stop' or 'skip', got {self.on_bad_step!r}")
        if self.loss_spike_factor < 0 or 0 < self.loss_spike_factor <= 1:
            raise ValueError(f"loss_spike_factor must be 0 (off) or > 1, got {self.loss_spike_factor}")
        if self.activation_checkpointing not in ("none", "block", "selective"):
            raise ValueError(
                "activation_checkpointing must be 'none', 'block' or 'selective', "
                f"got {self.activation_checkpointing!r}"
            )
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if not self.shard_cache_gib > 0:
            raise ValueError(f"shard_cache_gib must be > 0, got {self.shard_cache_gib}")
        check_scheme(self.shards)  # an unknown scheme fails here, before any work

    def base_model_config(self) -> ModelConfig:
        """The preset with the overrides applied; vocab_size / n_ctx may still be 0 (resolved from the data)."""
        return self.model.apply(get_preset(self.preset))
