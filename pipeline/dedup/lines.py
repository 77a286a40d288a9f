"""The dedup stage's boilerplate pass: which normalised lines recur in ``min_docs`` documents of a group.

:mod:`.boilerplate` defines boilerplate lines and a document's core; this module finds them on Beam, before
any document is sketched (a document's signature hashes its core, so its group's boilerplate lines must be
known first). Following CCNet's paragraph hashing, a ``(group, line hash)`` key is counted once per
document that holds the line (the group: the URL host, or the corpus for a document without a URL):

1. :class:`CountLines` reads one input chunk's texts and sums its documents per key (one chunk's table, as a
   combiner would), then hands each key's count on as a :class:`.records.LineCount` column batch by the
   partition of the key (the line hash mixed with the group's, so one host's lines spread over every
   partition), in hand-off files like every other shuffle of the stage (:mod:`.work`).
2. :class:`FrequentLines` sums one partition's counts; a key seen in ``min_docs`` documents or more is a
   boilerplate line, handed as a :class:`.records.FrequentLine` to *each chunk that holds it*: a join keyed
   by chunk, so a chunk receives only the boilerplate lines its own documents hold.
3. :class:`.steps.ReadChunk` of that chunk sets them aside (:class:`ChunkLines`), reusing the line hashes
   CountLines left in the work folder for the chunk (one ``list<uint64>`` per row), so no line is
   normalised twice.

**What bounds memory.** No worker holds per-document data of more than one chunk. CountLines holds one
chunk's line hashes (16 bytes a line in numpy columns once summed); FrequentLines one partition's: the
distinct ``(group, line)`` keys whose hash falls in it, with the chunks each came from, and the partitions
grow with the input (``near.partitions``: max(8, documents / 25,000)). Keys are spread over partitions by
their line hash, not their host, so a hot host with millions of pages is split over every partition, and
its share of a partition is bounded by the host's *distinct* lines (a template line of a million pages is
one key per chunk), not its pages.
ReadChunk holds the boilerplate lines of its own chunk, at most the chunk's distinct lines.

The most frequent boilerplate lines are an output too (the report lists them): each chunk names its top
:data:`TOP_LINES` by document count, with the smallest text seen for each (so the choice is the same in any
process), as ``template_line:<JSON>`` counters; a line in the corpus's top list is in the top list of every
chunk that holds it, so :func:`top_template_lines` finds the corpus's top from these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import xxhash

from pipeline import fs
from pipeline.dedup.boilerplate import BoilerplateConfig, GroupLines, group_of, line_hashes, line_keys
from pipeline.dedup.records import FrequentLine, LineCount, pack_columns, unpack_columns
from pipeline.dedup.work import (
    COUNTERS,
    hand_off,
    handed,
    iter_chunk,
    line_keys_file,
    list_array,
    open_parquet,
    send,
    write_parquet,
)

if TYPE_CHECKING:
    from pipeline.dedup.stage import DedupConfig

TOP_LINES = 10  # boilerplate lines named in stats.json (and the report)
TEMPLATE_LINE = "template_line:"  # counter prefix of a top line: template_line:[docs, group, hash, text]
_SAMPLE_CHARS = 200  # a top line's text is cut to this length
LINE_KEYS = pa.schema([("row", pa.int64()), ("keys", pa.list_(pa.uint64()))])  # a chunk's line hashes by row


def usable_text(row: dict[str, Any]) -> str | None:
    """The text of a row the stage deduplicates (a non-empty id and source, a non-blank text), else None:
    the rows :class:`.steps.ReadChunk` sketches are the rows whose lines are counted."""
    doc_id, source, text = row.get("id"), row.get("source"), row.get("text")
    if isinstance(doc_id, str) and doc_id and isinstance(source, str) and source and isinstance(text, str):
        return text if text.strip() else None
    return None


def _runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, starts)``: the order that sorts rows by ``keys`` (the last key first, as ``np.lexsort``) and
    where each run of equal keys starts in it."""
    order = np.lexsort(keys)
    first = np.ones(order.size, dtype=bool)
    for k in keys:
        sorted_k = k[order]
        first[1:] &= sorted_k[1:] == sorted_k[:-1]
    first = ~first
    first[:1] = True
    return order, np.flatnonzero(first)


