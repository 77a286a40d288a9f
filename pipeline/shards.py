"""Read and verify token shards: the check a trainer (or a person) runs before trusting a shard folder.

``verify_shards`` re-derives everything the manifest claims from the files themselves (checksums, row and
token counts, per-source tokens) and checks the packing invariants a trainer relies on: every row is
``seq_len + 1`` ids below the vocabulary size, and ``doc_offsets`` are sorted positions inside the row, each
right after an end-of-text token. It collects every problem and raises one :class:`ShardError` listing them,
so a corrupt, truncated or missing file reads as a clear message, never as a pyarrow traceback.

A shard folder may be local or an object-store URL (``s3://bucket/run/shards``): every file is read through
:mod:`pipeline.fs`, so a folder is checked where the trainer will read it, without copying it first.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from pipeline import fs
from pipeline.commit import tag_of, verified
from schemas.documents import SchemaError
from schemas.manifest import MANIFEST_NAME, Manifest, ShardInfo
from schemas.shards import SHARD_SCHEMA_VERSION, validate_shard_schema


class ShardError(SchemaError):
    """A shard folder that does not match its manifest (message lists every problem found)."""


def read_shard(path: str) -> pa.Table:
    """A shard as a pyarrow Table: plain ``pyarrow.ipc``, nothing ccgpt-specific. Memory-mapped (zero copy) when
    local, read through :mod:`pipeline.fs` from a URL."""
    with fs.open_arrow(path) as source:
        return pa.ipc.open_file(source).read_all()


def load_manifest(path: str) -> Manifest:
    """Read and version-check a manifest, local or at a URL: ``path`` is the shard folder or its
    ``manifest.json``.

    In a committed stage folder (the mix's) the manifest is first checked against the commit record
    (``stats.json``: size and sha256, :func:`pipeline.commit.verified`): the mix's driver writes it under a fixed
    name, so a late rewrite (a zombie driver, a hand edit) would otherwise be read as the stage's own and
    point readers at shards the commit never listed; it is refused (:class:`pipeline.commit.AlteredOutput`)."""
    if fs.is_dir(path):
        path = fs.join(path, MANIFEST_NAME)
    if not fs.exists(path):
        raise SchemaError(f"{path}: manifest not found")
    return Manifest.from_json(fs.read_bytes(verified(path)), where=path)


def save_manifest(manifest: Manifest, folder: str) -> str:
    """Write ``folder/manifest.json``, local or at a URL: the mix stage's writer (inside its commit, so no
    rename is needed)."""
    return fs.write_text(fs.join(folder, MANIFEST_NAME), manifest.to_json())


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
            problems.append(
                f"{name}: {int((before != eot_id).sum())} doc_offset(s) not right after an end-of-text token"
            )
    # every document start (a position after an end-of-text token) must be listed
    eot_pos = np.flatnonzero(tokens == eot_id)
    starts = eot_pos[(eot_pos % width) != width - 1] + 1
    listed = row_of * width + offs.astype(np.int64)
    missing = np.setdiff1d(starts, listed)
    if len(missing):
        problems.append(f"{name}: {len(missing)} document start(s) after an end-of-text token missing from doc_offsets")
    return problems


def _check_split(
    folder: str, manifest: Manifest, infos: list[ShardInfo], problems: list[str]
) -> tuple[int, int, dict[str, int]]:
    """Check one split's shard files; append problems; return (rows, tokens, tokens per source) found."""
    vocab_size = manifest.tokenizer.vocab_size
    eot_id = manifest.tokenizer.eot_id
    width = manifest.seq_len + 1
    source_tokens: dict[str, int] = {}
    rows_total = 0
    tokens_total = 0
    for info in infos:
        path = fs.join(folder, info.file)
        if not fs.is_file(path):
            problems.append(f"{info.file}: missing")
            continue
        sha = fs.sha256(path)
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
        if table.num_rows != info.rows or table.num_rows * width != info.tokens:
            problems.append(
                f"{info.file}: {table.num_rows} rows, manifest says {info.rows} rows / {info.tokens} tokens"
            )
        problems.extend(_check_table(table, info.file, manifest.seq_len, vocab_size, eot_id))
        rows_total += table.num_rows
        tokens_total += int(pc.sum(pc.list_value_length(table.column("tokens"))).as_py() or 0)
        for source, n in zip(*np.unique(table.column("source").to_numpy(zero_copy_only=False), return_counts=True)):
            source_tokens[str(source)] = source_tokens.get(str(source), 0) + int(n) * width
    return rows_total, tokens_total, source_tokens


