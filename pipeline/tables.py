"""Shared I/O of Beam stages: document tables into a pipeline, and the small count files stages write.

Every stage that reads document tables goes through :func:`read_document_tables`, so local inputs are
schema-checked the same way before a pipeline starts (a wrong input fails in a second, not after a
cluster spins up); and every keyed-count side file is summed by :func:`sum_jsonl`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq

from schemas.documents import DOCUMENT_SCHEMA, document_files, validate_document_schema


def read_document_tables(p: beam.Pipeline, inputs: list[str]) -> beam.PCollection:
    """All input document tables as one PCollection of rows (dicts with every schema field).

    Local tables are validated against the document schema here; remote ones (``gs://...``) are read as
    given (a folder URL means its ``*.parquet`` files). A finished stage that kept nothing adds no rows.
    """
    reads = []
    for i, path in enumerate(inputs):
        if "://" in path:
            is_pattern = path.endswith(".parquet") or any(c in path for c in "*?[")
            pattern = path if is_pattern else path.rstrip("/") + "/*.parquet"
        else:
            files = document_files(path)
            if not files:
                continue
            for f in files:
                validate_document_schema(pq.read_schema(f), where=f)
            pattern = os.path.join(os.path.abspath(path), "*.parquet") if os.path.isdir(path) else os.path.abspath(path)
        reads.append(p | f"Read{i}" >> beam.io.ReadFromParquet(pattern, columns=list(DOCUMENT_SCHEMA.names)))
    if not reads:
        return p | "NoInput" >> beam.Create([])
    return tuple(reads) | "FlattenInputs" >> beam.Flatten()


def count_rows(inputs: list[str]) -> int | None:
    """Rows in local document tables, from Parquet footers (no data read); None when any input is remote."""
    total = 0
    for path in inputs:
        if "://" in path:
            return None
        for f in document_files(path):
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file a stage wrote (absent file: none)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sum_jsonl(path: str, key: str, value: str, cast: Callable[[Any], Any] = int) -> dict[Any, Any]:
    """Sum ``value`` by ``key`` over a JSON-lines file (absent file: empty). List keys become tuples."""
    out: dict[Any, Any] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    k = tuple(row[key]) if isinstance(row[key], list) else row[key]
                    out[k] = out.get(k, cast(0)) + cast(row[value])
    return out
