"""The dedup index: what a run leaves for later runs to deduplicate against, and how those runs read it.

``OUT/index/`` holds one Parquet row per kept document (:data:`INDEX_SCHEMA`: node key, id, source, exact
text hash, LSH band hashes of its core's signature, and the sorted shingle-hash sets or signature the
verification needs), one file
per output chunk, plus ``meta.json`` with the settings that made them (:func:`index_meta`). The index columns
are the first columns of a chunk's sketch file (:data:`SKETCH_SCHEMA`), so an index file is the kept rows of
a sketch file (:func:`write_index_file`), never computed twice.

A later run with ``DedupConfig.against`` reads those indexes into the same graph, never their documents
(:class:`IndexEntries`): an indexed entry joins the exact groups and the LSH buckets under a node key that
sorts before every new one (:data:`INDEX_MARK`), so an exact group or a component holding an indexed document
is labelled by it. The settings that decide hashes and bands must match the indexes' (:func:`index_files`
checks them, the boilerplate settings included, before the pipeline starts). An indexed document's core is
the one its own run found: boilerplate lines are counted within a run, never against an index.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline import fs
from pipeline.commit import committed_files
from pipeline.dedup.exact import _RANK_WIDTH
from pipeline.dedup.records import Member, add_band_batches, add_batches
from pipeline.dedup.work import (
    BANDS,
    COUNTERS,
    WORK_ROWS,
    chunk_file,
    hand_off,
    open_parquet,
    rows_at,
    write_parquet,
)

if TYPE_CHECKING:
    from pipeline.dedup.stage import DedupConfig

log = logging.getLogger(__name__)

INDEX_DIR = "index"
INDEX_META = "meta.json"
# 2: sketches of each document's core (boilerplate lines set aside) and a ``core`` column for containment
# verification; version 1 indexes hold full-text sketches only, which this version's pairs cannot be verified
# against, so they are refused (index_files).
INDEX_VERSION = 2
# An indexed node's key: its earlier key with the rank digits replaced by this mark, which sorts before every
# digit, so a component holding an indexed document is labelled by it (and ``key_id`` still reads the id).
INDEX_MARK = "-"
INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("id", pa.string()),
        ("source", pa.string()),
        ("exact_hash", pa.string()),
        ("bands", pa.list_(pa.uint64())),
        ("sketch", pa.list_(pa.uint64())),
        ("core", pa.list_(pa.uint64())),  # verify=containment: the core's shingle hashes (null: the whole text's)
    ]
)
SKETCH_SCHEMA = INDEX_SCHEMA.append(pa.field("row", pa.int64()))  # row: position in the input chunk


def is_indexed(key: str) -> bool:
    return key.startswith(INDEX_MARK)


def index_meta(cfg: DedupConfig, bands: int, rows: int) -> dict[str, Any]:
    """The settings an index's hashes, bands and sketches depend on (must match to dedup against it)."""
    near = cfg.near
    return {
        "version": INDEX_VERSION,
        "exact": {"enabled": cfg.exact.enabled, "normalize": asdict(cfg.exact.normalize)},
        "near": {
            "enabled": near.enabled,
            "shingles": asdict(near.shingles),
            "num_perm": near.num_perm,
            "seed": near.seed,
            "scheme": near.scheme,
            "hash": near.hash,
            "bands": bands,
            "rows": rows,
            "verify": near.verify,
            "boilerplate": asdict(near.boilerplate),
        },
    }


def index_files(against: list[str], meta: dict[str, Any]) -> list[str]:
    """The index Parquet files of earlier dedup outputs (local or on an object store), after checking their
    settings match ``meta``."""
    files: list[str] = []
    for folder in against:
        meta_path = fs.join(folder, INDEX_DIR, INDEX_META)
        if not fs.exists(meta_path):
            raise ValueError(
                f"dedup: --against {folder}: no {INDEX_DIR}/{INDEX_META} (not a dedup output written with write_index)"
            )
        theirs = fs.read_json(meta_path)
        if theirs.get("version") != INDEX_VERSION:
            raise ValueError(
                f"dedup: --against {folder}: its index is version {theirs.get('version')}, this ccgpt reads version "
                f"{INDEX_VERSION} only (version 2 indexes hold the sketches of each document's core, boilerplate "
                "lines set aside); run dedup again on that folder's input to rebuild its index"
            )
        for part in ("exact", "near"):
            mine, other = meta[part], theirs.get(part, {})
            if not (mine["enabled"] and other.get("enabled")):
                if mine["enabled"]:
                    log.warning(
                        "dedup: --against %s: its index was written without the %s pass; its documents "
                        "take no part in this run's %s pass",
                        folder,
                        part,
                        part,
                    )
                continue
            diff = sorted(k for k in mine if k != "enabled" and mine[k] != other.get(k))
            if diff:
                raise ValueError(
                    f"dedup: --against {folder}: its {part} settings differ in {', '.join(diff)} "
                    f"({ {k: other.get(k) for k in diff} } vs { {k: mine[k] for k in diff} })"
                )
        files.extend(f if fs.is_url(f) else os.path.abspath(f) for f in _index_tables(folder))
    return files


