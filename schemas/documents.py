"""The document table: what curation, quality, dedup and source builders read and write.

Stored as Parquet files (``*.parquet``) in a stage's output folder, so any Beam runner can write them with
``beam.io.WriteToParquet`` and any tool (pyarrow, DuckDB, Spark) can read them. The schema version travels
in the Arrow schema metadata.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

DOCUMENT_SCHEMA_VERSION = "1"


class SchemaError(ValueError):
    """Raised when a file does not carry the schema (or version) a stage expects."""


DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # stable: derived from source + record identity
        pa.field("source", pa.string(), nullable=False),  # mix source name: "crawl", "books", ...
        pa.field("url", pa.string()),
        pa.field("warc_record_id", pa.string()),
        pa.field("date", pa.string()),  # ISO-8601 (WARC-Date for crawl records)
        pa.field("source_file", pa.string()),  # file the record was read from
        pa.field("source_offset", pa.int64()),  # byte offset of the record in that file (-1 if n/a)
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("quality_score", pa.float32()),  # null until the quality stage scores it
        pa.field("annotations", pa.string()),  # JSON object: stage-specific notes (dedup cluster, ...)
    ],
    metadata={b"ccgpt.schema": b"documents", b"ccgpt.schema_version": DOCUMENT_SCHEMA_VERSION.encode()},
)

_DEFAULTS: dict[str, Any] = {
    "url": None,
    "warc_record_id": None,
    "date": None,
    "source_file": None,
    "source_offset": -1,
    "language": None,
    "language_score": None,
    "quality_score": None,
    "annotations": "{}",
}


def document_row(**fields: Any) -> dict[str, Any]:
    """A document as a plain dict with every schema field present (defaults filled in).

    ``annotations`` may be given as a dict; it is stored as a JSON string.
    """
    unknown = set(fields) - set(DOCUMENT_SCHEMA.names)
    if unknown:
        raise SchemaError(f"unknown document fields: {sorted(unknown)}")
    for required in ("id", "source", "text"):
        if fields.get(required) is None:
            raise SchemaError(f"document field {required!r} is required")
    row = {**_DEFAULTS, **fields}
    if isinstance(row["annotations"], dict):
        row["annotations"] = json.dumps(row["annotations"], sort_keys=True)
    return {name: row[name] for name in DOCUMENT_SCHEMA.names}


def validate_document_schema(schema: pa.Schema, where: str = "input") -> None:
    """Fail clearly unless ``schema`` is the document schema at the current version."""
    meta = schema.metadata or {}
    kind = meta.get(b"ccgpt.schema", b"").decode()
    version = meta.get(b"ccgpt.schema_version", b"").decode()
    if kind != "documents":
        raise SchemaError(f"{where}: not a ccgpt document table (schema tag {kind!r})")
    if version != DOCUMENT_SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: document schema version {version!r}, this ccgpt reads version {DOCUMENT_SCHEMA_VERSION!r}"
        )
    missing = [f.name for f in DOCUMENT_SCHEMA if f.name not in schema.names]
    if missing:
        raise SchemaError(f"{where}: document table lacks fields {missing}")
    for f in DOCUMENT_SCHEMA:
        got = schema.field(f.name).type
        if got != f.type:
            raise SchemaError(f"{where}: field {f.name!r} has type {got}, expected {f.type}")
