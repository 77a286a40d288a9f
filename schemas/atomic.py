"""Atomic local writes: a file (or the sample folder) written under a temporary name and renamed into place.

A reader then sees the old version or the complete new one, never a partial file. Stage outputs do not rely
on this: they are committed by ``stats.json`` (``pipeline.commit``), which works on object stores too, where
nothing can be renamed. What still uses it are single local files a stage or tool writes (a tokenizer file,
a manifest, a shard, the trainer's small files) and ``ccgpt sample``'s download folder. Temporary names
carry the writer's pid, so two processes never write the same temporary file.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary name beside ``path``; when the block succeeds it is renamed to ``path``, when it
    fails it is removed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


@contextmanager
def atomic_folder(out_dir: str) -> Iterator[str]:
    """Yield a temporary folder to write into; on success it replaces ``out_dir`` (an existing one is moved
    aside only once the new one is complete), on failure it is removed. Leftover temporary folders of
    killed writers are removed first."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    for stale in glob.glob(f"{glob.escape(out_dir)}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = f"{out_dir}.partial-{os.getpid()}"
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out_dir):
        old = f"{out_dir}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
