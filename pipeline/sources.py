"""Non-crawl mix sources: local text or JSON-lines files -> the document table (``ccgpt source text|jsonl``).

A training mix is more than the crawl: books, documentation, reference prose. This stage turns such files
into the same document table the crawl produces, tagged with the source ``name``, so mixing, dedup and
tokenisation treat every source alike. Ids are stable (sha1 of name, the file's path relative to the input
it was found under, and the document's index in the file), so rerunning on a moved checkout gives the same
ids. Every input document is accounted for: kept, or dropped with a reason.

Formats:

* ``text``: one document per blank-line-separated block (a paragraph, a verse, a poem);
* ``text-file``: one document per file (a chapter, an article);
* ``jsonl``: one document per line, its text in ``cfg.text_field``; a ``url`` field (``cfg.url_field``)
  fills the url column and the remaining fields are kept as ``annotations``. Blank lines are not records.

Files ending in ``.gz`` are decompressed; offsets then count bytes of the decompressed stream.

Two more kinds of source have modules of their own and the same stage contract: ``pipeline.webtext``
(``ccgpt source webtext``: the crawl pages a curated URL list points at, GPT-2's WebText) and
``pipeline.wikipedia`` (``ccgpt source wikipedia``: a MediaWiki XML dump). :func:`run_source_spec` builds
any of the three from an entry of a run config's ``sources`` section.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam

from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped, read_outcomes, stats_from_outcomes
from pipeline.runner import RunnerConfig, make_pipeline
from pipeline.stage import fingerprint, finish, is_complete, load_stats, stage_output
from schemas.documents import DOCUMENT_SCHEMA, document_row
from schemas.stats import StageStats

STAGE = "source"


@dataclass
class SourceConfig:
    name: str = field(default="", metadata={"help": "source name written to the documents' source column (required)"})
    format: Literal["text", "text-file", "jsonl"] = field(
        default="text-file", metadata={"help": "text: a document per blank-line block; text-file: per file; jsonl"}
    )
    text_field: str = field(default="text", metadata={"help": "jsonl: the field holding the text"})
    url_field: str = field(default="url", metadata={"help": "jsonl: the field holding a URL, if any"})
    min_chars: int = field(default=1, metadata={"help": "drop documents shorter than this (stripped characters)"})
    max_chars: int = field(default=1_000_000, metadata={"help": "drop documents longer than this (characters)"})


class SourceError(ValueError):
    """The source's inputs or configuration cannot give a sensible source (nothing matched, nothing kept)."""


def resolve_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """Inputs (files, folders, globs) -> sorted ``(path, key)`` pairs; ``key`` is the id-stable relative name.

    A folder contributes every regular file below it (hidden files skipped); a glob's key is relative to its
    non-magic prefix. An input that matches nothing is an error: a typo must not become a silently empty source.
    """
    out: dict[str, str] = {}
    for spec in inputs:
        if os.path.isdir(spec):
            base = spec
            paths = [p for p in glob.glob(os.path.join(spec, "**", "*"), recursive=True) if os.path.isfile(p)]
        elif glob.has_magic(spec):
            prefix = re.split(r"[*?\[]", spec, maxsplit=1)[0]
            base = prefix if prefix.endswith(os.sep) else os.path.dirname(prefix)
            paths = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
        elif os.path.isfile(spec):
            base, paths = os.path.dirname(spec), [spec]
        else:
            raise SourceError(f"input {spec!r} does not exist")
        paths = [p for p in paths if not os.path.basename(p).startswith(".")]
        if not paths:
            raise SourceError(f"input {spec!r} matched no files")
        for p in paths:
            out.setdefault(p, os.path.relpath(p, base or "."))
    return sorted(out.items())


def document_id(name: str, key: str, index: int) -> str:
    return hashlib.sha1(f"{name}\0{key}\0{index}".encode()).hexdigest()


_BLANK_LINES = re.compile(rb"(?:\r?\n)(?:[ \t]*\r?\n)+")


