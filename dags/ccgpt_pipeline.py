"""Airflow DAG: the ccgpt pipeline, one task per stage, for data engineers.

One task per row of ``pipeline.stages.STAGES`` (the table ``ccgpt run`` follows too), wired by its ``after``
column:

    sample -> curate ----------------> quality_train -> quality_filter -> dedup -> decontam -> tokenizer
           -> sources ------------------------------------------------------^   -> mix -> verify -> train -> report

Each task calls ``pipeline.run.run_stage(config, stage)`` — the same code ``ccgpt run`` runs — so the DAG
holds no business logic. Why not the Apache Beam provider's ``BeamRunPythonPipelineOperator``: it fails to
import without the Google provider (~100 packages), and it would launch a second copy of the pipeline
definition; calling ccgpt's stage functions from a task submits the very same Beam pipeline to whichever
runner the ``runner`` param names (the task process is the Beam driver; Dataflow, Flink or Spark do the
work). Training runs in the task process, or as ``torchrun --nproc_per_node=N -m train`` when the
``train_nproc`` param is set. Tasks are idempotent: a stage whose output folder is complete and current (same
inputs, config and code fingerprint) returns at once, and a failed attempt never leaves a folder that reads as
complete (a stage commits by writing ``stats.json`` last; readers refuse a folder without it). XComs carry
counts and paths, never data. The Beam runner is a DAG
parameter (``local`` | ``portable`` | ``DataflowRunner`` | ``FlinkRunner`` | ``SparkRunner``), not code;
runner-specific options go in the run config's ``runner.options``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from pipeline.stages import STAGES


def _run(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    from pipeline.run import load_run_config, run_stage

    cfg = load_run_config(params["config"])
    if params.get("out_dir"):
        cfg.out_dir = params["out_dir"]
    if params.get("quality_model"):
        cfg.quality_model = params["quality_model"]
    if params.get("runner"):
        cfg.runner = dataclasses.replace(cfg.runner, runner=params["runner"])
    nproc = int(params.get("train_nproc") or 0)
    if stage == "train" and nproc > 0:
        return _torchrun(cfg, params["config"], nproc)
    result = run_stage(cfg, stage, force=bool(params.get("force")))
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    elif isinstance(result, dict) and all(hasattr(v, "to_dict") for v in result.values()) and result:
        result = {k: v.to_dict() for k, v in result.items()}
    return {"stage": stage, "out_dir": cfg.out_dir, "result": result if isinstance(result, (dict, str)) else None}


def _torchrun(cfg: Any, config_path: str, nproc: int) -> dict[str, Any]:
    """Train with ``torchrun`` (one process per GPU); resumes from the run's checkpoint when one exists."""
    import json
    import os
    import subprocess
    import sys

    from pipeline.run import Run

    run = Run(cfg)  # the shards may be on an object store; train writes local files (run.dirs["train"])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "train",
        "--config",
        config_path,
        "--shards",
        run.dirs["mix"],
        "--out",
        run.dirs["train"],
        "--resume",
        "true",
    ]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(os.path.join(run.dirs["train"], "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    return {"stage": "train", "out_dir": cfg.out_dir, "result": summary}


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
        "quality_model": Param(
            "", type="string", description="an existing quality model.bin: skip training one (empty: train)"
        ),
        "train_nproc": Param(0, type="integer", description="0: train in the task; N: torchrun with N processes"),
    },
    doc_md=__doc__,
)
def ccgpt_pipeline() -> None:
    tasks = {}
    for spec in STAGES:

        @task(task_id=spec.name, doc=spec.does)
        def run_one(stage_name: str = spec.name, **context: Any) -> dict[str, Any]:
            return _run(stage_name, context["params"])

        tasks[spec.name] = run_one()
        for up in spec.after:
            tasks[up] >> tasks[spec.name]


ccgpt_pipeline()
