"""``ccgpt source webtext``: the crawl pages a curated URL list points at, as a named source (GPT-2's WebText).

GPT-2 built WebText from the pages that Reddit posts with at least 3 karma linked to: people, not a
classifier, did the quality selection. This stage does the same with any list of URLs and any crawl:

1. **The list** (plain text, one URL per line; or JSONL / CSV / TSV with a URL column and an optional score
   column) is read in Beam, one streaming DoFn call per file, **once per stage run**: a pipeline of its own,
   before the crawl's input-file groups, reads, normalises and merges it and writes it prepared, as compact
   Parquet (key, score) split by a hash of the key, with its accounting
   (:mod:`pipeline.sources.url_list`; committed in the ledger, so a rerun after a kill does not prepare it
   again). Every row ends as a usable URL or is counted
   by reason: ``malformed`` (not an http(s) URL with a host), ``missing_url``, ``bad_row`` (not JSON / not
   an object), ``invalid_utf8``, ``bad_score`` / ``missing_score`` / ``below_min_score`` (with ``min_score``),
   ``excluded_domain`` (``exclude_domains``, subdomains included; ``wikipedia.org`` by default, as GPT-2
   left Wikipedia out because other sources carry it), and ``duplicate`` (the same URL after normalisation:
   a URL posted twice counts once, with its highest score). ``read == kept + sum(dropped)`` holds for the list
   too (``stats.json`` -> ``url_list``).
2. **Normalisation** (:mod:`pipeline.sources.urls`) makes the list and the crawl meet on a key rather than
   on a string: scheme folded (http = https), ``www.`` stripped, host lowercased (IDN as punycode), default
   port, userinfo, fragment and trailing slash dropped, tracking parameters (``utm_*``, ``fbclid``, ``gclid``,
   ...) removed, the remaining query parameters sorted, percent-escapes of unreserved characters decoded.
3. **The join** runs in Beam, in each input-file group of the crawl, keyed by the normalised URL, against
   the prepared list's rows (read from its Parquet files; nothing parsed or merged again). A small list (up
   to ``side_input_max_urls`` usable URLs, as the prepared list counts them: no list file is read to decide)
   is a dict side input every worker holds, and the crawl streams past it without a shuffle; a large list
   (tens of millions of URLs, GPT-2's was 45 M) is joined with ``CoGroupByKey``, so no worker ever holds
   it. Both give the same documents and counts (tested).
4. Matched responses go through the crawl's own pieces, :class:`pipeline.read.ReadWarcFiles`,
   :class:`pipeline.extract.ExtractText`, :class:`pipeline.langid.IdentifyLanguage` and
   :class:`pipeline.filters.HeuristicFilters`, with the same configs as ``ccgpt curate``.

Every crawl record has one outcome: the reader's drops, ``not_in_url_list``, ``excluded_domain``,
``bad_url``, then extraction, language and filter drops, or ``kept``. ``stats.json`` adds ``url_list`` (the
list's own accounting, counted once, by the pipeline that prepares it) and ``matched_urls`` /
``unmatched_urls`` (distinct list URLs found / not found in the crawl). A list that matches nothing is a
:class:`SourceError`, never a silently empty source.

Documents get their own ids (sha1 of the source name and the crawl document id), so a page that is both in
the crawl and in WebText is two documents for dedup to settle by source priority, and carry
``{"url_key", "url_score"}`` as annotations.

The lists, the crawl and the output folder may be local or object-store URLs: every file goes through
:mod:`pipeline.fs` and Beam's IOs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam

from pipeline import fs
from pipeline.accounting import OUTCOMES, WriteOutcomes, dropped, read_outcomes, stats_from_outcomes
from pipeline.commit import committed_file
from pipeline.curate import identify_and_filter
from pipeline.extract import ExtractConfig, ExtractText
from pipeline.filters import FiltersConfig
from pipeline.langid import LangIdConfig
from pipeline.ledger import OUTCOMES_FILE, Group, SideFile, plan_groups
from pipeline.read import COUNTERS, EXAMPLES, FAILED, ReadConfig, ReadWarcFiles, expand_inputs
from pipeline.runner import RunnerConfig
from pipeline.sources.common import (
    STAGE,
    SourceError,
    check_source_name,
    resolve_sized_inputs,
    source_config,
    take_paths,
)
from pipeline.sources.url_list import (
    URL_LIST,
    PrepareUrlList,
    ReadPreparedList,
    csv_columns,
    list_format,
    list_unit,
    prepared_paths,
    prepared_urls,
)
from pipeline.sources.urls import DEFAULT_TRACKING_PARAMS, excluded, normalize_url
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
    WriteLines,
    counters_with_prefix,
    group_output_files,
    read_counters,
    read_jsonl,
)
from schemas.config import from_dict
from schemas.stats import StageStats

MATCHED = "matched"  # tag: the key of each distinct list URL found in the crawl
MATCHED_FILE = "matched_urls.txt"  # those keys, one a line


@dataclass
class WebTextConfig:
    name: str = field(default="webtext", metadata={"help": "source name written to the documents' source column"})
    urls: list[str] = field(
        default_factory=list,
        metadata={"help": "URL list files (plain text, .jsonl, .csv, .tsv; .gz too), folders or globs (required)"},
    )
    list_format: Literal["auto", "text", "jsonl", "csv", "tsv"] = field(
        default="auto", metadata={"help": "URL list format; auto: by file extension (.jsonl, .csv, .tsv, else text)"}
    )
    url_field: str = field(default="url", metadata={"help": "jsonl/csv: the column holding the URL"})
    score_field: str = field(default="score", metadata={"help": "jsonl/csv: the column holding the score (karma)"})
    min_score: float | None = field(
        default=None, metadata={"help": "keep list URLs whose score is at least this (e.g. 3 for Reddit karma)"}
    )
    exclude_domains: list[str] = field(
        default_factory=lambda: ["wikipedia.org"],
        metadata={"help": "domains (and their subdomains) left out, on the list and in the crawl"},
    )
    tracking_params: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRACKING_PARAMS),
        metadata={"help": "query parameters removed by URL normalisation ('prefix*' matches a prefix)"},
    )
    join: Literal["auto", "side_input", "cogroup"] = field(
        default="auto",
        metadata={"help": "side_input: list held by every worker; cogroup: shuffle join (any size); auto: by size"},
    )
    side_input_max_urls: int = field(
        default=1_000_000,
        metadata={"help": "auto join: lists with at most this many usable URLs (merged) become a side input"},
    )
    read: ReadConfig = field(
        default_factory=ReadConfig, metadata={"help": "crawl reading, as in curate (read.source is replaced by name)"}
    )
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    examples_per_reason: int = field(default=5, metadata={"help": "examples kept per drop reason in examples.jsonl"})

    def __post_init__(self) -> None:
        if self.side_input_max_urls < 0 or self.examples_per_reason < 0:
            raise ValueError(
                "WebTextConfig: side_input_max_urls and examples_per_reason cannot be negative, got"
                f" {self.side_input_max_urls}, {self.examples_per_reason}"
            )


# --------------------------------------------------------------------------------------------------------------
# The join


def webtext_id(name: str, crawl_id: str) -> str:
    return hashlib.sha1(f"{name}\0{crawl_id}".encode()).hexdigest()


class KeyByUrl(beam.DoFn):
    """Crawl page records -> ``(key, record)``; no or malformed URL -> ``bad_url``; excluded domain dropped."""

    def __init__(self, cfg: WebTextConfig):
        self.cfg = cfg

    def process(self, record: dict[str, Any]):
        key = normalize_url(record.get("url") or "", self.cfg.tracking_params)
        if key is None:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("bad_url"))
            return
        if excluded(key, self.cfg.exclude_domains):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("excluded_domain"))
            return
        yield key, record


def _listed(record: dict[str, Any], key: str, score: float | None, name: str) -> dict[str, Any]:
    return {**record, "id": webtext_id(name, record["id"]), "source": name, "url_key": key, "url_score": score}


class MatchSideInput(beam.DoFn):
    """Join with the list as a dict side input: matched records on the main output, the rest dropped."""

    def __init__(self, name: str):
        self.name = name

    def process(self, item, listed):
        key, record = item
        if key not in listed:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("not_in_url_list"))
            return
        yield beam.pvalue.TaggedOutput(MATCHED, key)
        yield _listed(record, key, listed[key], self.name)


class MatchGrouped(beam.DoFn):
    """Join after ``CoGroupByKey``: one call per URL key with its list entry (if any) and crawl records."""

    def __init__(self, name: str):
        self.name = name

    def process(self, item):
        key, groups = item
        scores = list(groups["list"])
        records = groups["crawl"]
        if not scores:
            for _ in records:
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("not_in_url_list"))
            return
        found = False
        for record in records:
            found = True
            yield _listed(record, key, scores[0], self.name)
        if found:
            yield beam.pvalue.TaggedOutput(MATCHED, key)


class ExtractListed(ExtractText):
    """:class:`ExtractText`, the documents annotated with the list URL they matched and its score."""

    def process(self, raw: dict[str, Any]):
        note = json.dumps({"url_key": raw["url_key"], "url_score": raw["url_score"]}, sort_keys=True)
        for out in super().process(raw):
            yield {**out, "annotations": note} if isinstance(out, dict) else out


class WebText(beam.PTransform):
    """``{"crawl": PCollection of WARC paths, "list": PCollection of the prepared list's (key, score)}`` -> dict
    of PCollections: ``documents``, ``outcomes`` (one per crawl record), ``matched`` (distinct matched list
    keys), ``examples``, ``counters``, ``failed`` (damaged crawl files). The list's own accounting is the
    prepared unit's (:mod:`pipeline.sources.url_list`).
    """

    def __init__(self, cfg: WebTextConfig, join: str):
        super().__init__()
        if join not in ("side_input", "cogroup"):
            raise ValueError(f"join must be side_input or cogroup, got {join!r}")
        self.cfg = cfg
        self.join = join

    def expand(self, inputs):
        cfg = self.cfg
        read_cfg = dataclasses.replace(cfg.read, source=cfg.name)
        read = inputs["crawl"] | "ReadWarc" >> ReadWarcFiles(read_cfg)
        keyed = read.records | "KeyByUrl" >> beam.ParDo(KeyByUrl(cfg)).with_outputs(OUTCOMES, main="keyed")
        if self.join == "side_input":
            joined = keyed.keyed | "MatchSideInput" >> beam.ParDo(
                MatchSideInput(cfg.name), beam.pvalue.AsDict(inputs["list"])
            ).with_outputs(OUTCOMES, MATCHED, main="records")
            matched = joined[MATCHED] | "DistinctMatched" >> beam.Distinct()
        else:
            joined = (
                {"list": inputs["list"], "crawl": keyed.keyed}
                | "JoinByUrl" >> beam.CoGroupByKey()
                | "MatchGrouped" >> beam.ParDo(MatchGrouped(cfg.name)).with_outputs(OUTCOMES, MATCHED, main="records")
            )
            matched = joined[MATCHED]
        extracted = joined.records | "Extract" >> beam.ParDo(ExtractListed(cfg.extract)).with_outputs(
            OUTCOMES, EXAMPLES, COUNTERS, main="documents"
        )
        langid, filtered = identify_and_filter(extracted.documents, cfg.langid, cfg.filters)
        steps = (read, keyed, joined, extracted, langid, filtered)
        return {
            "documents": filtered.documents,
            "outcomes": [s[OUTCOMES] for s in steps] | "CrawlOutcomes" >> beam.Flatten(),
            "matched": matched,
            "examples": [s[EXAMPLES] for s in (read, extracted, langid, filtered)] | "AllExamples" >> beam.Flatten(),
            "counters": [read[COUNTERS], extracted[COUNTERS], langid[COUNTERS]] | "AllCounters" >> beam.Flatten(),
            "failed": read[FAILED],
        }


def choose_join(cfg: WebTextConfig, urls: int) -> str:
    """The join for a list of ``urls`` usable URLs (``join: auto``: by that count, as the prepared list holds it)."""
    if cfg.join != "auto":
        return cfg.join
    return "side_input" if urls <= cfg.side_input_max_urls else "cogroup"


def run_webtext(
    inputs: list[str], out_dir: str, cfg: WebTextConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Select the crawl ``inputs`` (WARC/WET paths, globs, URLs) whose URL is on ``cfg.urls``; curate them.

    Output: the document table (``documents-<gid>-*.parquet``), ``stats.json`` (crawl records accounted;
    ``url_list``, ``matched_urls``, ``unmatched_urls``, ``join``), ``outcomes.jsonl``, ``url_list/outcomes.jsonl``,
    ``matched_urls.txt`` (the keys of the list URLs found), ``examples.jsonl``, ``counters.jsonl``,
    ``failed_files.jsonl``, and per crawl-file group its ledger record and side files (``groups/``: committed
    one by one, ``read.group_bytes`` of crawl each, so a rerun after a kill reads only the groups not done;
    :mod:`pipeline.ledger`), the list prepared once before them (``groups/url_list``:
    :mod:`pipeline.sources.url_list`). Raises :class:`SourceError` when the list has no usable URL, nothing on
    it is in the crawl, or no matched page survives the filters.
    """
    check_source_name(cfg.name)
    if not cfg.urls:
        raise SourceError("webtext needs a URL list (--urls FILE)")
    sized = resolve_sized_inputs(list(cfg.urls))
    list_files = [p for p, _, _ in sized]
    if cfg.min_score is not None:
        plain = [p for p in list_files if list_format(p, cfg) == "text"]
        if plain:
            raise SourceError(f"--min_score needs scores, but {plain[0]} is a plain-text list (use JSONL or CSV)")
    for path in list_files:
        fmt = list_format(path, cfg)
        if fmt in ("csv", "tsv") and cfg.url_field not in (columns := csv_columns(path, fmt)):
            raise SourceError(f"{path}: no {cfg.url_field!r} column (columns: {columns}); set --url_field")
    groups = plan_groups(expand_inputs(inputs), cfg.read.group_bytes)
    crawl_files = [f for g in groups for f in g.files]
    stage = Stage(STAGE, out_dir, list(inputs) + list_files, cfg, force, module=__name__)
    if stage.complete():
        return load_stats(out_dir)
    unit = list_unit([(p, size) for p, _, size in sized])
    chosen: list[str] = []

    def join() -> str:
        """Decided once the list is prepared (the groups' pipelines are built after it), by its usable URLs."""
        if not chosen:
            chosen.append(choose_join(cfg, prepared_urls(unit, out_dir)))
        return chosen[0]

    side_files = (
        SideFile(f"{URL_LIST}/{OUTCOMES_FILE}", "sum", "outcome"),  # the prepared unit's alone
        SideFile(MATCHED_FILE, "unique"),
        SideFile(COUNTERS_FILE, "sum", "counter"),
        SideFile(EXAMPLES_FILE, "examples", per_reason=cfg.examples_per_reason),
        SideFile(FAILED_FILES, "lines"),
    )

    def summarise(out: str, stats: StageStats) -> None:
        listed = stats_from_outcomes("url_list", read_outcomes(fs.join(out, URL_LIST)))
        counters = read_counters(out)
        matched = sum(1 for key in fs.read_lines(committed_file(fs.join(out, MATCHED_FILE))) if key)
        where = f"{len(list_files)} URL list file(s)"
        if listed.kept == 0:
            raise SourceError(
                f"source {cfg.name!r}: no usable URL in {where} (read {listed.read} rows, dropped"
                f" {listed.dropped}); check --list_format, --url_field and --min_score"
            )
        if matched == 0:
            raise SourceError(
                f"source {cfg.name!r}: none of the {listed.kept} list URLs is in the crawl"
                f" ({stats.read} crawl records from {len(crawl_files)} file(s), dropped {stats.dropped})"
            )
        if stats.kept == 0:
            raise SourceError(
                f"source {cfg.name!r}: {matched} list URLs matched crawl pages, but no page survived"
                f" extraction and filters (dropped {stats.dropped})"
            )
        stats.extra.update(
            {
                "source": cfg.name,
                "format": "webtext",
                "join": join(),
                "input_files": len(crawl_files),
                "url_list_files": len(list_files),
                "url_list": listed.to_dict(),
                "matched_urls": matched,
                "unmatched_urls": listed.kept - matched,
                "duplicate_urls": listed.dropped.get("duplicate", 0),
                "min_score": cfg.min_score,
                "extracted": counters.get("extracted", 0),
                "languages": dict(sorted(counters_with_prefix(counters, "language:").items(), key=lambda kv: -kv[1])),
                "failed_files": sorted({f["file"] for f in read_jsonl(fs.join(out, FAILED_FILES))}),
            }
        )

    return stage.run_groups(
        runner,
        groups,
        lambda g: WebTextGroup(cfg, join(), g, prepared_paths(unit, out_dir), out_dir),
        side_files,
        summarise,
        label=f"source {cfg.name}",
        prepare=(unit, lambda u: PrepareUrlList(cfg, u, out_dir)),
    )


class WebTextGroup(beam.PTransform):
    """One input-file group of the crawl (:mod:`pipeline.ledger`), joined with the prepared URL list (its files
    at ``prepared``: :func:`pipeline.sources.url_list.prepared_paths`) -> the group's document files in
    ``out_dir`` and its side files in ``group.folder(out_dir)``: outcomes, the keys of the list URLs it matched
    (a URL matched in two groups counts once when they are merged), counters, examples, failed files."""

    def __init__(self, cfg: WebTextConfig, join: str, group: Group, prepared: list[str], out_dir: str):
        super().__init__()
        self.cfg, self.join, self.group, self.prepared, self.out_dir = cfg, join, group, prepared, out_dir

    def expand(self, pbegin):
        cfg, g = self.cfg, self.group
        side = g.folder(self.out_dir)
        out = {
            "crawl": pbegin | "CrawlFiles" >> beam.Create(g.files),
            "list": pbegin | "PreparedList" >> ReadPreparedList(self.prepared),
        } | "WebText" >> WebText(cfg, self.join)
        n_files = group_output_files(g.bytes, CRAWL_FILE_BYTES)
        _ = out["documents"] | "WriteDocuments" >> WriteDocuments(self.out_dir, n_files, g.prefix)
        _ = out["outcomes"] | "WriteOutcomes" >> WriteOutcomes(side)
        _ = out["matched"] | "WriteMatched" >> WriteLines(fs.join(side, MATCHED_FILE))
        _ = out["counters"] | "WriteCounters" >> WriteCounters(side)
        _ = out["examples"] | "WriteExamples" >> WriteExamples(side, cfg.examples_per_reason)
        _ = out["failed"] | "WriteFailed" >> WriteJsonLines(fs.join(side, FAILED_FILES))
        return out["documents"]


CRAWL_SECTIONS = ("read", "extract", "langid", "filters")


@dataclass(frozen=True)
class WebTextSpec:
    """A run config's webtext source: ``{kind: webtext, urls: [...], from: [...], <WebTextConfig options>}``.

    ``from`` is the crawl whose pages are selected (``crawl``; empty: the run's crawl). That crawl is read,
    extracted and filtered exactly as the run's ``curate`` section says, except for the keys the source sets
    in its own ``read`` / ``extract`` / ``langid`` / ``filters``: the same page must not be judged by two
    recipes. So ``config`` holds the source's options (those keys over the defaults, checked when the run
    config loads) and ``overrides`` the keys themselves, which :meth:`resolve` lays over the run's curate
    sections when the source runs.
    """

    config: WebTextConfig
    crawl: list[str]
    overrides: dict[str, dict[str, Any]]

    @classmethod
    def parse(cls, name: str, options: dict[str, Any]) -> WebTextSpec:
        crawl = take_paths(name, "webtext", options, "from", required=False)
        urls = take_paths(name, "webtext", options, "urls")
        for section in CRAWL_SECTIONS:
            if not isinstance(options.get(section) or {}, dict):
                raise SourceError(
                    f"source {name!r}: {section!r} must be a mapping of options, got {options[section]!r}"
                )
        overrides = {s: dict(options[s]) for s in CRAWL_SECTIONS if options.get(s)}
        config = source_config(name, "webtext", WebTextConfig, {**options, "urls": urls}, own=("from",))
        return cls(config, crawl, overrides)

    def resolve(self, expand: Callable[[list[str]], list[str]], crawl: list[str], curate: Any) -> tuple:
        """``(inputs, config)`` of :func:`run_webtext`: ``from`` (else the run's ``crawl``) and the URL lists
        expanded by the run, the crawl sections the run's ``curate`` ones with the source's keys on top."""
        inputs = expand(list(self.crawl or crawl))
        if not inputs:
            raise SourceError(
                f"source {self.config.name!r}: a webtext source needs crawl input ('from', or the run's crawl)"
            )
        sections = {
            s: from_dict(
                type(getattr(curate, s)), {**dataclasses.asdict(getattr(curate, s)), **self.overrides.get(s, {})}
            )
            for s in CRAWL_SECTIONS
        }
        return inputs, dataclasses.replace(self.config, urls=expand(self.config.urls), **sections)
