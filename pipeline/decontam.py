"""Benchmark decontamination (GPT-3, appendix C): cut benchmark 13-grams out of the training documents.

Rule, per document:

1. Normalise both sides the same way: lowercase, strip punctuation and symbols (Unicode categories ``P*``
   and ``S*``, deleted rather than replaced, so ``it's`` is ``its``), collapse whitespace; the tokens are the
   remaining whitespace-separated words. A token that is only punctuation (``,`` or WikiText's ``@-@``)
   disappears, and every word keeps the character span of the whitespace-separated token it came from
   (attached punctuation included: ``year.``).
2. Every ``ngram``-gram (13 words) of the document that also occurs in a benchmark collides.
3. Each collision removes its original character span plus ``margin_chars`` characters on each side;
   overlapping or touching removals merge. Each merged removal is one *split* of the document.
4. A document split more than ``max_splits`` times is dropped whole (``contaminated_split_too_often``).
   Otherwise the pieces left between removals are exact slices of the original text; pieces shorter than
   ``min_fragment_chars`` characters are dropped, and if none is left the document is dropped
   (``contaminated_all_fragments_short``). GPT-3 phrases step 4 as "split into more than 10 pieces"; a
   document cut k times in its interior has k + 1 pieces, so the paper's rule is ``max_splits: 9`` here.

**Accounting.** Every input document has one outcome: ``kept`` (no collision: written unchanged, byte for
byte), ``dropped:split_into_fragments`` (a collision; its fragments are written as new documents),
``dropped:contaminated_split_too_often``, ``dropped:contaminated_all_fragments_short`` or
``dropped:empty_text``. So ``read == kept + sum(dropped)`` holds with split documents counted as dropped
parents, ``documents_split == dropped["split_into_fragments"]``, and the created records are reported in
``fragments_created``: the output table holds ``kept + fragments_created`` documents. A fragment's id is
its parent's id plus ``#k`` (k = 0, 1, ... in text order); its ``annotations`` gain a ``decontam`` object
with the parent id, the fragment's character range in the parent and the benchmarks that cut the parent.

**N-grams are hashed.** A word hashes to 64 bits (BLAKE2b of its UTF-8 bytes), an n-gram to a polynomial
of its word hashes modulo 2**64 (odd base, so two n-grams that differ in one word differ in hash unless those
words' hashes collide).
A benchmark is a sorted ``numpy.uint64`` array: 8 bytes per distinct n-gram and a binary search per
document n-gram. A false collision needs two distinct 13-grams with equal 64-bit hashes: with ``B``
benchmark n-grams, about ``B / 2**64`` per document n-gram (1e-10 for a billion benchmark n-grams).

**How workers get the benchmark set: a side input built in the pipeline.** The benchmark files are read
inside the pipeline (one element per file, spread with a reshuffle, chunked hashing), one combiner merges
the chunks into sorted unique arrays per benchmark, and the resulting :class:`BenchmarkSet` reaches the
decontamination DoFn as an ``AsSingleton`` side input. Compared with building the set in every worker's ``setup()`` this
reads and hashes each benchmark once, not once per worker process, and needs nothing staged beside the
pipeline; compared with building it in the driver and shipping it with ``beam.Create`` it keeps large
benchmark sets out of the pipeline graph (which job services cap in size). Memory per worker: 16 bytes per
distinct benchmark n-gram (the union plus the per-benchmark arrays used to attribute hits).

Per benchmark, ``stats.json`` reports ``documents`` (input documents it collided with),
``documents_dropped`` (of those, dropped whole: too many splits or only short fragments), ``ngrams_hit``
(colliding n-gram positions in documents), ``characters_removed`` (characters inside its own cut windows:
n-gram spans plus margins) and ``characters_lost`` (all characters its documents lost: cut windows, short
fragments and whole dropped documents; a document several benchmarks hit counts under each), with the
benchmark's ``records`` (JSONL lines; a plain-text file is one record), ``bad_records`` (JSONL lines
without a usable text field) and distinct ``ngrams``.
Stage-wide: ``documents_contaminated``, ``documents_split``, ``fragments_created``, ``documents_written``
(``kept + fragments_created``) and ``characters`` ``{read, kept, in_fragments, removed}``, which add up.

Output folder: ``documents-*.parquet`` (kept documents + fragments), ``outcomes.jsonl``,
``decontam_summary.jsonl`` (summed counters), ``contaminated.jsonl`` (one line per contaminated input
document: id, source, length, n-gram hits per benchmark, merged removals, outcome, fragments written) and
``stats.json``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import apache_beam as beam
import numpy as np

from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped
from pipeline.runner import RunnerConfig
from pipeline.stage import Stage
from pipeline.tables import WriteCounters, WriteDocuments, WriteLines, count_rows, read_counters, read_document_tables
from schemas.stats import StageStats

STAGE = "decontam"
SUMMARY = "summary"  # tag of the counters output
SUMMARY_FILE = "decontam_summary.jsonl"  # summed counters: {"counter": "<JSON list of key parts>", "n"} lines

SPLIT = "split_into_fragments"
TOO_MANY_SPLITS = "contaminated_split_too_often"
ALL_SHORT = "contaminated_all_fragments_short"
EMPTY = "empty_text"


@dataclass
class DecontamConfig:
    benchmarks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "benchmark files (JSONL or plain text, .gz allowed), each one named benchmark: PATH (name ="
            " file stem) or NAME=PATH; globs expand to one benchmark per file"
        },
    )
    text_fields: list[str] = field(
        default_factory=lambda: ["text"],
        metadata={
            "help": "JSONL benchmarks: fields holding benchmark text (each field, and each string in a list"
            " field, is n-grammed on its own); missing fields are skipped"
        },
    )
    benchmark_format: str = field(
        default="auto",
        metadata={"help": "auto (.jsonl/.ndjson[.gz] = jsonl, anything else = text) | jsonl | text"},
    )
    ngram: int = field(default=13, metadata={"help": "n-gram length in normalised words (GPT-3: 13)"})
    margin_chars: int = field(
        default=200, metadata={"help": "characters removed on each side of a colliding n-gram (GPT-3: 200)"}
    )
    min_fragment_chars: int = field(
        default=200, metadata={"help": "fragments shorter than this many characters are dropped (GPT-3: 200)"}
    )
    max_splits: int = field(
        default=10, metadata={"help": "drop a document whole when it is split more than this many times"}
    )

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise DecontamError(f"ngram must be >= 1, got {self.ngram}")
        if self.margin_chars < 0 or self.min_fragment_chars < 0 or self.max_splits < 0:
            raise DecontamError("margin_chars, min_fragment_chars and max_splits must be >= 0")
        benchmark_format("x", self.benchmark_format)  # validates the setting


class DecontamError(ValueError):
    """The benchmark configuration cannot decontaminate anything (no benchmark, missing file, no n-grams)."""


# ---------------------------------------------------------------------------------------------------------
# Normalisation and hashing (pure functions)
# ---------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\S+")
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication by it is invertible modulo 2**64


@lru_cache(maxsize=1)
def _strip_table() -> dict[int, str]:
    """``str.translate`` table marking every punctuation (P*) and symbol (S*) code point as NUL (deleted later)."""
    return {cp: "\0" for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] in "PS"}


def words_with_spans(text: str) -> tuple[list[str], list[int], list[int]]:
    """Normalised words of ``text`` with the ``[start, end)`` character span each came from.

    Lowercase, then delete punctuation and symbols inside each whitespace-separated token; a token left
    empty is no word. ``" ".join(words) == normalize_text(text)``.
    """
    words: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    low = text.lower()
    if len(low) != len(text):  # a few characters lowercase to two (İ): lowercase token by token instead
        table = _strip_table()
        for m in _TOKEN.finditer(text):
            w = m.group().lower().translate(table).replace("\0", "")
            if w:
                words.append(w)
                starts.append(m.start())
                ends.append(m.end())
        return words, starts, ends
    marked = low.translate(_strip_table())  # same length: punctuation becomes NUL, whitespace is untouched
    for m in _TOKEN.finditer(marked):
        w = m.group()
        if "\0" in w:
            w = w.replace("\0", "")
            if not w:
                continue
        words.append(w)
        starts.append(m.start())
        ends.append(m.end())
    return words, starts, ends


def normalize_text(text: str) -> str:
    """The normalised text: lowercase, punctuation and symbols stripped, whitespace collapsed to one space."""
    return " ".join(words_with_spans(text)[0])


class WordHasher:
    """Deterministic 64-bit word hashes (BLAKE2b), cached: a corpus has far fewer word types than tokens."""

    def __init__(self, max_cache: int = 1_000_000):
        self._cache: dict[str, int] = {}
        self._max = max_cache

    def __call__(self, words: list[str]) -> np.ndarray:
        cache = self._cache
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = cache.get(w)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
                if len(cache) >= self._max:
                    cache.clear()
                cache[w] = h
            out[i] = h
        return out


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of ``n`` consecutive words (``len - n + 1`` values; none when fewer words)."""
    m = len(word_hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            acc = acc * _BASE + word_hashes[i : i + m]
    return acc


def text_ngram_hashes(text: str, n: int, hasher: WordHasher | None = None) -> np.ndarray:
    words, _, _ = words_with_spans(text)
    return ngram_hashes((hasher or WordHasher())(words), n)


# ---------------------------------------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkSet:
    """Benchmark n-gram hashes: ``union`` (sorted, unique) for the lookup, ``sets[name]`` to attribute hits."""

    n: int
    names: list[str]
    sets: dict[str, np.ndarray]
    union: np.ndarray

    @classmethod
    def from_arrays(cls, n: int, arrays: Iterable[tuple[str, np.ndarray]]) -> BenchmarkSet:
        sets = {name: np.unique(np.asarray(arr, dtype=np.uint64)) for name, arr in arrays}
        names = sorted(sets)
        union = np.unique(np.concatenate([sets[k] for k in names])) if names else np.empty(0, np.uint64)
        return cls(n=n, names=names, sets=sets, union=union)

    @classmethod
    def from_texts(cls, n: int, texts: dict[str, Iterable[str]]) -> BenchmarkSet:
        """For tests and small jobs: ``{name: [text, ...]}`` -> a set, without a pipeline."""
        hasher = WordHasher()
        arrays = []
        for name, items in texts.items():
            parts = [text_ngram_hashes(t, n, hasher) for t in items]
            arrays.append((name, np.concatenate(parts) if parts else np.empty(0, np.uint64)))
        return cls.from_arrays(n, arrays)


def contains(sorted_arr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``values`` occur in the sorted array."""
    if len(sorted_arr) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    idx = np.searchsorted(sorted_arr, values)
    idx[idx == len(sorted_arr)] = 0
    return sorted_arr[idx] == values


_SUFFIXES = (".gz", ".jsonl", ".ndjson", ".json", ".txt", ".text")


def benchmark_name(path: str) -> str:
    """``wikitext/test.txt`` -> ``test``; ``mmlu.jsonl.gz`` -> ``mmlu``."""
    name = os.path.basename(path)
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, changed = name[: -len(suffix)], True
    return name


def resolve_benchmarks(specs: list[str]) -> list[tuple[str, str]]:
    """``PATH`` / ``NAME=PATH`` / glob entries -> sorted ``(name, path)``; errors for missing files and clashes."""
    if not specs:
        raise DecontamError("decontamination needs at least one benchmark file (cfg.benchmarks)")
    out: dict[str, str] = {}
    for spec in specs:
        name = None
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)=(.+)", spec)
        if m and not os.path.exists(spec):
            name, spec = m.group(1), m.group(2)
        if "://" in spec:
            paths = [spec]
        elif glob.has_magic(spec):
            paths = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
            if not paths:
                raise DecontamError(f"benchmark {spec!r} matched no files")
        elif os.path.isfile(spec):
            paths = [spec]
        else:
            raise DecontamError(f"benchmark file {spec!r} does not exist")
        if name is not None and len(paths) > 1:
            raise DecontamError(f"benchmark name {name!r} given for a glob of {len(paths)} files")
        for p in paths:
            key = name or benchmark_name(p)
            p = p if "://" in p else os.path.abspath(p)  # workers may run in another working directory
            if key in out and out[key] != p:
                raise DecontamError(f"two benchmarks named {key!r}: {out[key]} and {p} (use NAME=PATH)")
            out[key] = p
    return sorted(out.items())


def benchmark_format(path: str, configured: str) -> str:
    if configured in ("jsonl", "text"):
        return configured
    if configured != "auto":
        raise DecontamError(f"unknown benchmark_format {configured!r} (auto | jsonl | text)")
    base = path.removesuffix(".gz")
    return "jsonl" if base.endswith((".jsonl", ".ndjson")) else "text"


def _field_texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _field_texts(v)


def benchmark_texts(lines: Iterable[bytes], fmt: str, text_fields: list[str], counts: dict[str, int]) -> Iterator[str]:
    """The texts a benchmark file contributes; ``counts`` gets ``records`` / ``bad_records``.

    JSONL: each line is a record; each configured field (string, or list of strings) is one text. Plain
    text: the whole file is one running text, yielded in blocks of lines; the caller carries n-grams across
    block boundaries (see :func:`_hash_benchmark`).
    """
    if fmt == "jsonl":
        for line in lines:
            if not line.strip():
                continue
            counts["records"] = counts.get("records", 0) + 1
            try:
                obj = json.loads(line)
            except ValueError:
                counts["bad_records"] = counts.get("bad_records", 0) + 1
                continue
            found = False
            if isinstance(obj, dict):
                for f in text_fields:
                    for t in _field_texts(obj.get(f)):
                        found = True
                        yield t
            if not found:
                counts["bad_records"] = counts.get("bad_records", 0) + 1
    else:
        block: list[bytes] = []
        size = 0
        counts["records"] = 1
        for line in lines:
            block.append(line)
            size += len(line)
            if size >= 1 << 20:
                yield b"".join(block).decode("utf-8", errors="replace")
                block, size = [], 0
        if block:
            yield b"".join(block).decode("utf-8", errors="replace")


def _hash_benchmark(texts: Iterable[str], n: int, running: bool, chunk: int = 1 << 18) -> Iterator[np.ndarray]:
    """N-gram hash arrays (about ``chunk`` values each) of benchmark texts.

    ``running``: the texts are consecutive blocks of one text (plain-text files), so n-grams continue across
    block boundaries (a paragraph that straddles two blocks is still found).
    """
    hasher = WordHasher()
    carry = np.empty(0, dtype=np.uint64)
    pending: list[np.ndarray] = []
    size = 0
    for text in texts:
        words, _, _ = words_with_spans(text)
        wh = hasher(words)
        if running:
            wh = np.concatenate([carry, wh])
            carry = wh[-(n - 1) :] if n > 1 else np.empty(0, dtype=np.uint64)
        h = ngram_hashes(wh, n)
        if len(h):
            pending.append(h)
            size += len(h)
        if size >= chunk:
            yield np.unique(np.concatenate(pending))
            pending, size = [], 0
    if pending:
        yield np.unique(np.concatenate(pending))


class ReadBenchmark(beam.DoFn):
    """``(name, path)`` -> ``(name, hash array)`` chunks (at least one, maybe empty) + counters."""

    def __init__(self, cfg: DecontamConfig):
        self.cfg = cfg

    def process(self, item: tuple[str, str]):
        from apache_beam.io.filesystems import FileSystems

        name, path = item
        fmt = benchmark_format(path, self.cfg.benchmark_format)
        counts: dict[str, int] = {}
        with FileSystems.open(path) as fh:  # decompresses .gz by extension
            texts = benchmark_texts(iter(fh.readline, b""), fmt, self.cfg.text_fields, counts)
            yield (name, np.empty(0, dtype=np.uint64))
            for arr in _hash_benchmark(texts, self.cfg.ngram, running=fmt == "text"):
                yield (name, arr)
        for key, n in counts.items():
            yield beam.pvalue.TaggedOutput(SUMMARY, (_key("benchmark", name, key), n))


class BuildBenchmarkSet(beam.CombineFn):
    """``(name, hash array)`` chunks of every benchmark -> one :class:`BenchmarkSet` (sorted, distinct)."""

    def __init__(self, n: int):
        self.n = n

    def create_accumulator(self):
        return {}

    def add_input(self, acc, item):
        name, arr = item
        parts = acc.setdefault(name, [])
        parts.append(arr)
        if len(parts) > 16:  # keep the accumulator compact while chunks of a large benchmark arrive
            acc[name] = [np.unique(np.concatenate(parts))]
        return acc

    def merge_accumulators(self, accs):
        out: dict[str, list] = {}
        for acc in accs:
            for name, parts in acc.items():
                out.setdefault(name, []).extend(parts)
        return out

    def extract_output(self, acc):
        return BenchmarkSet.from_arrays(self.n, ((name, np.concatenate(parts)) for name, parts in acc.items()))


# ---------------------------------------------------------------------------------------------------------
# The rule (pure)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Decontaminated:
    """What the rule did to one text."""

    outcome: str  # "kept" | one of the drop reasons above
    fragments: list[tuple[int, int]]  # [start, end) of the fragments kept (empty unless split)
    removals: list[tuple[int, int]]  # merged removed ranges (n-gram span + margins), in text order
    hits: dict[str, int]  # benchmark -> colliding n-gram positions in this text
    removed_by: dict[str, int]  # benchmark -> characters inside that benchmark's own removal windows


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def decontaminate_text(
    text: str, bench: BenchmarkSet, cfg: DecontamConfig, hasher: WordHasher | None = None
) -> Decontaminated:
    """Apply GPT-3's rule to one text (see the module docstring)."""
    if not text.strip():
        return Decontaminated(EMPTY, [], [], {}, {})
    n = bench.n
    words, starts, ends = words_with_spans(text)
    grams = ngram_hashes((hasher or WordHasher())(words), n)
    hit = contains(bench.union, grams)
    if not hit.any():
        return Decontaminated(KEPT, [], [], {}, {})
    positions = np.flatnonzero(hit)
    length = len(text)
    margin = cfg.margin_chars

    def windows(pos: np.ndarray) -> list[tuple[int, int]]:
        return [(max(0, starts[j] - margin), min(length, ends[j + n - 1] + margin)) for j in pos.tolist()]

    hits: dict[str, int] = {}
    removed_by: dict[str, int] = {}
    hashes = grams[positions]
    for name in bench.names:
        mine = positions[contains(bench.sets[name], hashes)]
        if len(mine):
            hits[name] = len(mine)
            removed_by[name] = sum(e - s for s, e in _merge(windows(mine)))
    removals = _merge(windows(positions))
    if len(removals) > cfg.max_splits:
        return Decontaminated(TOO_MANY_SPLITS, [], removals, hits, removed_by)
    pieces, pos = [], 0
    for s, e in removals:
        if s > pos:
            pieces.append((pos, s))
        pos = e
    if pos < length:
        pieces.append((pos, length))
    fragments = [(s, e) for s, e in pieces if e - s >= cfg.min_fragment_chars]
    if not fragments:
        return Decontaminated(ALL_SHORT, [], removals, hits, removed_by)
    return Decontaminated(SPLIT, fragments, removals, hits, removed_by)


# ---------------------------------------------------------------------------------------------------------
# The Beam stage
# ---------------------------------------------------------------------------------------------------------


def _key(*parts: str) -> str:
    return json.dumps(list(parts))


def _annotations(raw: str | None, note: dict[str, Any]) -> str:
    try:
        ann = json.loads(raw) if raw else {}
    except ValueError:
        ann = {"original": raw}
    if not isinstance(ann, dict):
        ann = {"original": ann}
    ann["decontam"] = note
    return json.dumps(ann, sort_keys=True)


class Decontaminate(beam.DoFn):
    """Document -> itself (no collision), its fragments, or nothing; plus an outcome and counters."""

    def __init__(self, cfg: DecontamConfig):
        self.cfg = cfg

    def setup(self):
        self.hasher = WordHasher()

    def process(self, doc: dict[str, Any], bench: BenchmarkSet):
        text = doc.get("text") or ""
        res = decontaminate_text(text, bench, self.cfg, self.hasher)
        n_chars = len(text)
        yield beam.pvalue.TaggedOutput(SUMMARY, (_key("characters_read"), n_chars))
        if res.outcome == KEPT:
            yield doc
            yield beam.pvalue.TaggedOutput(SUMMARY, (_key("characters_kept"), n_chars))
            yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
            return
        yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(res.outcome))
        if res.outcome == EMPTY:
            yield beam.pvalue.TaggedOutput(SUMMARY, (_key("characters_removed"), n_chars))
            return
        names = sorted(res.hits)
        kept_chars = 0
        for k, (s, e) in enumerate(res.fragments):
            kept_chars += e - s
            note = {"parent": doc["id"], "fragment": k, "start": s, "end": e, "benchmarks": names}
            yield {
                **doc,
                "id": f"{doc['id']}#{k}",
                "text": text[s:e],
                "annotations": _annotations(doc.get("annotations"), note),
            }
        summary = {
            _key("documents_contaminated"): 1,
            _key("fragments_created"): len(res.fragments),
            _key("characters_in_fragments"): kept_chars,
            _key("characters_removed"): n_chars - kept_chars,
        }
        for name in names:
            summary[_key("benchmark", name, "documents")] = 1
            summary[_key("benchmark", name, "ngrams_hit")] = res.hits[name]
            summary[_key("benchmark", name, "characters_removed")] = res.removed_by[name]
            summary[_key("benchmark", name, "characters_lost")] = n_chars - kept_chars
            summary[_key("benchmark", name, "documents_dropped")] = int(res.outcome != SPLIT)
        for key, v in summary.items():
            yield beam.pvalue.TaggedOutput(SUMMARY, (key, v))
        yield beam.pvalue.TaggedOutput(
            "contaminated",
            json.dumps(
                {
                    "id": doc["id"],
                    "source": doc.get("source"),
                    "chars": n_chars,
                    "outcome": res.outcome,
                    "hits": res.hits,
                    "removals": [list(r) for r in res.removals],
                    "fragments": [list(f) for f in res.fragments],
                },
                sort_keys=True,
            ),
        )


def _size_entries(bench: BenchmarkSet) -> Iterator[tuple[str, int]]:
    for name in bench.names:
        yield _key("benchmark", name, "ngrams"), len(bench.sets[name])


def _read_summary(folder: str) -> dict[tuple, int]:
    """The summed counters, keyed by their parts (``("benchmark", name, "documents")``)."""
    return {tuple(json.loads(k)): n for k, n in read_counters(folder, SUMMARY_FILE).items()}


def run_decontam(
    inputs: list[str], out_dir: str, cfg: DecontamConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Cut benchmark n-grams out of document tables (GPT-3 appendix C); stage contract: skip if done, atomic.

    The benchmark files take part in the fingerprint, so editing one reruns the stage. Raises
    :class:`DecontamError` for a missing or unnamed benchmark, or a benchmark that yields no n-gram (a
    benchmark that protects nothing is a configuration mistake, not a silent no-op).
    """
    benchmarks = resolve_benchmarks(cfg.benchmarks)
    stage = Stage(STAGE, out_dir, [*inputs, *[path for _, path in benchmarks]], cfg, force, module=__name__)

    def build(p: beam.Pipeline, tmp: str) -> None:
        read = (
            p
            | "Benchmarks" >> beam.Create(benchmarks)
            | "SpreadBenchmarks" >> beam.Reshuffle()
            | "HashBenchmarks" >> beam.ParDo(ReadBenchmark(cfg)).with_outputs(SUMMARY, main="hashes")
        )
        bench = read.hashes | "BenchmarkSet" >> beam.CombineGlobally(BuildBenchmarkSet(cfg.ngram))
        bench_sizes = bench | "BenchmarkSizes" >> beam.FlatMap(_size_entries)
        docs = read_document_tables(p, inputs)
        out = docs | "Decontaminate" >> beam.ParDo(
            Decontaminate(cfg), bench=beam.pvalue.AsSingleton(bench)
        ).with_outputs(OUTCOMES, SUMMARY, "contaminated", main="documents")
        _ = out.documents | "WriteDocuments" >> WriteDocuments(tmp)
        _ = out[OUTCOMES] | "WriteOutcomes" >> WriteOutcomes(tmp)
        _ = out.contaminated | "WriteContaminated" >> WriteLines(os.path.join(tmp, "contaminated.jsonl"))
        _ = (
            (out[SUMMARY], read[SUMMARY], bench_sizes)
            | "FlattenSummary" >> beam.Flatten()
            | "WriteSummary" >> WriteCounters(tmp, SUMMARY_FILE)
        )

    def summarise(tmp: str, stats: StageStats) -> None:
        s = _read_summary(tmp)
        per = {}
        for name, path in benchmarks:
            fields = ("documents", "documents_dropped", "ngrams_hit", "characters_removed", "characters_lost")
            row = {f: s.get(("benchmark", name, f), 0) for f in fields}
            row.update(
                path=path,
                records=s.get(("benchmark", name, "records"), 0),
                bad_records=s.get(("benchmark", name, "bad_records"), 0),
                ngrams=s.get(("benchmark", name, "ngrams"), 0),
            )
            per[name] = row
        empty = [name for name, row in per.items() if row["ngrams"] == 0]
        if empty:
            raise DecontamError(
                f"benchmark(s) {empty} gave no {cfg.ngram}-gram: wrong format or text_fields"
                f" {cfg.text_fields}, or records shorter than {cfg.ngram} words"
            )
        fragments = s.get(("fragments_created",), 0)
        stats.extra.update(
            {
                "ngram": cfg.ngram,
                "margin_chars": cfg.margin_chars,
                "min_fragment_chars": cfg.min_fragment_chars,
                "max_splits": cfg.max_splits,
                "documents_contaminated": s.get(("documents_contaminated",), 0),
                "documents_split": stats.dropped.get(SPLIT, 0),
                "fragments_created": fragments,
                "documents_written": stats.kept + fragments,
                "characters": {
                    "read": s.get(("characters_read",), 0),
                    "kept": s.get(("characters_kept",), 0),
                    "in_fragments": s.get(("characters_in_fragments",), 0),
                    "removed": s.get(("characters_removed",), 0),
                },
                "benchmarks": per,
            }
        )
        chars = stats.extra["characters"]
        if chars["read"] != chars["kept"] + chars["in_fragments"] + chars["removed"]:
            raise AssertionError(f"decontam: character accounting does not add up: {chars}")

    return stage.run_beam(runner, build, summarise, total=count_rows(inputs))
