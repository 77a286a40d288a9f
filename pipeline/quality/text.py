"""What the quality classifier reads: input records, the one text normalisation, and why a text gets no score.

Training, :func:`pipeline.quality.model.score_documents` and the filter stage all prepare text here, so the
model never sees text at scoring that was prepared differently from what it learned on, and all three agree
on which documents cannot be scored (a counted reason, never a default score).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator

import pyarrow.parquet as pq

from pipeline import fs
from pipeline.tables import document_files
from schemas.documents import validate_document_schema

NORMALIZATION_VERSION = "1"  # bump when normalize_text changes: models trained before then score differently
DEFAULT_MAX_CHARS = 1_000_000  # Common Crawl truncates records at 1 MiB; longer extracted text is not a page


def normalize_text(text: str) -> str:
    """The one text preparation used for training and for scoring: lowercase, single spaces, one line.

    fastText reads one example per line and rejects newlines at predict time, so every run of whitespace
    (newlines included) becomes one space. Lowercasing keeps the vocabulary small, which matters for a model
    trained on a few thousand documents. NUL is a token separator inside fastText but not in Python, so it
    becomes a space too. A literal ``__label__`` inside a document would be read as a label during training;
    it is defused to the word ``label``.
    """
    if not text:
        return ""
    text = text.lower().replace("\x00", " ").replace("__label__", " label ")
    return " ".join(text.split())


def unscorable_reason(text: str | None, max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """Why a document gets no score (``bad_record``, ``empty_text``, ``too_long``), or None when it gets one.

    The one place that decides it, so training, :func:`score_documents` and the filter agree. Length is
    measured on the raw text (characters) before normalisation, so a huge document is rejected without
    being copied; ``max_chars <= 0`` means no limit.
    """
    if not isinstance(text, str):
        return "bad_record"
    if max_chars > 0 and len(text) > max_chars:
        return "too_long"
    if not text.strip():
        return "empty_text"
    return None


def _input_kind(path: str) -> str:
    """``documents`` (Parquet table), ``jsonl`` (one JSON object a line with ``text``) or ``text`` (blocks)."""
    if fs.is_dir(path):
        return "documents"
    name = path.lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    if name.endswith(".parquet"):
        return "documents"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "text"


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[io.TextIOBase]:
    """A (possibly gzipped) text file, local or on an object store; undecodable bytes become U+FFFD rather
    than stopping the read."""
    with fs.open_decompressed(path) as data, io.TextIOWrapper(data, encoding="utf-8", errors="replace") as text:
        yield text


def _document_rows(path: str) -> Iterator[dict]:
    """The ``id`` and ``text`` of every row of a document table (a folder or file, local or on an object
    store), validated, streamed batch by batch."""
    for f in document_files(path):
        with fs.open_arrow(f) as src:
            pf = pq.ParquetFile(src)
            validate_document_schema(pf.schema_arrow, where=f)
            for batch in pf.iter_batches(columns=["id", "text"], batch_size=1024):
                yield from batch.to_pylist()


def iter_records(path: str) -> Iterator[tuple[str | None, str | None]]:
    """Yield ``(id, text)`` for every record of one input; ``text`` is None for a record that cannot be read.

    Inputs, local or on an object store, are document tables (a folder of Parquet files or a file), JSON lines
    with a ``text`` field (and optionally ``id``), or plain text where blank lines separate documents
    (WikiText, Project Gutenberg and most reference dumps come like that). A malformed JSON line or a
    non-string ``text`` yields ``(id, None)`` so the caller can count it instead of crashing or silently
    skipping it.
    """
    kind = _input_kind(path)
    if kind == "documents":
        for row in _document_rows(path):
            text = row.get("text")
            yield row.get("id"), text if isinstance(text, str) else None
    elif kind == "jsonl":
        with _open_text(path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    yield None, None
                    continue
                if not isinstance(obj, dict):
                    yield None, None
                    continue
                doc_id = obj.get("id")
                text = obj.get("text")
                yield (str(doc_id) if doc_id is not None else None), (text if isinstance(text, str) else None)
    else:
        with _open_text(path) as fh:
            block: list[str] = []
            for line in fh:
                if line.strip():
                    block.append(line)
                elif block:
                    yield None, "".join(block)
                    block = []
            if block:
                yield None, "".join(block)
