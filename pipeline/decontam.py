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

Per benchmark, ``stats.json`` reports ``documents`` (input documents it collided with),
``documents_dropped`` (of those, dropped whole: too many splits or only short fragments), ``ngrams_hit``
(colliding n-gram positions in documents), ``characters_removed`` (characters inside its own cut windows:
n-gram spans plus margins) and ``characters_lost`` (all characters its documents lost: cut windows, short
fragments and whole dropped documents; a document several benchmarks hit counts under each), with the
benchmark's ``records`` (JSONL lines; a plain-text file is one record), ``bad_records`` (JSONL lines
without a usable text field) and distinct ``ngrams``.
Stage-wide: ``documents_contaminated``, ``documents_split``, ``fragments_created``, ``documents_written``
(``kept + fragments_created``) and ``characters`` ``{read, kept, in_fragments, removed}``, which add up.

**Benchmarks from task files** (``tasks: [blimp, wikitext2]``, ``ccgpt decontam --tasks blimp,wikitext2``):
the benchmark text is read from the same task files ``ccgpt eval`` scores (:mod:`schemas.tasks`), so what is
evaluated is what was removed: both sentences of a minimal pair, the context followed by each choice of a
multiple-choice item, each document of a perplexity task. Each task gets its own N, as GPT-3's appendix C
chose it: the 5th percentile of the task's text lengths in normalised words (numpy's ``lower`` percentile,
an observed length), clamped to [8, 13] -- at least 8 because shorter n-grams collide by chance in real
text, at most 13 as everywhere else. BLiMP (most sentences under 10 words) gets 8, WikiText-2's articles 13.
Texts shorter than their task's N contain no n-gram and cannot be matched; ``stats.json`` reports how many
(``texts_shorter_than_ngram``) beside ``ngram`` (the N used), ``ngrams_hit`` (overlaps found),
``documents`` (documents hit), ``documents_split`` and ``documents_dropped`` per task. File benchmarks
(``benchmarks``) keep ``ngram`` (13) and can be combined with tasks.

Normalisation, n-gram hashing, benchmark files and tasks, and the benchmark set built in the pipeline (a
side input) are :mod:`pipeline.benchmarks`.

Output folder: ``documents-*.parquet`` (kept documents + fragments), ``outcomes.jsonl``,
``decontam_summary.jsonl`` (summed counters), ``contaminated.jsonl`` (one line per contaminated input
document: id, source, length, n-gram hits per benchmark, merged removals, outcome, fragments written) and
``stats.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np

from pipeline import fs
from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped
from pipeline.benchmarks import (
    SUMMARY,
    BenchmarkSet,
    BuildBenchmarkSet,
    DecontamError,
    ReadBenchmark,
    WordHasher,
    benchmark_format,
    benchmark_sources,
    contains,
    counter_key,
    ngram_hashes,
    words_with_spans,
)
from pipeline.runner import RunnerConfig
from pipeline.stage import Stage
from pipeline.tables import (
    WriteCounters,
    WriteDocuments,
    WriteLines,
    count_rows,
    output_files,
    read_counters,
    read_document_tables,
)
from schemas.stats import StageStats

STAGE = "decontam"
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
    tasks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "evaluation tasks whose text is the benchmark (shipped names or task files, comma lists"
            " allowed: blimp,wikitext2); each gets its own n-gram length (GPT-3 appendix C)"
        },
    )
    data_root: str = field(
        default="", metadata={"help": "where task data paths start (default $CCGPT_DATA_ROOT or ../shared/data)"}
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
    ngram: int = field(
        default=13, metadata={"help": "n-gram length in normalised words for benchmark files (GPT-3: 13)"}
    )
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
    words, starts, ends = words_with_spans(text)
    word_hashes = (hasher or WordHasher())(words)
    length = len(text)
    margin = cfg.margin_chars

    def windows(pos: np.ndarray, n: int) -> list[tuple[int, int]]:
        return [(max(0, starts[j] - margin), min(length, ends[j + n - 1] + margin)) for j in pos.tolist()]

    hits: dict[str, int] = {}
    removed_by: dict[str, int] = {}
    cut: list[tuple[int, int]] = []
    for n, union in bench.unions.items():  # one lookup per n-gram length in use (one, unless tasks chose theirs)
        grams = ngram_hashes(word_hashes, n)
        positions = np.flatnonzero(contains(union, grams))
        if not len(positions):
            continue
        cut.extend(windows(positions, n))
        hashes = grams[positions]
        for name in bench.names:
            if bench.ngrams[name] != n:
                continue
            mine = positions[contains(bench.sets[name], hashes)]
            if len(mine):
                hits[name] = len(mine)
                removed_by[name] = sum(e - s for s, e in _merge(windows(mine, n)))
    if not cut:
        return Decontaminated(KEPT, [], [], {}, {})
    removals = _merge(cut)
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
        yield beam.pvalue.TaggedOutput(SUMMARY, (counter_key("characters_read"), n_chars))
        if res.outcome == KEPT:
            yield doc
            yield beam.pvalue.TaggedOutput(SUMMARY, (counter_key("characters_kept"), n_chars))
            yield beam.pvalue.TaggedOutput(OUTCOMES, KEPT)
            return
        yield beam.pvalue.TaggedOutput(OUTCOMES, dropped(res.outcome))
        if res.outcome == EMPTY:
            yield beam.pvalue.TaggedOutput(SUMMARY, (counter_key("characters_removed"), n_chars))
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
            counter_key("documents_contaminated"): 1,
            counter_key("fragments_created"): len(res.fragments),
            counter_key("characters_in_fragments"): kept_chars,
            counter_key("characters_removed"): n_chars - kept_chars,
        }
        for name in names:
            summary[counter_key("benchmark", name, "documents")] = 1
            summary[counter_key("benchmark", name, "ngrams_hit")] = res.hits[name]
            summary[counter_key("benchmark", name, "characters_removed")] = res.removed_by[name]
            summary[counter_key("benchmark", name, "characters_lost")] = n_chars - kept_chars
            summary[counter_key("benchmark", name, "documents_dropped")] = int(res.outcome != SPLIT)
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
        yield counter_key("benchmark", name, "ngrams"), len(bench.sets[name])
        yield counter_key("benchmark", name, "ngram"), bench.ngrams[name]