class CountLines(beam.DoFn):
    """One input chunk -> its ``(group, line)`` document counts (:class:`.records.LineCount` column batches),
    handed on by the partition of the key; counts the chunk's (distinct per document) non-empty lines as
    ``lines``. The chunk's keys are held as two numpy columns and summed by sorting (16 bytes a line)."""

    def __init__(self, cfg: DedupConfig, work: str, partitions: int):
        self.boilerplate = cfg.near.boilerplate
        self.work = work
        self.partitions = partitions

    def process(self, task: tuple[int, tuple[str, tuple[int, ...]]]) -> Iterator[Any]:
        chunk, (path, groups) = task
        names: dict[str, int] = {}
        gids: list[int] = []
        hashes: list[int] = []

        def line_keys_of_rows() -> Iterator[pa.RecordBatch]:
            offset = 0
            for batch in iter_chunk(path, groups, ["id", "source", "text", "url"]):
                rows, keys = [], []
                for i, row in enumerate(batch.to_pylist()):
                    text = usable_text(row)
                    if text is None:
                        continue
                    rows.append(offset + i)
                    keys.append(np.array(line_keys(text), dtype=np.uint64))
                    mine = line_hashes("", keys[-1].tolist())
                    group = names.setdefault(group_of(row.get("url"), self.boilerplate), len(names))
                    gids.extend([group] * len(mine))
                    hashes.extend(mine)
                offset += batch.num_rows
                yield pa.RecordBatch.from_arrays([pa.array(rows, pa.int64()), list_array(keys)], schema=LINE_KEYS)

        # The chunk's line hashes are kept for its ReadChunk, which would otherwise normalise every line again.
        write_parquet(line_keys_file(self.work, chunk), line_keys_of_rows(), LINE_KEYS)
        yield beam.pvalue.TaggedOutput(COUNTERS, ("lines", len(hashes)))
        if not hashes:
            return
        gid, line = np.array(gids, dtype=np.int64), np.array(hashes, dtype=np.uint64)
        order, starts = _runs(line, gid)
        docs = np.diff(np.append(starts, order.size))
        gid, line = gid[order[starts]], line[order[starts]]
        group_names = list(names)
        mix = np.array([xxhash.xxh3_64_intdigest(g.encode("utf-8", "surrogatepass")) for g in group_names], np.uint64)
        part = (line ^ mix[gid]) % np.uint64(self.partitions)
        out: dict[int, list] = {}
        for p in np.unique(part).tolist():
            at = np.flatnonzero(part == p)
            counts = LineCount([group_names[g] for g in gid[at].tolist()], line[at], docs[at], np.full(at.size, chunk))
            out[p] = [pack_columns(counts)]
        yield from hand_off(self.work, "line-counts", f"c{chunk:05d}", out)


class FrequentLines(beam.DoFn):
    """One partition's line counts -> its boilerplate lines (``docs >= min_docs``), a
    :class:`.records.FrequentLine` handed to each chunk that holds the line; counts them as
    ``boilerplate_lines``. Sums by sorting numpy columns (a few dozen bytes a key and chunk)."""

    def __init__(self, min_docs: int, work: str):
        self.min_docs = min_docs
        self.work = work

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        part, refs = element
        batches = [unpack_columns(LineCount, b) for b in handed(refs)]
        if not batches:
            return
        names: dict[str, int] = {}
        gid = np.array([names.setdefault(g, len(names)) for b in batches for g in b.group], dtype=np.int64)
        line, docs, chunk = (np.concatenate([getattr(b, f) for b in batches]) for f in ("line", "docs", "chunk"))
        order, starts = _runs(line, gid)
        totals = np.add.reduceat(docs[order], starts)
        frequent = totals >= self.min_docs
        if not frequent.any():
            return
        sizes = np.diff(np.append(starts, order.size))
        rows = order[np.repeat(frequent, sizes)]  # every (key, chunk) row of a frequent key
        total_of_row = np.repeat(totals, sizes)[np.repeat(frequent, sizes)]
        group_names = list(names)
        out: dict[int, list[FrequentLine]] = {}
        for r, n in zip(rows.tolist(), total_of_row.tolist()):
            out.setdefault(int(chunk[r]), []).append(FrequentLine(group_names[gid[r]], int(line[r]), n))
        yield from send(self.work, "frequent-lines", f"l{part:05d}", FrequentLine, out)
        yield beam.pvalue.TaggedOutput(COUNTERS, ("boilerplate_lines", int(frequent.sum())))


