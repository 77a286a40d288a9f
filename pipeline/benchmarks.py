"""Benchmark n-gram sets for decontamination (:mod:`pipeline.decontam`): normalising and hashing text, reading
benchmark files and evaluation tasks, and the :class:`BenchmarkSet` the stage looks document n-grams up in.

Normalisation: lowercase, strip punctuation and symbols (Unicode categories ``P*`` and ``S*``, deleted rather
than replaced, so ``it's`` is ``its``), collapse whitespace; the words are the remaining whitespace-separated
tokens, each with the character span of the token it came from (attached punctuation included).

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

**Where benchmark text comes from.** Files (``benchmarks``: JSONL with ``text_fields``, or plain text read as
one running text) are matched at ``ngram`` (13) words. Evaluation tasks (``tasks``) give the text
``ccgpt eval`` scores (:func:`schemas.tasks.benchmark_texts`), each text n-grammed on its own, at the task's
own N (:func:`task_ngram`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tarfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np

from pipeline import fs
from schemas.tasks import (
    Subtask,
    TaskError,
    TaskSpec,
    check_task_list,
    data_text,
    is_task_path,
    member_texts,
    member_wanted,
    missing_data,
    missing_task_file,
    not_an_archive,
    parse_task_text,
    split_task_list,
    subtasks,
)
from schemas.tasks import benchmark_texts as task_texts
from train.tasks import resolve_data_root, shipped_task_file

SUMMARY = "summary"  # tag of the counters output
NGRAM_MIN, NGRAM_MAX = 8, 13  # GPT-3 appendix C: the bounds of a task's N


class DecontamError(ValueError):
    """The benchmark configuration cannot decontaminate anything (no benchmark, missing file, no n-grams)."""


def counter_key(*parts: str) -> str:
    """A summed counter's name: the JSON list of its parts (``["benchmark", name, "records"]``)."""
    return json.dumps(list(parts))


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
    """Benchmark n-gram hashes: ``unions[n]`` (sorted, unique) for the lookup at each n-gram length in use,
    ``sets[name]`` to attribute hits, ``ngrams[name]`` the length benchmark ``name`` is matched at (``n``
    unless a task chose its own). ``union`` is every hash, whatever its length."""

    n: int
    names: list[str]
    sets: dict[str, np.ndarray]
    union: np.ndarray
    ngrams: dict[str, int] = field(default_factory=dict)
    unions: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls, n: int, arrays: Iterable[tuple[str, np.ndarray]], ngrams: dict[str, int] | None = None
    ) -> BenchmarkSet:
        sets = {name: np.unique(np.asarray(arr, dtype=np.uint64)) for name, arr in arrays}
        names = sorted(sets)
        lengths = {name: (ngrams or {}).get(name, n) for name in names}
        unions = {
            k: np.unique(np.concatenate([sets[name] for name in names if lengths[name] == k]))
            for k in sorted(set(lengths.values()))
        }
        if len(unions) == 1:  # the usual case: one length, one array (no second copy)
            union = next(iter(unions.values()))
        else:
            union = np.unique(np.concatenate([sets[k] for k in names])) if names else np.empty(0, np.uint64)
        return cls(n=n, names=names, sets=sets, union=union, ngrams=lengths, unions=unions)

    @classmethod
    def from_texts(cls, n: int, texts: dict[str, Iterable[str]], ngrams: dict[str, int] | None = None) -> BenchmarkSet:
        """For tests and small jobs: ``{name: [text, ...]}`` -> a set, without a pipeline."""
        hasher = WordHasher()
        arrays = []
        for name, items in texts.items():
            k = (ngrams or {}).get(name, n)
            parts = [text_ngram_hashes(t, k, hasher) for t in items]
            arrays.append((name, np.concatenate(parts) if parts else np.empty(0, np.uint64)))
        return cls.from_arrays(n, arrays, ngrams)


def task_ngram(word_counts: Iterable[int]) -> tuple[int, int]:
    """GPT-3 appendix C's N for one task, and how many of its texts are shorter than that N.

    N is the 5th percentile of the task's text lengths in normalised words (``lower``: an observed length),
    clamped to [``NGRAM_MIN``, ``NGRAM_MAX``].
    """
    lengths = np.fromiter(word_counts, dtype=np.int64)
    if not len(lengths):
        raise DecontamError("a task with no text has no n-gram length")
    n = int(np.clip(np.percentile(lengths, 5, method="lower"), NGRAM_MIN, NGRAM_MAX))
    return n, int((lengths < n).sum())


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
    """``PATH`` / ``NAME=PATH`` / glob entries -> sorted ``(name, path)``; errors for missing files and clashes.

    Paths and globs may be local or object-store URLs (``s3://bucket/benchmarks/*.jsonl``): they are expanded
    through :mod:`pipeline.fs`, which every worker reads them through too."""
    if not specs:
        raise DecontamError("decontamination needs at least one benchmark file (cfg.benchmarks)")
    out: dict[str, str] = {}
    for spec in specs:
        name = None
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)=(.+)", spec)
        if m and not fs.exists(spec):
            name, spec = m.group(1), m.group(2)
        fs.check_path(spec, "benchmark")  # a scheme whose extra is missing: say which, before listing
        if any(c in spec for c in "*?["):
            paths = [f.path for f in fs.expand(spec)]  # hidden files skipped, as a shell glob does
            if not paths:
                raise DecontamError(f"benchmark {spec!r} matched no files")
        elif fs.is_file(spec):
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


