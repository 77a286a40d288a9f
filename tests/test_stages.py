"""The one STAGES table: a valid order, and the docs list the same stages in the same order."""

from __future__ import annotations

import os
import re

from pipeline.run import Run
from pipeline.stages import STAGE_NAMES, STAGES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stages_are_in_dependency_order_and_each_has_a_run_method():
    seen: set[str] = set()
    for spec in STAGES:
        assert set(spec.after) <= seen, f"{spec.name} runs before what it reads"
        assert callable(getattr(Run, spec.name, None)), f"Run has no method {spec.name}"
        seen.add(spec.name)
    assert len(seen) == len(STAGES)


def _listed_order(path: str) -> list[str]:
    """The stage names of the doc's ``Stages, in order:`` line (``a → b → c``)."""
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    match = re.search(r"Stages, in order: ((?:`[a-z_]+`(?: → )?)+)", text)
    assert match, f"{path} has no 'Stages, in order:' line"
    return re.findall(r"`([a-z_]+)`", match.group(1))


def test_readme_and_architecture_list_the_stages_in_order():
    assert _listed_order("README.md") == list(STAGE_NAMES)
    assert _listed_order("docs/ARCHITECTURE.md") == list(STAGE_NAMES)
