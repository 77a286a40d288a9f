"""The shard manifest (``manifest.json`` beside the shards): what a trainer checks before reading a row."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Literal

from pydantic import BaseModel, Field

from schemas.documents import SchemaError

MANIFEST_VERSION = "1"


def file_sha256(path: str) -> str:
    """The checksum a manifest records for a file (streamed in 8 MiB blocks, never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 23):
            h.update(block)
    return h.hexdigest()


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
    lineage: dict[str, str] = Field(default_factory=dict)  # input/config/code hashes

    @classmethod
    def load(cls, path: str) -> "Manifest":
        """Load and version-check ``manifest.json`` (``path`` may be the file or its folder)."""
        if os.path.isdir(path):
            path = os.path.join(path, "manifest.json")
        if not os.path.exists(path):
            raise SchemaError(f"{path}: manifest not found")
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        version = str(data.get("schema_version"))
        if version != MANIFEST_VERSION:
            raise SchemaError(f"{path}: manifest version {version!r}, this ccgpt reads {MANIFEST_VERSION!r}")
        return cls.model_validate(data)

    def save(self, path: str) -> None:
        """Write atomically (temp file, then rename)."""
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(self.model_dump_json(indent=2))
            fh.write("\n")
        os.replace(tmp, path)