def _read_summary(folder: str) -> dict[tuple, int]:
    """The summed counters, keyed by their parts (``("benchmark", name, "documents")``)."""
    return {tuple(json.loads(k)): n for k, n in read_counters(folder, SUMMARY_FILE).items()}


def run_decontam(
    inputs: list[str], out_dir: str, cfg: DecontamConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Cut benchmark n-grams out of document tables (GPT-3 appendix C); stage contract: skip if done, commit last.

    Inputs, benchmark files and ``out_dir`` may be local or object-store URLs: everything goes through Beam's
    IOs and :mod:`pipeline.fs`. The benchmark files take part in the fingerprint, so editing one reruns the
    stage. Raises :class:`DecontamError` for a missing or unnamed benchmark, or a benchmark that yields no
    n-gram (a benchmark that protects nothing is a configuration mistake, not a silent no-op).
    """
    benchmarks = benchmark_sources(cfg.benchmarks, cfg.tasks, cfg.data_root)
    files = [b.path for b in benchmarks] + [b.task_file for b in benchmarks if b.task_file]
    stage = Stage(STAGE, out_dir, [*inputs, *files], cfg, force, module=__name__)

    def build(p: beam.Pipeline, tmp: str) -> None:
        read = (
            p
            | "Benchmarks" >> beam.Create(benchmarks)
            | "SpreadBenchmarks" >> beam.Reshuffle()
            | "HashBenchmarks"
            >> beam.ParDo(ReadBenchmark(cfg.benchmark_format, cfg.text_fields, cfg.ngram)).with_outputs(
                SUMMARY, main="hashes"
            )
        )
        bench = read.hashes | "BenchmarkSet" >> beam.CombineGlobally(BuildBenchmarkSet(cfg.ngram))
        bench_sizes = bench | "BenchmarkSizes" >> beam.FlatMap(_size_entries)
        docs = read_document_tables(p, inputs)
        out = docs | "Decontaminate" >> beam.ParDo(
            Decontaminate(cfg), bench=beam.pvalue.AsSingleton(bench)
        ).with_outputs(OUTCOMES, SUMMARY, "contaminated", main="documents")
        _ = out.documents | "WriteDocuments" >> WriteDocuments(tmp, output_files(inputs))
        _ = out[OUTCOMES] | "WriteOutcomes" >> WriteOutcomes(tmp)
        _ = out.contaminated | "WriteContaminated" >> WriteLines(fs.join(tmp, "contaminated.jsonl"))
        _ = (
            (out[SUMMARY], read[SUMMARY], bench_sizes)
            | "FlattenSummary" >> beam.Flatten()
            | "WriteSummary" >> WriteCounters(tmp, SUMMARY_FILE)
        )

    def summarise(tmp: str, stats: StageStats) -> None:
        s = _read_summary(tmp)
        per = {}
        for b in benchmarks:
            fields = ("documents", "documents_dropped", "ngrams_hit", "characters_removed", "characters_lost")
            row = {f: s.get(("benchmark", b.name, f), 0) for f in fields}
            row["documents_split"] = row["documents"] - row["documents_dropped"]
            row.update(
                path=b.path,
                ngram=s.get(("benchmark", b.name, "ngram"), cfg.ngram),
                records=s.get(("benchmark", b.name, "records"), 0),
                bad_records=s.get(("benchmark", b.name, "bad_records"), 0),
                ngrams=s.get(("benchmark", b.name, "ngrams"), 0),
            )
            if b.task_file:
                row.update(
                    task_file=b.task_file,
                    texts=s.get(("benchmark", b.name, "texts"), 0),
                    texts_shorter_than_ngram=s.get(("benchmark", b.name, "texts_shorter_than_ngram"), 0),
                )
            per[b.name] = row
        empty = [(name, row["ngram"]) for name, row in per.items() if row["ngrams"] == 0]
        if empty:
            raise DecontamError(
                f"benchmark(s) {[name for name, _ in empty]} gave no {empty[0][1]}-gram: wrong format or text_fields"
                f" {cfg.text_fields}, or records shorter than {empty[0][1]} words"
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
