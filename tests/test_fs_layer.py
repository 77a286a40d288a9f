"""Every byte a stage reads or writes goes through ``pipeline.fs`` (Beam's ``FileSystems``).

On a cluster the driver and the workers share no disk: a stage that opens a local path with ``open`` or lists
a folder with ``glob`` works on one machine and silently reads nothing (or writes where no one looks) on
Dataflow, Flink or Spark. This scans the stage modules for the local-disk calls and allows them only in the
layer itself and in the short list below, each with its reason.
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_MODULES = (
    "pipeline/read.py",
    "pipeline/extract.py",
    "pipeline/filters.py",
    "pipeline/curate.py",
    "pipeline/stage.py",
    "pipeline/commit.py",
    "pipeline/tables.py",
    "pipeline/decontam.py",
    "pipeline/benchmarks.py",
    "pipeline/tokenizer.py",
    "pipeline/shards.py",
    "pipeline/quality",
    "pipeline/sources",
    "pipeline/dedup",
    "pipeline/mix",
)
# (module, function) -> why a local-disk call is right there
ALLOWED = {
    ("pipeline/stage.py", "_module_file"): "finds ccgpt's own source files (code, not data) for the code version",
    ("pipeline/stage.py", "_imports"): "parses ccgpt's own source files (code, not data) for the code version",
    ("pipeline/stage.py", "code_version"): "hashes ccgpt's own source files (code, not data)",
}
BANNED_CALLS = {
    "os": {"stat", "makedirs", "mkdir", "replace", "rename", "remove", "unlink", "listdir", "walk", "scandir"},
    "os.path": {"exists", "isdir", "isfile", "getsize", "getmtime"},
    "pa": {"OSFile", "memory_map"},
    "pyarrow": {"OSFile", "memory_map"},
    "gzip": {"open"},
    "bz2": {"open"},
    "lzma": {"open"},
}
BANNED_MODULES = {"glob", "shutil", "pathlib"}


def _files() -> list[str]:
    out = []
    for entry in STAGE_MODULES:
        path = os.path.join(REPO, entry)
        if os.path.isdir(path):
            out += sorted(os.path.join(entry, f) for f in os.listdir(path) if f.endswith(".py"))
        else:
            out.append(entry)
    return out


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _problems(rel: str, source: str | None = None) -> list[str]:
    if source is None:
        source = open(os.path.join(REPO, rel), encoding="utf-8").read()
    tree = ast.parse(source, rel)
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and function == "":
            function = node.name
        allowed = (rel, function) in ALLOWED
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not allowed:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found.extend(f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] in BANNED_MODULES)
        if isinstance(node, ast.Call) and not allowed:
            name = _dotted(node.func)
            owner, _, attr = name.rpartition(".")
            if name == "open" or attr in BANNED_CALLS.get(owner, ()):
                found.append(f"line {node.lineno}: {name}() (use pipeline.fs)")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "")
    return found


@pytest.mark.parametrize("rel", _files())
def test_stage_modules_do_io_only_through_the_layer(rel):
    assert not _problems(rel), f"{rel}: {_problems(rel)}"


def test_the_allowlist_names_functions_that_exist():
    """A renamed or deleted function must leave the list too, so it stays short and true."""
    for rel, function in ALLOWED:
        tree = ast.parse(open(os.path.join(REPO, rel), encoding="utf-8").read(), rel)
        assert function in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, (rel, function)


def test_the_check_sees_a_local_open():
    """The check itself can fail: a module with the forbidden calls is reported, call by call."""
    src = "import glob\nimport os\ndef f(p):\n    os.makedirs(p)\n    return open(p).read()\n"
    assert len(_problems("pipeline/probe.py", src)) == 3


# ``schemas/`` does no I/O of its own: it validates and serialises (bytes, str, dicts, Arrow schemas), and each
# side reads and writes through its own code (``pipeline.fs``; ``train/storage.py`` and ``train/tasks.py``,
# which import no Beam). Every module of ``schemas/`` is checked, with no exception.
SCHEMA_BANNED_MODULES = {"os", "pathlib", "shutil", "glob", "tarfile", "zipfile", "tempfile", "importlib.resources"}
SCHEMA_BANNED_CALLS = {
    "OSFile",
    "memory_map",
    "read_table",
    "write_table",
    "read_schema",
    "ParquetFile",
    "ParquetWriter",
}


def _schema_problems(rel: str, source: str | None = None) -> list[str]:
    if source is None:
        source = open(os.path.join(REPO, rel), encoding="utf-8").read()
    found = []
    for node in ast.walk(ast.parse(source, rel)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            banned = [n for n in names if n in SCHEMA_BANNED_MODULES or n.split(".")[0] in SCHEMA_BANNED_MODULES]
            found += [f"line {node.lineno}: imports {n}" for n in banned]
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name == "open" or name.rpartition(".")[2] in SCHEMA_BANNED_CALLS:
                found.append(f"line {node.lineno}: {name}() (file I/O: each side's layer does it)")
    return found


def _schema_files() -> list[str]:
    folder = os.path.join(REPO, "schemas")
    return sorted(f"schemas/{f}" for f in os.listdir(folder) if f.endswith(".py"))


@pytest.mark.parametrize("rel", _schema_files())
def test_schemas_do_no_file_io(rel):
    assert not _schema_problems(rel), f"{rel}: {_schema_problems(rel)}"


def test_the_schema_check_sees_file_io():
    """The check itself can fail: a schemas module that imports os and reads or writes a file is reported."""
    src = "import os\nimport pyarrow.parquet as pq\ndef f(p):\n    pq.write_table(t, p)\n    return open(p).read()\n"
    assert len(_schema_problems("schemas/probe.py", src)) == 3
