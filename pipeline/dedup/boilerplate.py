"""Boilerplate lines and the *core* of a document: what near-duplicate detection compares once site templates
are set aside.

Two pages of one site share its template (menus, cookie notices, "related articles", a long fixed text around
a short article); two copies of one article on two sites share the article. By word shingles both pairs look
alike. What tells them apart is *recurrence*: a template line recurs in many documents whose other content
differs, an article's paragraphs recur only where the article is copied. Following CCNet's paragraph hashing,
every line of a document is normalised and hashed, and a line whose hash occurs in at least ``min_docs``
documents of the same *group* is **boilerplate**:

* the group is the document's URL host where it has a URL (a site's template recurs across the site's pages,
  while a syndicated copy sits on another host and never counts towards the article's own lines), and the
  whole corpus where it has none (the labelled JSON-lines sets);
* a line counts once per document, however often the document repeats it;
* normalisation (:func:`normalize_line`): NFKC, lowercase, the ``\\w+`` tokens joined by one space and every
  digit replaced by ``0`` (as CCNet does), so a line that differs only in punctuation, spacing, a date or a
  counter is the same line; a line without a word character is ignored.

A document's **core** is its text without its boilerplate lines; its shingles (:func:`core_shingles`) are
the document's shingles that lie wholly inside the other lines. Near-duplicate detection hashes the core's
shingles into the MinHash signature (the full text's when the core has none) and verifies candidate pairs
with :func:`core_containment_match`: the shorter core must lie in the other document, so two pages that share
only a template fail, while a copy with other boilerplate lines or a dropped paragraph passes.

Everything here is a pure function of a document (or of counts), so a Beam DoFn can call it: one pass counts
``(group, line hash)`` documents (:func:`line_hashes` per document, a sum per key, :func:`frequent_lines`),
the next computes each document's core against its group's frequent lines.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np
import xxhash

from pipeline.dedup.minhash import MinHasher, ShingleConfig, is_unsegmented, jaccard, shingles, signature_similarity

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_DIGIT_RE = re.compile(r"\d", re.UNICODE)
CORPUS_GROUP = ""  # the group of documents without a URL (or when grouping by host is off)


@dataclass
class BoilerplateConfig:
    """Which lines are boilerplate: a normalised line seen in at least ``min_docs`` documents of a group."""

    enabled: bool = field(
        default=True,
        metadata={"help": "compare documents without their boilerplate lines (lines recurring in min_docs documents)"},
    )
    # A site's template line recurs in every page of the site that uses the template, an article's paragraph
    # only where the article is copied. Grouped by host, an article is rarely published more than once or
    # twice by one site, so any count of a few catches a template as soon as a handful of the site's pages
    # use it. Grouped over a whole corpus (no URLs), the article's copies count too: an article copied into
    # min_docs or more documents has its own paragraphs counted as boilerplate, and its copies are then
    # matched on what is left of their cores against each other's full text (core_containment_match), which
    # loses some of them. 6 keeps clusters of up to 5 copies whole there and still sets aside a template
    # shared by 6 pages; docs/DEDUP.md and the bench's sweep show what other values do.
    min_docs: int = field(
        default=6, metadata={"help": "a line seen in at least this many documents of its group is boilerplate"}
    )
    per_host: bool = field(
        default=True,
        metadata={"help": "count lines per URL host where documents have a URL (else across the whole corpus)"},
    )

    def __post_init__(self) -> None:
        if self.min_docs < 2:
            raise ValueError(f"BoilerplateConfig.min_docs must be >= 2, got {self.min_docs}")


def group_of(url: str | None, cfg: BoilerplateConfig) -> str:
    """The group whose documents a line is counted in: the URL's host (lowercase, without ``www.``), or
    :data:`CORPUS_GROUP` for a document without a URL or with ``per_host`` off."""
    if not url or not cfg.per_host:
        return CORPUS_GROUP
    try:
        host = (urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return CORPUS_GROUP
    return host[4:] if host.startswith("www.") else host


def normalize_line(line: str) -> str:
    """A line as its boilerplate key sees it: NFKC, lowercase, word tokens joined by a space, digits -> 0."""
    if not line.isascii():
        line = unicodedata.normalize("NFKC", line)
    return _DIGIT_RE.sub("0", " ".join(_WORD_RE.findall(line.lower())))


def _line_hash(normalized: str) -> int:
    return xxhash.xxh3_64_intdigest(normalized.encode("utf-8", "surrogatepass"))


def line_keys(text: str) -> list[int]:
    """One hash per line of ``text`` (``str.splitlines``) of its normalised form; 0 for a line without words."""
    return [_line_hash(k) if k else 0 for k in map(normalize_line, text.splitlines())]


def line_hashes(text: str, keys: list[int] | None = None) -> list[int]:
    """The distinct hashes of ``text``'s normalised lines (lines without a word character skipped), in order."""
    return [h for h in dict.fromkeys(line_keys(text) if keys is None else keys) if h]