class BoilerplateLines(beam.PTransform):
    """``(chunk, (path, row groups))`` tasks -> ``{"lines": (chunk, reference to its boilerplate lines),
    "counters"}``."""

    def __init__(self, cfg: DedupConfig, work: str, partitions: int):
        super().__init__()
        self.cfg, self.work, self.partitions = cfg, work, partitions

    def expand(self, tasks):
        counted = (
            tasks
            | "SpreadCount" >> beam.Reshuffle()
            | "CountLines"
            >> beam.ParDo(CountLines(self.cfg, self.work, self.partitions)).with_outputs(COUNTERS, main="counts")
        )
        frequent = (
            counted.counts
            | "GroupLineCounts" >> beam.GroupByKey()
            | "FrequentLines"
            >> beam.ParDo(FrequentLines(self.cfg.near.boilerplate.min_docs, self.work)).with_outputs(
                COUNTERS, main="lines"
            )
        )
        counters = (counted[COUNTERS], frequent[COUNTERS]) | "LineCounters" >> beam.Flatten()
        return {"lines": frequent.lines, "counters": counters}


def load_line_keys(work: str, chunk: int) -> dict[int, np.ndarray]:
    """The line hashes :class:`CountLines` kept for a chunk, by row (none when the chunk had no usable row)."""
    path = line_keys_file(work, chunk)
    if not fs.exists(path):
        return {}
    table = open_parquet(path).read()
    column = table.column("keys").combine_chunks()
    offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
    rows = table.column("row").to_numpy()
    return {int(r): values[offsets[i] : offsets[i + 1]] for i, r in enumerate(rows.tolist())}


class ChunkLines:
    """The boilerplate lines one chunk's documents hold, as :func:`.boilerplate.core_sketch` needs them, and
    what the chunk saw of them: lines set aside (``boilerplate_lines_removed``, distinct per document) and
    the text of its most frequent ones. ``keys``: the chunk's line hashes by row (:func:`load_line_keys`)."""

    def __init__(self, frequent: Iterable[FrequentLine], cfg: BoilerplateConfig, keys: Callable[[], dict]):
        self.docs = {(f.group, f.line): f.docs for f in frequent}
        self.groups = {g for g, _ in self.docs}
        self.cfg = cfg
        self.keys = keys() if self.groups else {}
        self.removed = 0
        self.samples: dict[tuple[str, int], str] = {}

    def of(self, url: str | None) -> GroupLines | None:
        """The boilerplate lines of the group of a document at ``url``; None when the group has none (the
        document's lines need not even be hashed)."""
        if not self.groups:
            return None
        group = group_of(url, self.cfg)
        return GroupLines(self.docs, group) if group in self.groups else None

    def observe(self, text: str, lines: GroupLines, row: int) -> list[int]:
        """Count the boilerplate lines of ``text`` (the chunk's row ``row``) and keep the smallest text of each;
        returns ``line_keys(text)`` for :func:`.boilerplate.core_sketch` to reuse."""
        kept = self.keys.get(row)
        keys = line_keys(text) if kept is None else kept.tolist()
        raw = None
        for i, h in enumerate(keys):
            if h and h in lines:
                raw = raw or text.splitlines()
                key = (lines.group, h)
                line = raw[i].strip()[:_SAMPLE_CHARS]
                if key not in self.samples or line < self.samples[key]:
                    self.samples[key] = line
        self.removed += sum(1 for h in line_hashes("", keys) if h in lines)
        return keys

    def counters(self) -> Iterator[tuple[str, int]]:
        """``boilerplate_lines_removed`` and the chunk's top :data:`TOP_LINES` lines as counters."""
        if self.removed:
            yield "boilerplate_lines_removed", self.removed
        top = sorted(self.samples, key=lambda k: (-self.docs[k], k))[:TOP_LINES]
        for group, h in top:
            yield TEMPLATE_LINE + json.dumps([self.docs[(group, h)], group, h, self.samples[(group, h)]]), 1


def top_template_lines(counters: dict[str, int], k: int = TOP_LINES) -> list[dict[str, Any]]:
    """The corpus's ``k`` most frequent boilerplate lines from the chunks' ``template_line:`` counters:
    ``{"docs", "group", "text"}``, most documents first (each line's smallest text over its chunks)."""
    best: dict[tuple[str, int], tuple[int, str]] = {}
    for name in counters:
        if name.startswith(TEMPLATE_LINE):
            docs, group, h, text = json.loads(name[len(TEMPLATE_LINE) :])
            if (group, h) not in best or text < best[(group, h)][1]:
                best[(group, h)] = (docs, text)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
    return [{"docs": docs, "group": group, "text": text} for (group, _), (docs, text) in ranked]
