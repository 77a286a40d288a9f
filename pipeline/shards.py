"""Read and verify token shards: the check a trainer (or a person) runs before trusting a shard folder.

``verify_shards`` re-derives everything the manifest claims from the files themselves (checksums, row and
token counts, per-source tokens) and checks the packing invariants a trainer relies on: every row is
``seq_len + 1`` ids below the vocabulary size, and ``doc_offsets`` are sorted positions inside the row, each
right after an end-of-text token. It collects every problem and raises one :class:`ShardError` listing them,
so a corrupt, truncated or missing file reads as a clear message, never as a pyarrow traceback.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from schemas.documents import SchemaError
from schemas.manifest import Manifest, file_sha256
from schemas.shards import SHARD_SCHEMA_VERSION, validate_shard_schema


class ShardError(SchemaError):
    """A shard folder that does not match its manifest (message lists every problem found)."""


def read_shard(path: str) -> pa.Table:
    """A shard as a pyarrow Table, memory-mapped (zero copy): plain ``pyarrow.ipc``, nothing ccgpt-specific."""
    with pa.memory_map(path, "r") as source:
        return pa.ipc.open_file(source).read_all()


def _list_parts(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(value array, row offsets) of a list column, as numpy, across chunks."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    base = offsets[0]
    return values[base : offsets[-1]], offsets - base


def _check_table(table: pa.Table, name: str, seq_len: int, vocab_size: int, eot_id: int) -> list[str]:
    """Packing invariants of one shard, vectorised (no per-row Python)."""
    problems: list[str] = []
    width = seq_len + 1
    tokens, tok_off = _list_parts(table.column("tokens"))
    lengths = np.diff(tok_off)
    bad_len = np.flatnonzero(lengths != width)
    if len(bad_len):
        problems.append(
            f"{name}: {len(bad_len)} row(s) not {width} tokens long (first: row {bad_len[0]}, {lengths[bad_len[0]]})"
        )
        return problems  # the remaining checks assume the row width
    if len(tokens) and int(tokens.max()) >= vocab_size:
        problems.append(f"{name}: token id {int(tokens.max())} >= vocab size {vocab_size}")
    offs, off_off = _list_parts(table.column("doc_offsets"))
    row_of = np.repeat(np.arange(len(off_off) - 1), np.diff(off_off))
    if len(offs):
        if int(offs.min()) < 0 or int(offs.max()) >= width:
            problems.append(f"{name}: doc_offsets outside [0, {width})")
            return problems
        same_row = row_of[1:] == row_of[:-1]
        if np.any(np.diff(offs.astype(np.int64))[same_row] <= 0):
            problems.append(f"{name}: doc_offsets not strictly increasing within a row")
        positive = offs > 0
        before = tokens[row_of[positive] * width + offs[positive].astype(np.int64) - 1]
        if np.any(before != eot_id):
            problems.append(f"{name}: {int((before != eot_id).sum())} doc_offset(s) not right after an end-of-text token")
    # every document start (a position after an end-of-text token) must be listed
    eot_pos = np.flatnonzero(tokens == eot_id)
    starts = eot_pos[(eot_pos % width) != width - 1] + 1
    listed = row_of * width + offs.astype(np.int64)
    missing = np.setdiff1d(starts, listed)
    if len(missing):
        problems.append(f"{name}: {len(missing)} document start(s) after an end-of-text token missing from doc_offsets")
    return problems


def verify_shards(folder: str) -> dict[str, Any]:
    """Check a shard folder against its ``manifest.json``; return a summary or raise :class:`ShardError`.

    Checks: manifest version, every listed shard exists and matches its sha256, the schema is the shard schema
    with the manifest's token dtype, row and token counts match the manifest, every row has ``seq_len + 1``
    ids below the vocabulary size, ``doc_offsets`` are sorted, in the row, and mark exactly the positions after
    an end-of-text token, per-source tokens match the manifest, and no unlisted ``shard-*.arrow`` lies beside.
    """
    try:
        manifest = Manifest.load(folder)
    except SchemaError as e:
        raise ShardError(str(e)) from None
    except (ValueError, ValidationError) as e:  # bad JSON or fields
        raise ShardError(f"{folder}: manifest.json is not a valid manifest ({e})") from None
    problems: list[str] = []
    if manifest.shard_schema_version != SHARD_SCHEMA_VERSION:
        problems.append(
            f"manifest lists shard schema version {manifest.shard_schema_version!r}, expected {SHARD_SCHEMA_VERSION!r}"
        )
    vocab_size = manifest.tokenizer.vocab_size
    eot_id = manifest.tokenizer.eot_id
    source_tokens: dict[str, int] = {}
    rows_total = 0
    tokens_total = 0
    for info in manifest.shards:
        path = os.path.join(folder, info.file)
        if not os.path.isfile(path):
            problems.append(f"{info.file}: missing")
            continue
        sha = file_sha256(path)
        if sha != info.sha256:
            problems.append(f"{info.file}: sha256 {sha[:16]}… does not match the manifest's {info.sha256[:16]}…")
        try:
            table = read_shard(path)
            dtype = validate_shard_schema(table.schema, where=info.file)
        except SchemaError as e:
            problems.append(str(e))
            continue
        except (pa.ArrowException, OSError) as e:
            problems.append(f"{info.file}: not a readable Arrow IPC file ({e})")
            continue
        if dtype != manifest.token_dtype:
            problems.append(f"{info.file}: token dtype {dtype}, manifest says {manifest.token_dtype}")
        width = manifest.seq_len + 1
        if table.num_rows != info.rows or table.num_rows * width != info.tokens:
            problems.append(
                f"{info.file}: {table.num_rows} rows, manifest says {info.rows} rows / {info.tokens} tokens"
            )
        problems.extend(_check_table(table, info.file, manifest.seq_len, vocab_size, eot_id))
        rows_total += table.num_rows
        tokens_total += int(pc.sum(pc.list_value_length(table.column("tokens"))).as_py() or 0)
        for source, n in zip(*np.unique(table.column("source").to_numpy(zero_copy_only=False), return_counts=True)):
            source_tokens[str(source)] = source_tokens.get(str(source), 0) + int(n) * width
    if not problems:
        if tokens_total != manifest.total_tokens:
            problems.append(f"shards hold {tokens_total} tokens, manifest total_tokens is {manifest.total_tokens}")
        for source, mix in manifest.sources.items():
            if source_tokens.get(source, 0) != mix.tokens_drawn:
                problems.append(
                    f"source {source!r}: shards hold {source_tokens.get(source, 0)} tokens, manifest says {mix.tokens_drawn}"
                )
        unknown = sorted(set(source_tokens) - set(manifest.sources))
        if unknown:
            problems.append(f"shards hold rows of sources not in the manifest: {unknown}")
    listed = {s.file for s in manifest.shards}
    extra = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "shard-*.arrow")))
    extra = [f for f in extra if f not in listed]
    if extra:
        problems.append(f"shard file(s) not in the manifest: {extra}")
    if problems:
        raise ShardError(f"{folder}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return {
        "folder": folder,
        "shards": len(manifest.shards),
        "rows": rows_total,
        "tokens": tokens_total,
        "seq_len": manifest.seq_len,
        "token_dtype": manifest.token_dtype,
        "vocab_size": vocab_size,
        "tokenizer_hash": manifest.tokenizer.content_hash,
        "tokens_per_source": dict(sorted(source_tokens.items())),
    }
