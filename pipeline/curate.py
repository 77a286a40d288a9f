"""``ccgpt curate``: Common Crawl WARC/WET files -> a curated document table, as one Beam pipeline.

The recipe reads top to bottom in :class:`Curate`: ReadWarc -> Extract -> IdentifyLanguage ->
HeuristicFilters. Every WARC record (and every damaged-file event) ends with exactly one outcome, so
``stats.json`` satisfies ``read == kept + sum(dropped)`` on any runner.

The input files are read in groups (``read.group_bytes`` of input each), every group committed on its own in
the progress ledger of :mod:`pipeline.ledger`, so a rerun after a kill reads only the groups not committed yet.

Output folder (``<gid>``: the input-file group, ``g00000``...)::

    OUT/documents-<gid>-*.parquet      kept documents (DOCUMENT_SCHEMA; language, language_score set)
    OUT/raw/documents-<gid>-*.parquet  every non-empty extracted document before language id and filters
                                       (the unfiltered crawl sample the quality classifier uses as negatives)
    OUT/groups/<gid>.json, <gid>/      each group's ledger record and its side files (the files below, per group)
    OUT/stats.json                     stage "curate": read / kept / dropped by reason, plus extra: languages
                                       (lid counts over extracted documents), record_types, extracted,
                                       failed_files, garbage_bytes_skipped (bytes between records that were no
                                       record), input_groups; written last, over all groups
    OUT/outcomes.jsonl                 raw outcome counts
    OUT/examples.jsonl                 up to ``examples_per_reason`` {"reason","url","text"} per drop reason
    OUT/failed_files.jsonl             one line per damage event (garbage_skipped with offset and bytes,
                                       truncated_file, unreadable_file) with its file and error: the retry list
    OUT/counters.jsonl                 side counters behind the ``extra`` figures
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam

from pipeline import fs
from pipeline.accounting import OUTCOMES, WriteOutcomes
from pipeline.extract import ExtractConfig, ExtractText
from pipeline.filters import FiltersConfig, HeuristicFilters
from pipeline.langid import IdentifyLanguage, LangIdConfig
from pipeline.ledger import Group, SideFile, plan_groups
from pipeline.read import COUNTERS, EXAMPLES, FAILED, ReadConfig, ReadWarcFiles, expand_inputs
from pipeline.runner import RunnerConfig
from pipeline.stage import Stage, load_stats
from pipeline.tables import (
    COUNTERS_FILE,
    CRAWL_FILE_BYTES,
    EXAMPLES_FILE,
    FAILED_FILES,
    WriteCounters,
    WriteDocuments,
    WriteExamples,
    WriteJsonLines,
    counters_with_prefix,
    ensure_table,
    group_output_files,
    read_counters,
    read_jsonl,
)
from schemas.stats import AccountingError, StageStats


@dataclass
class CurateConfig:
    read: ReadConfig = field(default_factory=ReadConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    write_raw: bool = field(
        default=True, metadata={"help": "write every extracted document (pre-langid, pre-filter) to OUT/raw/"}
    )
    examples_per_reason: int = field(default=5, metadata={"help": "examples kept per drop reason in examples.jsonl"})


def identify_and_filter(documents, langid: LangIdConfig, filters: FiltersConfig) -> tuple:
    """Extracted documents -> language ID -> heuristic filters: the tail the crawl and WebText share.

    Returns both steps' tagged outputs (``documents``, ``OUTCOMES``, ``EXAMPLES``; language ID also
    ``COUNTERS``), so the caller collects every step's outcomes with its own."""
    identified = documents | "IdentifyLanguage" >> beam.ParDo(IdentifyLanguage(langid)).with_outputs(
        OUTCOMES, EXAMPLES, COUNTERS, main="documents"
    )
    filtered = identified.documents | "HeuristicFilters" >> beam.ParDo(HeuristicFilters(filters)).with_outputs(
        OUTCOMES, EXAMPLES, main="documents"
    )
    return identified, filtered


class Curate(beam.PTransform):
    """PCollection of WARC/WET paths -> dict of PCollections:

    ``documents`` (kept), ``raw`` (extracted, unfiltered), ``outcomes`` (one per record / failure),
    ``examples`` ((reason, example) pairs), ``counters`` (names to count), ``failed`` (damaged files).
    """

    def __init__(self, cfg: CurateConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, files):
        cfg = self.cfg
        read = files | "ReadWarc" >> ReadWarcFiles(cfg.read)
        extracted = read.records | "Extract" >> beam.ParDo(ExtractText(cfg.extract)).with_outputs(
            OUTCOMES, EXAMPLES, COUNTERS, main="documents"
        )
        langid, filtered = identify_and_filter(extracted.documents, cfg.langid, cfg.filters)
        steps = (read, extracted, langid, filtered)
        return {
            "documents": filtered.documents,
            "raw": extracted.documents,
            "outcomes": [s[OUTCOMES] for s in steps] | "AllOutcomes" >> beam.Flatten(),
            "examples": [s[EXAMPLES] for s in steps] | "AllExamples" >> beam.Flatten(),
            "counters": [read[COUNTERS], extracted[COUNTERS], langid[COUNTERS]] | "AllCounters" >> beam.Flatten(),
            "failed": read[FAILED],
        }