# -- evaluation tasks, read through pipeline.fs (a task file or its data may be a URL) and parsed by schemas.tasks;
# train.tasks reads the same files on the train side, and finds the shipped ones and the default data root for both
def _task_file(name_or_path: str) -> str:
    """A shipped task's file, or the path given (a local one made absolute: workers may run elsewhere)."""
    if not is_task_path(name_or_path):
        return shipped_task_file(name_or_path)
    if not fs.is_file(name_or_path):
        raise missing_task_file(name_or_path)
    return name_or_path if fs.is_url(name_or_path) else os.path.abspath(name_or_path)


def load_tasks(specs: list[str] | str) -> list[TaskSpec]:
    """Read and validate task files (shipped names or paths): at least one, no name twice."""
    paths = [_task_file(s) for s in split_task_list(specs)]
    return check_task_list([parse_task_text(fs.read_bytes(p).decode("utf-8"), p) for p in paths])


def read_examples(task: TaskSpec, data_root: str) -> list[Subtask]:
    """A task's examples per subtask (what ``ccgpt eval`` scores), its data under the resolved ``data_root``
    read in place: the whole file, or the archive's wanted members in one sequential pass."""
    path = task.data_path(data_root)
    if not fs.is_file(path):
        raise missing_data(task, path, data_root)
    if not task.data.members:
        return subtasks(task, [(task.name, data_text(path, fs.read_bytes(path)))], path, None)
    with fs.open_read(path) as raw:
        try:
            tar = tarfile.open(fileobj=raw)  # .tar and .tar.gz
        except tarfile.TarError as e:
            raise not_an_archive(task, path, e) from None
        with tar:
            found = {}
            for member in tar:
                if member.isfile() and member_wanted(task, member.name):
                    fh = tar.extractfile(member)
                    assert fh is not None  # a regular file's member
                    found[member.name] = fh.read().decode("utf-8")
    return subtasks(task, member_texts(task, path, found), path, None)


def missing_task_data(specs: list[str] | str, data_root: str | None = None) -> list[str]:
    """The data files of the tasks ``specs`` that are not there (none: every task's data can be read, or no
    task is set)."""
    if not split_task_list(specs):
        return []
    root = resolve_data_root(data_root)
    return [t.data_path(root) for t in load_tasks(specs) if not fs.exists(t.data_path(root))]


class BenchmarkSource(NamedTuple):
    """One benchmark as the pipeline reads it: a file (``task_file`` empty), or an evaluation task: its task
    file, data root and data file (``path``, fingerprinted like a benchmark file)."""

    name: str
    path: str
    task_file: str = ""
    data_root: str = ""


class BenchmarkChunk(NamedTuple):
    """N-gram hashes of part of one benchmark, at the n-gram length ``n`` it is matched at."""

    name: str
    n: int
    hashes: np.ndarray


