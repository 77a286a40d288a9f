"""``evaluate``: task files + a model -> lm-eval-layout results, in an order that fails early on bad input.

1. read every task file and its examples (a missing or malformed file, unreadable data or a task without
   examples stops here);
2. open the model's metadata and tokenizer and check they fit (vocabulary sizes);
3. tokenise every example into requests;
4. only now load the weights, then score all tasks' requests in one sorted, batched pass.

Results (``results.json``) use lm-eval 0.4's layout, so tools that read lm-eval output read these:
``results -> <task or subtask> -> "<metric>,none"`` with ``"<metric>_stderr,none"`` beside it, ``groups``
(a task with several subtasks, and each ``group_by`` value as ``<task>_<field>_<value>``), ``group_subtasks``,
``configs`` (the task files), ``versions``, ``n-shot`` (always 0), ``higher_is_better``, ``n-samples`` and
``config`` (model, device, batch size, limit). ``samples_<task>.jsonl`` hold one line per example.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from schemas.tasks import MINIMAL_PAIRS, Subtask, TaskSpec
from train.eval.metrics import TaskRequests, build_requests, higher_is_better, metric_row, sample_records
from train.eval.models import EvalModelError, ccgpt_source, open_model
from train.eval.scoring import score_requests
from train.generate import checkpoint_meta, find_tokenizer, model_from_checkpoint, read_checkpoint
from train.model import GPT
from train.storage import atomic_write_text
from train.tasks import load_tasks, read_examples, resolve_data_root

RESULTS_FILE = "results.json"


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def _groups(task: TaskSpec, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``<task>_<group_by>_<value>`` -> its examples, in sorted order of values."""
    if not task.group_by:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(f"{task.name}_{task.group_by}_{r['group']}", []).append(r)
    return dict(sorted(out.items()))


class _Tables(NamedTuple):
    """Scores turned into lm-eval's result tables (and the per-example samples)."""

    results: dict[str, Any]
    groups: dict[str, Any]
    group_subtasks: dict[str, list[str]]
    higher_is_better: dict[str, dict[str, bool]]
    n_samples: dict[str, dict[str, int]]
    samples: dict[str, list[dict[str, Any]]]


