"""The shard manifest (``manifest.json`` beside the shards): what a trainer checks before reading a row."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field

from schemas.documents import SchemaError

MANIFEST_VERSION = "1"
MANIFEST_NAME = "manifest.json"


class TokenizerInfo(BaseModel):
    kind: str = "byte-level-bpe"
    content_hash: str  # sha256 over the vocabulary and merges, not file bytes
    vocab_size: int
    eot_id: int
    path: str | None = None  # where the tokenizer files were written, relative to the manifest when possible


class SourceMix(BaseModel):
    """One row of the GPT-3 Table 2.2 style mix table."""

    weight: float  # target share of drawn tokens (normalised)
    documents: int
    tokens_available: int
    tokens_drawn: int
    epochs: float  # tokens_drawn / tokens_available
    realised_share: float


class ShardInfo(BaseModel):
    file: str  # relative to the manifest's folder
    rows: int
    tokens: int
    sha256: str


class ValidationSource(BaseModel):
    """One source's held-out documents: whole documents that no training shard contains."""

    documents: int  # documents held out
    tokens: int  # tokens of those documents (end-of-text included)
    tokens_packed: int  # tokens in validation rows (the final partial row of each source is dropped)


class ValidationSplit(BaseModel):
    """The per-source validation split: ``val-*.arrow`` shards (same schema as the training shards).

    Documents are chosen per source by a hash of (source, document id), independent of the mix seed, before
    any sampling, so they are never drawn, repeated or packed into a training shard. Rows are ordered by
    source, then by position in the source's validation stream (no shuffle: evaluation order is irrelevant).
    """

    fraction: float  # share of each source's documents held out (before the token cap)
    max_tokens_per_source: int  # cap on each source's held-out tokens (0 = none)
    total_tokens: int  # tokens in all validation shards
    sources: dict[str, ValidationSource]
    shards: list[ShardInfo]


class Manifest(BaseModel):
    schema_version: str = MANIFEST_VERSION
    shard_schema_version: str
    seq_len: int
    token_dtype: Literal["uint16", "uint32"]
    tokenizer: TokenizerInfo
    seed: int
    total_tokens: int
    sources: dict[str, SourceMix]
    shards: list[ShardInfo]
    # The held-out split; ``None`` in manifests written before it existed (a loader then holds out training rows).
    validation: ValidationSplit | None = None
    lineage: dict[str, str] = Field(default_factory=dict)  # input/config/code hashes

    @classmethod
    def from_json(cls, text: str | bytes, where: str = MANIFEST_NAME) -> Manifest:
        """Parse and version-check a manifest's text, read by whichever filesystem layer holds it (``where``
        names it in errors)."""
        data = json.loads(text)
        version = str(data.get("schema_version"))
        if version != MANIFEST_VERSION:
            raise SchemaError(f"{where}: manifest version {version!r}, this ccgpt reads {MANIFEST_VERSION!r}")
        return cls.model_validate(data)

    def to_json(self) -> str:
        """The text of ``manifest.json``, written by whichever filesystem layer holds the shards."""
        return self.model_dump_json(indent=2) + "\n"
