"""``ccgpt run CONFIG``: every stage, in order, from one YAML config.

The stages and their order are the table in ``pipeline.stages``; :class:`Run` has one method per stage. Each
stage skips itself when its output is complete and made from the same inputs, config and code
(see ``pipeline.stage``), so a rerun after a failure redoes only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline import fs
from pipeline.benchmarks import missing_task_data
from pipeline.curate import CurateConfig, run_curate
from pipeline.decontam import DecontamConfig, run_decontam
from pipeline.dedup import DedupConfig, run_dedup
from pipeline.fs import atomic_write_text, use_options
from pipeline.mix import MixConfig, run_mix
from pipeline.quality import QualityFilterConfig, QualityTrainConfig, run_quality_filter, train_quality
from pipeline.runner import RunnerConfig, pipeline_options
from pipeline.sample import SampleConfig, build_sample
from pipeline.shards import verify_shards
from pipeline.sources.builders import SourceSpec, parse_sources, run_source_spec
from pipeline.stage import Stage
from pipeline.stages import STAGE_NAMES, STAGES
from pipeline.tokenizer import TokenizerConfig, train_tokenizer
from schemas.config import from_dict, parse_yaml
from schemas.stats import StageStats
from schemas.tasks import EvalConfig
from train.config import TrainConfig


@dataclass
class RunConfig:
    out_dir: str = field(
        default="runs/demo", metadata={"help": "one folder per stage goes here: a local path or s3://, gs://, hdfs://"}
    )
    local_dir: str = field(
        default="",
        metadata={
            "help": "where train, eval and the report write when out_dir is an object-store URL (checkpoints and "
            "logs stay on local disk); default: runs/ + the URL's last folder"
        },
    )
    build_sample: bool = field(default=False, metadata={"help": "build the registry sample first"})
    sample_dir: str = field(default="data/sample", metadata={"help": "where the sample is (or is built)"})
    sample: SampleConfig = field(default_factory=SampleConfig)
    crawl: list[str] = field(default_factory=list, metadata={"help": "WARC/WET inputs ({sample_dir} expands)"})
    reference: list[str] = field(default_factory=list, metadata={"help": "quality positives ({sample_dir} expands)"})
    quality_model: str = field(
        default="", metadata={"help": "an existing quality model (model.bin or its folder): skip quality training"}
    )
    sources: dict[str, SourceSpec] = field(
        default_factory=dict,
        metadata={
            "help": "name -> {paths: [...], format: text|text-file|jsonl, ...}, or "
            "{kind: webtext, urls: [...], min_score: N, ...} or {kind: wikipedia, paths: [...]}"
        },
    )
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    quality_train: QualityTrainConfig = field(default_factory=QualityTrainConfig)
    quality_filter: QualityFilterConfig = field(default_factory=QualityFilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        # the YAML's name -> options become typed specs here, so a malformed source fails when the config loads
        self.sources = parse_sources(self.sources)


def load_run_config(path: str, overrides: list[str] | None = None) -> RunConfig:
    """Load a run config; ``overrides`` are ``dotted.key=YAML`` strings (``mix.seq_len=512``) applied on top,
    so every option of every stage can be set from the command line without editing the file."""
    data = parse_yaml(fs.read_bytes(path).decode("utf-8"), path)  # pipeline.fs: a config may be a URL
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects dotted.key=value, got {item!r}")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(value)
    return from_dict(RunConfig, data)


def expand_paths(paths: list[str], cfg: RunConfig) -> list[str]:
    """A run config's input paths as stages take them: ``{sample_dir}`` filled in, globs expanded (local or on an
    object store); a glob that matches nothing is an error, never an empty input."""
    out: list[str] = []
    for p in paths:
        p = p.replace("{sample_dir}", cfg.sample_dir)
        matches = [f.path for f in fs.expand(p)] if any(c in p for c in "*?[") else [p]
        if not matches:
            raise FileNotFoundError(f"run config: {p!r} matches no file")
        out.extend(matches)
    return out


class Run:
    """One run folder: each method is one stage, reading what the previous stages wrote.

    ``ccgpt run`` calls them in order; the Airflow DAG calls one per task (see ``dags/``). Every method is
    idempotent: a stage whose output is complete and current skips itself.
    """

    def __init__(self, cfg: RunConfig, force: bool = False):
        self.cfg = cfg
        self.force = force
        fs.check_path(cfg.out_dir, "out_dir", write=True)
        use_options(pipeline_options(cfg.runner))  # object stores are read and written with the run's options
        self.out = cfg.out_dir if fs.is_url(cfg.out_dir) else os.path.abspath(cfg.out_dir)
        # train, eval and the report write local files: beside the others on local disk, else in local_dir
        self.local = self.out if not fs.is_url(self.out) else os.path.abspath(cfg.local_dir or _local_default(self.out))
        # each stage's output folder, from the STAGES table (sources and the report write into the run folder)
        self.dirs = {s.name: fs.join(self.out, s.folder) for s in STAGES}
        self.dirs.update(sample=cfg.sample_dir, sources=self.out, report=self.local)
        self.dirs.update({name: os.path.join(self.local, name) for name in ("train", "eval")})
        if self.local != self.out:
            print(f"[ccgpt] out_dir is on {fs.scheme(self.out)}://: train, eval and the report go to {self.local}")

    def source_dirs(self) -> list[str]:
        return [fs.join(self.out, f"source-{name}") for name in sorted(self.cfg.sources)]

    def sample(self) -> Any:
        if self.skips("sample"):
            return None
        return build_sample(self.cfg.sample_dir, self.cfg.sample)

    def curate(self) -> StageStats:
        c = self.cfg
        return run_curate(expand_paths(c.crawl, c), self.dirs["curate"], c.curate, c.runner, force=self.force)

    def sources(self) -> dict[str, StageStats]:
        done = {}
        for (name, spec), folder in zip(sorted(self.cfg.sources.items()), self.source_dirs()):
            done[name] = run_source_spec(
                spec,
                folder,
                self.cfg.runner,
                lambda p: expand_paths(p, self.cfg),
                crawl=self.cfg.crawl,
                curate=self.cfg.curate,
                force=self.force,
            )
        return done

    def quality_train(self) -> Any:
        if self.skips("quality_train"):
            return None  # a model was given: nothing to train
        negatives = [fs.join(self.dirs["curate"], "raw")]
        return train_quality(
            expand_paths(self.cfg.reference, self.cfg),
            negatives,
            self.dirs["quality_train"],
            self.cfg.quality_train,
            force=self.force,
            runner=self.cfg.runner,
        )

    def quality_filter(self) -> StageStats:
        model = self.cfg.quality_model or fs.join(self.dirs["quality_train"], "model.bin")
        qf = dataclasses.replace(self.cfg.quality_filter, model=model)
        return run_quality_filter(
            [self.dirs["curate"]], self.dirs["quality_filter"], qf, self.cfg.runner, force=self.force
        )

    def dedup(self) -> StageStats:
        # survivors by source priority (crawl lowest: GPT-3 removed WebText overlaps from the crawl), then quality
        return run_dedup(
            self.source_dirs() + [self.dirs["quality_filter"]],
            self.dirs["dedup"],
            self.cfg.dedup,
            self.cfg.runner,
            force=self.force,
        )

    def decontam(self) -> StageStats | None:
        """GPT-3's benchmark decontamination; skipped (dedup output goes on as is) when neither benchmark files
        nor evaluation tasks are set."""
        self.say_missing_data("decontam")
        if self.skips("decontam"):
            return None
        d = self.cfg.decontam
        data_root = d.data_root.replace("{sample_dir}", self.cfg.sample_dir)
        tasks = [] if self.missing_data("decontam") else d.tasks
        cfg = dataclasses.replace(d, benchmarks=expand_paths(d.benchmarks, self.cfg), data_root=data_root, tasks=tasks)
        return run_decontam([self.dirs["dedup"]], self.dirs["decontam"], cfg, self.cfg.runner, force=self.force)

    def clean_documents(self) -> str:
        """The document table the tokenizer and the mix read: decontaminated unless that stage is skipped."""
        return self.dirs["dedup"] if self.skips("decontam") else self.dirs["decontam"]

    def tokenizer(self) -> Any:
        return train_tokenizer([self.clean_documents()], self.dirs["tokenizer"], self.cfg.tokenizer, force=self.force)

    def mix(self) -> StageStats:
        mix_cfg = dataclasses.replace(self.cfg.mix, tokenizer=fs.join(self.dirs["tokenizer"], "tokenizer.json"))
        return run_mix([self.clean_documents()], self.dirs["mix"], mix_cfg, self.cfg.runner, force=self.force)

    def verify(self) -> dict[str, Any]:
        return verify_shards(self.dirs["mix"])

    def train(self) -> dict[str, Any]:
        """Train, or skip when ``train/`` already finished from the same shards and config, or resume from its
        checkpoint when an earlier attempt with the same lineage stopped part way (a killed task, a crash).

        The one stage not written into a temporary folder and renamed: a long run's checkpoints must survive
        the attempt that wrote them, so ``train/`` is resumed in place; ``stats.json`` still marks it done."""
        from train.trainer import train

        folder = self.dirs["train"]
        self.say_missing_data("train")
        tasks = [] if self.missing_data("train") else self.cfg.train.eval_tasks
        tcfg = dataclasses.replace(self.cfg.train, shards=self.dirs["mix"], out=folder, resume=False, eval_tasks=tasks)
        stage = Stage("train", folder, [self.dirs["mix"]], tcfg, self.force, module="train.trainer")
        fp = stage.fingerprint
        if stage.complete():
            with open(os.path.join(folder, "summary.json"), encoding="utf-8") as fh:
                return json.load(fh)
        lineage = os.path.join(folder, "lineage.json")
        same = os.path.exists(lineage) and json.load(open(lineage, encoding="utf-8")).get("fingerprint") == fp
        if not same or self.force:
            shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(lineage, json.dumps({"fingerprint": fp, "shards": self.dirs["mix"]}))
        summary = train(dataclasses.replace(tcfg, resume=True))
        # the trainer's accounting in the common stats shape, counted in shard rows: rows drawn for training
        # steps (by source) and rows held out for validation
        rows = sum((summary.get("samples_by_source") or {}).values())
        stats = StageStats(
            stage="train",
            read=rows,
            kept=rows,
            extra={
                "unit": "rows",
                "steps": summary.get("steps"),
                "tokens_seen": summary.get("tokens_seen"),
                "rows_by_source": summary.get("samples_by_source"),
                "eval_rows": summary.get("eval_rows"),
                "first_loss": summary.get("first_loss"),
                "last_loss": summary.get("last_loss"),
                "eval_loss": summary.get("eval_loss"),
                "eval_loss_by_source": summary.get("eval_loss_by_source"),
                "tokens_per_sec": summary.get("tokens_per_sec"),
            },
        )
        stage.finish(stats)
        return summary

    def eval(self) -> dict[str, Any] | None:
        """The trained model and its initialisation on ``eval.tasks`` (a bounded subset with ``eval.limit``);
        skipped, with a line saying so, when no task is set or their data is not there."""
        self.say_missing_data("eval")
        if self.skips("eval"):
            return None
        from train.eval.runner import score_run

        e = self.cfg.eval
        folder = self.dirs["eval"]
        stage = Stage("eval", folder, [self.dirs["train"]], e, self.force, module="train.eval.runner")

        def body(tmp: str) -> StageStats:
            scores = score_run(
                self.dirs["train"], e.tasks, data_root=e.data_root or None, limit=e.limit or None, device=e.device
            )
            atomic_write_text(os.path.join(tmp, "scores.json"), json.dumps(scores, indent=2) + "\n")
            return StageStats(stage="eval", read=scores["examples"], kept=scores["examples"], extra=scores)

        stage.run(body)
        with open(os.path.join(folder, "scores.json"), encoding="utf-8") as fh:
            return json.load(fh)

    def report(self) -> str:
        from pipeline.report import write_report

        return write_report(self.out, local_dir=self.local)

    def skips(self, stage: str) -> bool:
        """Stages this config leaves out: no sample to build, a quality model given, no benchmark set (or only
        tasks whose data is not there), no eval task (or none whose data is there)."""
        cfg = self.cfg
        return (
            (stage == "sample" and not cfg.build_sample)
            or (stage == "quality_train" and bool(cfg.quality_model))
            or (
                stage == "decontam"
                and not (cfg.decontam.benchmarks or (cfg.decontam.tasks and not self.missing_data("decontam")))
            )
            or (stage == "eval" and not (cfg.eval.tasks and not self.missing_data("eval")))
        )

    def missing_data(self, stage: str) -> list[str]:
        """The task data files the decontam, train or eval stage's tasks need and the data root lacks: the evaluation
        data is not in any package registry, so a run without ``../shared/data`` goes on without them."""
        if stage == "decontam":
            d = self.cfg.decontam
            return missing_task_data(d.tasks, d.data_root.replace("{sample_dir}", self.cfg.sample_dir) or None)
        if stage == "eval":
            return missing_task_data(self.cfg.eval.tasks, self.cfg.eval.data_root or None)
        if stage == "train":
            return missing_task_data(self.cfg.train.eval_tasks, self.cfg.train.eval_data_root or None)
        return []

    def say_missing_data(self, stage: str) -> None:
        """One line when ``stage`` leaves its tasks out for want of their data."""
        missing = self.missing_data(stage)
        if missing:
            what = "skipped" if self.skips(stage) else "goes on without its tasks"
            print(f"[ccgpt] {stage} {what}: task data not found ({', '.join(missing)})", flush=True)


def run_stage(config: str | RunConfig, stage: str, force: bool = False) -> Any:
    """Run one named stage of a run config (what each Airflow task calls)."""
    if stage not in STAGE_NAMES:
        raise ValueError(f"unknown stage {stage!r}; stages: {list(STAGE_NAMES)}")
    cfg = load_run_config(config) if isinstance(config, str) else config
    return getattr(Run(cfg, force=force), stage)()


def run_all(cfg: RunConfig, force: bool = False) -> dict[str, Any]:
    """Run every stage; print where each output is and a one-screen summary; return that summary."""
    t_start = time.time()
    run = Run(cfg, force=force)
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    for stage in STAGE_NAMES:
        if run.skips(stage):
            run.say_missing_data(stage)
            continue
        folder = run.dirs[stage]
        print(f"[ccgpt] {stage} -> {_shown(folder)}", flush=True)
        t0 = time.time()
        results[stage] = result = getattr(run, stage)()
        seconds = round(time.time() - t0, 1)
        if stage == "sources":
            for name, st in result.items():
                rows.append(_row(f"source {name}", fs.join(run.out, f"source-{name}"), st, seconds))
        elif stage not in ("verify", "report"):
            stats = result if isinstance(result, StageStats) else _committed_stats(folder)
            rows.append(_row(stage, folder, stats, seconds))
    summary = _summary(rows, results["train"], run.dirs["mix"], results["report"], time.time() - t_start)
    summary["eval"] = results.get("eval") and {**results["eval"], "run": _shown(run.dirs["train"])}
    summary["quality_rule"] = _quality_rule(results.get("quality_filter"))
    fs.write_text(fs.join(run.out, "summary.json"), json.dumps(summary, indent=2, default=str))
    _print_summary(summary)
    return summary


def _local_default(url: str) -> str:
    return os.path.join("runs", url.rstrip("/").rsplit("/", 1)[-1])


def _shown(path: str) -> str:
    """A path as the summary prints it: a URL whole, a local path relative to the current folder."""
    return path if fs.is_url(path) else os.path.relpath(path)


def _committed_stats(folder: str) -> StageStats | None:
    path = fs.join(folder, "stats.json")
    return StageStats.from_dict(fs.read_json(path)) if fs.exists(path) else None


def _row(name: str, folder: str, stats: StageStats | None, seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {"stage": name, "out": _shown(folder), "seconds": seconds}
    if stats is not None:
        row.update(read=stats.read, kept=stats.kept, dropped=dict(stats.dropped))
    return row


def _summary(
    stages: list[dict[str, Any]], train_summary: dict[str, Any], shards: str, report: str, seconds: float
) -> dict[str, Any]:
    manifest_path = fs.join(shards, "manifest.json")
    manifest = fs.read_json(manifest_path)
    return {
        "stages": stages,
        "tokens_per_source": {k: v["tokens_drawn"] for k, v in manifest["sources"].items()},
        "manifest": _shown(manifest_path),
        "train": train_summary,
        "report": _shown(report),
        "seconds": round(seconds, 1),
    }


def _quality_rule(stats: StageStats | None) -> str | None:
    """Which rule fed the mix under ``rule: pareto_or_top_fraction``, and what GPT-3's Pareto rule would keep."""
    extra = stats.extra if stats is not None else {}
    if "rule_used" not in extra:
        return None
    compare = "at least" if extra["rule_used"] == "pareto" else "fewer than"
    return (
        f"quality rule: {extra['rule_used']} (GPT-3's Pareto rule, alpha {extra['alpha']:g}, keeps "
        f"{extra['pareto_kept']:,} documents, {compare} min_documents {extra['min_documents']:,})"
    )


