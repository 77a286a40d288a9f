"""Heuristic quality filters and PII scrubbing: the last step of ``ccgpt curate``.

We call datatrove's filter classes directly (``filter(doc)`` returns ``True`` or ``(False, reason)``)
rather than re-implementing Gopher / C4 / FineWeb rules: they are the reference implementations behind
FineWeb, and matching them exactly is what makes our numbers comparable. Only paths that run offline are
used (English word/sentence splitting is spaCy's blank tokenizer; the C4 bad-words filter, which downloads
its word lists, is not used).

Order (FineWeb's, cheapest and most selective first); **the first failing filter names the drop reason**,
later filters are not run on that document, so a reason count is "dropped here", not "would fail this":

1. ``url_blocklist``     user-supplied domains (a domain also blocks its subdomains) and URL substrings
2. ``gopher_repetition`` duplicated lines / paragraphs / n-grams (Rae et al. 2021, table A1)
3. ``gopher_quality``    word count, mean word length, symbol ratios, bullets, stop words
4. ``c4``                C4 line cleaning (drops lines: too few words, "javascript", cookie/policy notices,
                         citations; terminal punctuation off by default, as in FineWeb), then document rules
                         (lorem ipsum, curly brackets, fewer than ``min_num_sentences`` sentences). **This
                         filter rewrites the text** of documents it keeps.
5. ``fineweb_quality``   FineWeb's line-punctuation, short-line, duplicated-char and list-like rules
6. ``pii`` (off by default) replaces e-mail addresses and public IP addresses (datatrove's ``PIIFormatter``);
                         it never drops a document.

Drop reasons are ``<filter>:<datatrove reason>``, e.g. ``gopher_quality:gopher_short_doc``,
``c4:too_few_sentences``; an exception inside a filter becomes ``<filter>:error`` instead of a crash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam

from pipeline.accounting import KEPT, OUTCOMES, dropped
from pipeline.read import EXAMPLES


@dataclass
class UrlBlocklistConfig:
    enabled: bool = field(default=True, metadata={"help": "drop documents whose URL is block-listed"})
    domains: list[str] = field(default_factory=list, metadata={"help": "blocked domains (subdomains included)"})
    substrings: list[str] = field(default_factory=list, metadata={"help": "blocked URL substrings (case-insensitive)"})
    domains_file: str = field(default="", metadata={"help": "text file of blocked domains, one a line, '#' comments"})


@dataclass
class GopherRepetitionConfig:
    enabled: bool = field(default=True, metadata={"help": "run datatrove's GopherRepetitionFilter"})
    dup_line_frac: float = field(default=0.3, metadata={"help": "max fraction of duplicated lines"})
    dup_para_frac: float = field(default=0.3, metadata={"help": "max fraction of duplicated paragraphs"})
    dup_line_char_frac: float = field(default=0.2, metadata={"help": "max fraction of chars in duplicated lines"})
    dup_para_char_frac: float = field(default=0.2, metadata={"help": "max fraction of chars in duplicated paragraphs"})


@dataclass
class GopherQualityConfig:
    enabled: bool = field(default=True, metadata={"help": "run datatrove's GopherQualityFilter"})
    min_doc_words: int = field(default=50, metadata={"help": "min non-symbol words"})
    max_doc_words: int = field(default=100_000, metadata={"help": "max non-symbol words"})
    min_avg_word_length: int = field(default=3, metadata={"help": "min mean word length"})
    max_avg_word_length: int = field(default=10, metadata={"help": "max mean word length"})
    max_symbol_word_ratio: float = field(default=0.1, metadata={"help": "max '#' or ellipsis per word"})
    max_bullet_lines_ratio: float = field(default=0.9, metadata={"help": "max fraction of lines starting with a bullet"})
    max_ellipsis_lines_ratio: float = field(default=0.3, metadata={"help": "max fraction of lines ending with '...'"})
    max_non_alpha_words_ratio: float = field(
        default=0.8, metadata={"help": "min fraction of words with an alphabetic char (datatrove's name)"}
    )
    min_stop_words: int = field(default=2, metadata={"help": "min distinct English stop words present"})


@dataclass
class C4Config:
    enabled: bool = field(default=True, metadata={"help": "run datatrove's C4QualityFilter (line cleaning + doc rules)"})
    filter_no_terminal_punct: bool = field(
        default=False,
        metadata={"help": "drop lines not ending in . ! ? \" ' (C4 paper: on; FineWeb: off, it removed too much)"},
    )
    min_num_sentences: int = field(default=5, metadata={"help": "min sentences after line cleaning (-1 = off)"})
    min_words_per_line: int = field(default=3, metadata={"help": "drop lines with fewer words (-1 = off)"})
    max_word_length: int = field(default=1000, metadata={"help": "drop lines with a longer word (-1 = off)"})
    remove_citations: bool = field(default=True, metadata={"help": "remove [1], [edit], [citation needed]"})
    filter_lorem_ipsum: bool = field(default=True, metadata={"help": "drop documents containing 'lorem ipsum'"})
    filter_javascript: bool = field(default=True, metadata={"help": "drop lines mentioning javascript"})
    filter_curly_bracket: bool = field(default=True, metadata={"help": "drop documents containing '{'"})
    filter_policy: bool = field(default=True, metadata={"help": "drop cookie / terms-of-use lines"})


@dataclass
class FineWebQualityConfig:
    enabled: bool = field(default=True, metadata={"help": "run datatrove's FineWebQualityFilter"})
    line_punct_thr: float = field(default=0.12, metadata={"help": "min fraction of lines ending in punctuation"})
    line_punct_exclude_zero: bool = field(default=False, metadata={"help": "do not drop when no line ends in punctuation"})
    short_line_thr: float = field(default=0.67, metadata={"help": "max fraction of short lines"})
    short_line_length: int = field(default=30, metadata={"help": "a line this short (chars) counts as short"})
    char_duplicates_ratio: float = field(default=0.01, metadata={"help": "max fraction of chars in duplicated lines"})
    new_line_ratio: float = field(default=0.3, metadata={"help": "max newlines per word (list-like pages)"})


@dataclass
class PiiConfig:
    enabled: bool = field(default=False, metadata={"help": "replace e-mail and IP addresses in kept documents"})
    remove_emails: bool = field(default=True, metadata={"help": "replace e-mail addresses"})
    remove_ips: bool = field(default=True, metadata={"help": "replace IP addresses"})
    only_remove_public_ips: bool = field(default=True, metadata={"help": "leave private/reserved IPs alone"})


@dataclass
class FiltersConfig:
    url_blocklist: UrlBlocklistConfig = field(default_factory=UrlBlocklistConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb_quality: FineWebQualityConfig = field(default_factory=FineWebQualityConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)


FILTER_ORDER = ("url_blocklist", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality")


def _kwargs(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "enabled"}


class UrlBlocklist:
    """Block by host (exact or any parent domain) or by substring of the lower-cased URL."""

    def __init__(self, cfg: UrlBlocklistConfig):
        domains = {d.strip().lower().lstrip(".") for d in cfg.domains if d.strip()}
        if cfg.domains_file:
            with open(cfg.domains_file, encoding="utf-8") as fh:
                domains |= {ln.strip().lower().lstrip(".") for ln in fh if ln.strip() and not ln.startswith("#")}
        self.domains = frozenset(domains)
        self.substrings = tuple(s.lower() for s in cfg.substrings if s)

    def blocked(self, url: str | None) -> bool:
        if not url:
            return False
        low = url.lower()
        if any(s in low for s in self.substrings):
            return True
        try:
            host = (urlsplit(low).hostname or "").rstrip(".")
        except ValueError:
            host = ""
        parts = host.split(".")
        return any(".".join(parts[i:]) in self.domains for i in range(len(parts)))


class FilterChain:
    """The configured filters in :data:`FILTER_ORDER`, then optional PII scrubbing.

    ``apply(doc_row) -> (row, None)`` for a kept document (text possibly cleaned by C4 / PII) or
    ``(None, reason)``. Datatrove filters are built per document language (their word tokenizer depends
    on it), lazily, falling back to English where datatrove has no tokenizer for a language.
    """

    def __init__(self, cfg: FiltersConfig):
        self.cfg = cfg
        self.url_blocklist = UrlBlocklist(cfg.url_blocklist) if cfg.url_blocklist.enabled else None
        self._by_language: dict[str, list[tuple[str, Any]]] = {}
        self.pii = None
        if cfg.pii.enabled:
            from datatrove.pipeline.formatters import PIIFormatter

            self.pii = PIIFormatter(**_kwargs(cfg.pii))

    def _filters(self, language: str | None) -> list[tuple[str, Any]]:
        lang = language or "en"
        if lang not in self._by_language:
            from datatrove.utils.word_tokenizers import load_word_tokenizer

            try:
                load_word_tokenizer(lang)
            except Exception:  # noqa: BLE001 - no tokenizer assigned for this language in datatrove
                lang_used = "en"
            else:
                lang_used = lang
            self._by_language[lang] = self._build(lang_used)
        return self._by_language[lang]

    def _build(self, language: str) -> list[tuple[str, Any]]:
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )

        cfg = self.cfg
        out: list[tuple[str, Any]] = []
        if cfg.gopher_repetition.enabled:
            out.append(("gopher_repetition", GopherRepetitionFilter(**_kwargs(cfg.gopher_repetition), language=language)))
        if cfg.gopher_quality.enabled:
            out.append(("gopher_quality", GopherQualityFilter(**_kwargs(cfg.gopher_quality), language=language)))
        if cfg.c4.enabled:
            out.append(("c4", C4QualityFilter(**_kwargs(cfg.c4), language=language)))
        if cfg.fineweb_quality.enabled:
            fw = _kwargs(cfg.fineweb_quality)
            out.append(("fineweb_quality", FineWebQualityFilter(**fw, language=language)))
        return out

    def apply(self, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        from datatrove.data import Document

        if self.url_blocklist is not None and self.url_blocklist.blocked(row.get("url")):
            return None, "url_blocklist"
        doc = Document(text=row["text"], id=row["id"], metadata={"url": row.get("url"), "language": row.get("language")})
        for name, flt in self._filters(row.get("language")):
            try:
                result = flt.filter(doc)
            except Exception:  # noqa: BLE001 - e.g. a division by zero on a degenerate text
                return None, f"{name}:error"
            ok, reason = (result if isinstance(result, tuple) else (result, None))
            if not ok:
                return None, f"{name}:{reason or 'rejected'}"
            if not doc.text.strip():
                return None, f"{name}:empty_after_cleaning"
        text = doc.text
        if self.pii is not None:
            text = self.pii.format(text)
        return {**row, "text": text}, None


class HeuristicFilters(beam.DoFn):
    """Documents -> kept documents; every input gets ``kept`` or ``dropped:<filter>:<reason>``."""

    def __init__(self, cfg: FiltersConfig):
        self.cfg = cfg
        self._chain: FilterChain | None = None

    def setup(self):
        self._chain = FilterChain(self.cfg)

    def process(self, row: dict[str, Any]):
        kept, reason = self._chain.apply(row)
        if kept is None:
            yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(reason))
            yield beam.pvalue.TaggedOutput(EXAMPLES, (reason, {"reason": reason, "url": row.get("url"), "text": row["text"][:300]}))
            return
        yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
        yield kept
