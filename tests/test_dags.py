"""The Airflow DAG covers every stage of ``ccgpt run`` in a valid order; with Airflow installed it imports."""

import ast
import importlib.util
import os

import pytest

from pipeline.run import STAGES

DAG_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "dags", "ccgpt_pipeline.py")


def _dependencies() -> dict:
    tree = ast.parse(open(DAG_FILE, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "STAGE_DEPENDENCIES":
            return ast.literal_eval(node.value)
    raise AssertionError("STAGE_DEPENDENCIES not found")


def test_dag_runs_every_stage_after_its_inputs():
    deps = _dependencies()
    assert list(deps) == STAGES  # same stages, already in a topological order
    seen: set = set()
    for stage in STAGES:
        assert set(deps[stage]) <= seen, f"{stage} depends on a later stage"
        seen.add(stage)


@pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="Airflow not installed (optional extra)")
def test_dag_imports():
    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=os.path.dirname(DAG_FILE), include_examples=False)
    assert not bag.import_errors
    assert set(bag.dags["ccgpt_pipeline"].task_ids) == set(STAGES)
