"""``ccgpt source wikipedia``: a MediaWiki XML export (``pages-articles.xml[.bz2]``) -> a named source.

GPT-3 mixed English Wikipedia as a source of its own (3 % of tokens, 3.4 epochs); GPT-2 left it out of
WebText for the same reason. Dumps are parsed with maintained libraries rather than regular expressions:
``mwxml`` streams the XML (pages are read one at a time, a 20 GB dump never sits in memory; ``.bz2`` is
decompressed as a stream) and ``mwparserfromhell`` turns wikitext into plain text. Each dump file is one
Beam element, so the split dumps Wikimedia publishes (``pages-articles1.xml-p1p41242.bz2``, ...) are read in
parallel. Dumps and the output folder may be local or object-store URLs (read and written through
:mod:`pipeline.fs` and Beam's IOs).

What a page becomes: namespace-0 articles only (``namespaces``); of their latest revision, templates
(infoboxes, citation templates), ``<ref>`` notes, tables, file/image and category links, and the
``drop_sections`` (References, External links, ...) are removed, link text is kept, headings stay as lines.
Every page has one outcome: ``kept``, or dropped as ``namespace``, ``redirect``, ``empty_text``,
``too_short``, ``too_large`` or ``parse_error``; a file that is not a readable dump is ``bad_dump`` and is
listed in ``failed_files.jsonl``. A dump with no page at all, or no kept article, is a :class:`SourceError`.

Document ids are sha1 of (source name, wiki database name, page id): stable across dump dates and splits.
The url column is the article's public address (``https://en.wikipedia.org/wiki/Title``, from the dump's
``<siteinfo><base>`` unless ``url_base`` is set); annotations carry ``page_id``, ``revision_id`` and ``title``.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from pipeline import fs
from pipeline.accounting import KEPT, OUTCOMES, dropped
from pipeline.ledger import DEFAULT_GROUP_BYTES, Group, SideFile, plan_groups
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
from pipeline.tables import FAILED_FILES, read_jsonl
from schemas.documents import document_row
from schemas.stats import StageStats

FAILED = "failed"

DEFAULT_DROP_SECTIONS = [
    "References",
    "External links",
    "See also",
    "Further reading",
    "Notes",
    "Bibliography",
    "Sources",
    "Citations",
    "Footnotes",
]


@dataclass
class WikipediaConfig:
    name: str = field(default="wikipedia", metadata={"help": "source name written to the documents' source column"})
    namespaces: list[int] = field(default_factory=lambda: [0], metadata={"help": "namespaces kept (0: articles)"})
    min_chars: int = field(default=200, metadata={"help": "drop articles whose plain text is shorter than this"})
    max_chars: int = field(default=2_000_000, metadata={"help": "drop articles whose plain text is longer than this"})
    drop_sections: list[str] = field(
        default_factory=lambda: list(DEFAULT_DROP_SECTIONS),
        metadata={"help": "level-2 sections removed (citation lists, link lists), matched case-insensitively"},
    )
    group_bytes: int = field(
        default=DEFAULT_GROUP_BYTES,
        metadata={"help": "input bytes per work unit, committed on its own: a rerun skips the groups done"},
    )
    url_base: str = field(
        default="", metadata={"help": "article URL prefix, e.g. https://en.wikipedia.org/wiki/ (default: the dump's)"}
    )

    def __post_init__(self) -> None:
        # a window that keeps nothing is a config mistake: say so when the config is built, not after a run
        if not 0 <= self.min_chars <= self.max_chars:
            raise ValueError(
                f"WikipediaConfig: needs 0 <= min_chars <= max_chars, got {self.min_chars}, {self.max_chars}"
            )


def article_url_base(site_base: str | None, configured: str) -> str:
    """``https://en.wikipedia.org/wiki/`` from the siteinfo base (the main page's URL) or the configuration."""
    if configured:
        return configured if configured.endswith("/") else configured + "/"
    if site_base and "://" in site_base:
        return site_base.rsplit("/", 1)[0] + "/"
    return ""


def article_url(base: str, title: str) -> str | None:
    if not base:
        return None
    return base + urllib.parse.quote(title.replace(" ", "_"), safe="/:()',!*@$;~-._")


_LINE_SPACE = re.compile(r"[ \t]+")
_BLANKS = re.compile(r"\n{3,}")


