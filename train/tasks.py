"""Evaluation task files as the trainer reads them: local files, parsed by :mod:`schemas.tasks`.

``schemas/`` does no I/O (it parses and validates the text it is given), so the reading is here, on the train
side (``ccgpt eval``, the trainer's ``eval_tasks``, a run's eval stage), and in :mod:`pipeline.benchmarks` on
the curation side (through ``pipeline.fs``). Task files and their data are local files: the data is read in
place (``.gz`` decompressed, tar members in one sequential pass).

This module is also the **one place** that knows where things are on this install, for both sides (it needs
neither torch nor Beam, so ``pipeline.benchmarks`` imports it too): the shipped task files, package data of
``schemas`` (``schemas/task_files/<name>.yaml``, in the wheel too), and the default data root.
"""

from __future__ import annotations

import importlib.resources
import os
import tarfile

from schemas.tasks import (
    DATA_ROOT_ENV,
    Subtask,
    TaskSpec,
    check_limit,
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
    unknown_task,
)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_ROOT = os.path.join(os.path.dirname(_REPO), "shared", "data")


# -- where things are: the shipped task files (package data) and the data root ---------------------------------
# The one place package data is read. The shipped tasks are files in the installed ``schemas`` package
# (``schemas/task_files``, declared as package data in pyproject.toml), found through importlib.resources so an
# installed wheel finds them by name; both sides read them from here.
def _shipped_dir() -> str:
    return str(importlib.resources.files("schemas") / "task_files")


def available_tasks() -> list[str]:
    """The shipped tasks' names, sorted."""
    folder = _shipped_dir()
    if not os.path.isdir(folder):
        return []
    return sorted(f[: -len(".yaml")] for f in os.listdir(folder) if f.endswith(".yaml"))


def shipped_task_file(name: str) -> str:
    """A shipped task's file (``blimp`` -> ``.../schemas/task_files/blimp.yaml``); an error naming the shipped
    tasks when there is none by that name."""
    path = os.path.join(_shipped_dir(), f"{name}.yaml")
    if not os.path.isfile(path):
        raise unknown_task(name, path, available_tasks())
    return path


def resolve_data_root(flag: str | None = None) -> str:
    """The data root: the flag, else ``$CCGPT_DATA_ROOT``, else ``../shared/data`` beside the repository."""
    return os.path.abspath(flag or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT)


# -- reading: local files ----------------------------------------------------------------------------------------
def task_file(name_or_path: str) -> str:
    """A shipped task's file or the (local) path given."""
    if not is_task_path(name_or_path):
        return shipped_task_file(name_or_path)
    if not os.path.isfile(name_or_path):
        raise missing_task_file(name_or_path)
    return os.path.abspath(name_or_path)


def load_task(name_or_path: str) -> TaskSpec:
    """Read and validate one task file (a shipped task's name or a path)."""
    path = task_file(name_or_path)
    with open(path, encoding="utf-8") as fh:
        return parse_task_text(fh.read(), path)


def load_tasks(specs: list[str] | str) -> list[TaskSpec]:
    return check_task_list([load_task(s) for s in split_task_list(specs)])


def read_examples(task: TaskSpec, data_root: str | None = None, limit: int | None = None) -> list[Subtask]:
    """The task's examples per subtask, in file order (:func:`schemas.tasks.subtasks`); ``limit``: at most that
    many per subtask. Raises :class:`TaskError` for unreadable data, malformed records and a task or subtask
    with no example."""
    check_limit(limit)
    root = resolve_data_root(data_root)
    path = task.data_path(root)
    if not os.path.isfile(path):
        raise missing_data(task, path, root)
    if not task.data.members:
        with open(path, "rb") as fh:
            return subtasks(task, [(task.name, data_text(path, fh.read()))], path, limit)
    try:
        tar = tarfile.open(path)  # reads .tar and .tar.gz in place
    except tarfile.TarError as e:
        raise not_an_archive(task, path, e) from None
    with tar:  # one sequential pass: seeking back in a gzip stream would decompress it again per member
        found = {m.name: _member_text(tar, m) for m in tar if m.isfile() and member_wanted(task, m.name)}
    return subtasks(task, member_texts(task, path, found), path, limit)


def _member_text(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    fh = tar.extractfile(member)
    assert fh is not None  # a regular file's member
    return fh.read().decode("utf-8")
