"""Webtext's URL list, prepared once per stage run and joined by every input-file group of the crawl.

``ccgpt source webtext`` (:mod:`pipeline.sources.webtext`) commits its crawl one input-file group at a time
(:mod:`pipeline.ledger`). The list is not read by each group: a first Beam pipeline of the stage's attempt,
before the groups, does all the list's work once, as the ledger's *prepared unit* (``groups/url_list``):

1. **Read** (:class:`ReadUrlList`): every list file streamed by one DoFn call, each row normalised to its
   join key (:mod:`pipeline.sources.urls`) or counted by why it has none.
2. **Merge** (``GroupListUrls`` / ``MergeListUrls``): the rows of one key become one list URL with the
   highest score; every other row is a ``duplicate``.
3. **Write**: the prepared list as Parquet (``key`` string, ``score`` float64 or null), split into
   :func:`prepared_files` files by a hash of the key (:func:`pipeline.tables.file_of`), one per
   :data:`LIST_FILE_BYTES` of list, each sorted by key (the same bytes on any runner and worker count; one
   worker holds one file's rows while it writes it); and the list's own accounting once:
   ``url_list/outcomes.jsonl`` (one outcome per list row) and ``examples.jsonl`` (per reason the first drop
   examples, ``url_list:<reason>``)::

       OUT/groups/url_list/keys-<k>-of-<n>.attempt-<tag>.parquet
       OUT/groups/url_list/url_list/outcomes.attempt-<tag>.jsonl
       OUT/groups/url_list/examples.attempt-<tag>.jsonl
       OUT/groups/url_list.json                 its ledger record, written last (its ``outcomes`` empty:
                                                the rows are accounted in url_list/outcomes.jsonl)

   The stage merges these into ``OUT/url_list/outcomes.jsonl`` and ``OUT/examples.jsonl`` with the groups'
   side files, so ``stats.json``'s ``url_list`` counts each list row once.

Every group then reads the prepared files (:class:`ReadPreparedList`: ``(key, score)`` pairs, nothing parsed,
normalised or merged again), by their untagged names (:func:`prepared_paths`, through
:func:`pipeline.commit.committed_file`: this attempt's files, or those of the earlier attempt that committed
the prepared unit; never a killed attempt's partial file). A rerun after a kill keeps a committed prepared
unit like any committed group and does not read the list again.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import fs
from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped, read_outcomes
from pipeline.commit import attempt_name, committed_file
from pipeline.ledger import Group
from pipeline.read import EXAMPLES
from pipeline.sources.common import SourceError
from pipeline.sources.urls import excluded, normalize_url
from pipeline.tables import WriteExamples, file_of

if TYPE_CHECKING:
    from pipeline.sources.webtext import WebTextConfig

URL_LIST = "url_list"  # the prepared unit's id, and the folder of the list's own outcomes.jsonl
LIST_FILE_BYTES = 64 << 20  # list bytes per prepared file: what one worker holds while it writes one
PREPARED_SCHEMA = pa.schema([("key", pa.string()), ("score", pa.float64())])
PREPARED_ROW_GROUP = 100_000


# --------------------------------------------------------------------------------------------------------------
# Reading and merging the list


def list_format(path: str, cfg: WebTextConfig) -> str:
    if cfg.list_format != "auto":
        return cfg.list_format
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(ext, "text")


def _lines(path: str) -> Iterator[bytes]:
    with fs.open_decompressed(path) as fh:
        yield from fh


def _decode(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def csv_columns(path: str, fmt: str) -> list[str]:
    """The header row of a CSV/TSV list (checked before a pipeline starts)."""
    first = next(iter(_lines(path)), b"")
    return next(csv.reader([first.decode("utf-8", "replace")], delimiter="," if fmt == "csv" else "\t"), [])


def iter_url_rows(path: str, cfg: WebTextConfig) -> Iterator[tuple[str | None, Any, str | None]]:
    """Stream one list file: ``(url, score, problem)`` per row; ``problem`` names why a row has no usable URL.

    Plain text: one URL per line; blank lines and ``#`` comments are not rows. JSONL: one object per line.
    CSV/TSV: a header row naming the columns. A line that is not UTF-8 is a row with ``invalid_utf8``.
    """
    fmt = list_format(path, cfg)
    if fmt == "text":
        for line in _lines(path):
            s = _decode(line)
            if s is None:
                yield None, None, "invalid_utf8"
            elif s.strip() and not s.strip().startswith("#"):
                yield s.strip(), None, None
    elif fmt == "jsonl":
        for line in _lines(path):
            if not line.strip():
                continue
            s = _decode(line)
            if s is None:
                yield None, None, "invalid_utf8"
                continue
            try:
                obj = json.loads(s)
            except ValueError:
                yield None, None, "bad_row"
                continue
            if not isinstance(obj, dict):
                yield None, None, "bad_row"
                continue
            url = obj.get(cfg.url_field)
            yield (url, obj.get(cfg.score_field), None) if isinstance(url, str) else (None, None, "missing_url")
    elif fmt in ("csv", "tsv"):
        text = (line.decode("utf-8", "surrogateescape") for line in _lines(path))
        reader = csv.DictReader(text, delimiter="," if fmt == "csv" else "\t")
        if reader.fieldnames is None:
            return
        if cfg.url_field not in reader.fieldnames:
            raise SourceError(f"{path}: no {cfg.url_field!r} column (columns: {reader.fieldnames}); set --url_field")
        for row in reader:
            url = row.get(cfg.url_field)
            if not url:
                yield None, None, "missing_url"
                continue
            try:
                "".join(str(v) for v in row.values()).encode("utf-8")
            except UnicodeEncodeError:
                yield None, None, "invalid_utf8"
                continue
            yield url, row.get(cfg.score_field), None
    else:
        raise SourceError(f"unknown URL list format {fmt!r} (text | jsonl | csv | tsv)")


def _score(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a score")
    return float(value)


class ReadUrlList(beam.DoFn):
    """A list file -> ``(key, (score, url))`` per usable row; one outcome per row on the outcome tag."""

    def __init__(self, cfg: WebTextConfig):
        self.cfg = cfg

    def _drop(self, reason: str, url: Any):
        yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
        yield beam.pvalue.TaggedOutput(
            EXAMPLES, (f"url_list:{reason}", {"reason": f"url_list:{reason}", "url": str(url)[:300], "text": ""})
        )

    def process(self, path: str):
        cfg = self.cfg
        for url, raw_score, problem in iter_url_rows(path, cfg):
            if problem:
                yield from self._drop(problem, url)
                continue
            key = normalize_url(url, cfg.tracking_params)
            if key is None:
                yield from self._drop("malformed", url)
                continue
            if excluded(key, cfg.exclude_domains):
                yield from self._drop("excluded_domain", url)
                continue
            try:
                score = _score(raw_score)
            except (TypeError, ValueError):
                if cfg.min_score is not None:
                    yield from self._drop("bad_score", url)
                    continue
                score = None
            if cfg.min_score is not None:
                if score is None:
                    yield from self._drop("missing_score", url)
                    continue
                if score < cfg.min_score:
                    yield from self._drop("below_min_score", url)
                    continue
            yield key, (score, url)


def _merge_entries(kv):
    """All rows of one normalised URL -> one usable list URL (the highest score) + ``duplicate`` per extra row."""
    key, entries = kv
    entries = sorted(entries, key=lambda e: e[1])
    scores = [s for s, _ in entries if s is not None]
    url = entries[0][1]
    yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
    for _, u in entries[1:]:
        yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("duplicate"))
        yield beam.pvalue.TaggedOutput(
            EXAMPLES, ("url_list:duplicate", {"reason": "url_list:duplicate", "url": f"{u} = {url}"[:300], "text": ""})
        )
    yield key, max(scores) if scores else None


# --------------------------------------------------------------------------------------------------------------
# The prepared list


def list_unit(list_files: list[tuple[str, int]]) -> Group:
    """The ledger's prepared unit of the list: ``(path, bytes)`` list files, committed as ``groups/url_list``."""
    return Group(URL_LIST, tuple(sorted((path, int(size)) for path, size in list_files)))


