"""Package attributes imported on first use (PEP 562), so a package's ``__init__`` imports none of its modules.

Why: Beam's SDK harness (on Flink, Spark, Dataflow) runs bundles on several threads of one process, and each
thread unpickles its DoFns, importing their modules as it goes. Python holds a module's import lock while it
imports the module's parent package, so an ``__init__`` that imports its own submodules deadlocks against a
thread that started at one of them: thread 1 imports ``pipeline.mix.draw`` (holding its lock) and waits for the
package ``pipeline.mix``, while thread 2 runs ``pipeline/mix/__init__.py``, which imports ``pipeline.mix.draw``.
Python detects it and raises ``_DeadlockError``, and the runner fails the job (seen on Flink;
``tests/test_imports.py`` imports every module on threads at once).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``names[attr]`` (a module) on first access of
    ``attr`` and returns its attribute of that name: ``from pipeline.mix import run_mix`` keeps working."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__