def count_lines(docs: Iterable[tuple[str, str]]) -> Counter:
    """``(group, line hash) -> number of documents`` over ``(group, text)`` pairs (each line once a document)."""
    counts: Counter = Counter()
    for group, text in docs:
        counts.update((group, h) for h in line_hashes(text))
    return counts


def count_line_keys(docs: Iterable[tuple[str, list[int]]]) -> Counter:
    """:func:`count_lines` from ``(group, line_keys(text))`` pairs computed once per document."""
    counts: Counter = Counter()
    for group, keys in docs:
        counts.update((group, h) for h in line_hashes("", keys))
    return counts


def frequent_lines(counts: Counter, min_docs: int) -> set[tuple[str, int]]:
    """The ``(group, line hash)`` keys seen in at least ``min_docs`` documents: the boilerplate lines."""
    return {key for key, n in counts.items() if n >= min_docs}


class GroupLines(Container):
    """The boilerplate line hashes of one group, as a container :func:`core_shingles` can test hashes against."""

    def __init__(self, frequent: set[tuple[str, int]], group: str) -> None:
        self.frequent, self.group = frequent, group

    def __contains__(self, h: object) -> bool:
        return (self.group, h) in self.frequent


def boilerplate_mask(lines: list[str], boilerplate: Container, keys: list[int] | None = None) -> list[bool]:
    """For each line, whether its normalised hash is in ``boilerplate`` (lines without words: False);
    ``keys``: the lines' :func:`line_keys` when already computed."""
    if keys is None or len(keys) != len(lines):
        keys = [_line_hash(k) if k else 0 for k in map(normalize_line, lines)]
    return [bool(h) and h in boilerplate for h in keys]


def core_shingles(
    text: str, cfg: ShingleConfig, boilerplate: Container, keys: list[int] | None = None
) -> tuple[list[bytes], list[bytes] | None]:
    """``(shingles(text, cfg), the core's shingles)``; the core is None when ``text`` has no boilerplate line.

    The core's shingles are the document's shingles that lie wholly inside non-boilerplate lines: a subset of
    the full set, so removing a line never invents a shingle that spans the gap it leaves (which would count
    against a copy whose own boilerplate sits elsewhere). Word shingles (and the character n-grams of an
    unsegmented text) are cut from the same tokens :func:`.minhash.shingles` finds; ``kind="char"`` shingles
    the core's text instead. ``keys``: ``line_keys(text)`` when the caller has them (the counting pass did).
    """
    items = shingles(text, cfg)
    if keys is not None and not any(h and h in boilerplate for h in keys):
        return items, None  # no line is boilerplate (the common case): the text need not be cut
    if cfg.lowercase:
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        text = text.lower()
    lines = text.splitlines(keepends=True)
    mask = boilerplate_mask(lines, boilerplate, keys)
    if not any(mask):
        return items, None
    if cfg.kind == "char":
        return items, shingles("".join(line for line, bp in zip(lines, mask) if not bp), cfg)
    units: list[str] = []
    flags: list[bool] = []
    unsegmented = cfg.unsegmented == "char" and is_unsegmented(text)
    for line, bp in zip(lines, mask):
        words = _WORD_RE.findall(line)
        if unsegmented:
            words = [c for w in words for c in w]
        units.extend(words)
        flags.extend([bp] * len(words))
    n = max(1, int(cfg.ngram))
    sep = "" if unsegmented else " "
    if len(units) <= n:
        return items, ([] if any(flags) else items)
    bad = np.concatenate([[0], np.cumsum(np.asarray(flags, dtype=np.int64))])
    clean = (bad[n:] - bad[:-n]) == 0  # window i covers units i .. i+n-1
    windows = (sep.join(units[i : i + n]) for i in np.flatnonzero(clean))
    return items, [g.encode("utf-8", "surrogatepass") for g in dict.fromkeys(windows)]


class CoreSketch(NamedTuple):
    """What near-duplicate detection keeps of one document: the MinHash ``signature`` of its core's shingles
    (the full text's when the core has none), and the sorted, distinct 64-bit shingle hashes of its ``core``
    and of its ``full`` text (``core is full`` when no line of it is boilerplate)."""

    signature: np.ndarray
    core: np.ndarray
    full: np.ndarray

    @property
    def has_boilerplate(self) -> bool:
        return self.core is not self.full