def wikitext_to_text(wikitext: str, link_namespaces: set[str], drop_sections: set[str]) -> str:
    """Plain prose of an article's wikitext (see the module docstring for what is removed)."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for section in code.get_sections(levels=[2]):
        headings = section.filter_headings(recursive=False)
        if headings and headings[0].title.strip_code().strip().lower() in drop_sections:
            code.remove(section)
    for table in code.filter_tags(matches=lambda n: n.tag == "table", recursive=True):
        try:
            code.remove(table)
        except ValueError:  # inside a table removed already
            pass
    for link in code.filter_wikilinks(recursive=True):
        title = str(link.title).strip().lstrip(":")
        if ":" in title and title.split(":", 1)[0].strip().lower() in link_namespaces:
            try:
                code.remove(link)
            except ValueError:
                pass
    text = code.strip_code(normalize=True, collapse=True, keep_template_params=False)
    lines = [_LINE_SPACE.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _namespace_prefixes(site_info) -> set[str]:
    """Lower-cased names of the namespaces a ``[[Name:...]]`` link must not show as text (files, categories)."""
    names = {"file", "image", "category", "media"}
    for ns in site_info.namespaces or []:
        if ns.id in (6, 14, -2) and ns.name:  # File, Category, Media in every language
            names.add(ns.name.lower())
    return names


class ReadDump(beam.DoFn):
    """One dump file -> its articles as document rows; one outcome per page (and per unreadable file)."""

    def __init__(self, cfg: WikipediaConfig):
        self.cfg = cfg

    def process(self, path: str):
        import mwxml

        cfg = self.cfg
        pages = 0
        try:
            with fs.open_decompressed(path) as fh:
                dump = mwxml.Dump.from_file(fh)
                prefixes = _namespace_prefixes(dump.site_info)
                base = article_url_base(dump.site_info.base, cfg.url_base)
                db = dump.site_info.dbname or os.path.basename(path).split("-")[0]
                for page in dump:
                    pages += 1
                    yield from self._page(page, prefixes, base, db, path)
        except Exception as e:  # noqa: BLE001 - not XML, not a MediaWiki export, a cut-off .bz2: count and list it
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("bad_dump"))
            yield beam.pvalue.TaggedOutput(
                FAILED, {"file": path, "error": f"{type(e).__name__}: {e}"[:500], "pages": pages}
            )

    def _page(self, page, prefixes: set[str], base: str, db: str, path: str) -> Iterator[Any]:
        cfg = self.cfg
        revision = None
        for revision in page:  # noqa: B007 - the last revision is the current text (full-history dumps list all)
            pass
        if getattr(page, "namespace", None) not in cfg.namespaces:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("namespace"))
            return
        if page.redirect:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("redirect"))
            return
        wikitext = getattr(revision, "text", None) if revision is not None else None
        if not wikitext or not wikitext.strip():
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("empty_text"))
            return
        if wikitext.lstrip().upper().startswith("#REDIRECT"):  # redirects without a <redirect> element
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("redirect"))
            return
        try:
            text = wikitext_to_text(wikitext, prefixes, {s.lower() for s in cfg.drop_sections})
        except Exception:  # noqa: BLE001 - mwparserfromhell is tolerant; anything left is counted
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped("parse_error"))
            return
        if not text:
            reason = "empty_text"
        elif len(text) < cfg.min_chars:
            reason = "too_short"
        elif len(text) > cfg.max_chars:
            reason = "too_large"
        else:
            reason = None
        if reason:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
            return
        title = page.title
        yield document_row(
            id=hashlib.sha1(f"{cfg.name}\0{db}\0{page.id}".encode()).hexdigest(),
            source=cfg.name,
            url=article_url(base, title),
            date=str(revision.timestamp) if revision is not None and revision.timestamp else None,
            source_file=path,
            text=text,
            annotations={"page_id": page.id, "revision_id": getattr(revision, "id", None), "title": title},
        )
        yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)


def run_wikipedia(
    inputs: list[str], out_dir: str, cfg: WikipediaConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Build the document table of a Wikipedia (any MediaWiki) dump; the stage contract of ``ccgpt source``,
    committed by input-file group (``cfg.group_bytes``; :mod:`pipeline.ledger`)."""
    check_source_name(cfg.name)
    sized = resolve_sized_inputs(inputs)
    files = [p for p, _, _ in sized]
    groups = plan_groups([(p, size) for p, _, size in sized], cfg.group_bytes)
    stage = Stage(STAGE, out_dir, inputs, cfg, force, module=__name__)

    def build(g: Group) -> ReadToDocuments:
        return ReadToDocuments(g.files, ReadDump(cfg), out_dir, g, extra_files={FAILED: FAILED_FILES})

    def summarise(out: str, stats: StageStats) -> None:
        failed = read_jsonl(fs.join(out, FAILED_FILES))
        where = f"{len(files)} dump file(s)"
        if stats.read == 0:
            raise SourceError(f"source {cfg.name!r}: no page in {where}: an empty dump")
        if stats.kept == 0:
            errors = "; ".join(f"{f['file']}: {f['error']}" for f in failed[:3])
            raise SourceError(
                f"source {cfg.name!r}: no article kept from {where} (read {stats.read} pages/files,"
                f" dropped {stats.dropped}){'; ' + errors if errors else ''}"
            )
        stats.extra.update(
            {
                "source": cfg.name,
                "format": "wikipedia",
                "files": len(files),
                "failed_files": sorted(f["file"] for f in failed),
            }
        )

    side_files = (SideFile(FAILED_FILES, "lines"),)
    return stage.run_groups(runner, groups, build, side_files, summarise, label=f"source {cfg.name}")


class WikipediaSpec(PathsSpec):
    """A run config's Wikipedia source: ``{kind: wikipedia, paths: [dumps], <WikipediaConfig options>}``."""

    KIND = "wikipedia"
    CONFIG = WikipediaConfig
