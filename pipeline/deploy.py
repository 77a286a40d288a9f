"""What a remote runner's workers install: ccgpt's own wheel plus the ``curate`` extra's requirements.

On Dataflow, or Flink and Spark with Beam's default (container) environment, the workers start from a bare
Beam SDK image: they can unpickle ccgpt's transforms only once ccgpt and its curation libraries are
installed there. :func:`staging_args` builds ccgpt's wheel from the source tree (once per code version) and
passes it with ``--extra_package``, and writes the ``curate`` extra's requirements (never torch) to a file
passed with ``--requirements_file``, Beam's documented way to ship a package and its dependencies.

Nothing is added when the user manages the workers' software already (``--setup_file``, ``--extra_package``,
``--requirements_file``, ``--sdk_container_image``) or when the workers run in an environment that already
holds ccgpt (``--environment_type`` LOOPBACK, EXTERNAL or PROCESS: the driver itself, or worker pools the user
started from an installed ccgpt).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

from packaging.requirements import Requirement

DIST = "ccgpt"
WORKER_EXTRA = "curate"
USER_MANAGED = ("--setup_file", "--extra_package", "--extra_packages", "--requirements_file", "--sdk_container_image")
PREINSTALLED_ENVIRONMENTS = ("LOOPBACK", "EXTERNAL", "PROCESS")
SOURCE_PACKAGES = ("pipeline", "schemas", "train", "dags")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

log = logging.getLogger(__name__)


class DeployError(RuntimeError):
    """ccgpt cannot be packaged for remote workers (no source tree, or the wheel build failed)."""


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in ``args`` (the last one given), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def needs_staging(args: list[str]) -> bool:
    """Whether the workers of a remote run with these pipeline options need ccgpt shipped to them."""
    if any(_option(args, name) is not None for name in USER_MANAGED):
        return False
    return (_option(args, "--environment_type") or "DOCKER").upper() not in PREINSTALLED_ENVIRONMENTS


def worker_requirements() -> list[str]:
    """ccgpt's base requirements plus the ``curate`` extra's, without markers: what a curation worker needs."""
    out = []
    for spec in metadata.requires(DIST) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": WORKER_EXTRA}):
            req.marker = None
            out.append(str(req))
    return sorted(out)


def _source_hash() -> str:
    """Hash of every file the wheel is built from (code, the shipped task files, pyproject.toml)."""
    h = hashlib.sha256()
    for folder in SOURCE_PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(_ROOT, folder)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if not name.endswith(".pyc"):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, _ROOT).encode())
                    with open(path, "rb") as fh:
                        h.update(fh.read())
    with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as fh:
        h.update(fh.read())
    return h.hexdigest()[:16]


def build_wheel(cache_dir: str | None = None) -> str:
    """ccgpt's wheel, built from the source tree into a cache folder keyed by the source's hash (reused)."""
    if not os.path.exists(os.path.join(_ROOT, "pyproject.toml")):
        raise DeployError(
            "ccgpt is not installed from a source tree, so its wheel cannot be built for the workers: pass "
            "--beam-option=--extra_package=PATH_TO_CCGPT_WHEEL (or --sdk_container_image with ccgpt installed)"
        )
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "ccgpt", "wheels")
    folder = os.path.join(cache_dir, _source_hash())
    wheels = sorted(f for f in os.listdir(folder) if f.endswith(".whl")) if os.path.isdir(folder) else []
    if not wheels:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ccgpt-wheel-") as src:  # setuptools writes build/ beside the source
            for name in (*SOURCE_PACKAGES, "pyproject.toml", "README.md"):
                path = os.path.join(_ROOT, name)
                if os.path.isdir(path):
                    shutil.copytree(path, os.path.join(src, name), ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(path, src)
            cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", folder]
            done = subprocess.run([*cmd, src], capture_output=True, text=True)
        wheels = sorted(f for f in os.listdir(folder) if f.endswith(".whl"))
        if done.returncode != 0 or not wheels:
            raise DeployError(f"building ccgpt's wheel for the workers failed:\n{done.stderr.strip()[-2000:]}")
    return os.path.join(folder, wheels[-1])


def staging_args(args: list[str], cache_dir: str | None = None) -> list[str]:
    """The pipeline options that ship ccgpt to a remote runner's workers (none when not needed)."""
    if not needs_staging(args):
        return []
    wheel = build_wheel(cache_dir)
    requirements = os.path.join(os.path.dirname(wheel), "worker-requirements.txt")
    with open(requirements, "w", encoding="utf-8") as fh:
        fh.write("\n".join(worker_requirements()) + "\n")
    log.info("workers install %s and %s", os.path.basename(wheel), requirements)
    return [f"--extra_package={wheel}", f"--requirements_file={requirements}"]
