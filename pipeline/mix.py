"""Mix sources by weight into packed, globally shuffled Arrow token shards (the GPT-3 Table 2.2 step).

GPT-3 does not train on its sources in proportion to their size: it samples them by a chosen weight, so small
high-quality sources (Wikipedia, books) are repeated for several epochs and the crawl is seen less than once.
This stage does the same, deterministically, on a Beam runner:

1. read the document tables; documents whose ``source`` has no weight are dropped (``source_not_in_mix``);
2. tokenize in batches inside a DoFn (tokenizer loaded once per worker) and end every document with
   ``<|endoftext|>``; a literal ``<|endoftext|>`` in the text stays text;
3. per source, hold out a validation set of whole documents: those first in the order of a hash of
   (source, document id) -- ``val_fraction`` of the documents, at most ``val_max_tokens`` tokens, at least one
   full row, never the last training document. The choice depends on the document ids only (not the seed, not
   the weights), so the same documents stay held out across mixes; they are never drawn, repeated or packed
   into a training row. Only (id, length, digest) travel to this step, not the tokens;
4. count the training tokens available per source (used as a side input) and check the plan: a weight that
   would need more than ``max_epochs`` passes over a source is an error before any row is packed;
5. per source, draw ``weight * budget`` tokens: whole epochs by repetition, plus a seeded hash-ordered subset of
   documents for the fractional epoch (also how a source is downsampled), each epoch in its own seeded order;
6. pack that token stream into rows of ``seq_len + 1`` tokens with ``doc_offsets``; the final partial row of
   each source is dropped and its tokens counted (``tail_tokens_dropped``) rather than padded, so every token a
   trainer sees is real text and no pad token or loss mask is needed;
7. order all rows by a seeded hash of (source, row index), cut them into ``rows_per_shard`` shards and write
   ``shard-00000.arrow`` ... (Arrow IPC files, written atomically); the validation documents are packed the
   same way per source into ``val-00000.arrow`` ... (ordered by source, not shuffled); then ``manifest.json``
   (the validation split listed apart, with its own checksums) and ``mix_table.md``.

Before the pipeline starts, the ``source`` column alone (cheap: no text is read) is counted per source, so a
weighted source that is absent or has no documents, one too small to hold out validation documents, or a
weight whose share of a fixed budget is less than one row is a :class:`MixError` before any work.

``total_tokens = 0`` means: the largest budget that repeats no source, ``min(available_s / weight_s)``, so the
scarcest source (relative to its weight) is used exactly once and the rest are downsampled. Available tokens
are the training pool: validation documents are never counted in it.

Accounting counts input documents: ``kept`` are those with at least one token in a training or validation
shard (``validation_documents`` in the stats counts the latter); drops are ``source_not_in_mix``,
``empty_text``, ``missing_field``, ``encode_error``, ``duplicate_id`` (the same id twice in one source; the
copy with the smallest token digest is kept), ``not_drawn`` (downsampled away), ``packing_tail`` (drawn, but
only into a dropped final row) and ``val_packing_tail`` (held out, but only in the dropped final validation
row of its source).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.parquetio import ReadAllFromParquetBatched

from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped, read_outcomes, stats_from_outcomes
from pipeline.runner import RunnerConfig, make_pipeline
from pipeline.stage import code_version, fingerprint, finish, is_complete, load_stats, stage_output
from pipeline.tables import count_rows, read_jsonl
from pipeline.tokenizer import TOKENIZER_FILE, copy_tokenizer, encode_batch, load_tokenizer, tokenizer_info
from schemas.atomic import atomic_path
from schemas.documents import document_files, validate_document_schema
from schemas.manifest import Manifest, ShardInfo, SourceMix, TokenizerInfo, ValidationSource, ValidationSplit
from schemas.shards import SHARD_SCHEMA_VERSION, shard_schema, token_dtype_for
from schemas.stats import StageStats

log = logging.getLogger(__name__)

SOURCE_STATS = "source_stats"
VAL_ROWS = "val_rows"
SHARD_PATTERN = "shard-{:05d}.arrow"
VAL_SHARD_PATTERN = "val-{:05d}.arrow"
_SOURCES_FILE = "_sources.jsonl"
_SHARDS_FILE = "_shards.jsonl"
_VAL_SHARDS_FILE = "_val_shards.jsonl"


class MixError(ValueError):
    """A mix that cannot be built as asked (bad weights, a weighted source with no documents, no full row)."""


@dataclass
class MixConfig:
    tokenizer: str = field(
        default="", metadata={"help": "tokenizer.json, its folder, GPT-2 encoder.json + vocab.bpe, or a .tiktoken file"}
    )
    weights: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "source -> target share of drawn tokens (normalised); unlisted sources are dropped"},
    )
    total_tokens: int = field(
        default=0,
        metadata={"help": "token budget to draw; 0 = the largest budget that repeats no source"},
    )
    seq_len: int = field(default=1024, metadata={"help": "context length; rows hold seq_len + 1 tokens"})
    rows_per_shard: int = field(default=8192, metadata={"help": "rows per Arrow shard file (the last may hold fewer)"})
    seed: int = field(default=0, metadata={"help": "seed of document selection, epoch order and row shuffle"})
    encode_batch_size: int = field(default=256, metadata={"help": "documents per tokenizer batch call"})
    val_fraction: float = field(
        default=0.01,
        metadata={
            "help": "share of each weighted source's documents held out as its validation split (chosen by a "
            "hash of the document id, never trained on); 0 = no validation split"
        },
    )
    val_max_tokens: int = field(
        default=1_000_000,
        metadata={
            "help": "cap on each source's held-out tokens (whole documents; at least one row is held out); 0 = no cap"
        },
    )
    max_epochs: float = field(
        default=0.0,
        metadata={
            "help": "most passes over a source's training tokens a weight may ask for (GPT-3's largest was "
            "3.4, Wikipedia); a weight that needs more is an error; 0 = no cap"
        },
    )


# --------------------------------------------------------------------------------------------- the plan


def normalise_weights(weights: dict[str, float]) -> dict[str, float]:
    """Weights as shares summing to 1 (GPT-3's own table sums to 101 %)."""
    if not weights:
        raise MixError("mix weights are empty: give at least one source -> weight")
    bad = {s: w for s, w in weights.items() if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0}
    if bad:
        raise MixError(f"mix weights must be finite and >= 0, got {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise MixError("mix weights sum to 0")
    return {s: float(w) / total for s, w in sorted(weights.items())}


def plan_budget(available: dict[str, int], weights: dict[str, float], total_tokens: int) -> int:
    """The token budget to draw: ``total_tokens``, or when 0 the largest that repeats no source.

    Raises :class:`MixError` when a source with a positive weight has no tokens.
    """
    shares = normalise_weights(weights)
    missing = sorted(s for s, w in shares.items() if w > 0 and available.get(s, 0) <= 0)
    if missing:
        present = sorted(s for s, n in available.items() if n > 0)
        raise MixError(f"weighted source(s) {missing} have no documents in the inputs (sources present: {present})")
    if total_tokens > 0:
        return int(total_tokens)
    return int(min(available[s] / w for s, w in shares.items() if w > 0))


def source_target(source: str, available: dict[str, int], weights: dict[str, float], total_tokens: int) -> int:
    """Tokens to draw from ``source``: its normalised weight times the budget, rounded."""
    shares = normalise_weights(weights)
    return int(round(shares.get(source, 0.0) * plan_budget(available, weights, total_tokens)))


def _missing_message(missing: list[str], present: dict[str, int], what: str) -> str:
    return (
        f"weighted source(s) {missing} have no {what} in the inputs "
        f"(sources present: {sorted(s for s, n in present.items() if n > 0)})"
    )


def plan_problems(
    available: dict[str, int], weights: dict[str, float], total_tokens: int, seq_len: int, max_epochs: float = 0.0
) -> list[str]:
    """Why a mix cannot be met as asked, from the training tokens per source (empty list: it can).

    A weighted source with no tokens, a share of the budget smaller than one row (the source would get no
    row at all, a silently skewed mix), or a share needing more than ``max_epochs`` passes over the source.
    """
    shares = normalise_weights(weights)
    missing = sorted(s for s, w in shares.items() if w > 0 and available.get(s, 0) <= 0)
    if missing:
        return [_missing_message(missing, available, "documents")]
    budget = plan_budget(available, weights, total_tokens)
    width = seq_len + 1
    problems = []
    for s, w in shares.items():
        if w <= 0:
            continue
        target = int(round(w * budget))
        if target < width:
            problems.append(
                f"source {s!r}: weight {w:.4g} of a {budget}-token budget is {target} tokens, less than one row of "
                f"{width}: its share cannot be met (raise total_tokens or the weight, or lower seq_len)"
            )
        elif max_epochs > 0 and target > max_epochs * available[s]:
            problems.append(
                f"source {s!r}: weight {w:.4g} of a {budget}-token budget needs {target / available[s]:.2f} epochs of "
                f"its {available[s]} training tokens, more than max_epochs={max_epochs:g} (lower its weight or "
                f"total_tokens, add documents, or raise max_epochs)"
            )
    return problems


def count_documents(files: list[str]) -> dict[str, int]:
    """Documents per source, from the ``source`` column alone (dictionary-encoded Parquet: no text is read)."""
    counts: dict[str, int] = {}
    for f in files:
        column = pq.read_table(f, columns=["source"]).column("source")
        for item in pc.value_counts(column).to_pylist():
            if item["values"] is not None:
                counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])
    return counts


