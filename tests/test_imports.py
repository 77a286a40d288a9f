"""No import cycle inside ``pipeline/``: every module imports as the first of its package in an interpreter.

A cycle (a imports b, b imports a) fails only when the import starts at the wrong end, so each module is
imported from a clean slate, in sorted order: one child interpreter, with every first-party module
(``pipeline``, ``schemas``, ``train``) dropped from ``sys.modules`` before each import. Third-party modules
(Beam, torch) stay loaded between imports, which keeps the test to seconds and cannot hide a cycle of ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_PARTY = ("pipeline", "schemas", "train")

_IMPORT_EACH = """
import importlib, json, sys, traceback
first_party, modules = sys.argv[1].split(","), sys.argv[2:]
failed = {}
for name in modules:
    for loaded in [m for m in sys.modules if m.split(".")[0] in first_party]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def modules_under(root: str, package: str) -> list[str]:
    """Dotted names of every module of ``package`` (its ``__init__`` as the package), sorted."""
    out = []
    for folder, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(folder, root).replace(os.sep, ".")
        for f in files:
            if f.endswith(".py"):
                out.append(rel if f == "__init__.py" else f"{rel}.{f[:-3]}")
    return sorted(out)


def import_each(root: str, modules: list[str], first_party: tuple[str, ...]) -> dict[str, str]:
    """``{module: traceback}`` of the modules that fail to import from a clean slate (none: ``{}``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, ",".join(first_party), *modules],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_pipeline_module_imports_first():
    modules = modules_under(ROOT, "pipeline")
    assert {"pipeline.run", "pipeline.sources.webtext", "pipeline.sources.builders"} <= set(modules)
    failed = import_each(ROOT, modules, FIRST_PARTY)
    assert not failed, "\n\n".join(f"{name}:\n{tb}" for name, tb in failed.items())


def test_a_cycle_is_caught(tmp_path):
    """The check itself: a two-module cycle fails when the import starts at one end."""
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from cyc.a import A\nB = 2\n")
    modules = modules_under(str(tmp_path), "cyc")
    assert modules == ["cyc", "cyc.a", "cyc.b"]
    failed = import_each(str(tmp_path), modules, ("cyc",))
    assert sorted(failed) == ["cyc.a", "cyc.b"]
    assert all("partially initialized" in tb for tb in failed.values())
