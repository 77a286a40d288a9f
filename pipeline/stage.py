"""What every stage shares: atomic output folders, lineage fingerprints, and skip-if-done.

A stage writes into ``OUT.partial-<pid>/`` and, once its ``stats.json`` (with the accounting checked) is
written, renames the folder to ``OUT``. A crash leaves only a ``.partial`` folder, never a half-written
``OUT``. A rerun whose ``OUT/stats.json`` carries the same fingerprint (inputs + config + code version)
skips the stage; anything else recomputes.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from functools import lru_cache
from typing import Any

from schemas.atomic import atomic_folder
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


def fingerprint(stage: str, inputs: list[str], config: Any) -> str:
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    payload = {
        "stage": stage,
        "inputs": [_input_identity(p) for p in inputs],
        "config": cfg,
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


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