def split_blocks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(offset, block)`` for each blank-line-separated block; separators themselves are not documents."""
    pos = 0
    for m in _BLANK_LINES.finditer(data):
        if data[pos : m.start()].strip():
            yield pos, data[pos : m.start()]
        pos = m.end()
    if data[pos:].strip():
        yield pos, data[pos:]


def split_lines(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(offset, line_number, line)`` for each non-blank line of a JSON-lines file."""
    pos = 0
    for number, line in enumerate(data.split(b"\n")):
        if line.strip():
            yield pos, number, line
        pos += len(line) + 1


class ReadSourceFile(beam.DoFn):
    """One input file -> its documents (main output) and one outcome per candidate document.

    Reading whole files keeps offsets and indices exact and is fine for this stage's inputs (books,
    manuals, reference text); the crawl, which is large, has its own record-streaming reader.
    """

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg

    def process(self, item: tuple[str, str]):
        path, key = item
        with open(path, "rb") as fh:
            data = fh.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        fmt = self.cfg.format
        if fmt == "text-file":
            yield from self._emit(path, key, 0, 0, data, {})
        elif fmt == "text":
            for index, (offset, block) in enumerate(split_blocks(data)):
                yield from self._emit(path, key, index, offset, block.strip(), {})
        elif fmt == "jsonl":
            for offset, number, line in split_lines(data):
                yield from self._jsonl(path, key, number, offset, line)
        else:
            raise SourceError(f"unknown format {fmt!r}")

    def _jsonl(self, path: str, key: str, number: int, offset: int, line: bytes):
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_utf8"))
            return
        except ValueError:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("bad_json"))
            return
        if not isinstance(obj, dict):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("bad_json"))
            return
        text = obj.pop(self.cfg.text_field, None)
        if text is None:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("missing_text_field"))
            return
        if not isinstance(text, str):
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("text_not_string"))
            return
        yield from self._emit(path, key, number, offset, text, obj)

    def _emit(self, path: str, key: str, index: int, offset: int, payload: bytes | str, extra: dict[str, Any]):
        if isinstance(payload, bytes):
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                # Replacing bad bytes would invent characters and hide a broken file; drop and count it.
                yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("invalid_utf8"))
                return
        else:
            text = payload
        stripped = text.strip()
        if not stripped:
            reason = "empty_text"
        elif len(stripped) < self.cfg.min_chars:
            reason = "too_short"
        elif len(text) > self.cfg.max_chars:
            reason = "too_large"
        else:
            reason = None
        if reason:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
            return
        url = extra.pop(self.cfg.url_field, None)
        yield document_row(
            id=document_id(self.cfg.name, key, index),
            source=self.cfg.name,
            url=url if isinstance(url, str) else None,
            source_file=path,
            source_offset=offset,
            text=text,
            annotations=extra,
        )
        yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)


def check_source_name(name: str) -> None:
    """A source's name becomes a folder name and the ``source`` column: letters, digits, ``_ - .`` only."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SourceError(f"a source needs a name of letters, digits, '_', '-' or '.', got {name!r}")


class ReadToDocuments(beam.PTransform):
    """Input files -> ``reader`` (a DoFn emitting document rows, and outcomes tagged ``OUTCOMES``) -> the
    stage's ``documents-*.parquet`` and ``outcomes.jsonl`` in ``folder``; the files are spread over the
    workers first. Returns the reader's outputs, so ``extra_tags`` (e.g. failed files) can be written too."""

    def __init__(self, files: list, reader: beam.DoFn, folder: str, extra_tags: tuple[str, ...] = ()):
        super().__init__()
        self.files, self.reader, self.folder, self.extra_tags = files, reader, folder, extra_tags

    def expand(self, pbegin):
        results = (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(self.reader).with_outputs(OUTCOMES, *self.extra_tags, main="documents")
        )
        _ = results.documents | "WriteDocuments" >> beam.io.WriteToParquet(
            os.path.join(self.folder, "documents"), schema=DOCUMENT_SCHEMA, file_name_suffix=".parquet"
        )
        _ = results[OUTCOMES] | "WriteOutcomes" >> WriteOutcomes(self.folder)
        return results


