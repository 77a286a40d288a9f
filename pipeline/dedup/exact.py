"""Exact deduplication: a 128-bit hash of the normalised text, and the survivor order shared with near dedup.

Normalisation decides what "the same document" means. Lowercasing and collapsing whitespace (the defaults)
catch the copies that differ only in how a site renders them; stripping punctuation or digits is optional
because it also merges documents that differ in prices, dates or scores. NFKC folds compatibility forms
(full-width letters, ligatures, non-breaking spaces) that extraction tools emit inconsistently.

The **survivor** of a group (exact or near) is the document with the smallest *rank key*: source priority
first (``source_priority`` in order, then unlisted sources, then ``lowest_priority_sources`` such as
``crawl``: a crawl page that repeats a curated book or wiki article is removed from the crawl, as GPT-3 did),
then the highest ``quality_score`` (missing or NaN counts as lowest), then the smallest document id. The key
is a single string that sorts in exactly that order, so "pick the survivor" is ``min()`` everywhere -- in the
exact groups, and in connected components, where min-label propagation then lands every cluster on its
survivor without an extra join.
"""

from __future__ import annotations

import math
import struct
import sys
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import xxhash

SEP = "\x00"  # sorts before every character an id can reasonably contain, so "a" < "ab" holds in keys
_RANK_WIDTH = 6
_QUALITY_WIDTH = 16
_HASH_WIDTH = 16
_NO_QUALITY = "~" * _QUALITY_WIDTH  # sorts after every hex string: a missing score ranks lowest


@dataclass
class NormalizeConfig:
    unicode_nfkc: bool = field(default=True, metadata={"help": "apply Unicode NFKC normalisation"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase the text"})
    collapse_whitespace: bool = field(
        default=True, metadata={"help": "turn every whitespace run into one space and trim the ends"}
    )
    strip_punctuation: bool = field(default=False, metadata={"help": "remove Unicode punctuation (category P*)"})
    strip_digits: bool = field(default=False, metadata={"help": "remove decimal digits (category Nd)"})


@dataclass
class ExactConfig:
    enabled: bool = field(default=True, metadata={"help": "drop exact duplicates of the normalised text"})
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)


@lru_cache(maxsize=1)
def _deletable_codepoints() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Every Unicode punctuation (P*) and decimal digit (Nd) code point: one scan, ~0.4 s, once per process."""
    punct, digits = [], []
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat[0] == "P":
            punct.append(cp)
        elif cat == "Nd":
            digits.append(cp)
    return tuple(punct), tuple(digits)


@lru_cache(maxsize=4)
def _delete_table(punctuation: bool, digits: bool) -> dict[int, None]:
    """``str.translate`` table deleting the chosen categories."""
    punct_cps, digit_cps = _deletable_codepoints()
    return dict.fromkeys((punct_cps if punctuation else ()) + (digit_cps if digits else ()))


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    if cfg.unicode_nfkc:
        text = unicodedata.normalize("NFKC", text)
    if cfg.lowercase:
        text = text.lower()
    if cfg.strip_punctuation or cfg.strip_digits:
        text = text.translate(_delete_table(cfg.strip_punctuation, cfg.strip_digits))
    if cfg.collapse_whitespace:
        text = " ".join(text.split())
    return text


def exact_hash(text: str, cfg: NormalizeConfig) -> str:
    """128-bit XXH3 of the normalised text, hex: the exact-dedup group key."""
    return xxhash.xxh3_128_hexdigest(normalize_text(text, cfg).encode("utf-8", "surrogatepass"))


def source_rank(source: str, priority: list[str], lowest: list[str]) -> int:
    """Position of ``source`` in the survivor order (smaller wins)."""
    if source in priority:
        return priority.index(source)
    if source in lowest:
        return len(priority) + 1 + lowest.index(source)
    return len(priority)


def _quality_key(q: float | None) -> str:
    """Fixed-width hex that sorts *descending* by quality (higher score -> smaller key)."""
    if q is None or not isinstance(q, (int, float)) or math.isnan(q):
        return _NO_QUALITY
    bits = struct.unpack(">Q", struct.pack(">d", float(q)))[0]
    # IEEE-754 to an unsigned integer that orders like the float, then invert for descending order.
    ordered = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return format(0xFFFFFFFFFFFFFFFF - ordered, "016x")


def rank_key(
    source: str, quality: float | None, doc_id: str, text_hash: str, priority: list[str], lowest: list[str]
) -> str:
    """The node key of a document: sorts by (source priority, -quality, id); unique per (id, text).

    Layout: ``rank(6) SEP quality(16) SEP id SEP texthash(16)``; fixed-width fields at both ends make
    :func:`key_id` exact for any id. The text hash only separates two rows that (against the schema's
    contract) share an id with different texts, so such rows stay distinct documents instead of colliding.
    """
    rank = min(source_rank(source, priority, lowest), 10**_RANK_WIDTH - 1)
    return f"{rank:0{_RANK_WIDTH}d}{SEP}{_quality_key(quality)}{SEP}{doc_id}{SEP}{text_hash[:_HASH_WIDTH]}"


def key_id(key: str) -> str:
    """The document id inside a :func:`rank_key`."""
    return key[_RANK_WIDTH + 1 + _QUALITY_WIDTH + 1 : -(_HASH_WIDTH + 1)]