def _unlisted(folder: str, pattern: str, infos: list[ShardInfo], tags: set[str | None]) -> list[str]:
    """Files matching ``pattern`` the manifest does not list; those another attempt tagged (``tags``: the
    manifest's shards' own) are left out: no reader takes them, and the next commit deletes them
    (:mod:`pipeline.commit`)."""
    listed = {s.file for s in infos}
    found = sorted(posixpath.basename(f.path) for f in fs.match(fs.join(folder, pattern)))
    return [f for f in found if f not in listed and (tag_of(f) is None or tag_of(f) in tags)]


def verify_shards(folder: str) -> dict[str, Any]:
    """Check a shard folder against its ``manifest.json``; return a summary or raise :class:`ShardError`.

    Checks: manifest version, every listed shard exists and matches its sha256, the schema is the shard schema
    with the manifest's token dtype, row and token counts match the manifest, every row has ``seq_len + 1``
    ids below the vocabulary size, ``doc_offsets`` are sorted, in the row, and mark exactly the positions after
    an end-of-text token, per-source tokens match the manifest, and no unlisted ``shard-*.arrow`` lies beside
    (but another attempt's, by its tag: a zombie's, never read and deleted at the next commit).
    The validation split (``val-*.arrow``), when the manifest lists one, gets the same checks against its own
    entries; a manifest from before the split existed verifies without one.
    """
    try:
        manifest = load_manifest(folder)
    except SchemaError as e:
        raise ShardError(str(e)) from None
    except (ValueError, ValidationError) as e:  # bad JSON or fields
        raise ShardError(f"{folder}: manifest.json is not a valid manifest ({e})") from None
    problems: list[str] = []
    if manifest.shard_schema_version != SHARD_SCHEMA_VERSION:
        problems.append(
            f"manifest lists shard schema version {manifest.shard_schema_version!r}, expected {SHARD_SCHEMA_VERSION!r}"
        )
    rows_total, tokens_total, source_tokens = _check_split(folder, manifest, manifest.shards, problems)
    val = manifest.validation
    val_rows, val_tokens, val_source_tokens = _check_split(folder, manifest, val.shards if val else [], problems)
    if not problems:
        if tokens_total != manifest.total_tokens:
            problems.append(f"shards hold {tokens_total} tokens, manifest total_tokens is {manifest.total_tokens}")
        for source, mix in manifest.sources.items():
            if source_tokens.get(source, 0) != mix.tokens_drawn:
                problems.append(
                    f"source {source!r}: shards hold {source_tokens.get(source, 0)} tokens, "
                    f"manifest says {mix.tokens_drawn}"
                )
        unknown = sorted(set(source_tokens) - set(manifest.sources))
        if unknown:
            problems.append(f"shards hold rows of sources not in the manifest: {unknown}")
        if val is not None:
            if val_tokens != val.total_tokens:
                problems.append(f"validation shards hold {val_tokens} tokens, the manifest says {val.total_tokens}")
            for source in sorted(set(val.sources) | set(val_source_tokens)):
                listed = val.sources[source].tokens_packed if source in val.sources else 0
                if val_source_tokens.get(source, 0) != listed:
                    problems.append(
                        f"validation source {source!r}: shards hold {val_source_tokens.get(source, 0)} tokens, "
                        f"the manifest says {listed}"
                    )
    tags = {tag_of(s.file) for s in [*manifest.shards, *(val.shards if val else [])]}
    extra = _unlisted(folder, "shard-*.arrow", manifest.shards, tags)
    if extra:
        problems.append(f"shard file(s) not in the manifest: {extra}")
    extra = _unlisted(folder, "val-*.arrow", val.shards if val else [], tags)
    if extra:
        problems.append(f"validation shard file(s) not in the manifest: {extra}")
    if problems:
        raise ShardError(f"{folder}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return {
        "folder": folder,
        "shards": len(manifest.shards),
        "rows": rows_total,
        "tokens": tokens_total,
        "seq_len": manifest.seq_len,
        "token_dtype": manifest.token_dtype,
        "vocab_size": manifest.tokenizer.vocab_size,
        "tokenizer_hash": manifest.tokenizer.content_hash,
        "tokens_per_source": dict(sorted(source_tokens.items())),
        "validation": None
        if val is None
        else {
            "shards": len(val.shards),
            "rows": val_rows,
            "tokens": val_tokens,
            "tokens_per_source": dict(sorted(val_source_tokens.items())),
        },
    }