def preflight(documents: dict[str, int], cfg: MixConfig) -> None:
    """Every check that needs no tokenizing, run before the pipeline: raise :class:`MixError` on the first.

    ``documents`` is the count per source (:func:`count_documents`). Weighted sources must be present; with a
    validation split each needs two documents (one held out, one to train on); with a fixed budget every
    weighted source's share must fill at least one row.
    """
    shares = normalise_weights(cfg.weights)
    weighted = [s for s, w in shares.items() if w > 0]
    missing = sorted(s for s in weighted if documents.get(s, 0) <= 0)
    if missing:
        raise MixError(_missing_message(missing, documents, "documents"))
    if cfg.val_fraction > 0:
        small = {s: documents[s] for s in weighted if documents[s] < 2}
        if small:
            raise MixError(
                f"source(s) {small} have fewer than 2 documents: a validation split (val_fraction="
                f"{cfg.val_fraction:g}) holds one out and one must stay to train on (add documents or set "
                "val_fraction 0)"
            )
    if cfg.total_tokens > 0:  # the token counts do not matter for a fixed budget's per-source targets
        problems = plan_problems({s: 1 for s in weighted}, cfg.weights, cfg.total_tokens, cfg.seq_len)
        if problems:
            raise MixError("; ".join(problems))


def _val_key(source: str, doc_id: str) -> int:
    return xxhash.xxh64_intdigest(f"val\x00{source}\x00{doc_id}".encode())


