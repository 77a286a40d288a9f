"""Airflow DAG: the ccgpt pipeline, one task per stage, for data engineers.

    sample -> curate ----------------> quality_train -> quality_filter -> dedup -> tokenizer -> mix
           -> sources ------------------------------------------------------^        -> verify -> train -> report

Each task calls ``pipeline.run.run_stage(config, stage)`` — the same code ``ccgpt run`` runs — so the DAG
holds no business logic. Tasks are idempotent: a stage whose output folder is complete and current (same
inputs, config and code fingerprint) returns at once, and a failed attempt never leaves a half-written
folder (outputs are renamed into place). XComs carry counts and paths, never data. The Beam runner is a DAG
parameter (``local`` | ``portable`` | ``DataflowRunner`` | ``FlinkRunner`` | ``SparkRunner``), not code;
runner-specific options go in the run config's ``runner.options``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task

STAGE_DEPENDENCIES = {
    "sample": [],
    "curate": ["sample"],
    "sources": ["sample"],
    "quality_train": ["curate"],
    "quality_filter": ["quality_train"],
    "dedup": ["quality_filter", "sources"],
    "tokenizer": ["dedup"],
    "mix": ["tokenizer"],
    "verify": ["mix"],
    "train": ["verify"],
    "report": ["train"],
}


def _run(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    from pipeline.run import load_run_config, run_stage

    cfg = load_run_config(params["config"])
    if params.get("out_dir"):
        cfg.out_dir = params["out_dir"]
    if params.get("runner"):
        cfg.runner = dataclasses.replace(cfg.runner, runner=params["runner"])
    result = run_stage(cfg, stage, force=bool(params.get("force")))
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    elif isinstance(result, dict) and all(hasattr(v, "to_dict") for v in result.values()) and result:
        result = {k: v.to_dict() for k, v in result.items()}
    return {"stage": stage, "out_dir": cfg.out_dir, "result": result if isinstance(result, (dict, str)) else None}


@dag(
    dag_id="ccgpt_pipeline",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["ccgpt"],
    params={
        "config": Param("configs/demo.yaml", type="string", description="run config (YAML)"),
        "out_dir": Param("", type="string", description="override the config's out_dir"),
        "runner": Param("", type="string", description="Beam runner: local, portable, DataflowRunner, ..."),
        "force": Param(False, type="boolean", description="recompute stages even if current"),
    },
    doc_md=__doc__,
)
def ccgpt_pipeline() -> None:
    tasks = {}
    for stage in STAGE_DEPENDENCIES:

        @task(task_id=stage)
        def run_one(stage_name: str = stage, **context: Any) -> dict[str, Any]:
            return _run(stage_name, context["params"])

        tasks[stage] = run_one()
    for stage, upstream in STAGE_DEPENDENCIES.items():
        for up in upstream:
            tasks[up] >> tasks[stage]


ccgpt_pipeline()
