"""Versioned contracts between ccgpt's stages.

`pipeline/` writes these, `train/` reads them; `train/` imports only this package, never `pipeline/`.
Every reader calls the matching ``validate_*`` function so a wrong schema or version fails with a clear
message before any row is used.

Its names are imported on first use (PEP 562), so importing the package imports none of its modules: Beam's
SDK harness imports modules on several threads at once, and an ``__init__`` importing its own modules can
deadlock against a thread that started at one of them (``pipeline/lazy.py`` says how). ``schemas`` imports
nothing of ``pipeline``'s, so it keeps its own few lines for it.
"""

import importlib
from typing import Any

_EXPORTS = {
    "DOCUMENT_SCHEMA": "schemas.documents",
    "DOCUMENT_SCHEMA_VERSION": "schemas.documents",
    "SchemaError": "schemas.documents",
    "document_row": "schemas.documents",
    "validate_document_schema": "schemas.documents",
    "MANIFEST_VERSION": "schemas.manifest",
    "Manifest": "schemas.manifest",
    "ShardInfo": "schemas.manifest",
    "SourceMix": "schemas.manifest",
    "TokenizerInfo": "schemas.manifest",
    "SHARD_SCHEMA_VERSION": "schemas.shards",
    "shard_schema": "schemas.shards",
    "validate_shard_schema": "schemas.shards",
    "StageStats": "schemas.stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