# --------------------------------------------------------------------------------------------- inspect


def _find_tokenizer(folder: str, manifest: Manifest) -> str:
    """The tokenizer beside the shards: the manifest's ``tokenizer.path`` (relative to the folder), else
    ``tokenizer.json`` in the folder."""
    candidates = []
    rel = manifest.tokenizer.path
    if rel:
        candidates.append(rel if os.path.isabs(rel) else fs.join(folder, rel))
    candidates.append(fs.join(folder, "tokenizer.json"))
    for c in candidates:
        if fs.exists(c):
            return c
    raise ShardError(f"{folder}: no tokenizer beside the shards (looked for {candidates}); pass --tokenizer")


def inspect_shards(
    folder: str, rows: int = 3, split: str = "train", tokenizer: str | None = None, start: int = 0
) -> list[dict[str, Any]]:
    """Decode ``rows`` rows of a split (from global row ``start``, in file order) back to text.

    Each row becomes ``{file, row, source, doc_offsets, segments}``; a segment is the text between two
    document boundaries, with ``starts_document`` (it begins at a ``doc_offset``; otherwise it continues a
    document from the row before) and ``ends_document`` (it ends with the end-of-text token; otherwise the
    document goes on in the next row). Uses the tokenizer that made the shards (found through the manifest).
    """
    from pipeline.tokenizer import load_tokenizer

    try:
        manifest = load_manifest(folder)
    except SchemaError as e:
        raise ShardError(str(e)) from None
    if split == "train":
        infos = manifest.shards
    elif split == "val":
        if manifest.validation is None:
            raise ShardError(
                f"{folder}: the manifest lists no validation split (made before it existed, or with val_fraction 0)"
            )
        infos = manifest.validation.shards
    else:
        raise ShardError(f"split must be 'train' or 'val', got {split!r}")
    tok = load_tokenizer(tokenizer or _find_tokenizer(folder, manifest))
    eot = manifest.tokenizer.eot_id
    out: list[dict[str, Any]] = []
    skip = max(0, start)
    for info in infos:
        if len(out) >= rows:
            break
        if skip >= info.rows:
            skip -= info.rows
            continue
        table = read_shard(fs.join(folder, info.file))
        for r in range(skip, min(table.num_rows, skip + rows - len(out))):
            tokens = table.column("tokens")[r].values.to_numpy(zero_copy_only=False)
            offsets = table.column("doc_offsets")[r].values.to_numpy(zero_copy_only=False).tolist()
            cuts = sorted({0, *offsets, len(tokens)})
            segments = []
            for a, b in zip(cuts, cuts[1:]):
                piece = tokens[a:b].tolist()
                ends = bool(piece) and piece[-1] == eot
                segments.append(
                    {
                        "start": a,
                        "end": b,
                        "starts_document": a in offsets,
                        "ends_document": ends,
                        "text": tok.decode(piece[:-1] if ends else piece, skip_special_tokens=False),
                    }
                )
            out.append(
                {
                    "file": info.file,
                    "row": r,
                    "source": table.column("source")[r].as_py(),
                    "doc_offsets": offsets,
                    "segments": segments,
                }
            )
        skip = 0
    return out


def format_inspection(rows: list[dict[str, Any]], max_chars: int = 400) -> str:
    """Rows from :func:`inspect_shards` as readable text: one block per row, one line per document piece."""
    lines = []
    for row in rows:
        lines.append(
            f"── {row['file']} row {row['row']} · source {row['source']} · "
            f"{len(row['doc_offsets'])} document start(s) at {row['doc_offsets']}"
        )
        for seg in row["segments"]:
            text = seg["text"] if len(seg["text"]) <= max_chars else seg["text"][:max_chars] + "…"
            head = "▶ new document" if seg["starts_document"] else "… continued"
            tail = " ◀ <|endoftext|>" if seg["ends_document"] else " … (continues in its source's next packed row)"
            lines.append(f"  [{seg['start']}:{seg['end']}] {head}: {text!r}{tail}")
    return "\n".join(lines)