def _eval_lines(scores: dict[str, Any] | None) -> list[str]:
    """Each task's headline metric, trained vs the initialisation (and chance, where a task has one)."""
    if not scores:
        return []
    limit = f"at most {scores['limit']} per task or subtask" if scores.get("limit") else "all"
    full = f"ccgpt eval {scores.get('run', 'RUN/train')} --tasks {','.join(scores['trained'])}"
    lines = [f"eval ({scores['examples']} examples, {limit}; the full sets: {full}):"]
    for task, row in scores["trained"].items():
        metric = next(iter(row))

        def show(v: float, pct: bool = metric == "acc") -> str:
            return f"{100 * v:.1f} %" if pct else f"{v:,.1f}"

        chance = (scores.get("chance") or {}).get(task, {}).get(metric)
        extra = f", chance {show(chance)}" if chance is not None else ""
        init = scores["initialisation"][task][metric]
        lines.append(f"  {task} {metric}: {show(row[metric])} (untrained {show(init)}{extra})")
    return lines


def _print_summary(summary: dict[str, Any]) -> None:
    print("\n=== ccgpt run summary ===")
    print(f"{'stage':<22}{'read':>9}{'kept':>9}  seconds  output")
    for row in summary["stages"]:
        read = row.get("read", "")
        kept = row.get("kept", "")
        print(f"{row['stage']:<22}{read!s:>9}{kept!s:>9}  {row['seconds']:>7}  {row['out']}")
        for reason, n in [kv for kv in sorted(row.get("dropped", {}).items(), key=lambda kv: -kv[1]) if kv[1]][:6]:
            print(f"{'':<24}- {reason}: {n}")
    print("tokens per source (drawn): " + ", ".join(f"{k} {v:,}" for k, v in summary["tokens_per_source"].items()))
    tr = summary["train"] or {}
    if tr:
        print(
            f"train: {tr.get('steps')} steps, loss {tr.get('first_loss', float('nan')):.3f} -> "
            f"{tr.get('last_loss', float('nan')):.3f}, {tr.get('tokens_per_sec') or 0:,.0f} tokens/s, "
            f"eval loss {tr.get('eval_loss') or float('nan'):.3f}"
        )
    if summary.get("quality_rule"):
        print(summary["quality_rule"])
    for line in _eval_lines(summary.get("eval")):
        print(line)
    print(f"manifest: {summary['manifest']}")
    print(f"report:   {summary['report']}")
    print(f"total:    {summary['seconds']} s")