def core_sketch(
    text: str, cfg: ShingleConfig, hasher: MinHasher, boilerplate: Container | None, keys: list[int] | None = None
) -> CoreSketch | None:
    """The :class:`CoreSketch` of ``text`` given its group's ``boilerplate`` line hashes (None: no shingles).

    The one definition of which shingle set is hashed, shared by ``ccgpt dedup eval`` and the Beam stage so
    that both score the same algorithm. ``boilerplate`` None: the group has no boilerplate line, so the text's
    lines are not hashed at all. Raises what :func:`.minhash.shingles` raises on undecodable text.
    """
    if boilerplate is None:
        items, core_items = shingles(text, cfg), None
    else:
        items, core_items = core_shingles(text, cfg, boilerplate, keys)
    if not items:
        return None
    hashes = hasher.hash_shingles(items)
    full = np.unique(hashes)
    if core_items is None:
        return CoreSketch(hasher.signature(hashes), full, full)
    core_hashes = hasher.hash_shingles(core_items)
    signature = hasher.signature(core_hashes if core_items else hashes)
    return CoreSketch(signature, np.unique(core_hashes), full)


def core_containment_match(
    core_a: np.ndarray,
    full_a: np.ndarray,
    core_b: np.ndarray,
    full_b: np.ndarray,
    threshold: float,
    min_overlap: int,
) -> bool:
    """Whether two documents are near-duplicates by their cores (sorted, distinct shingle-hash arrays).

    The **shorter non-empty core** must have at least ``threshold`` of its shingles, and at least
    ``min(min_overlap, |full_a|, |full_b|)`` of them, in the other document's **full** shingle set. So:

    * boilerplate (not in the cores) never counts for or against the pair;
    * a dropped paragraph or a few edited words cost only their share of the shorter core (containment, not
      Jaccard: the longer document may hold more, e.g. the paragraph the other dropped);
    * an article whose own paragraphs became boilerplate (copied into many documents of its group) can still
      match its copies: what is left of its core is looked up in their full text, not in their cores;
    * the absolute floor keeps a short core (a template page around a two-line article) from matching by
      chance; a document shorter than the floor must be contained whole instead.

    Two documents that are all boilerplate (both cores empty) fall back to the Jaccard of their full sets.
    """
    if core_a.size == 0 and core_b.size == 0:
        if full_a.size == 0 and full_b.size == 0:
            return False
        inter = np.intersect1d(full_a, full_b, assume_unique=True).size
        return inter / float(full_a.size + full_b.size - inter) >= threshold
    if core_a.size == 0 or (core_b.size and core_b.size < core_a.size):
        core_a, full_a, core_b, full_b = core_b, full_b, core_a, full_a  # core_a: the shorter non-empty core
    inter = np.intersect1d(core_a, full_b, assume_unique=True).size
    return inter >= min(int(min_overlap), int(full_a.size), int(full_b.size)) and inter >= threshold * core_a.size


def verify_pair(mode: str, a: CoreSketch, b: CoreSketch, threshold: float, min_overlap: int) -> bool:
    """Whether a candidate pair is a near-duplicate under ``NearConfig.verify`` ``mode``: ``containment``
    (:func:`core_containment_match`), ``jaccard`` of the cores, ``signature`` (the MinHash estimate) or
    ``none``. Each mode reads only its fields of the sketches, so a caller may fill in just those."""
    if mode == "containment":
        return core_containment_match(a.core, a.full, b.core, b.full, threshold, min_overlap)
    if mode == "jaccard":
        return jaccard(a.core, b.core) >= threshold
    if mode == "signature":
        return signature_similarity(a.signature, b.signature) >= threshold
    return True


def candidate_threshold(threshold: float, near: object) -> float:
    """The Jaccard the LSH banding is chosen for (``NearConfig.lsh_threshold`` when set).

    Jaccard verification needs pairs at Jaccard ``t``. Containment verification accepts pairs of lower
    Jaccard: two cores of equal size, each with a share ``t`` of its shingles in the other, have Jaccard
    ``t / (2 - t)`` (0.667 at 0.8), so the banding is chosen for that; a shorter core contained in a longer
    one has lower Jaccard still, and is found when the banding catches it anyway.
    """
    explicit = float(getattr(near, "lsh_threshold", 0.0) or 0.0)
    if explicit > 0:
        return explicit
    if getattr(near, "verify", "jaccard") == "containment":
        return threshold / (2.0 - threshold)
    return threshold
