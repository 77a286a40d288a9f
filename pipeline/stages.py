"""The stages of a run, in order: the one table ``ccgpt run``, the Airflow DAG and the docs follow.

Each row names a stage, the folder it writes (relative to the run's ``out_dir``; ``{sample_dir}`` is the
sample folder), the stages whose outputs it reads, and what it does. ``pipeline.run.Run`` has one method per
stage, of the same name; the DAG makes one task per row with these dependencies. This module imports nothing
heavy, so the DAG file parses without Beam or torch. ``tests/test_stages.py`` checks that README.md and
docs/ARCHITECTURE.md list the stages in this order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str  # also the name of its ``pipeline.run.Run`` method and of its Airflow task
    folder: str  # output folder under the run's out_dir
    after: tuple[str, ...]  # stages whose outputs this one reads
    does: str  # one line for people


STAGES: tuple[StageSpec, ...] = (
    StageSpec("sample", "{sample_dir}", (), "build the demo sample from pinned registry packages"),
    StageSpec("curate", "curate", ("sample",), "WARC/WET -> text -> language ID -> heuristic filters"),
    StageSpec("sources", "source-<name>", ("sample",), "each named source (text, JSONL, WebText, Wikipedia)"),
    StageSpec("quality_train", "quality_model", ("curate",), "fastText reference-vs-crawl classifier"),
    StageSpec("quality_filter", "quality", ("quality_train",), "score the crawl, keep by GPT-3's Pareto rule"),
    StageSpec("dedup", "dedup", ("quality_filter", "sources"), "exact + MinHash-LSH dedup across sources"),
    StageSpec("decontam", "decontam", ("dedup",), "remove benchmark n-gram overlaps (GPT-3 appendix C)"),
    StageSpec("tokenizer", "tokenizer", ("decontam",), "train the byte-level BPE"),
    StageSpec("mix", "shards", ("tokenizer",), "tokenize, mix by token weight, pack and shuffle into shards"),
    StageSpec("verify", "shards", ("mix",), "check the shards against the manifest"),
    StageSpec("train", "train", ("verify",), "pretrain the GPT on the shards"),
    StageSpec("eval", "eval", ("train",), "score the trained model and its initialisation on eval tasks"),
    StageSpec("report", "report.html", ("train", "eval"), "one HTML page: funnel, drops, dedup, mix, curves"),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}