def run_source(
    inputs: list[str], out_dir: str, cfg: SourceConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Build the document table of one named source from local files (stage contract: skip if done, atomic).

    Raises :class:`SourceError` when the name is missing, an input matches nothing, or no document is kept.
    """
    check_source_name(cfg.name)
    if cfg.format not in ("text", "text-file", "jsonl"):
        raise SourceError(f"unknown format {cfg.format!r} (text | text-file | jsonl)")
    files = resolve_inputs(inputs)
    fp = fingerprint(STAGE, inputs, cfg)
    if not force and is_complete(out_dir, fp):
        return load_stats(out_dir)
    with stage_output(out_dir) as tmp:
        with make_pipeline(runner, f"source {cfg.name}") as p:
            _ = p | "Documents" >> ReadToDocuments(files, ReadSourceFile(cfg), tmp)
        stats = stats_from_outcomes(STAGE, read_outcomes(tmp))
        if stats.kept == 0:
            raise SourceError(
                f"source {cfg.name!r}: no document kept from {len(files)} file(s) (read {stats.read},"
                f" dropped {stats.dropped}); check --format, --text_field and --min_chars"
            )
        stats.extra.update({"source": cfg.name, "format": cfg.format, "files": len(files)})
        finish(stats, tmp, fp)
    return stats


SOURCE_KINDS = ("files", "webtext", "wikipedia")
_CRAWL_SECTIONS = ("read", "extract", "langid", "filters")


def run_source_spec(
    name: str,
    spec: dict[str, Any],
    out_dir: str,
    runner: RunnerConfig,
    expand: Callable[[list[str]], list[str]],
    crawl: list[str] | None = None,
    curate: Any = None,
    force: bool = False,
) -> StageStats:
    """One entry of a run config's ``sources`` (``name -> spec``) built into ``out_dir``.

    ``kind`` picks the builder: ``files`` (the default: ``paths`` + :class:`SourceConfig` fields), ``wikipedia``
    (``paths`` of dumps + ``WikipediaConfig`` fields) or ``webtext`` (``urls`` + ``WebTextConfig`` fields, the
    crawl from ``from``, else the run's ``crawl``). A webtext source extracts and filters exactly as the run's
    ``curate`` section does unless its own ``read`` / ``extract`` / ``langid`` / ``filters`` override keys:
    the same page must not be judged by two recipes. ``expand`` resolves the run's path patterns.
    """
    spec = dict(spec or {})
    kind = spec.pop("kind", "files")
    if kind not in SOURCE_KINDS:
        raise SourceError(f"source {name!r}: unknown kind {kind!r} ({' | '.join(SOURCE_KINDS)})")
    if kind == "webtext":
        from pipeline.webtext import WebTextConfig, run_webtext
        from schemas.config import from_dict

        inputs = expand(list(spec.pop("from", None) or crawl or []))
        if not inputs:
            raise SourceError(f"source {name!r}: a webtext source needs crawl input ('from', or the run's crawl)")
        spec["urls"] = expand(list(spec.get("urls") or []))
        for section in _CRAWL_SECTIONS:
            if curate is not None:
                base = dataclasses.asdict(getattr(curate, section))
                spec[section] = {**base, **(spec.get(section) or {})}
        return run_webtext(inputs, out_dir, from_dict(WebTextConfig, {"name": name, **spec}), runner, force=force)
    if "paths" not in spec:
        raise SourceError(f"source {name!r}: {kind} needs 'paths'")
    paths = expand(list(spec.pop("paths")))
    if kind == "wikipedia":
        from pipeline.wikipedia import WikipediaConfig, run_wikipedia
        from schemas.config import from_dict

        return run_wikipedia(paths, out_dir, from_dict(WikipediaConfig, {"name": name, **spec}), runner, force=force)
    from schemas.config import from_dict

    return run_source(paths, out_dir, from_dict(SourceConfig, {"name": name, **spec}), runner, force=force)