def select_validation(
    ids: list[str], lengths: np.ndarray, source: str, fraction: float, max_tokens: int, width: int
) -> list[int]:
    """Indices of ``source``'s held-out documents, in validation-stream order.

    Documents are taken in the order of a hash of (source, id) -- independent of the seed and the weights --
    until ``ceil(fraction * n)`` documents are taken or their tokens reach ``max_tokens`` (0 = no cap),
    but at least until they fill one row of ``width`` tokens, and never the last document (one stays to train
    on). No documents when ``fraction`` is 0 or the source has fewer than two.
    """
    n = len(ids)
    if fraction <= 0 or n < 2:
        return []
    want = min(n - 1, max(1, math.ceil(fraction * n)))
    chosen: list[int] = []
    total = 0
    for i in sorted(range(n), key=lambda i: (_val_key(source, ids[i]), ids[i])):
        if len(chosen) >= n - 1:
            break
        done = len(chosen) >= want or (max_tokens > 0 and total >= max_tokens)
        if done and total >= width:
            break
        chosen.append(i)
        total += int(lengths[i])
    return chosen


def _doc_key(seed: int, source: str, tag: str, doc_id: str) -> int:
    return xxhash.xxh64_intdigest(f"{seed}\x00{source}\x00{tag}\x00{doc_id}".encode())


def draw_plan(ids: list[str], lengths: np.ndarray, target: int, seed: int, source: str) -> tuple[list[int], list[int]]:
    """Which documents to draw and in what order, to reach at least ``target`` tokens.

    ``epochs = target / available``: every document is drawn ``floor(epochs)`` times, then a seeded hash-ordered
    subset covers the remainder (the shortest prefix that reaches it; packing then cuts the stream at the
    target, so the last drawn document may be cut short and shares land within a row of the target whatever
    the document sizes). Each epoch has its own seeded
    order, so a repeated document never sits next to its earlier copy. Returns ``(order, times)``: document
    indices in stream order and how often each index is drawn.
    """
    n = len(ids)
    available = int(lengths.sum())
    if n == 0 or target <= 0 or available <= 0:
        return [], [0] * n
    whole, remainder = divmod(int(target), available)
    by_select = sorted(range(n), key=lambda i: (_doc_key(seed, source, "select", ids[i]), ids[i]))
    partial: list[int] = []
    total = 0
    for i in by_select:
        if total >= remainder:
            break
        partial.append(i)
        total += int(lengths[i])
    order: list[int] = []
    for epoch in range(whole):
        order.extend(sorted(range(n), key=lambda i: (_doc_key(seed, source, f"epoch{epoch}", ids[i]), ids[i])))
    order.extend(sorted(partial, key=lambda i: (_doc_key(seed, source, f"epoch{whole}", ids[i]), ids[i])))
    times = [whole] * n
    for i in partial:
        times[i] += 1
    return order, times