class CurateGroup(beam.PTransform):
    """One input-file group (:mod:`pipeline.ledger`) -> its share of the stage's outputs: document files named
    ``group.prefix`` in ``out_dir`` (and ``out_dir/raw``), its side files in ``group.folder(out_dir)``."""

    def __init__(self, cfg: CurateConfig, group: Group, out_dir: str):
        super().__init__()
        self.cfg, self.group, self.out_dir = cfg, group, out_dir

    def expand(self, pbegin):
        cfg, g = self.cfg, self.group
        side = g.folder(self.out_dir)
        n_files = group_output_files(g.bytes, CRAWL_FILE_BYTES)
        out = pbegin | "InputFiles" >> beam.Create(g.files) | "Curate" >> Curate(cfg)
        _ = out["documents"] | "WriteDocuments" >> WriteDocuments(self.out_dir, n_files, g.prefix)
        if cfg.write_raw:
            _ = out["raw"] | "WriteRaw" >> WriteDocuments(fs.join(self.out_dir, "raw"), n_files, g.prefix)
        _ = out["outcomes"] | "WriteOutcomes" >> WriteOutcomes(side)
        _ = out["examples"] | "WriteExamples" >> WriteExamples(side, cfg.examples_per_reason)
        _ = out["failed"] | "WriteFailed" >> WriteJsonLines(fs.join(side, FAILED_FILES))
        _ = out["counters"] | "WriteCounters" >> WriteCounters(side)
        return out["documents"]


def run_curate(
    inputs: list[str], out_dir: str, cfg: CurateConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Curate WARC/WET ``inputs`` (paths, folders, globs, s3:// gs:// https:// URLs) into ``out_dir``, committed
    by input-file group (``cfg.read.group_bytes``; :mod:`pipeline.ledger`): a rerun after a kill reads only the
    groups not committed yet."""
    stage = Stage("curate", out_dir, inputs, cfg, force, module=__name__)
    if stage.complete():
        return load_stats(out_dir)
    groups = plan_groups(expand_inputs(inputs), cfg.read.group_bytes)
    files = [f for g in groups for f in g.files]
    side_files = (
        SideFile(COUNTERS_FILE, "sum", "counter"),
        SideFile(EXAMPLES_FILE, "examples", per_reason=cfg.examples_per_reason),
        SideFile(FAILED_FILES, "lines"),
    )

    def summarise(out: str, stats: StageStats) -> None:
        ensure_table(out)
        if cfg.write_raw:
            ensure_table(fs.join(out, "raw"))
        counters = read_counters(out)
        failed = read_jsonl(fs.join(out, FAILED_FILES))
        stats.extra["input_files"] = len(files)
        stats.extra["extracted"] = counters.get("extracted", 0)
        stats.extra["record_types"] = counters_with_prefix(counters, "record_type:")
        stats.extra["languages"] = dict(
            sorted(counters_with_prefix(counters, "language:").items(), key=lambda kv: -kv[1])
        )
        unreadable = [f for f in failed if f["reason"] == "unreadable_file"]
        if files and len({f["file"] for f in unreadable}) == len(files):
            # no silent zero: on a cluster this is what workers without the store's options or credentials see
            raise AccountingError(
                f"curate: none of the {len(files)} input files could be read (first: {unreadable[0]['file']}: "
                f"{unreadable[0].get('error')}); check the paths, and for object stores the runner's options "
                f"(--s3_endpoint_url, credentials); {fs.join(out, FAILED_FILES)} lists them"
            )
        stats.extra["failed_files"] = sorted({f["file"] for f in failed})  # a file may have several bad regions
        stats.extra["garbage_bytes_skipped"] = sum(
            f.get("bytes", 0) for f in failed if f["reason"] == "garbage_skipped"
        )

    return stage.run_groups(
        runner,
        groups,
        lambda g: CurateGroup(cfg, g, out_dir),
        side_files,
        summarise,
        tables=("", "raw") if cfg.write_raw else ("",),
    )
