"""Mix sources by weight into packed, globally shuffled Arrow token shards (the GPT-3 Table 2.2 step).

GPT-3 does not train on its sources in proportion to their size: it samples them by a chosen weight, so small
high-quality sources (Wikipedia, books) are repeated for several epochs and the crawl is seen less than once.
This stage does the same, deterministically, on a Beam runner:

1. read the document tables; documents whose ``source`` has no weight are dropped (``source_not_in_mix``);
2. tokenize in batches inside a DoFn (tokenizer loaded once per worker) and end every document with
   ``<|endoftext|>``; a literal ``<|endoftext|>`` in the text stays text;
3. count the tokens available per source (a combine, used as a side input);
4. per source, draw ``weight * budget`` tokens: whole epochs by repetition, plus a seeded hash-ordered subset of
   documents for the fractional epoch (also how a source is downsampled), each epoch in its own seeded order;
5. pack that token stream into rows of ``seq_len + 1`` tokens with ``doc_offsets``; the final partial row of
   each source is dropped and its tokens counted (``tail_tokens_dropped``) rather than padded, so every token a
   trainer sees is real text and no pad token or loss mask is needed;
6. order all rows by a seeded hash of (source, row index), cut them into ``rows_per_shard`` shards and write
   ``shard-00000.arrow`` ... (Arrow IPC files, written atomically), then ``manifest.json`` and
   ``mix_table.md``.

``total_tokens = 0`` means: the largest budget that repeats no source, ``min(available_s / weight_s)``, so the
scarcest source (relative to its weight) is used exactly once and the rest are downsampled.

Accounting counts input documents: ``kept`` are those with at least one token in a shard; drops are
``source_not_in_mix``, ``empty_text``, ``missing_field``, ``encode_error``, ``duplicate_id`` (the same id twice in
one source), ``not_drawn`` (downsampled away) and ``packing_tail`` (drawn, but only into a dropped final row).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.parquetio import ReadAllFromParquetBatched

from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped, read_outcomes, stats_from_outcomes
from pipeline.runner import RunnerConfig, make_pipeline
from pipeline.stage import code_version, fingerprint, finish, is_complete, load_stats, stage_output
from pipeline.tokenizer import TOKENIZER_FILE, copy_tokenizer, encode_batch, load_tokenizer, tokenizer_info
from schemas.documents import document_files, validate_document_schema
from schemas.manifest import Manifest, ShardInfo, SourceMix, TokenizerInfo
from schemas.shards import SHARD_SCHEMA_VERSION, shard_schema, token_dtype_for
from schemas.stats import StageStats

log = logging.getLogger(__name__)

SOURCE_STATS = "source_stats"
SHARD_PATTERN = "shard-{:05d}.arrow"
_SOURCES_FILE = "_sources.jsonl"
_SHARDS_FILE = "_shards.jsonl"


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


def _doc_key(seed: int, source: str, tag: str, doc_id: str) -> int:
    return xxhash.xxh64_intdigest(f"{seed}\x00{source}\x00{tag}\x00{doc_id}".encode())


def draw_plan(
    ids: list[str], lengths: np.ndarray, target: int, seed: int, source: str
) -> tuple[list[int], list[int]]:
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


def _token_count(element: tuple[str, tuple[str, bytes]], itemsize: int) -> tuple[str, int]:
    source, (_, data) = element
    return source, len(data) // itemsize


class PackSource(beam.DoFn):
    """One source's documents -> its drawn, packed rows ``((source, row index), (token bytes, doc_offsets))``.

    All of a source's documents meet under one key (GroupByKey on the source name), so one worker holds one
    source's tokens in memory. That is fine at the scale ccgpt targets (a source of a few hundred million
    tokens is a few hundred MB of uint16); a larger corpus would pack per (source, hash bucket) instead.
    Besides rows it emits one outcome per document and one ``source_stats`` record per source.
    """

    def __init__(self, weights: dict[str, float], total_tokens: int, seq_len: int, seed: int, token_dtype: str):
        self.weights = dict(weights)
        self.total_tokens = total_tokens
        self.seq_len = seq_len
        self.seed = seed
        self.token_dtype = token_dtype

    def process(self, element: tuple[str, Iterable[tuple[str, bytes]]], available: dict[str, int]) -> Iterator[Any]:
        source, grouped = element
        dtype = np.dtype(self.token_dtype)
        width = self.seq_len + 1
        docs: dict[str, bytes] = {}
        duplicates = 0
        for doc_id, data in sorted(grouped):  # sorted: arrival order varies by runner; the result must not
            if doc_id in docs:
                duplicates += 1
                continue
            docs[doc_id] = data
        for _ in range(duplicates):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate_id"))
        ids = list(docs)
        arrays = [np.frombuffer(docs[i], dtype=dtype) for i in ids]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        own_available = int(lengths.sum())
        # The budget comes from every source's count (side input); this source's share is drawn from its own,
        # duplicate-free documents, so shares stay exact even if a duplicate inflated the count.
        try:
            target = source_target(source, available, self.weights, self.total_tokens)
        except MixError:
            target = 0  # a weighted source has no documents: draw nothing; the driver reports the error
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
        row_of_start = starts // width
        bounds = np.searchsorted(row_of_start, np.arange(len(rows) + 1), side="left")
        for r in range(len(rows)):
            offsets = (starts[bounds[r] : bounds[r + 1]] - r * width).astype(np.int32).tolist()
            yield (source, r), (rows[r].tobytes(), offsets)
        selected = int(sum(int(lengths[i]) for i in order))
        yield beam.pvalue.TaggedOutput(
            SOURCE_STATS,
            {
                "source": source,
                "documents": len(ids),
                "documents_drawn": int((landed > 0).sum()),
                "repeated_documents": int(np.maximum(landed - 1, 0).sum()),
                "tokens_available": own_available,
                "tokens_target": target,
                "tokens_selected": selected,
                "tokens_drawn": int(used),
                "tail_tokens_dropped": selected - int(used),
                "rows": len(rows),
            },
        )


def _rows_of(stats: dict[str, Any]) -> tuple[str, int]:
    return stats["source"], stats["rows"]


class AssignShard(beam.DoFn):
    """``((source, row index), row)`` -> ``(shard index, (position, source, row))`` from the global shuffle.

    The rank table is derived from the per-source row counts (a small side input) once per worker and cached.
    """

    def __init__(self, seed: int, rows_per_shard: int):
        self.seed = seed
        self.rows_per_shard = rows_per_shard
        self._cache_key: tuple | None = None
        self._ranks: dict[str, np.ndarray] = {}

    def process(self, element: Any, rows_per_source: dict[str, int]) -> Iterator[Any]:
        (source, r), row = element
        key = tuple(sorted(rows_per_source.items()))
        if key != self._cache_key:
            self._ranks = global_row_ranks(self.seed, dict(key))
            self._cache_key = key
        rank = int(self._ranks[source][r])
        yield rank // self.rows_per_shard, (rank % self.rows_per_shard, source, row)


def write_shard_file(path: str, table: pa.Table) -> str:
    """Write an Arrow IPC file atomically (temp name, then rename); return its sha256."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with pa.OSFile(tmp, "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    h = hashlib.sha256()
    with open(tmp, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    os.replace(tmp, path)
    return h.hexdigest()


class WriteShard(beam.DoFn):
    """One shard's rows -> ``shard-NNNNN.arrow`` in the output folder; emits its ``ShardInfo`` as JSON.

    Writes with plain file IO into the stage's output folder, so workers must share that filesystem (true for
    the local and portable runners; a cluster run points the stage at a shared mount).
    """

    def __init__(self, folder: str, token_dtype: str, seq_len: int):
        self.folder = folder
        self.token_dtype = token_dtype
        self.seq_len = seq_len

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
        name = SHARD_PATTERN.format(shard)
        sha = write_shard_file(os.path.join(self.folder, name), table)
        yield json.dumps({"file": name, "rows": len(rows), "tokens": len(rows) * width, "sha256": sha})


# --------------------------------------------------------------------------------------------- the table


def _human(n: float) -> str:
    for scale, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if n >= scale:
            return f"{n / scale:.3g} {word}"
    return f"{int(n)}"


def format_mix_table(manifest: Manifest) -> str:
    """The mix as GPT-3's Table 2.2 (Markdown): dataset, quantity, weight, epochs for the trained tokens."""
    total = manifest.total_tokens
    lines = [
        f"| Dataset | Quantity (tokens) | Weight in training mix | Epochs elapsed when training for {_human(total)} tokens |",
        "|---|---:|---:|---:|",
    ]
    for name, s in sorted(manifest.sources.items(), key=lambda kv: (-kv[1].weight, kv[0])):
        lines.append(f"| {name} | {_human(s.tokens_available)} | {s.weight * 100:.3g}% | {s.epochs:.2f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- the stage


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _validate(cfg: MixConfig) -> dict[str, float]:
    if not cfg.tokenizer:
        raise MixError("mix needs a tokenizer (--tokenizer PATH)")
    if cfg.seq_len < 1 or cfg.rows_per_shard < 1 or cfg.total_tokens < 0:
        raise MixError(
            f"need seq_len >= 1, rows_per_shard >= 1, total_tokens >= 0 (got {cfg.seq_len}, {cfg.rows_per_shard},"
            f" {cfg.total_tokens})"
        )
    return normalise_weights(cfg.weights)


def run_mix(inputs: list[str], out_dir: str, cfg: MixConfig, runner: RunnerConfig, force: bool = False) -> StageStats:
    """Tokenize, mix by weight, pack and shuffle document tables into ``out_dir``.

    Output folder: ``shard-00000.arrow`` ... (``schemas.shards`` schema), ``manifest.json``
    (``schemas.manifest.Manifest``), ``mix_table.md``, ``tokenizer.json`` (the tokenizer that made the shards),
    ``outcomes.jsonl`` and ``stats.json`` (stage ``mix``; extra: ``repeated_documents``, ``tokens_per_source``,
    ...). Raises :class:`MixError` for unusable weights, a weighted source without documents, or a budget too
    small to fill one row.
    """
    shares = _validate(cfg)
    tok = load_tokenizer(cfg.tokenizer)
    info = tokenizer_info(tok, path=TOKENIZER_FILE)
    # the tokenizer enters the fingerprint by content: retraining it in place must invalidate the shards
    fp = fingerprint("mix", inputs, {"config": dataclasses.asdict(cfg), "tokenizer": info["content_hash"]})
    if not force and is_complete(out_dir, fp):
        return load_stats(out_dir)
    token_dtype = token_dtype_for(info["vocab_size"])
    files = [f for path in inputs for f in document_files(path)]
    if not files:
        raise MixError(f"the inputs {inputs} hold no documents (weighted sources: {sorted(shares)})")
    for f in files:
        validate_document_schema(pq.read_schema(f), where=f)
    with stage_output(out_dir) as tmp:
        with make_pipeline(runner) as p:
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
            available = (
                encoded.docs
                | "TokenCounts" >> beam.Map(_token_count, itemsize=np.dtype(token_dtype).itemsize)
                | "TokensPerSource" >> beam.CombinePerKey(sum)
            )
            packed = (
                encoded.docs
                | "GroupBySource" >> beam.GroupByKey()
                | "Pack" >> beam.ParDo(
                    PackSource(shares, cfg.total_tokens, cfg.seq_len, cfg.seed, token_dtype),
                    available=beam.pvalue.AsDict(available),
                ).with_outputs(OUTCOMES, SOURCE_STATS, main="rows")
            )
            outcomes_parts.append(packed[OUTCOMES])
            rows_per_source = packed[SOURCE_STATS] | "RowsPerSource" >> beam.Map(_rows_of)
            (
                packed.rows
                | "AssignShard" >> beam.ParDo(
                    AssignShard(cfg.seed, cfg.rows_per_shard), rows_per_source=beam.pvalue.AsDict(rows_per_source)
                )
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(WriteShard(tmp, token_dtype, cfg.seq_len))
                | "ShardInfos" >> beam.io.WriteToText(os.path.join(tmp, _SHARDS_FILE), shard_name_template="", num_shards=1)
            )
            (
                packed[SOURCE_STATS]
                | "SourceJson" >> beam.Map(json.dumps, sort_keys=True)
                | "SourceStats" >> beam.io.WriteToText(os.path.join(tmp, _SOURCES_FILE), shard_name_template="", num_shards=1)
            )
            outcomes_parts | "AllOutcomes" >> beam.Flatten() | WriteOutcomes(tmp)

        per_source = {s["source"]: s for s in _read_jsonl(os.path.join(tmp, _SOURCES_FILE))}
        shard_infos = sorted(_read_jsonl(os.path.join(tmp, _SHARDS_FILE)), key=lambda s: s["file"])
        for name in (_SOURCES_FILE, _SHARDS_FILE):
            if os.path.exists(os.path.join(tmp, name)):
                os.remove(os.path.join(tmp, name))
        plan_budget({s: v["tokens_available"] for s, v in per_source.items()}, shares, cfg.total_tokens)
        total = sum(v["tokens_drawn"] for v in per_source.values())
        if total == 0:
            raise MixError(
                f"the budget fills no row of {cfg.seq_len + 1} tokens: raise total_tokens or lower seq_len"
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
            token_dtype=token_dtype,
            tokenizer_hash=info["content_hash"],
        )
        finish(stats, tmp, fp)
    return stats