def benchmark_sources(files: list[str], tasks: list[str], data_root: str = "") -> list[BenchmarkSource]:
    """Benchmark ``files`` (see :func:`resolve_benchmarks`) and evaluation ``tasks``, sorted by name; task files
    are read and checked here, in the driver, so a missing or malformed one fails before the pipeline starts."""
    out = [BenchmarkSource(name, path) for name, path in resolve_benchmarks(files)] if files else []
    if tasks:
        root = resolve_data_root(data_root or None)
        try:
            specs = load_tasks(tasks)
        except TaskError as e:
            raise DecontamError(str(e)) from None
        for task in specs:
            path = task.data_path(root)
            if not fs.is_file(path):
                raise DecontamError(f"task {task.name}: data file {path} not found (data root {root}; set data_root)")
            out.append(BenchmarkSource(task.name, path, task.source, root))
    if not out:
        raise DecontamError("decontamination needs at least one benchmark file (benchmarks) or task (tasks)")
    names = [b.name for b in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DecontamError(f"benchmark name(s) {clash} used by both a file and a task (use NAME=PATH)")
    return sorted(out)


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


def _hash_words(word_lists: Iterable[list[str]], n: int, chunk: int = 1 << 18) -> Iterator[np.ndarray]:
    """N-gram hash arrays (about ``chunk`` values each) of texts already split into normalised words."""
    hasher = WordHasher()
    yield from _unique_chunks((ngram_hashes(hasher(words), n) for words in word_lists), chunk)


def _unique_chunks(arrays: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """Concatenate hash arrays into sorted, de-duplicated arrays of about ``chunk`` values each."""
    pending: list[np.ndarray] = []
    size = 0
    for h in arrays:
        if len(h):
            pending.append(h)
            size += len(h)
        if size >= chunk:
            yield np.unique(np.concatenate(pending))
            pending, size = [], 0
    if pending:
        yield np.unique(np.concatenate(pending))


def _hash_benchmark(texts: Iterable[str], n: int, running: bool, chunk: int = 1 << 18) -> Iterator[np.ndarray]:
    """N-gram hash arrays (about ``chunk`` values each) of benchmark texts.

    ``running``: the texts are consecutive blocks of one text (plain-text files), so n-grams continue across
    block boundaries (a paragraph that straddles two blocks is still found).
    """
    hasher = WordHasher()

    def hashes() -> Iterator[np.ndarray]:
        carry = np.empty(0, dtype=np.uint64)
        for text in texts:
            words, _, _ = words_with_spans(text)
            wh = hasher(words)
            if running:
                wh = np.concatenate([carry, wh])
                carry = wh[-(n - 1) :] if n > 1 else np.empty(0, dtype=np.uint64)
            yield ngram_hashes(wh, n)

    yield from _unique_chunks(hashes(), chunk)


class ReadBenchmark(beam.DoFn):
    """:class:`BenchmarkSource` -> :class:`BenchmarkChunk` s (at least one, maybe empty) + counters."""

    def __init__(self, file_format: str, text_fields: list[str], ngram: int):
        self.file_format = file_format  # benchmark files: auto | jsonl | text
        self.text_fields = text_fields  # JSONL benchmark files: the fields holding text
        self.ngram = ngram  # benchmark files' n-gram length (tasks choose their own)

    def process(self, src: BenchmarkSource):
        if src.task_file:
            yield from self._task(src)
            return
        fmt = benchmark_format(src.path, self.file_format)
        counts: dict[str, int] = {}
        with fs.open_decompressed(src.path) as fh:
            texts = benchmark_texts(iter(fh.readline, b""), fmt, self.text_fields, counts)
            yield BenchmarkChunk(src.name, self.ngram, np.empty(0, dtype=np.uint64))
            for arr in _hash_benchmark(texts, self.ngram, running=fmt == "text"):
                yield BenchmarkChunk(src.name, self.ngram, arr)
        for key, n in counts.items():
            yield beam.pvalue.TaggedOutput(SUMMARY, (counter_key("benchmark", src.name, key), n))

    def _task(self, src: BenchmarkSource):
        """A task's texts (what ``ccgpt eval`` scores), hashed at the task's own N."""
        (task,) = load_tasks(src.task_file)
        subtasks = read_examples(task, src.data_root)
        words = [words_with_spans(t)[0] for sub in subtasks for ex in sub.examples for t in task_texts(task, ex)]
        n, short = task_ngram(len(w) for w in words)
        yield BenchmarkChunk(src.name, n, np.empty(0, dtype=np.uint64))
        for arr in _hash_words(words, n):
            yield BenchmarkChunk(src.name, n, arr)
        counts = {"records": sum(len(sub.examples) for sub in subtasks), "texts": len(words)}
        counts["texts_shorter_than_ngram"] = short
        for key, value in counts.items():
            yield beam.pvalue.TaggedOutput(SUMMARY, (counter_key("benchmark", src.name, key), value))


class BuildBenchmarkSet(beam.CombineFn):
    """:class:`BenchmarkChunk` s of every benchmark -> one :class:`BenchmarkSet` (sorted, distinct).

    The accumulator maps ``(name, n)`` to hash arrays; a benchmark has one n, so the pair is its identity."""

    def __init__(self, n: int):
        self.n = n

    def create_accumulator(self):
        return {}

    def add_input(self, acc, chunk: BenchmarkChunk):
        key = (chunk.name, chunk.n)
        parts = acc.setdefault(key, [])
        parts.append(chunk.hashes)
        if len(parts) > 16:  # keep the accumulator compact while chunks of a large benchmark arrive
            acc[key] = [np.unique(np.concatenate(parts))]
        return acc

    def merge_accumulators(self, accs):
        out: dict[tuple[str, int], list] = {}
        for acc in accs:
            for key, parts in acc.items():
                out.setdefault(key, []).extend(parts)
        return out

    def extract_output(self, acc):
        ngrams = {name: n for name, n in acc}
        arrays = ((name, np.concatenate(parts)) for (name, _), parts in acc.items())
        return BenchmarkSet.from_arrays(self.n, arrays, ngrams)
