"""Text or JSON-lines files -> a named source's document table (``ccgpt source text|text-file|jsonl``).

Books, documentation and reference prose become the same document table the crawl produces, tagged with
the source ``name``, so mixing, dedup and tokenisation treat every source alike. Ids are stable (sha1 of
name, the file's path relative to the input it was found under, and the document's index in the file), so
rerunning on a moved checkout gives the same ids. Every input document is accounted for: kept, or dropped
with a reason.

Formats:

* ``text``: one document per blank-line-separated block (a paragraph, a verse, a poem);
* ``text-file``: one document per file (a chapter, an article);
* ``jsonl``: one document per line, its text in ``cfg.text_field``; a ``url`` field (``cfg.url_field``)
  fills the url column and the remaining fields are kept as ``annotations``. Blank lines are not records.

Files ending in ``.gz`` are decompressed; offsets then count bytes of the decompressed stream. Inputs and the
output folder may be local or object-store URLs (``s3://bucket/texts/*.jsonl``): both go through
:mod:`pipeline.fs` and Beam's IOs. In a run config this is the default kind of source:
``{paths: [...], format: ..., ...}`` (:class:`FilesSpec`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam

from pipeline import fs
from pipeline.accounting import KEPT, OUTCOMES, dropped
from pipeline.ledger import DEFAULT_GROUP_BYTES, Group, plan_groups
from pipeline.runner import RunnerConfig
from pipeline.sources.common import (
    STAGE,
    PathsSpec,
    ReadToDocuments,
    SourceError,
    check_source_name,
    resolve_sized_inputs,
)
from pipeline.stage import Stage
from schemas.documents import document_row
from schemas.stats import StageStats


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
    group_bytes: int = field(
        default=DEFAULT_GROUP_BYTES,
        metadata={"help": "input bytes per work unit, committed on its own: a rerun skips the groups done"},
    )

    def __post_init__(self) -> None:
        # a window that keeps nothing is a config mistake: say so when the config is built, not after a run
        if not 0 <= self.min_chars <= self.max_chars:
            raise ValueError(f"SourceConfig: needs 0 <= min_chars <= max_chars, got {self.min_chars}, {self.max_chars}")


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
        data = fs.read_bytes(path)
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        fmt = self.cfg.format
        if fmt == "text-file":
            yield from self._emit(path, key, 0, 0, data, {})
        elif fmt == "text":
            for index, (offset, block) in enumerate(split_blocks(data)):
                yield from self._emit(path, key, index, offset, block.strip(), {})
        else:  # jsonl: the format is one of the three, checked when the config is built
            for offset, number, line in split_lines(data):
                yield from self._jsonl(path, key, number, offset, line)

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


def run_source(
    inputs: list[str], out_dir: str, cfg: SourceConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Build the document table of one named source from files (stage contract: skip if done, commit last),
    committed by input-file group (``cfg.group_bytes``; :mod:`pipeline.ledger`).

    Raises :class:`SourceError` when the name is missing, an input matches nothing, or no document is kept.
    """
    check_source_name(cfg.name)
    files = resolve_sized_inputs(inputs)
    keys = {path: key for path, key, _ in files}
    groups = plan_groups([(path, size) for path, _, size in files], cfg.group_bytes)
    stage = Stage(STAGE, out_dir, inputs, cfg, force, module=__name__)

    def build(g: Group) -> ReadToDocuments:
        return ReadToDocuments([(path, keys[path]) for path in g.files], ReadSourceFile(cfg), out_dir, g)

    def summarise(out: str, stats: StageStats) -> None:
        if stats.kept == 0:
            raise SourceError(
                f"source {cfg.name!r}: no document kept from {len(files)} file(s) (read {stats.read},"
                f" dropped {stats.dropped}); check --format, --text_field and --min_chars"
            )
        stats.extra.update({"source": cfg.name, "format": cfg.format, "files": len(files)})

    return stage.run_groups(runner, groups, build, summarise=summarise, label=f"source {cfg.name}")


class FilesSpec(PathsSpec):
    """A run config's files source (the default kind): ``{paths: [...], format: ..., <SourceConfig options>}``."""

    KIND = "files"
    CONFIG = SourceConfig
