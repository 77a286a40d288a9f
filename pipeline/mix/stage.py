"""``ccgpt mix``: the recipe (:class:`Mix`), its shard writer and ``run_mix``, which checks, runs and records it.

Output folder::

    OUT/shard-00000.attempt-<tag>.arrow ...
                               training rows, globally shuffled (``schemas.shards`` schema)
    OUT/val-00000.attempt-<tag>.arrow ...
                               the validation split, packed per source, ordered by source (val_fraction > 0)
    OUT/manifest.json          ``schemas.manifest.Manifest``: sources, shards (by their tagged names),
                               validation split, lineage
    OUT/mix_table.md           the mix as GPT-3's Table 2.2
    OUT/tokenizer.json         the tokenizer that made the shards
    OUT/outcomes.attempt-<tag>.jsonl
                               one outcome per input document
    OUT/stats.json             stage "mix"; extra: repeated_documents, tokens_per_source, validation_documents ...

``OUT`` may be a local folder or an object-store URL (``s3://``, ``gs://``, ``hdfs://``): every file is read and
written through :mod:`pipeline.fs` and Beam's IOs, and the stage's commit (``stats.json``, written last) is what
makes the folder's files visible, so nothing is renamed. The files the workers write (shards, side files) carry
the attempt's tag (:mod:`pipeline.commit`), so a zombie worker of another attempt never overwrites a committed
shard; the manifest names the shards, and the trainer and ``ccgpt shards verify`` take them from it. The files
the driver writes once it still owns the folder (manifest, mix table, tokenizer) keep fixed names.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadAllFromParquetBatched

from pipeline import fs, handoff
from pipeline.accounting import OUTCOMES, WriteOutcomes
from pipeline.commit import attempt_name, committed_file
from pipeline.mix.config import MixConfig, MixError
from pipeline.mix.draw import PlanDraws
from pipeline.mix.encode import READ_COLUMNS, Doc, EncodeDocuments
from pipeline.mix.pack import (
    BUCKET_STATS,
    SHARD_PATTERN,
    VAL_ROWS,
    VAL_SHARD_PATTERN,
    AssignFile,
    PackBucket,
    SourceStats,
    WriteShard,
    bucket_docs,
    doc_bytes,
    docs_table,
    shard_row_bytes,
    shard_rows,
    shard_rows_table,
    source_stats,
)
from pipeline.mix.plan import bucket_counts, bucket_of, count_documents, normalise_weights, plan_problems, preflight
from pipeline.mix.table import format_mix_table
from pipeline.runner import RunnerConfig
from pipeline.shards import save_manifest
from pipeline.stage import Stage, load_stats
from pipeline.tables import WriteJsonLines, WriteLines, count_rows, document_files, read_jsonl
from pipeline.tokenizer import TOKENIZER_FILE, copy_tokenizer, load_tokenizer, tokenizer_info
from schemas.documents import validate_document_schema
from schemas.manifest import Manifest, ShardInfo, SourceMix, TokenizerInfo, ValidationSource, ValidationSplit
from schemas.shards import SHARD_SCHEMA_VERSION, token_dtype_for
from schemas.stats import StageStats

log = logging.getLogger(__name__)

_SOURCES_FILE = "_sources.jsonl"
_SHARDS_FILE = "_shards.jsonl"
_VAL_SHARDS_FILE = "_val_shards.jsonl"
# hand-off folders (pipeline.handoff) of the packed rows, from their bucket to their shard
ROWS_HANDOFF = "rows"
VAL_ROWS_HANDOFF = "val-rows"


class Mix(beam.PTransform):
    """PCollection of document-table paths -> dict of PCollections (``folder``: the stage's output folder,
    where its hand-off files live while it runs, :mod:`pipeline.handoff`):

    ``rows`` and ``val_rows`` (paths of files of packed :class:`pipeline.mix.pack.Row` records of the training
    and validation splits, in the hand-off folders ``ROWS_HANDOFF`` and ``VAL_ROWS_HANDOFF``),
    ``source_stats`` (one :class:`pipeline.mix.pack.SourceStats` per source) and ``outcomes`` (one per input
    document).
    """

    def __init__(self, cfg: MixConfig, token_dtype: str, documents: dict[str, int], folder: str):
        super().__init__()
        self.cfg = cfg
        self.folder, self.documents = folder, sum(documents.values())
        self.handoff = handoff.handoff_folder(folder, "buckets")
        self.pattern = handoff.file_pattern()
        self.shares = normalise_weights(cfg.weights)
        self.token_dtype = token_dtype
        self.buckets = bucket_counts(documents, cfg.pack_bucket_documents)

    def expand(self, files):
        cfg = self.cfg
        encoded = (
            files
            | "Read" >> ReadAllFromParquetBatched(columns=READ_COLUMNS)
            | "Encode"
            >> beam.ParDo(
                EncodeDocuments(cfg.tokenizer, list(self.shares), self.token_dtype, cfg.encode_batch_size)
            ).with_outputs(OUTCOMES, main="docs")
        )
        itemsize = np.dtype(self.token_dtype).itemsize
        plan = encoded.docs | "Plan" >> PlanDraws(cfg, itemsize, self.buckets, self.folder, self.documents)
        draws = beam.pvalue.AsDict(plan["draws"])
        packed = (
            encoded.docs
            | "KeyByBucket" >> beam.MapTuple(_key_by_bucket, buckets=self.buckets)
            | "HandOff" >> beam.ParDo(handoff.HandOff(self.handoff, self.pattern, docs_table, doc_bytes))
            | "GroupByBucket" >> beam.GroupByKey()
            | "Take" >> beam.MapTuple(bucket_docs)
            | "Pack"
            >> beam.ParDo(
                PackBucket(
                    cfg.seq_len,
                    cfg.seed,
                    self.token_dtype,
                    handoff.handoff_folder(self.folder, ROWS_HANDOFF),
                    handoff.handoff_folder(self.folder, VAL_ROWS_HANDOFF),
                ),
                draws=draws,
                buckets=beam.pvalue.AsDict(plan["buckets"]),
            ).with_outputs(OUTCOMES, BUCKET_STATS, VAL_ROWS, main="rows")
        )
        per_source = (
            {"draw": plan["draws"], "buckets": packed[BUCKET_STATS]}
            | "JoinSourceStats" >> beam.CoGroupByKey()
            | "SourceStats" >> beam.MapTuple(lambda s, g: source_stats(s, g["draw"][0], list(g["buckets"])))
        )
        _ = packed[BUCKET_STATS] | "RemoveHandoff" >> handoff.RemoveWhenDone(self.handoff)
        return {
            "rows": packed.rows,
            "val_rows": packed[VAL_ROWS],
            "source_stats": per_source,
            "outcomes": (encoded[OUTCOMES], packed[OUTCOMES]) | "AllOutcomes" >> beam.Flatten(),
        }


def _key_by_bucket(source: str, doc: Doc, buckets: dict[str, int] | None = None) -> tuple[tuple[str, int], Doc]:
    assert buckets is not None  # MapTuple's extra arguments need defaults
    return (source, bucket_of(source, doc.id, buckets[source])), doc


class WriteShards(beam.PTransform):
    """Paths of packed-rows files (:class:`pipeline.mix.pack.PackBucket`'s, in the hand-off folder
    ``handoff_name``) -> Arrow shard files in ``folder`` (named by ``pattern``), their ``ShardInfo`` JSON lines
    in ``folder/infos_file``.

    ``rows_per_source`` ((source, rows) pairs) places every row: in the seeded global shuffle, or with
    ``shuffle=False`` by source, then row index. Rows reach their shard through hand-off files too
    (:mod:`pipeline.handoff`), one shard's at a time; the folder goes once every shard is written.
    """

    def __init__(
        self,
        folder: str,
        cfg: MixConfig,
        token_dtype: str,
        rows_per_source: beam.PCollection,
        shuffle: bool,
        pattern: str,
        infos_file: str,
        handoff_name: str,
    ):
        super().__init__()
        self.folder = folder
        self.cfg = cfg
        self.token_dtype = token_dtype
        self.rows_per_source = rows_per_source
        self.shuffle = shuffle
        self.pattern = attempt_name(pattern)  # built on the driver: the workers write this attempt's names
        self.infos_file = infos_file
        self.handoff = handoff.handoff_folder(folder, handoff_name)
        self.handoff_pattern = handoff.file_pattern()

    def expand(self, rows):
        infos = (
            rows
            | "Assign"
            >> beam.ParDo(
                AssignFile(self.cfg.seed, self.cfg.rows_per_shard, shuffle=self.shuffle),
                rows_per_source=beam.pvalue.AsDict(self.rows_per_source),
            )
            | "HandOff"
            >> beam.ParDo(handoff.HandOff(self.handoff, self.handoff_pattern, shard_rows_table, shard_row_bytes))
            | "GroupByShard" >> beam.GroupByKey()
            | "Take" >> beam.MapTuple(shard_rows)
            | "Write" >> beam.ParDo(WriteShard(self.folder, self.token_dtype, self.cfg.seq_len, self.pattern))
        )
        _ = infos | "RemoveHandoff" >> handoff.RemoveWhenDone(self.handoff)
        return infos | "Infos" >> WriteLines(fs.join(self.folder, self.infos_file))


def run_mix(inputs: list[str], out_dir: str, cfg: MixConfig, runner: RunnerConfig, force: bool = False) -> StageStats:
    """Tokenize, mix by weight, pack and shuffle document tables into ``out_dir`` (see the module docstring).

    Raises :class:`MixError` for unusable weights, a weighted source without documents, a weight that cannot
    be met (less than a row, more than ``max_epochs``), or a budget too small to fill one row; all but the
    token-count checks before the pipeline starts.
    """
    if not cfg.tokenizer:
        raise MixError("mix needs a tokenizer (--tokenizer PATH)")
    shares = normalise_weights(cfg.weights)
    tok = load_tokenizer(cfg.tokenizer)
    info = tokenizer_info(tok, path=TOKENIZER_FILE)
    # the tokenizer enters the fingerprint by content: retraining it in place must invalidate the shards
    stage = Stage(
        "mix",
        out_dir,
        inputs,
        {"config": cfg, "tokenizer": info["content_hash"]},
        force,
        module=__name__,
    )
    if stage.complete():
        return load_stats(out_dir)
    token_dtype = token_dtype_for(info["vocab_size"])
    files = [f for path in inputs for f in document_files(path)]
    if not files:
        raise MixError(f"the inputs {inputs} hold no documents (weighted sources: {sorted(shares)})")
    for f in files:
        with fs.open_arrow(f) as source:
            validate_document_schema(pq.read_schema(source), where=f)
    documents = count_documents(files)
    preflight(documents, cfg)

    def build(p: beam.Pipeline, tmp: str) -> None:
        out = p | "Files" >> beam.Create(files) | "Mix" >> Mix(cfg, token_dtype, documents, tmp)
        per_source = out["source_stats"]
        rows_per_source = per_source | "RowsPerSource" >> beam.Map(lambda s: (s.source, s.rows))
        val_rows_per_source = per_source | "ValRowsPerSource" >> beam.Map(lambda s: (s.source, s.val_rows))
        _ = out["rows"] | "WriteShards" >> WriteShards(
            tmp, cfg, token_dtype, rows_per_source, True, SHARD_PATTERN, _SHARDS_FILE, ROWS_HANDOFF
        )
        _ = out["val_rows"] | "WriteValShards" >> WriteShards(
            tmp, cfg, token_dtype, val_rows_per_source, False, VAL_SHARD_PATTERN, _VAL_SHARDS_FILE, VAL_ROWS_HANDOFF
        )
        _ = (
            per_source
            | "SourceDicts" >> beam.Map(dataclasses.asdict)
            | "WriteSourceStats" >> WriteJsonLines(fs.join(tmp, _SOURCES_FILE))
        )
        _ = out["outcomes"] | "WriteOutcomes" >> WriteOutcomes(tmp)

    def summarise(tmp: str, stats: StageStats) -> None:
        per_source = {s["source"]: SourceStats(**s) for s in _take_jsonl(tmp, _SOURCES_FILE)}
        shards = sorted((ShardInfo(**s) for s in _take_jsonl(tmp, _SHARDS_FILE)), key=lambda s: s.file)
        val_shards = sorted((ShardInfo(**s) for s in _take_jsonl(tmp, _VAL_SHARDS_FILE)), key=lambda s: s.file)
        _check_plan(per_source, shares, cfg)
        manifest = _manifest(per_source, shares, shards, val_shards, cfg, token_dtype, info, stage, inputs)
        copy_tokenizer(tok, tmp)
        save_manifest(manifest, tmp)
        table = format_mix_table(manifest)
        fs.write_text(fs.join(tmp, "mix_table.md"), table)
        log.info("mix table:\n%s", table)
        stats.extra.update(_extra(per_source, shards, val_shards, cfg, token_dtype, info))

    return stage.run_beam(runner, build, summarise, total=count_rows(inputs))


def _take_jsonl(folder: str, name: str) -> list[dict[str, Any]]:
    """Read a side file the pipeline wrote for the driver, and remove it: it is no output of the stage."""
    path = committed_file(fs.join(folder, name))  # the name this attempt's workers wrote (tagged)
    rows = read_jsonl(path)
    fs.delete([path])
    return rows


def _check_plan(per_source: dict[str, SourceStats], shares: dict[str, float], cfg: MixConfig) -> None:
    """Raise :class:`MixError` when the token counts make the mix unmeetable (PackBucket then packed nothing)."""
    available = {s: v.tokens_available for s, v in per_source.items()}
    problems = plan_problems(available, shares, cfg.total_tokens, cfg.seq_len, cfg.max_epochs)
    if problems:
        raise MixError("; ".join(problems))
    if sum(v.tokens_drawn for v in per_source.values()) == 0:
        raise MixError(f"the budget fills no row of {cfg.seq_len + 1} tokens: raise total_tokens or lower seq_len")
    no_val_rows = sorted(s for s, v in per_source.items() if v.val_documents and not v.val_rows)
    if no_val_rows:
        log.warning(
            "validation: source(s) %s hold out too few tokens to fill one row of %d", no_val_rows, cfg.seq_len + 1
        )


def _validation_split(
    per_source: dict[str, SourceStats], val_shards: list[ShardInfo], cfg: MixConfig
) -> ValidationSplit | None:
    if cfg.val_fraction <= 0:
        return None
    return ValidationSplit(
        fraction=cfg.val_fraction,
        max_tokens_per_source=cfg.val_max_tokens,
        total_tokens=sum(v.val_tokens_packed for v in per_source.values()),
        sources={
            s: ValidationSource(documents=v.val_documents, tokens=v.val_tokens, tokens_packed=v.val_tokens_packed)
            for s, v in sorted(per_source.items())
            if v.val_documents
        },
        shards=val_shards,
    )


def _manifest(
    per_source: dict[str, SourceStats],
    shares: dict[str, float],
    shards: list[ShardInfo],
    val_shards: list[ShardInfo],
    cfg: MixConfig,
    token_dtype: str,
    info: dict[str, Any],
    stage: Stage,
    inputs: list[str],
) -> Manifest:
    total = sum(v.tokens_drawn for v in per_source.values())
    return Manifest(
        shard_schema_version=SHARD_SCHEMA_VERSION,
        seq_len=cfg.seq_len,
        token_dtype=token_dtype,
        tokenizer=TokenizerInfo(**info),
        seed=cfg.seed,
        total_tokens=total,
        sources={
            s: SourceMix(
                weight=shares[s],
                documents=v.documents,
                tokens_available=v.tokens_available,
                tokens_drawn=v.tokens_drawn,
                epochs=v.tokens_drawn / v.tokens_available if v.tokens_available else 0.0,
                realised_share=v.tokens_drawn / total,
            )
            for s, v in sorted(per_source.items())
        },
        shards=shards,
        validation=_validation_split(per_source, val_shards, cfg),
        lineage={
            "stage_fingerprint": stage.fingerprint,
            "code_version": stage.code_version,
            **{f"input.{i}": path for i, path in enumerate(inputs)},
        },
    )


def _extra(
    per_source: dict[str, SourceStats],
    shards: list[ShardInfo],
    val_shards: list[ShardInfo],
    cfg: MixConfig,
    token_dtype: str,
    info: dict[str, Any],
) -> dict[str, Any]:
    """The stage's own figures in ``stats.json``."""
    ordered = sorted(per_source.items())
    return dict(
        repeated_documents=sum(v.repeated_documents for v in per_source.values()),
        tokens_per_source={s: v.tokens_drawn for s, v in ordered},
        tokens_available={s: v.tokens_available for s, v in ordered},
        tail_tokens_dropped=sum(v.tail_tokens_dropped for v in per_source.values()),
        total_tokens=sum(v.tokens_drawn for v in per_source.values()),
        token_budget=cfg.total_tokens,
        rows=sum(s.rows for s in shards),
        shards=len(shards),
        validation_documents=sum(v.val_documents_packed for v in per_source.values()),
        validation_tokens=sum(v.val_tokens_packed for v in per_source.values()),
        validation_rows=sum(s.rows for s in val_shards),
        validation_shards=len(val_shards),
        token_dtype=token_dtype,
        tokenizer_hash=info["content_hash"],
    )