def pack_rows(docs: list[np.ndarray], width: int, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenate documents and cut rows of ``width`` tokens (at most ``max_tokens``, rounded to whole rows).

    Returns ``(rows [n_rows, width], starts, used)``: ``starts`` are the stream positions where each document
    begins; ``used = n_rows * width`` tokens went into rows, the rest (a partial row, or what lies past the
    token target) is the dropped tail.
    """
    if not docs:
        return np.zeros((0, width), dtype=np.uint32), np.zeros(0, dtype=np.int64), 0
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stream = np.concatenate(docs)
    n_rows = len(stream) // width
    if max_tokens is not None:
        n_rows = min(n_rows, int(round(max_tokens / width)))
    used = n_rows * width
    return stream[:used].reshape(n_rows, width), starts, used


def row_shuffle_keys(seed: int, source: str, n_rows: int) -> np.ndarray:
    """A seeded 64-bit hash of (source, row index) for every row of a source (splitmix64, vectorised)."""
    with np.errstate(over="ignore"):
        base = np.uint64(xxhash.xxh64_intdigest(f"{seed}\x00rows\x00{source}".encode()))
        z = base + np.arange(n_rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def global_row_ranks(seed: int, rows_per_source: dict[str, int]) -> dict[str, np.ndarray]:
    """Position of every row in the global shuffle: rows sorted by their seeded hash, ties by (source, index).

    Needs only the row count of each source, so every worker derives the same order without a global sort of
    the rows themselves (8 bytes of memory per row).
    """
    sources = sorted(s for s, n in rows_per_source.items() if n > 0)
    if not sources:
        return {}
    keys = np.concatenate([row_shuffle_keys(seed, s, rows_per_source[s]) for s in sources])
    src = np.concatenate([np.full(rows_per_source[s], k, dtype=np.int32) for k, s in enumerate(sources)])
    idx = np.concatenate([np.arange(rows_per_source[s], dtype=np.int64) for s in sources])
    order = np.lexsort((idx, src, keys))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    start = 0
    for s in sources:
        out[s] = ranks[start : start + rows_per_source[s]]
        start += rows_per_source[s]
    return out


# --------------------------------------------------------------------------------------------- DoFns


class EncodeDocuments(beam.DoFn):
    """Arrow record batches of documents -> ``(source, (id, token bytes))``, ``<|endoftext|>`` appended.

    Tokens travel as raw bytes of the shard dtype (2 or 4 bytes a token), far smaller than pickled int lists.
    Documents of unweighted sources are dropped before tokenizing, so they cost nothing.
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
                yield source, (doc_id, np.asarray(ids_, dtype=self._dtype).tobytes())
                # the outcome (kept / not_drawn / ...) is decided when the source is packed


def _doc_meta(element: tuple[str, tuple[str, bytes]], itemsize: int) -> tuple[str, tuple[str, str, int]]:
    """``(source, (id, token bytes))`` -> ``(source, (id, digest, tokens))``: what the validation plan needs."""
    source, (doc_id, data) = element
    return source, (doc_id, xxhash.xxh64_hexdigest(data), len(data) // itemsize)


class PlanSource(beam.DoFn):
    """One source's ``(id, digest, tokens)`` -> ``(source, plan)``: its held-out documents and training tokens.

    Duplicate ids are resolved as :class:`PackSource` does (the copy with the smallest digest stays), so the
    training tokens counted here are exactly those PackSource draws from.
    """

    def __init__(self, weights: dict[str, float], val_fraction: float, val_max_tokens: int, seq_len: int):
        self.weights = dict(weights)
        self.val_fraction = val_fraction
        self.val_max_tokens = val_max_tokens
        self.seq_len = seq_len

    def process(self, element: tuple[str, Iterable[tuple[str, str, int]]]) -> Iterator[tuple[str, dict[str, Any]]]:
        source, grouped = element
        seen: set[str] = set()
        ids: list[str] = []
        lengths: list[int] = []
        for doc_id, _, n in sorted(grouped):
            if doc_id not in seen:
                seen.add(doc_id)
                ids.append(doc_id)
                lengths.append(n)
        lens = np.asarray(lengths, dtype=np.int64)
        fraction = self.val_fraction if self.weights.get(source, 0.0) > 0 else 0.0
        val = select_validation(ids, lens, source, fraction, self.val_max_tokens, self.seq_len + 1)
        val_tokens = int(lens[val].sum()) if val else 0
        yield (
            source,
            {
                "val_ids": [ids[i] for i in val],
                "val_tokens": val_tokens,
                "train_tokens": int(lens.sum()) - val_tokens,
            },
        )


def _dedup_sorted(grouped: Iterable[tuple[str, bytes]]) -> tuple[dict[str, bytes], int]:
    """Documents by id, the copy with the smallest (digest, tokens) kept; and how many duplicates went."""
    keyed = sorted((doc_id, xxhash.xxh64_hexdigest(data), len(data), data) for doc_id, data in grouped)
    docs: dict[str, bytes] = {}
    duplicates = 0
    for doc_id, _, _, data in keyed:  # sorted: arrival order varies by runner; the result must not
        if doc_id in docs:
            duplicates += 1
        else:
            docs[doc_id] = data
    return docs, duplicates


def _row_records(source: str, rows: np.ndarray, starts: np.ndarray, width: int) -> Iterator[Any]:
    """``((source, row index), (token bytes, doc_offsets))`` for packed rows and their document starts."""
    row_of_start = starts // width
    bounds = np.searchsorted(row_of_start, np.arange(len(rows) + 1), side="left")
    for r in range(len(rows)):
        offsets = (starts[bounds[r] : bounds[r + 1]] - r * width).astype(np.int32).tolist()
        yield (source, r), (rows[r].tobytes(), offsets)


class PackSource(beam.DoFn):
    """One source's documents -> its drawn, packed rows ``((source, row index), (token bytes, doc_offsets))``.

    All of a source's documents meet under one key (GroupByKey on the source name), so one worker holds one
    source's tokens in memory. That is fine at the scale ccgpt targets (a source of a few hundred million
    tokens is a few hundred MB of uint16); a larger corpus would pack per (source, hash bucket) instead.
    The held-out documents named by the source's plan are packed apart into validation rows (tagged
    ``val_rows``) and never into a training row. Besides rows it emits one outcome per document and one
    ``source_stats`` record per source. When the plan cannot be met (:func:`plan_problems`) it packs nothing
    and the driver raises.
    """

    def __init__(
        self,
        weights: dict[str, float],
        total_tokens: int,
        seq_len: int,
        seed: int,
        token_dtype: str,
        max_epochs: float = 0.0,
    ):
        self.weights = dict(weights)
        self.total_tokens = total_tokens
        self.seq_len = seq_len
        self.seed = seed
        self.token_dtype = token_dtype
        self.max_epochs = max_epochs

    def process(
        self,
        element: tuple[str, Iterable[tuple[str, bytes]]],
        available: dict[str, int],
        plans: dict[str, dict[str, Any]],
    ) -> Iterator[Any]:
        source, grouped = element
        dtype = np.dtype(self.token_dtype)
        width = self.seq_len + 1
        docs, duplicates = _dedup_sorted(grouped)
        val_ids = list(plans.get(source, {}).get("val_ids", []))
        held = set(val_ids)
        ids = [i for i in docs if i not in held]
        arrays = [np.frombuffer(docs[i], dtype=dtype) for i in ids]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        own_available = int(lengths.sum())
        problems = plan_problems(available, self.weights, self.total_tokens, self.seq_len, self.max_epochs)
        stats: dict[str, Any] = {"source": source, "documents": len(docs), "tokens_available": own_available}
        if problems:  # the driver raises with these problems; packing and writing would be wasted work
            yield beam.pvalue.TaggedOutput(SOURCE_STATS, {**stats, "problems": problems})
            return
        for _ in range(duplicates):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate_id"))
        target = source_target(source, available, self.weights, self.total_tokens)
        order, times = draw_plan(ids, lengths, target, self.seed, source)
        rows, starts, used = pack_rows([arrays[i] for i in order], width, max_tokens=target)
        landed = np.zeros(len(ids), dtype=np.int64)  # instances of each document with a token in a row
        if len(order):
            np.add.at(landed, np.asarray(order, dtype=np.int64)[starts < used], 1)
        for k in range(len(ids)):
            if landed[k] > 0:
                yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
            elif times[k] > 0:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("packing_tail"))
            else:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("not_drawn"))
        yield from _row_records(source, rows, starts, width)
        # validation: every held-out document once, in the plan's (hash) order; the final partial row dropped
        val_arrays = [np.frombuffer(docs[i], dtype=dtype) for i in val_ids]
        vrows, vstarts, vused = pack_rows(val_arrays, width)
        for start in vstarts.tolist():
            yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT if start < vused else dropped("val_packing_tail"))
        for record in _row_records(source, vrows, vstarts, width):
            yield beam.pvalue.TaggedOutput(VAL_ROWS, record)
        selected = int(sum(int(lengths[i]) for i in order))
        yield beam.pvalue.TaggedOutput(
            SOURCE_STATS,
            {
                **stats,
                "documents_drawn": int((landed > 0).sum()),
                "repeated_documents": int(np.maximum(landed - 1, 0).sum()),
                "tokens_target": target,
                "tokens_selected": selected,
                "tokens_drawn": int(used),
                "tail_tokens_dropped": selected - int(used),
                "rows": len(rows),
                "val_documents": len(val_ids),
                "val_documents_packed": int((vstarts < vused).sum()),
                "val_tokens": int(sum(len(a) for a in val_arrays)),
                "val_tokens_packed": int(vused),
                "val_rows": len(vrows),
            },
        )


