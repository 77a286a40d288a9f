"""Decode and extract the main text of raw pages: the second step of ``ccgpt curate``.

Extractor choice (measured on 200 pages of ``../shared/data/html/trafilatura-eval.tar.gz``, whose
``evaldata.json`` lists snippets the main text must / must not contain; one CPU core):

============================  =========  ======  =====  ==========
extractor                     precision  recall  F1     pages/s
============================  =========  ======  =====  ==========
trafilatura (``fast=True``)   0.905      0.932   0.918  31
trafilatura (full fallback)   0.905      0.932   0.918  22
resiliparse (main_content)    0.750      0.940   0.835  359
============================  =========  ======  =====  ==========

Resiliparse is ~11x faster but keeps far more boilerplate (navigation, footers, "Impressum"): precision
0.75 vs 0.905. Boilerplate is exactly what the later repetition/quality filters and the model would
otherwise have to fight, and FineWeb's ablations found trafilatura's output trains better models, so the
default is **trafilatura in fast mode** (same quality here as its fallback mode, 40% faster). Choose
``extractor: resiliparse`` when throughput matters more than precision.

Decoding: the HTTP-declared charset first (when Python knows it), else Resiliparse's detector (meta tags +
byte statistics); Resiliparse's ``bytes_to_str`` falls back to UTF-8 / cp1252 and finally drops invalid
bytes, so no page can raise a ``UnicodeDecodeError``.

Caps, all counts, so an outcome never depends on machine load (there is no wall-clock guard, hence nothing
timing-dependent to report): the reader drops records whose WARC block, or whose HTTP payload once its
content encoding is undone (a gzip body can grow a thousandfold), exceeds ``max_bytes`` (``too_large``); here a
page over ``max_chars`` decoded characters (``too_many_chars``) or nested deeper than ``max_depth`` elements
(``too_deep``) is dropped before the extractor runs.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam

from pipeline.accounting import OUTCOMES, dropped
from pipeline.read import COUNTERS, EXAMPLES
from schemas.documents import document_row

_DOC_FIELDS = ("id", "source", "url", "warc_record_id", "date", "source_file", "source_offset")


@dataclass
class ExtractConfig:
    extractor: Literal["trafilatura", "resiliparse"] = field(
        default="trafilatura", metadata={"help": "main-text extractor: trafilatura (precise) | resiliparse (fast)"}
    )
    include_tables: bool = field(default=True, metadata={"help": "keep text inside <table> (trafilatura)"})
    include_comments: bool = field(default=False, metadata={"help": "keep user comments sections (trafilatura)"})
    min_chars: int = field(default=1, metadata={"help": "extracted text shorter than this counts as empty_text"})
    max_chars: int = field(
        default=2_000_000,
        metadata={"help": "decoded pages / WET texts longer than this (characters) are dropped as too_many_chars"},
    )
    max_depth: int = field(
        default=256, metadata={"help": "HTML nested deeper than this many elements is dropped as too_deep"}
    )


class CapExceeded(ValueError):
    """A page over a deterministic per-document cap; ``reason`` is its outcome (``too_many_chars``, ``too_deep``)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _depth_selector(max_depth: int) -> str:
    return " > ".join(["*"] * (max_depth + 1))


def check_depth(tree, max_depth: int) -> None:
    """Raise :class:`CapExceeded` when an element sits more than ``max_depth`` elements deep (``<html>`` is 1).

    A CSS child-combinator chain evaluated by Lexbor in C: ~1 ms on a real page, 0.1 s for 100,000 nested
    ``<div>`` s, exact and independent of machine load.
    """
    if max_depth > 0 and tree.document is not None and tree.document.query_selector(_depth_selector(max_depth)):
        raise CapExceeded("too_deep", f"HTML nested deeper than {max_depth} elements")


