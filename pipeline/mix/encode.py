"""Step 1-2 of the mix: Arrow record batches of document tables -> tokenized documents keyed by source.

Documents are read as Arrow batches of three columns (``READ_COLUMNS``), never as per-row dicts, and
tokenized a batch at a time, with the tokenizer loaded once per worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline.accounting import OUTCOMES, dropped
from pipeline.tokenizer import encode_batch, load_tokenizer

READ_COLUMNS = ["id", "source", "text"]


class Doc(NamedTuple):
    """One tokenized document, keyed by its source on the way to the per-source plan and packing."""

    id: str
    tokens: bytes  # raw bytes of the shard dtype, <|endoftext|> last


class EncodeDocuments(beam.DoFn):
    """Arrow record batches of documents -> ``(source, Doc)``, ``<|endoftext|>`` appended.

    Tokens travel as raw bytes of the shard dtype (2 or 4 bytes a token), far smaller than pickled int lists.
    Documents of unweighted sources are dropped before tokenizing, so they cost nothing. A literal
    ``<|endoftext|>`` in the text stays text.
    """

    def __init__(self, tokenizer_path: str, sources: list[str], token_dtype: str, batch_size: int):
        self.tokenizer_path = tokenizer_path
        self.sources = sorted(sources)
        self.token_dtype = token_dtype
        self.batch_size = max(1, batch_size)
        self._tok = None

    def setup(self) -> None:
        self._tok = load_tokenizer(self.tokenizer_path)
        self._sources = set(self.sources)
        self._dtype = np.dtype(self.token_dtype)

    def _encode(self, texts: list[str]) -> list[list[int] | None]:
        try:
            return encode_batch(self._tok, texts, append_eot=True, batch_size=len(texts) or 1)
        except Exception:  # a batch failed: find the bad documents one by one
            out: list[list[int] | None] = []
            for t in texts:
                try:
                    out.append(encode_batch(self._tok, [t], append_eot=True)[0])
                except Exception:
                    out.append(None)
            return out

    def process(self, table: pa.Table) -> Iterator[Any]:
        for batch in table.to_batches(max_chunksize=self.batch_size):
            ids = batch.column("id").to_pylist()
            sources = batch.column("source").to_pylist()
            texts = batch.column("text").to_pylist()
            todo: list[tuple[str, str, str]] = []
            for doc_id, source, text in zip(ids, sources, texts):
                if doc_id is None or source is None or text is None:
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("missing_field"))
                elif source not in self._sources:
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("source_not_in_mix"))
                elif not text.strip():
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("empty_text"))
                else:
                    todo.append((doc_id, source, text))
            if not todo:
                continue
            for (doc_id, source, _), ids_ in zip(todo, self._encode([t for _, _, t in todo])):
                if ids_ is None:
                    yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("encode_error"))
                    continue
                yield source, Doc(doc_id, np.asarray(ids_, dtype=self._dtype).tobytes())
                # the outcome (kept / not_drawn / ...) is decided when the source is packed