def _rows_of(stats: dict[str, Any], key: str = "rows") -> tuple[str, int]:
    return stats["source"], stats.get(key, 0)


class AssignShard(beam.DoFn):
    """``((source, row index), row)`` -> ``(shard index, (position, source, row))`` from the global shuffle.

    The rank table is derived from the per-source row counts (a small side input) once per worker and cached.
    With ``shuffle=False`` (the validation split) rows are ranked by source name, then row index.
    """

    def __init__(self, seed: int, rows_per_shard: int, shuffle: bool = True):
        self.seed = seed
        self.rows_per_shard = rows_per_shard
        self.shuffle = shuffle
        self._cache_key: tuple | None = None
        self._ranks: dict[str, np.ndarray] = {}

    def process(self, element: Any, rows_per_source: dict[str, int]) -> Iterator[Any]:
        (source, r), row = element
        key = tuple(sorted(rows_per_source.items()))
        if key != self._cache_key:
            if self.shuffle:
                self._ranks = global_row_ranks(self.seed, dict(key))
            else:
                counts = dict(key)
                firsts = np.cumsum([0] + [counts[s] for s in sorted(counts)])
                self._ranks = {
                    s: firsts[k] + np.arange(counts[s], dtype=np.int64) for k, s in enumerate(sorted(counts))
                }
            self._cache_key = key
        rank = int(self._ranks[source][r])
        yield rank // self.rows_per_shard, (rank % self.rows_per_shard, source, row)