def decode_html(payload: bytes, declared: str | None = None) -> str:
    """Bytes -> str with the declared charset if usable, else the detected one; never raises on bad bytes."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    encoding = None
    if declared:
        try:
            encoding = codecs.lookup(declared.strip().strip("\"'")).name
        except LookupError:
            encoding = None
    if encoding is None:
        encoding = detect_encoding(payload)
    try:
        return bytes_to_str(payload, encoding, errors="ignore")
    except (LookupError, UnicodeError, TypeError):
        return payload.decode("utf-8", errors="ignore")


def extract_text(html: str, cfg: ExtractConfig, url: str | None = None) -> str:
    """Main text of an HTML page with the configured extractor ('' when nothing is found).

    Raises :class:`CapExceeded` for a page nested deeper than ``cfg.max_depth``: checked first, on Lexbor's
    parse (reused by the resiliparse extractor), because both extractors degrade on such pages instead of
    failing cleanly. Measured on ``<div>`` bombs: resiliparse's time grows with the square of the depth
    (4,000 levels 1.2 s, 10,000 levels 10 s, 100,000 levels kills the process), and trafilatura's lxml parser
    stops at 256 levels, silently dropping the text below. No real page of the 1,032 in the trafilatura
    evaluation set is deeper than 256.
    """
    from resiliparse.parse.html import HTMLTree

    if cfg.extractor not in ("trafilatura", "resiliparse"):
        raise ValueError(f"unknown extractor {cfg.extractor!r} (trafilatura | resiliparse)")
    tree = HTMLTree.parse(html)
    check_depth(tree, cfg.max_depth)
    if cfg.extractor == "trafilatura":
        import trafilatura

        text = trafilatura.extract(
            html,
            url=url,
            fast=True,
            include_comments=cfg.include_comments,
            include_tables=cfg.include_tables,
            deduplicate=False,
        )
    else:
        from resiliparse.extract.html2text import extract_plain_text

        text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False)
    return (text or "").strip()


def record_to_document(raw: dict[str, Any], cfg: ExtractConfig) -> dict[str, Any] | None:
    """A raw page record (see ``pipeline.read.iter_warc``) -> a document row, or None if no text remains.

    Raises :class:`CapExceeded` for a page over ``cfg.max_chars`` characters once decoded (the extractors' time
    grows with it; the reader's ``max_bytes`` bounds bytes, this bounds what a multi-byte decoding leaves) or
    nested deeper than ``cfg.max_depth``. Such pages are dropped, not truncated: a cut page is a partial
    document, and where it is cut would decide what the extractor sees.
    """
    text = decode_html(raw["payload"], raw.get("charset"))
    if cfg.max_chars > 0 and len(text) > cfg.max_chars:
        raise CapExceeded("too_many_chars", f"{len(text)} characters after decoding (max_chars {cfg.max_chars})")
    if raw.get("kind") == "html":
        text = extract_text(text, cfg, url=raw.get("url"))
    else:
        text = text.strip()
    if len(text) < max(cfg.min_chars, 1):
        return None
    return document_row(text=text, **{k: raw.get(k) for k in _DOC_FIELDS})


class ExtractText(beam.DoFn):
    """Raw page records -> documents (main output); ``empty_text`` / ``too_many_chars`` / ``too_deep`` /
    ``extract_error`` on the outcome tag."""

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg

    def setup(self):
        import logging

        # trafilatura logs one warning per empty page: noise at crawl scale, and counted as empty_text anyway.
        logging.getLogger("trafilatura").setLevel(logging.ERROR)

    def process(self, raw: dict[str, Any]):
        try:
            doc = record_to_document(raw, self.cfg)
        except CapExceeded as e:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(e.reason))
            yield beam.pvalue.TaggedOutput(
                EXAMPLES, (e.reason, {"reason": e.reason, "url": raw.get("url"), "text": str(e)})
            )
            return
        except Exception as e:  # noqa: BLE001 - a pathological page must not stop the run
            reason = "extract_error"
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
            yield beam.pvalue.TaggedOutput(
                EXAMPLES, (reason, {"reason": reason, "url": raw.get("url"), "text": f"{type(e).__name__}: {e}"[:300]})
            )
            return
        if doc is None:
            reason = "empty_text"
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
            yield beam.pvalue.TaggedOutput(EXAMPLES, (reason, {"reason": reason, "url": raw.get("url"), "text": ""}))
            return
        yield beam.pvalue.TaggedOutput(COUNTERS, "extracted")
        yield doc
