"""Versioned contracts between ccgpt's stages.

`pipeline/` writes these, `train/` reads them; `train/` imports only this package, never `pipeline/`.
Every reader calls the matching ``validate_*`` function so a wrong schema or version fails with a clear
message before any row is used.
"""

from schemas.documents import (
    DOCUMENT_SCHEMA,
    DOCUMENT_SCHEMA_VERSION,
    SchemaError,
    document_row,
    validate_document_schema,
)
from schemas.manifest import MANIFEST_VERSION, Manifest, ShardInfo, SourceMix, TokenizerInfo
from schemas.shards import SHARD_SCHEMA_VERSION, shard_schema, validate_shard_schema
from schemas.stats import StageStats

__all__ = [
    "DOCUMENT_SCHEMA",
    "DOCUMENT_SCHEMA_VERSION",
    "MANIFEST_VERSION",
    "Manifest",
    "SHARD_SCHEMA_VERSION",
    "SchemaError",
    "ShardInfo",
    "SourceMix",
    "StageStats",
    "TokenizerInfo",
    "document_row",
    "shard_schema",
    "validate_document_schema",
    "validate_shard_schema",
]