def write_shard_file(path: str, table: pa.Table) -> str:
    """Write an Arrow IPC file atomically (temp name, then rename); return its sha256."""
    h = hashlib.sha256()
    with atomic_path(path) as tmp:
        with pa.OSFile(tmp, "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        with open(tmp, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class WriteShard(beam.DoFn):
    """One shard's rows -> ``shard-NNNNN.arrow`` (or ``pattern``) in the output folder; emits its ``ShardInfo`` as JSON.

    Writes with plain file IO into the stage's output folder, so workers must share that filesystem (true for
    the local and portable runners; a cluster run points the stage at a shared mount).
    """

    def __init__(self, folder: str, token_dtype: str, seq_len: int, pattern: str = SHARD_PATTERN):
        self.folder = folder
        self.token_dtype = token_dtype
        self.seq_len = seq_len
        self.pattern = pattern

    def process(self, element: tuple[int, Iterable[tuple[int, str, tuple[bytes, list[int]]]]]) -> Iterator[str]:
        shard, grouped = element
        rows = sorted(grouped, key=lambda x: x[0])
        positions = [p for p, _, _ in rows]
        if positions != list(range(len(rows))):
            raise RuntimeError(f"shard {shard}: row positions are not 0..{len(rows) - 1}")
        width = self.seq_len + 1
        dtype = np.dtype(self.token_dtype)
        values = np.frombuffer(b"".join(row[0] for _, _, row in rows), dtype=dtype)
        list_offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * width, type=pa.int32())
        schema = shard_schema(self.token_dtype)
        tokens = pa.ListArray.from_arrays(list_offsets, pa.array(values, type=schema.field("tokens").type.value_type))
        table = pa.Table.from_arrays(
            [
                tokens,
                pa.array([row[1] for _, _, row in rows], type=pa.list_(pa.int32())),
                pa.array([source for _, source, _ in rows], type=pa.string()),
            ],
            schema=schema,
        )
        name = self.pattern.format(shard)
        sha = write_shard_file(os.path.join(self.folder, name), table)
        yield json.dumps({"file": name, "rows": len(rows), "tokens": len(rows) * width, "sha256": sha})


# --------------------------------------------------------------------------------------------- the table


def _human(n: float) -> str:
    for scale, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if n >= scale:
            return f"{n / scale:.3g} {word}"
    return f"{int(n)}"