def prepared_files(unit: Group) -> int:
    """How many files the prepared list is split into: one per :data:`LIST_FILE_BYTES` of list, at least one
    (decided from the list's sizes alone, so the writer and every group's reader agree)."""
    return max(1, -(-unit.bytes // LIST_FILE_BYTES))


def prepared_urls(unit: Group, out_dir: str) -> int:
    """The usable URLs of the prepared list (its ``kept`` rows), from its outcomes: no list file read again."""
    return read_outcomes(fs.join(unit.folder(out_dir), URL_LIST)).get(KEPT, 0)


def _prepared_name(k: str, n: int) -> str:
    return f"keys-{k}-of-{n:05d}.parquet"


def prepared_paths(unit: Group, out_dir: str) -> list[str]:
    """The prepared list's files as a group reads them, inside the stage's attempt (on the driver, where the
    group's pipeline is built): each found by its untagged name (:func:`pipeline.commit.committed_file`)."""
    n = prepared_files(unit)
    folder = unit.folder(out_dir)
    return [committed_file(fs.join(folder, _prepared_name(f"{k:05d}", n))) for k in range(n)]


class _WritePreparedFile(beam.DoFn):
    """``(k, {"urls": [(key, score), ...], ...})`` -> the prepared file ``k``, its rows sorted by key (keys are
    unique after the merge), written in place; a file with no row is written too, so every group finds all."""

    def __init__(self, folder: str, name: str):
        self.folder, self.name = folder, name

    def process(self, element) -> Iterator[str]:
        k, grouped = element
        rows = sorted(grouped["urls"], key=lambda row: row[0])
        table = pa.table({"key": [r[0] for r in rows], "score": [r[1] for r in rows]}, schema=PREPARED_SCHEMA)
        path = fs.join(self.folder, self.name.format(k=k))
        with fs.arrow_sink(path) as sink:
            pq.write_table(table, sink, compression="zstd", row_group_size=PREPARED_ROW_GROUP)
        yield path


class PrepareUrlList(beam.PTransform):
    """The pipeline's start -> the list files of ``unit`` read, normalised and merged, written to
    ``unit.folder(out_dir)``: the prepared files, the list's outcomes and its drop examples (module docstring)."""

    def __init__(self, cfg: WebTextConfig, unit: Group, out_dir: str):
        super().__init__()
        self.cfg, self.unit, self.out_dir = cfg, unit, out_dir

    def expand(self, pbegin):
        cfg, folder, n = self.cfg, self.unit.folder(self.out_dir), prepared_files(self.unit)
        rows = (
            pbegin
            | "ListFiles" >> beam.Create(self.unit.files)
            | "SpreadLists" >> beam.Reshuffle()
            | "ReadList" >> beam.ParDo(ReadUrlList(cfg)).with_outputs(OUTCOMES, EXAMPLES, main="rows")
        )
        unique = (
            rows.rows
            | "GroupListUrls" >> beam.GroupByKey()
            | "MergeListUrls" >> beam.FlatMap(_merge_entries).with_outputs(OUTCOMES, EXAMPLES, main="urls")
        )
        by_file = unique.urls | "ByFile" >> beam.Map(lambda kv, n=n: (file_of(kv[0], n), kv))
        every = pbegin | "EveryFile" >> beam.Create([(k, None) for k in range(n)])
        name = attempt_name(_prepared_name("{k:05d}", n))
        written = (
            {"urls": by_file, "file": every}
            | "GroupByFile" >> beam.CoGroupByKey()
            | "WritePrepared" >> beam.ParDo(_WritePreparedFile(folder, name))
        )
        outcomes = [rows[OUTCOMES], unique[OUTCOMES]] | "ListOutcomes" >> beam.Flatten()
        _ = outcomes | "WriteListOutcomes" >> WriteOutcomes(fs.join(folder, URL_LIST))
        examples = [rows[EXAMPLES], unique[EXAMPLES]] | "ListExamples" >> beam.Flatten()
        _ = examples | "WriteListExamples" >> WriteExamples(folder, cfg.examples_per_reason)
        return written


def _read_prepared_file(path: str) -> Iterator[tuple[str, float | None]]:
    with fs.open_arrow(path) as source:
        pf = pq.ParquetFile(source)
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i, columns=["key", "score"])
            yield from zip(table["key"].to_pylist(), table["score"].to_pylist())


class ReadPreparedList(beam.PTransform):
    """The pipeline's start -> ``(key, score)`` of every list URL, from the prepared files at ``paths``
    (:func:`prepared_paths`), one DoFn call a file, spread over the workers."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self.paths = paths

    def expand(self, pbegin):
        return (
            pbegin
            | "PreparedFiles" >> beam.Create(self.paths)
            | "SpreadPrepared" >> beam.Reshuffle()
            | "ReadPrepared" >> beam.FlatMap(_read_prepared_file)
        )
