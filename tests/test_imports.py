"""No import cycle inside ``pipeline/``, and no import deadlock between threads.

A cycle (a imports b, b imports a) fails only when the import starts at the wrong end, so each module is
imported from a clean slate, in sorted order: one child interpreter, with every first-party module
(``pipeline``, ``schemas``, ``train``) dropped from ``sys.modules`` before each import. Third-party modules
(Beam, torch) stay loaded between imports, which keeps the test to seconds and cannot hide a cycle of ours.

Beam's SDK harness on a real engine runs bundles on several threads of one process, each importing the modules
of the DoFns it unpickles; a package whose ``__init__`` imports its own modules then deadlocks against a thread
that started at one of them (``pipeline/lazy.py``; seen on Flink as ``_DeadlockError``). So every module of
``pipeline`` and ``schemas`` is also imported at once, one thread each, released together by a barrier, from a
clean slate, in several orders; and, since that hits the deadlock only by timing, no package's ``__init__``
imports its own modules.
"""

from __future__ import annotations

import ast
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


_IMPORT_ON_THREADS = """
import importlib, json, random, sys, threading, traceback
first_party, rounds, modules = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3:]
failed = {}
for name in modules:  # third-party modules loaded once, as in a harness that has run bundles before
    try:
        importlib.import_module(name)
    except Exception:
        pass
for r in range(rounds):
    for loaded in [m for m in sys.modules if m.split(".")[0] in first_party]:
        del sys.modules[loaded]
    order = list(modules)
    if r:
        random.Random(r).shuffle(order)
    barrier = threading.Barrier(len(order))
    def load(name):
        barrier.wait()
        try:
            importlib.import_module(name)
        except Exception:
            failed.setdefault(name, traceback.format_exc(limit=-3))
    threads = [threading.Thread(target=load, args=(name,)) for name in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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
    return _child(root, [_IMPORT_EACH, ",".join(first_party), *modules])


def import_on_threads(root: str, modules: list[str], first_party: tuple[str, ...], rounds: int = 4) -> dict[str, str]:
    """``{module: traceback}`` of the modules that fail to import when all are imported at once, one thread
    each, from a clean slate, in ``rounds`` orders."""
    return _child(root, [_IMPORT_ON_THREADS, ",".join(first_party), str(rounds), *modules])


def _child(root: str, args: list[str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", *args],
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


def test_every_module_imports_on_threads_at_once():
    modules = modules_under(ROOT, "pipeline") + modules_under(ROOT, "schemas")
    failed = import_on_threads(ROOT, modules, FIRST_PARTY)
    assert not failed, "\n\n".join(f"{name}:\n{tb}" for name, tb in failed.items())


def eager_packages(root: str, package: str) -> dict[str, list[str]]:
    """``{package: [its own modules its __init__ imports at module level]}`` for the packages under ``package``
    that do (none: ``{}``): the shape that deadlocks on threads, which the threaded import hits only by timing."""
    out = {}
    for name in modules_under(root, package):
        init = os.path.join(root, *name.split("."), "__init__.py")
        if not os.path.exists(init):
            continue
        tree = ast.parse(open(init, encoding="utf-8").read())
        own = []
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                own += [node.module] if node.module.startswith(name + ".") else []
                own += [f"{name}.{a.name}" for a in node.names if node.module == name]
            elif isinstance(node, ast.ImportFrom) and node.level:
                own.append(f"{name}.{node.module or ''}")
            elif isinstance(node, ast.Import):
                own += [a.name for a in node.names if a.name.startswith(name + ".")]
        if own:
            out[name] = own
    return out


def test_no_package_imports_its_own_modules_when_it_loads():
    eager = {**eager_packages(ROOT, "pipeline"), **eager_packages(ROOT, "schemas")}
    assert not eager, f"import these on first use (pipeline/lazy.py): {eager}"


def test_an_eager_package_is_caught(tmp_path):
    """The check itself: an ``__init__`` that imports its own module is named, a lazy one is not."""
    for pkg, init in (("eager", "from eager.a import A\n"), ("lazy", "from pipeline.lazy import exports\n")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(init)
        (tmp_path / pkg / "a.py").write_text("A = 1\n")
    assert eager_packages(str(tmp_path), "eager") == {"eager": ["eager.a"]}
    assert eager_packages(str(tmp_path), "lazy") == {}