def format_mix_table(manifest: Manifest) -> str:
    """The mix as GPT-3's Table 2.2 (Markdown): dataset, quantity, weight, epochs for the trained tokens.

    Quantity is the training pool (validation documents excluded); a last column gives the held-out tokens.
    """
    total = manifest.total_tokens
    val = manifest.validation
    lines = [
        "| Dataset | Quantity (tokens) | Weight in training mix | "
        f"Epochs elapsed when training for {_human(total)} tokens |"
        + (" Held out for validation (tokens) |" if val else ""),
        "|---|---:|---:|---:|" + ("---:|" if val else ""),
    ]
    for name, s in sorted(manifest.sources.items(), key=lambda kv: (-kv[1].weight, kv[0])):
        held = ""
        if val:
            v = val.sources.get(name)
            held = f" {_human(v.tokens_packed) if v else 0} |"
        lines.append(f"| {name} | {_human(s.tokens_available)} | {s.weight * 100:.3g}% | {s.epochs:.2f} |{held}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- the stage


def _validate(cfg: MixConfig) -> dict[str, float]:
    if not cfg.tokenizer:
        raise MixError("mix needs a tokenizer (--tokenizer PATH)")
    if cfg.seq_len < 1 or cfg.rows_per_shard < 1 or cfg.total_tokens < 0:
        raise MixError(
            f"need seq_len >= 1, rows_per_shard >= 1, total_tokens >= 0 (got {cfg.seq_len}, {cfg.rows_per_shard},"
            f" {cfg.total_tokens})"
        )
    if not 0.0 <= cfg.val_fraction < 1.0 or cfg.val_max_tokens < 0:
        raise MixError(
            f"need 0 <= val_fraction < 1 and val_max_tokens >= 0 (got {cfg.val_fraction}, {cfg.val_max_tokens})"
        )
    if not (math.isfinite(cfg.max_epochs) and cfg.max_epochs >= 0):
        raise MixError(f"max_epochs must be >= 0 (0 = no cap), got {cfg.max_epochs}")
    return normalise_weights(cfg.weights)


def _write_rows(
    rows: Any,
    label: str,
    folder: str,
    cfg: MixConfig,
    token_dtype: str,
    rows_per_source: Any,
    shuffle: bool,
    pattern: str,
    infos_file: str,
) -> None:
    (
        rows
        | f"Assign{label}"
        >> beam.ParDo(
            AssignShard(cfg.seed, cfg.rows_per_shard, shuffle=shuffle),
            rows_per_source=beam.pvalue.AsDict(rows_per_source),
        )
        | f"GroupBy{label}" >> beam.GroupByKey()
        | f"Write{label}" >> beam.ParDo(WriteShard(folder, token_dtype, cfg.seq_len, pattern))
        | f"{label}Infos" >> beam.io.WriteToText(os.path.join(folder, infos_file), shard_name_template="", num_shards=1)
    )


def run_mix(inputs: list[str], out_dir: str, cfg: MixConfig, runner: RunnerConfig, force: bool = False) -> StageStats:
    """Tokenize, mix by weight, pack and shuffle document tables into ``out_dir``.

    Output folder: ``shard-00000.arrow`` ... (``schemas.shards`` schema), ``val-00000.arrow`` ... (the
    validation split, when ``val_fraction > 0``), ``manifest.json`` (``schemas.manifest.Manifest``),
    ``mix_table.md``, ``tokenizer.json`` (the tokenizer that made the shards), ``outcomes.jsonl`` and
    ``stats.json`` (stage ``mix``; extra: ``repeated_documents``, ``tokens_per_source``, ``validation_documents``
    ...). Raises :class:`MixError` for unusable weights, a weighted source without documents, a weight that
    cannot be met (less than a row, more than ``max_epochs``), or a budget too small to fill one row; all but
    the token-count checks before the pipeline starts.
    """
    shares = _validate(cfg)
    tok = load_tokenizer(cfg.tokenizer)
    info = tokenizer_info(tok, path=TOKENIZER_FILE)
    # the tokenizer enters the fingerprint by content: retraining it in place must invalidate the shards
    fp = fingerprint("mix", inputs, {"config": dataclasses.asdict(cfg), "tokenizer": info["content_hash"]})
    if not force and is_complete(out_dir, fp):
        return load_stats(out_dir)
    token_dtype = token_dtype_for(info["vocab_size"])
    itemsize = np.dtype(token_dtype).itemsize
    files = [f for path in inputs for f in document_files(path)]
    if not files:
        raise MixError(f"the inputs {inputs} hold no documents (weighted sources: {sorted(shares)})")
    for f in files:
        validate_document_schema(pq.read_schema(f), where=f)
    preflight(count_documents(files), cfg)
    with stage_output(out_dir) as tmp:
        with make_pipeline(runner, "mix", total=count_rows(inputs)) as p:
            outcomes_parts = []
            tables = (
                p
                | "Files" >> beam.Create(files)
                | "Read" >> ReadAllFromParquetBatched(columns=["id", "source", "text"])
            )
            encoded = tables | "Encode" >> beam.ParDo(
                EncodeDocuments(cfg.tokenizer, list(shares), token_dtype, cfg.encode_batch_size)
            ).with_outputs(OUTCOMES, main="docs")
            outcomes_parts.append(encoded[OUTCOMES])
            plans = (
                encoded.docs
                | "DocMeta" >> beam.Map(_doc_meta, itemsize=itemsize)
                | "GroupMetaBySource" >> beam.GroupByKey()
                | "PlanSources" >> beam.ParDo(PlanSource(shares, cfg.val_fraction, cfg.val_max_tokens, cfg.seq_len))
            )
            available = plans | "TrainTokens" >> beam.Map(lambda kv: (kv[0], kv[1]["train_tokens"]))
            packed = (
                encoded.docs
                | "GroupBySource" >> beam.GroupByKey()
                | "Pack"
                >> beam.ParDo(
                    PackSource(shares, cfg.total_tokens, cfg.seq_len, cfg.seed, token_dtype, cfg.max_epochs),
                    available=beam.pvalue.AsDict(available),
                    plans=beam.pvalue.AsDict(plans),
                ).with_outputs(OUTCOMES, SOURCE_STATS, VAL_ROWS, main="rows")
            )
            outcomes_parts.append(packed[OUTCOMES])
            rows_per_source = packed[SOURCE_STATS] | "RowsPerSource" >> beam.Map(_rows_of)
            val_rows_per_source = packed[SOURCE_STATS] | "ValRowsPerSource" >> beam.Map(_rows_of, key="val_rows")
            _write_rows(
                packed.rows, "Shards", tmp, cfg, token_dtype, rows_per_source, True, SHARD_PATTERN, _SHARDS_FILE
            )
            _write_rows(
                packed[VAL_ROWS],
                "ValShards",
                tmp,
                cfg,
                token_dtype,
                val_rows_per_source,
                False,
                VAL_SHARD_PATTERN,
                _VAL_SHARDS_FILE,
            )
            (
                packed[SOURCE_STATS]
                | "SourceJson" >> beam.Map(json.dumps, sort_keys=True)
                | "SourceStats"
                >> beam.io.WriteToText(os.path.join(tmp, _SOURCES_FILE), shard_name_template="", num_shards=1)
            )
            outcomes_parts | "AllOutcomes" >> beam.Flatten() | WriteOutcomes(tmp)

        per_source = {s["source"]: s for s in read_jsonl(os.path.join(tmp, _SOURCES_FILE))}
        shard_infos = sorted(read_jsonl(os.path.join(tmp, _SHARDS_FILE)), key=lambda s: s["file"])
        val_infos = sorted(read_jsonl(os.path.join(tmp, _VAL_SHARDS_FILE)), key=lambda s: s["file"])
        for name in (_SOURCES_FILE, _SHARDS_FILE, _VAL_SHARDS_FILE):
            if os.path.exists(os.path.join(tmp, name)):
                os.remove(os.path.join(tmp, name))
        available_tokens = {s: v["tokens_available"] for s, v in per_source.items()}
        problems = plan_problems(available_tokens, shares, cfg.total_tokens, cfg.seq_len, cfg.max_epochs)
        if problems:
            raise MixError("; ".join(problems))
        total = sum(v["tokens_drawn"] for v in per_source.values())
        if total == 0:
            raise MixError(f"the budget fills no row of {cfg.seq_len + 1} tokens: raise total_tokens or lower seq_len")
        no_val_rows = sorted(s for s, v in per_source.items() if v["val_documents"] and not v["val_rows"])
        if no_val_rows:
            log.warning(
                "validation: source(s) %s hold out too few tokens to fill one row of %d", no_val_rows, cfg.seq_len + 1
            )
        validation = None
        if cfg.val_fraction > 0:
            validation = ValidationSplit(
                fraction=cfg.val_fraction,
                max_tokens_per_source=cfg.val_max_tokens,
                total_tokens=sum(v["val_tokens_packed"] for v in per_source.values()),
                sources={
                    s: ValidationSource(
                        documents=v["val_documents"], tokens=v["val_tokens"], tokens_packed=v["val_tokens_packed"]
                    )
                    for s, v in sorted(per_source.items())
                    if v["val_documents"]
                },
                shards=[ShardInfo(**s) for s in val_infos],
            )
        manifest = Manifest(
            shard_schema_version=SHARD_SCHEMA_VERSION,
            seq_len=cfg.seq_len,
            token_dtype=token_dtype,
            tokenizer=TokenizerInfo(**info),
            seed=cfg.seed,
            total_tokens=total,
            sources={
                s: SourceMix(
                    weight=shares[s],
                    documents=v["documents"],
                    tokens_available=v["tokens_available"],
                    tokens_drawn=v["tokens_drawn"],
                    epochs=v["tokens_drawn"] / v["tokens_available"] if v["tokens_available"] else 0.0,
                    realised_share=v["tokens_drawn"] / total,
                )
                for s, v in sorted(per_source.items())
            },
            shards=[ShardInfo(**s) for s in shard_infos],
            validation=validation,
            lineage={
                "stage_fingerprint": fp,
                "code_version": code_version(),
                **{f"input.{i}": path for i, path in enumerate(inputs)},
            },
        )
        copy_tokenizer(tok, tmp)
        manifest.save(os.path.join(tmp, "manifest.json"))
        table = format_mix_table(manifest)
        with open(os.path.join(tmp, "mix_table.md"), "w", encoding="utf-8") as fh:
            fh.write(table)
        log.info("mix table:\n%s", table)

        stats = stats_from_outcomes("mix", read_outcomes(tmp))
        stats.extra.update(
            repeated_documents=sum(v["repeated_documents"] for v in per_source.values()),
            tokens_per_source={s: v["tokens_drawn"] for s, v in sorted(per_source.items())},
            tokens_available={s: v["tokens_available"] for s, v in sorted(per_source.items())},
            tail_tokens_dropped=sum(v["tail_tokens_dropped"] for v in per_source.values()),
            total_tokens=total,
            token_budget=cfg.total_tokens,
            rows=sum(s["rows"] for s in shard_infos),
            shards=len(shard_infos),
            validation_documents=sum(v["val_documents_packed"] for v in per_source.values()),
            validation_tokens=sum(v["val_tokens_packed"] for v in per_source.values()),
            validation_rows=sum(s["rows"] for s in val_infos),
            validation_shards=len(val_infos),
            token_dtype=token_dtype,
            tokenizer_hash=info["content_hash"],
        )
        finish(stats, tmp, fp)
    return stats