def _tabulate(
    specs: list[TaskSpec], examples: dict[str, list[Subtask]], reqs: dict[str, TaskRequests], scores: list[float]
) -> _Tables:
    """Per task, subtask and group: the metric rows of the scored requests (in ``specs`` order)."""
    results: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    group_subtasks: dict[str, list[str]] = {}
    higher: dict[str, dict[str, bool]] = {}
    n_samples: dict[str, dict[str, int]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for t in specs:
        r = reqs[t.name]
        records = sample_records(r, np.asarray(scores[start : start + len(r.requests)]))
        start += len(r.requests)
        samples[t.name] = records
        subs = examples[t.name]
        if len(subs) > 1:
            for s in subs:
                mine = [x for x in records if x["subtask"] == s.name]
                results[s.name] = {"alias": f" - {s.name}", **metric_row(t, mine)}
                n_samples[s.name] = {"original": s.total, "effective": len(s.examples)}
            group_subtasks[t.name] = [s.name for s in subs]
        else:
            n_samples[t.name] = {"original": subs[0].total, "effective": len(subs[0].examples)}
        row = {"alias": t.name, **metric_row(t, records)}
        results[t.name] = row
        if len(subs) > 1:
            groups[t.name] = row
        for name, mine in _groups(t, records).items():
            results[name] = groups[name] = {"alias": f" - {name}", **metric_row(t, mine)}
        higher[t.name] = higher_is_better(t, row)
    return _Tables(results, groups, group_subtasks, higher, n_samples, samples)


def evaluate(
    model_path: str,
    tasks: list[str] | str,
    out: str | None = None,
    *,
    data_root: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 64,
    max_batch_tokens: int = 16384,
    tokenizer: str | None = None,
    sliding_stride: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Zero-shot evaluation of ``model_path`` (ccgpt checkpoint, run folder or HF folder) on ``tasks``.

    Returns the results dictionary; with ``out`` also writes ``results.json`` and ``samples_<task>.jsonl``.
    """
    say = log or (lambda _msg: None)
    specs = load_tasks(tasks)
    examples = {t.name: read_examples(t, data_root, limit) for t in specs}
    source = open_model(model_path, tokenizer)
    if sliding_stride is not None and not 1 <= sliding_stride < source.max_length:
        raise ValueError(f"sliding_stride must be in [1, {source.max_length}), got {sliding_stride}")
    t0 = time.perf_counter()
    reqs = {t.name: build_requests(t, examples[t.name], source, sliding_stride) for t in specs}
    t_tok = time.perf_counter() - t0
    dev = pick_device(device)
    forward = source.load(dev)
    flat = [r for t in specs for r in reqs[t.name].requests]
    n_examples = sum(len(s.examples) for subs in examples.values() for s in subs)
    say(f"scoring {n_examples} examples ({len(flat)} requests) on {dev}")
    t1 = time.perf_counter()
    scores = score_requests(forward, flat, source.max_length, dev, batch_size, max_batch_tokens)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_score = time.perf_counter() - t1

    tables = _tabulate(specs, examples, reqs, scores)
    payload = {
        "results": tables.results,
        "groups": tables.groups,
        "group_subtasks": tables.group_subtasks,
        "configs": {t.name: t.to_dict() for t in specs},
        "versions": {t.name: t.version for t in specs},
        "n-shot": {t.name: 0 for t in specs},
        "higher_is_better": tables.higher_is_better,
        "n-samples": tables.n_samples,
        "config": {
            "model": source.kind,
            "model_args": os.path.abspath(model_path),
            "tokenizer": os.path.abspath(source.tokenizer_path),
            "max_length": source.max_length,
            "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens,
            "device": str(dev),
            "limit": limit,
            "data_root": resolve_data_root(data_root),
            "sliding_stride": sliding_stride,
        },
        "timing": {
            "examples": n_examples,
            "requests": len(flat),
            "tokenize_seconds": round(t_tok, 3),
            "score_seconds": round(t_score, 3),
            "examples_per_second": round(n_examples / t_score, 2) if t_score > 0 else None,
        },
        "date": time.time(),
    }
    if out:
        os.makedirs(out, exist_ok=True)
        for name, records in tables.samples.items():
            atomic_write_text(
                os.path.join(out, f"samples_{name}.jsonl"), "".join(json.dumps(r) + "\n" for r in records)
            )
        atomic_write_text(os.path.join(out, RESULTS_FILE), json.dumps(payload, indent=2) + "\n")
    return payload


def summary_lines(payload: dict[str, Any]) -> list[str]:
    """A short table: every task's (not subtask's) metrics with their standard errors."""
    lines = []
    tasks = list(payload["configs"])
    for name in tasks:
        row = payload["results"][name]
        for key, value in row.items():
            if key == "alias" or "_stderr" in key:
                continue
            metric = key.split(",")[0]
            se = row.get(f"{metric}_stderr,none")
            se_text = f" ± {se:.4f}" if isinstance(se, float) else ""
            lines.append(f"{name:<14} {metric:<24} {value:.4f}{se_text}")
    return lines


class LiveTasks:
    """Tasks a training run scores on its in-memory model every ``eval_every`` steps.

    The examples are read and tokenised once, at start-up (a missing data file or a tokenizer that does not fit
    the model stops the run before its first step); each call then only scores. Only the main rank holds one.
    """

    def __init__(
        self,
        tasks: list[str] | str,
        tokenizer_path: str,
        eot_id: int,
        max_length: int,
        vocab_size: int,
        *,
        data_root: str | None = None,
        limit: int | None = None,
    ):
        self.specs = load_tasks(tasks)
        self.examples = {t.name: read_examples(t, data_root, limit) for t in self.specs}
        source = ccgpt_source(tokenizer_path, tokenizer_path, eot_id, max_length, vocab_size, None)
        self.max_length = max_length
        self.reqs = {t.name: build_requests(t, self.examples[t.name], source) for t in self.specs}
        self.n_examples = sum(len(s.examples) for subs in self.examples.values() for s in subs)

    @torch.no_grad()
    def __call__(self, forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> dict[str, Any]:
        """``{task: {metric: value}}`` of the tasks (not their subtasks) for ``forward`` (ids -> logits)."""
        flat = [r for t in self.specs for r in self.reqs[t.name].requests]
        scores = score_requests(forward, flat, self.max_length, device)
        results = _tabulate(self.specs, self.examples, self.reqs, scores).results
        return {
            t.name: {
                key.split(",")[0]: value
                for key, value in results[t.name].items()
                if key != "alias" and "_stderr" not in key
            }
            for t in self.specs
        }


def score_run(
    run_dir: str,
    tasks: list[str] | str,
    *,
    data_root: str | None = None,
    limit: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """A training run's model and its initialisation on ``tasks``: ``{"trained": {task: {metric: value}},
    "initialisation": ..., "chance": {task: {"acc": 0.5}} (minimal pairs), "examples": n, "limit": limit,
    "step": the checkpoint's step}``.

    The initialisation is rebuilt as the trainer built it (the run's seed, then the model), so "what training
    added" reads off one page without a checkpoint of step 0.
    """
    ckpt = read_checkpoint(run_dir)
    meta = checkpoint_meta(ckpt)
    tok_path = find_tokenizer(run_dir, meta)
    if not tok_path:
        raise EvalModelError(f"{run_dir}: no tokenizer.json beside the checkpoint or in the run's shard folder")
    cfg = meta["model_config"]
    eot = (meta.get("tokenizer") or {}).get("eot_id")
    if eot is None:
        raise EvalModelError(f"{run_dir}: the checkpoint records no end-of-text id to condition the first token on")
    live = LiveTasks(
        tasks, tok_path, int(eot), int(cfg["n_ctx"]), int(cfg["vocab_size"]), data_root=data_root, limit=limit
    )
    dev = pick_device(device)
    trained, _ = model_from_checkpoint(ckpt, dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(meta["train_config"]["seed"]))
        initial = GPT(trained.config).to(dev).eval()
    return {
        "trained": live(lambda ids: trained(ids)[0].float(), dev),
        "initialisation": live(lambda ids: initial(ids)[0].float(), dev),
        "chance": {t.name: {"acc": 0.5} for t in live.specs if t.format == MINIMAL_PAIRS},
        "examples": live.n_examples,
        "limit": limit,
        "step": meta.get("step"),
    }
