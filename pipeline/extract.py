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
    """Main text of an HTML page with the configured extractor ('' when nothing is found)."""
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
    elif cfg.extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        text = extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False)
    else:
        raise ValueError(f"unknown extractor {cfg.extractor!r} (trafilatura | resiliparse)")
    return (text or "").strip()


def record_to_document(raw: dict[str, Any], cfg: ExtractConfig) -> dict[str, Any] | None:
    """A raw page record (see ``pipeline.read.iter_warc``) -> a document row, or None if no text remains."""
    text = decode_html(raw["payload"], raw.get("charset"))
    if raw.get("kind") == "html":
        text = extract_text(text, cfg, url=raw.get("url"))
    else:
        text = text.strip()
    if len(text) < max(cfg.min_chars, 1):
        return None
    return document_row(text=text, **{k: raw.get(k) for k in _DOC_FIELDS})


class ExtractText(beam.DoFn):
    """Raw page records -> documents (main output); ``empty_text`` / ``extract_error`` on the outcome tag."""

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg

    def setup(self):
        import logging

        # trafilatura logs one warning per empty page: noise at crawl scale, and counted as empty_text anyway.
        logging.getLogger("trafilatura").setLevel(logging.ERROR)

    def process(self, raw: dict[str, Any]):
        try:
            doc = record_to_document(raw, self.cfg)
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
