"""Deployable workers: the curate and train extras stay apart, and remote runners get ccgpt's wheel.

A Dataflow worker running curation must not install torch, and a training node must not need Beam: the
dependency lists are checked against what each side's modules import, and a curation stage is run in a fresh
interpreter where importing torch fails.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from functools import cache
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from pipeline.deploy import needs_staging, staging_args, worker_requirements

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# third-party imports that are optional on their side: guarded where they are used, each with its own extra
OPTIONAL = {"train": {"transformers", "triton", "tensorboard", "lm_eval"}, "pipeline": set()}


def _project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["project"]


def _names(specs: list[str]) -> set[str]:
    return {Requirement(s).name.lower().replace("_", "-") for s in specs}


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found.update(a.name.split(".")[0] for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"pipeline", "train", "schemas", "dags", "__future__"}


@cache
def _providers() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # a walk over every installed distribution: once per session


def _distributions(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in _providers().get(module, [module])}


@pytest.mark.parametrize(("package", "extra"), [("pipeline", "curate"), ("train", "train"), ("schemas", None)])
def test_each_side_declares_what_it_imports(package, extra):
    project = _project()
    declared = _names(project["dependencies"]) | (_names(project["optional-dependencies"][extra]) if extra else set())
    missing = {
        m for m in _imports(package) - OPTIONAL.get(package, set()) if not _distributions(m) & declared
    }  # a module is covered when any distribution that provides it is declared
    assert not missing, f"{package}/ imports {sorted(missing)}, which neither the base nor the {extra} extra installs"


def test_curation_workers_do_not_install_torch_and_trainers_do_not_install_beam():
    extras = _project()["optional-dependencies"]
    base = _names(_project()["dependencies"])
    assert "torch" not in base | _names(extras["curate"])
    assert "apache-beam" not in base | _names(extras["train"])
    assert not any(Requirement(r).name == "torch" for r in worker_requirements())
    assert any(Requirement(r).name == "apache-beam" for r in worker_requirements())


_NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is not installed on a curation worker")
sys.meta_path.insert(0, NoTorch())
from pipeline.curate import CurateConfig, run_curate
from pipeline.runner import RunnerConfig
import pipeline.run, pipeline.dedup.stage, pipeline.quality.filter, pipeline.mix.stage, pipeline.report
stats = run_curate([sys.argv[1]], sys.argv[2], CurateConfig(), RunnerConfig(num_workers=1, progress=False))
assert stats.kept > 0, stats
assert "torch" not in sys.modules
print("curated", stats.read, stats.kept)
"""


def test_curation_runs_where_torch_cannot_be_imported(tmp_path, shared_data):
    warc = os.path.join(shared_data, "warc", "pywb-sample", "iana.warc.gz")
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, warc, str(tmp_path / "curate")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "curated" in done.stdout


def test_local_runs_and_user_managed_workers_ship_nothing():
    assert not needs_staging(["--runner=FlinkRunner", "--environment_type=LOOPBACK"])
    assert not needs_staging(["--runner=SparkRunner", "--environment_type", "EXTERNAL"])
    assert not needs_staging(["--runner=DataflowRunner", "--setup_file=./setup.py"])
    assert not needs_staging(["--runner=DataflowRunner", "--sdk_container_image=gcr.io/p/ccgpt:1"])
    assert needs_staging(["--runner=DataflowRunner", "--project=p"])
    assert needs_staging(["--runner=FlinkRunner", "--environment_type=DOCKER"])


@pytest.mark.slow
def test_remote_runner_gets_ccgpt_wheel_and_curate_requirements(tmp_path):
    args = staging_args(["--runner=DataflowRunner"], cache_dir=str(tmp_path))
    wheel = next(a.split("=", 1)[1] for a in args if a.startswith("--extra_package="))
    requirements = next(a.split("=", 1)[1] for a in args if a.startswith("--requirements_file="))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "pipeline/curate.py" in names and "schemas/documents.py" in names
    assert "schemas/task_files/blimp.yaml" in names  # tasks are found by name from an installed wheel
    assert "Name: ccgpt" in meta
    with open(requirements, encoding="utf-8") as fh:
        reqs = [Requirement(line) for line in fh.read().split()]
    assert {"apache-beam", "fastwarc", "datatrove"} <= {r.name for r in reqs}
    assert "torch" not in {r.name for r in reqs}
    # the same source tree reuses its wheel
    assert staging_args(["--runner=DataflowRunner"], cache_dir=str(tmp_path))[0] == args[0]
