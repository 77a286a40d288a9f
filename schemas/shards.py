"""Token shards: Arrow IPC files (``shard-00000.arrow``) of packed training rows.

Each row is ``seq_len + 1`` token ids (inputs and shifted targets come from the same row), packed from
documents of one source joined by the end-of-text token. ``doc_offsets`` lists the positions in the row
where a document starts, so a trainer can mask attention across documents. The validation split
(``val-00000.arrow`` ...) has the same schema. Files open with plain ``pyarrow.ipc.open_file``
(memory-mappable); nothing here needs ccgpt to read.

The IPC *file* format (not the stream format) is chosen on purpose: its footer records where every record
batch lies, so a memory-mapped reader reaches any row in O(1) without scanning the file, and the loader
opens thousands of shards cheaply. Readers that take only the stream format (Hugging Face
``Dataset.from_file``) get it zero-copy by skipping the file's 8-byte magic: README, "Reading the shards
without ccgpt".
"""

from __future__ import annotations

import pyarrow as pa

from schemas.documents import SchemaError

SHARD_SCHEMA_VERSION = "1"

TOKEN_DTYPES = {"uint16": pa.uint16(), "uint32": pa.uint32()}


def token_dtype_for(vocab_size: int) -> str:
    """The narrowest unsigned dtype that holds every token id of a vocabulary."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def shard_schema(token_dtype: str) -> pa.Schema:
    if token_dtype not in TOKEN_DTYPES:
        raise SchemaError(f"token dtype {token_dtype!r} is not one of {sorted(TOKEN_DTYPES)}")
    return pa.schema(
        [
            pa.field("tokens", pa.list_(TOKEN_DTYPES[token_dtype]), nullable=False),
            pa.field("doc_offsets", pa.list_(pa.int32()), nullable=False),
            pa.field("source", pa.string(), nullable=False),
        ],
        metadata={
            b"ccgpt.schema": b"shards",
            b"ccgpt.schema_version": SHARD_SCHEMA_VERSION.encode(),
            b"ccgpt.token_dtype": token_dtype.encode(),
        },
    )


def validate_shard_schema(schema: pa.Schema, where: str = "shard") -> str:
    """Check a shard file's schema; return its token dtype."""
    meta = schema.metadata or {}
    if meta.get(b"ccgpt.schema") != b"shards":
        raise SchemaError(f"{where}: not a ccgpt token shard")
    version = meta.get(b"ccgpt.schema_version", b"").decode()
    if version != SHARD_SCHEMA_VERSION:
        raise SchemaError(f"{where}: shard schema version {version!r}, expected {SHARD_SCHEMA_VERSION!r}")
    dtype = meta.get(b"ccgpt.token_dtype", b"").decode()
    expected = shard_schema(dtype)
    if not schema.remove_metadata().equals(expected.remove_metadata()):
        raise SchemaError(f"{where}: shard columns {schema.names} / types differ from the {dtype} shard schema")
    return dtype
