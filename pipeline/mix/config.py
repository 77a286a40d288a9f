"""The mix stage's options, and the one error every unmeetable mix raises."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class MixError(ValueError):
    """A mix that cannot be built as asked (bad weights, a weighted source with no documents, no full row)."""


@dataclass
class MixConfig:
    tokenizer: str = field(
        default="", metadata={"help": "tokenizer.json, its folder, GPT-2 encoder.json + vocab.bpe, or a .tiktoken file"}
    )
    weights: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "source -> target share of drawn tokens (normalised); unlisted sources are dropped"},
    )
    total_tokens: int = field(
        default=0,
        metadata={"help": "token budget to draw; 0 = the largest budget that repeats no source"},
    )
    seq_len: int = field(default=1024, metadata={"help": "context length; rows hold seq_len + 1 tokens"})
    rows_per_shard: int = field(
        default=8192,
        metadata={"help": "rows per Arrow shard file, on average (the shuffle spreads rows by hash range)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of document selection, epoch order and row shuffle"})
    pack_bucket_documents: int = field(
        default=10_000,
        metadata={
            "help": "documents one worker packs at a time: a source is packed in hash buckets of about this many "
            "documents (each bucket drops its own partial final row)"
        },
    )
    encode_batch_size: int = field(default=256, metadata={"help": "documents per tokenizer batch call"})
    val_fraction: float = field(
        default=0.01,
        metadata={
            "help": "share of each weighted source's documents held out as its validation split (chosen by a "
            "hash of the document id, never trained on); 0 = no validation split"
        },
    )
    val_max_tokens: int = field(
        default=1_000_000,
        metadata={
            "help": "cap on each source's held-out tokens (whole documents; at least one row is held out); 0 = no cap"
        },
    )
    max_epochs: float = field(
        default=0.0,
        metadata={
            "help": "most passes over a source's training tokens a weight may ask for (GPT-3's largest was "
            "3.4, Wikipedia); a weight that needs more is an error; 0 = no cap"
        },
    )

    def __post_init__(self) -> None:
        # The tokenizer and the weights are checked when the mix runs: a run config's default MixConfig has
        # neither (the run fills in the tokenizer it trained).
        if self.seq_len < 1 or self.rows_per_shard < 1 or self.total_tokens < 0 or self.pack_bucket_documents < 1:
            raise MixError(
                f"need seq_len >= 1, rows_per_shard >= 1, total_tokens >= 0, pack_bucket_documents >= 1 (got "
                f"{self.seq_len}, {self.rows_per_shard}, {self.total_tokens}, {self.pack_bucket_documents})"
            )
        if not 0.0 <= self.val_fraction < 1.0 or self.val_max_tokens < 0:
            raise MixError(
                f"need 0 <= val_fraction < 1 and val_max_tokens >= 0 (got {self.val_fraction}, {self.val_max_tokens})"
            )
        if not (math.isfinite(self.max_epochs) and self.max_epochs >= 0):
            raise MixError(f"max_epochs must be >= 0 (0 = no cap), got {self.max_epochs}")
