"""The one stage skeleton every ``run_*`` goes through, plus lineage fingerprints and skip-if-done.

    validate config -> fingerprint -> skip or run -> build the pipeline -> outcomes -> stats -> commit

:class:`Stage` is that sequence, written once, so a change of how stages are identified or committed (object
stores, resume by work unit) lands here and nowhere else. A stage writes into ``OUT.partial-<pid>/`` and,
once its ``stats.json`` (with the accounting checked) is written, renames the folder to ``OUT``. A crash
leaves only a ``.partial`` folder, never a half-written ``OUT``. A rerun whose ``OUT/stats.json`` carries the
same fingerprint (inputs + config + code version) skips the stage; ``force`` or anything else recomputes.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from schemas.atomic import atomic_folder
from schemas.config import validate_config
from schemas.manifest import file_sha256
from schemas.stats import StageStats

_PACKAGES = ("pipeline", "schemas", "train")


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of ccgpt's own source, so a code change invalidates earlier outputs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for pkg in _PACKAGES:
        for path in sorted(glob.glob(os.path.join(root, pkg, "**", "*.py"), recursive=True)):
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


CONTENT_HASH_MAX_BYTES = 64 << 20


def _file_identity(path: str) -> Any:
    """Small files (models, configs, benchmark sets) by content, so a file rewritten with the same bytes (a
    model retrained after a crash) keeps downstream fingerprints — and manifests — identical; large inputs
    (WARC files) by path, size and mtime, as make does, so a rerun never re-reads gigabytes to decide."""
    st = os.stat(path)
    if st.st_size <= CONTENT_HASH_MAX_BYTES:
        return (os.path.basename(path), file_sha256(path))
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _input_identity(path: str) -> Any:
    """A stage folder is identified by its fingerprint; other files by :func:`_file_identity`."""
    stats = os.path.join(path, "stats.json")
    if os.path.isdir(path) and os.path.exists(stats):
        with open(stats, encoding="utf-8") as fh:
            return {"stage_fingerprint": json.load(fh).get("fingerprint")}
    files = sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True)) if os.path.isdir(path) else [path]
    out = []
    for f in files:
        if os.path.isfile(f):
            out.append(_file_identity(f))
        elif not os.path.exists(f):
            out.append((f, "remote-or-missing"))
    return out


def _plain(value: Any) -> Any:
    """Config values as JSON: dataclasses (also inside dicts) by their fields, so key order never matters."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def fingerprint(stage: str, inputs: list[str], config: Any) -> str:
    """Hash of what decides a stage's output: its inputs' identities, its config and ccgpt's code."""
    payload = {
        "stage": stage,
        "inputs": [_input_identity(p) for p in inputs],
        "config": config,
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_plain).encode()).hexdigest()[:24]


def is_complete(out_dir: str, fp: str) -> bool:
    path = os.path.join(out_dir, "stats.json")
    if not os.path.exists(path):
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh).get("fingerprint") == fp
    except (OSError, ValueError):
        return False


stage_output = atomic_folder  # every stage writes its output folder in one rename (schemas.atomic)


def finish(stats: StageStats, folder: str, fp: str) -> StageStats:
    """Record lineage and write ``stats.json`` (accounting checked) into the stage's temp folder."""
    stats.extra["fingerprint"] = fp
    stats.extra["code_version"] = code_version()
    stats.save(folder)
    return stats


def load_stats(out_dir: str) -> StageStats:
    return StageStats.load(out_dir)


class Stage:
    """One execution of one stage: the skeleton shared by every ``run_*`` function.

    ``inputs`` are the files and folders whose identity enters the fingerprint (inputs, models, benchmark
    files); ``config`` is the stage's dataclass (or a dict holding it and anything else that decides the
    output, such as a tokenizer's content hash). ``fingerprint`` is set before the body runs, so a body can
    record it (the mix manifest's lineage).
    """

    def __init__(self, name: str, out_dir: str, inputs: Sequence[str], config: Any, force: bool = False):
        validate_config(config)
        self.name = name
        self.out_dir = out_dir
        self.inputs = list(inputs)
        self.config = config
        self.force = force
        self.fingerprint = fingerprint(name, self.inputs, config)

    def complete(self) -> bool:
        """Whether ``out_dir`` already holds this stage's output for the same fingerprint."""
        return not self.force and is_complete(self.out_dir, self.fingerprint)

    def run(self, body: Callable[[str], StageStats]) -> StageStats:
        """Skip when complete; else ``body(tmp)`` writes the outputs into a temporary folder and returns the
        stage's stats, which are checked, written last as ``stats.json`` with the lineage, and committed."""
        if self.complete():
            return load_stats(self.out_dir)
        with stage_output(self.out_dir) as tmp:
            stats = body(tmp)
            finish(stats, tmp, self.fingerprint)
        return stats

    def run_beam(
        self,
        runner: Any,
        build: Callable[[Any, str], None],
        summarise: Callable[[str, StageStats], None] | None = None,
        total: int | None = None,
        label: str | None = None,
    ) -> StageStats:
        """:meth:`run` for a Beam stage: ``build(p, tmp)`` wires the pipeline (its outcomes written with
        :class:`pipeline.accounting.WriteOutcomes` into ``tmp``); once it has run, the outcomes become the
        stats and ``summarise(tmp, stats)`` adds the stage's own figures to ``stats.extra``. ``total`` (input
        records, when known) gives the progress line a percentage; ``label`` names it (default: the stage)."""
        from pipeline.accounting import read_outcomes, stats_from_outcomes  # late: keeps this module Beam-free
        from pipeline.runner import make_pipeline

        def body(tmp: str) -> StageStats:
            with make_pipeline(runner, label or self.name, total=total) as p:
                build(p, tmp)
            stats = stats_from_outcomes(self.name, read_outcomes(tmp))
            if summarise is not None:
                summarise(tmp, stats)
            return stats

        return self.run(body)