def _index_tables(folder: str) -> list[str]:
    """The index Parquet files of one earlier output: from the file list of its ``stats.json``, so a file its
    commit did not list (a straggler's) is never read; listed for an index folder that is not a stage output."""
    index = fs.join(folder, INDEX_DIR)
    committed = committed_files(folder)
    if committed is None:
        return [f.path for f in fs.match(fs.join(index, "*.parquet"))]
    return sorted(f for f in committed if f.startswith(fs.join(index, "")) and f.endswith(".parquet"))


def write_index_file(sketches: str, positions: np.ndarray, folder: str, name: str, chunk: int, chunks: int) -> None:
    """The index file of one output chunk (``name``: :func:`.work.chunk_name`'s pattern): the rows of its
    sketch file at the kept ``positions``."""
    rows = (table for _, table in rows_at(sketches, positions, INDEX_SCHEMA.names))
    write_parquet(chunk_file(os.path.join(folder, INDEX_DIR), name, chunk, chunks), rows, INDEX_SCHEMA)


def write_index_meta(folder: str, meta: dict[str, Any], documents: int) -> None:
    """``index/meta.json``: the settings of :func:`index_meta` and the number of indexed documents."""
    fs.write_text(
        fs.join(folder, INDEX_DIR, INDEX_META), json.dumps({**meta, "documents": documents}, indent=2, sort_keys=True)
    )


class IndexEntries(beam.DoFn):
    """One index file of an earlier run -> its exact-group members (:class:`.records.Member`, ``chunk`` -1)
    and band entries, handed on as files like a chunk's. Its sketches stay in the index file (read by
    position, like a sketch file's, when a candidate pair needs them): the file is "chunk" ``chunk``."""

    def __init__(self, exact: bool, near: bool, partitions: int, work: str):
        self.exact = exact
        self.near = near
        self.partitions = partitions
        self.work = work

    def process(self, task: tuple[int, str]) -> Iterator[Any]:
        chunk, path = task
        pos = 0
        members: dict[int, list] = {}
        bands: dict[int, list] = {}
        for batch in open_parquet(path).iter_batches(batch_size=WORK_ROWS, columns=["key", "exact_hash", "bands"]):
            keys, positions, hashes, exact = [], [], [], []
            for row in batch.to_pylist():
                key = INDEX_MARK * _RANK_WIDTH + row["key"][_RANK_WIDTH:]
                if self.exact and row.get("exact_hash"):
                    exact.append(Member(bytes.fromhex(row["exact_hash"]), key, "", 0, -1, 0, np.zeros(0, np.uint64)))
                if self.near and row.get("bands"):
                    keys.append(key)
                    positions.append(pos)
                    hashes.append(np.array(row["bands"], dtype=np.uint64))
                pos += 1
            if exact:
                add_batches(members, Member, exact, lambda m: m.partition(self.partitions))
            if keys:
                width = max(h.size for h in hashes)
                if any(h.size != width for h in hashes):
                    raise ValueError(f"dedup: index file {path}: rows with different band counts")
                add_band_batches(
                    bands,
                    keys,
                    np.full(len(keys), chunk, dtype=np.int32),
                    np.array(positions, dtype=np.int64),
                    np.stack(hashes),
                    self.partitions,
                )
        yield from hand_off(self.work, "members", f"i{chunk:05d}", members)
        for bp, band_path in hand_off(self.work, "bands", f"i{chunk:05d}", bands):
            yield beam.pvalue.TaggedOutput(BANDS, (bp, band_path))
        yield beam.pvalue.TaggedOutput(COUNTERS, ("indexed_documents", pos))
