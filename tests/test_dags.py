"""The Airflow DAG covers every stage of ``ccgpt run`` in a valid order, imports cleanly, and runs end to end.

Airflow is an optional extra (``pip install -e '.[airflow]'``, which ``make test`` installs); the tests that
need it skip without it. ``dag.test()`` runs in a child process with its own ``AIRFLOW_HOME`` and SQLite
metadata database, so the suite never touches a real Airflow deployment.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline.shards import verify_shards
from pipeline.stages import STAGES
from schemas.stats import StageStats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_FILE = os.path.join(REPO, "dags", "ccgpt_pipeline.py")
needs_airflow = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None,
    reason="Airflow not installed (optional extra: pip install -e '.[airflow]')",
)


def _airflow_env(tmp_path) -> dict:
    home = tmp_path / "airflow"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__DAGS_FOLDER=os.path.dirname(DAG_FILE),
        PYTHONPATH=REPO,
    )
    return env


@needs_airflow
def test_dag_imports_without_errors_or_cycles(tmp_path):
    code = (
        f"import json; from airflow.models.dagbag import DagBag; b = DagBag(dag_folder={os.path.dirname(DAG_FILE)!r}); "
        "d = b.dags.get('ccgpt_pipeline'); "
        "print(json.dumps({'errors': {k: str(v) for k, v in b.import_errors.items()}, "
        "'tasks': sorted(d.task_ids) if d else [], "
        "'upstream': {t.task_id: sorted(t.upstream_task_ids) for t in d.tasks} if d else {}}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=_airflow_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["errors"] == {}
    assert out["tasks"] == sorted(spec.name for spec in STAGES)
    # one task per row of the STAGES table, each after exactly the stages whose outputs it reads
    assert out["upstream"] == {spec.name: sorted(spec.after) for spec in STAGES}


@needs_airflow
@pytest.mark.slow
def test_dag_test_runs_the_whole_pipeline(tiny_run_config, tmp_path, s3_bucket):
    """Every task of the DAG, with the run folder on an object store (the S3 test server): the curation stages
    write there, train and eval into the config's local folder."""
    from pipeline import fs

    out_dir = f"{s3_bucket}/run"
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({**tiny_run_config(out_dir), "local_dir": str(tmp_path / "local")}), encoding="utf-8"
    )
    env = _airflow_env(tmp_path)
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(DAG_FILE)!r}); from ccgpt_pipeline import ccgpt_pipeline; "
        f"r = ccgpt_pipeline().test(run_conf={{'config': {str(config)!r}}}); print('STATE', r.state)"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0 and "STATE success" in res.stdout, (res.stdout[-3000:], res.stderr[-3000:])
    assert verify_shards(f"{out_dir}/shards")
    assert (tmp_path / "local" / "train" / "stats.json").exists() and (tmp_path / "local" / "report.html").exists()
    for stage in ("curate", "quality", "dedup", "shards"):
        stats = StageStats.from_dict(fs.read_json(f"{out_dir}/{stage}/stats.json"))
        assert stats.read == stats.kept + sum(stats.dropped.values())
