"""Getting a pinned artefact into the download cache: one downloader per registry, a digest check, and an index
of what each artefact resolved to so reruns reuse the cache without asking the registry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.sample.pins import Artefact, SampleError
from schemas.atomic import atomic_write_text
from schemas.manifest import file_sha256

log = logging.getLogger("ccgpt.sample")


@dataclass
class Fetched:
    """An artefact as it lies in the cache: the version and digest actually obtained."""

    artefact: Artefact
    path: str
    version: str
    sha256: str

    def provenance(self) -> dict[str, Any]:
        return {
            "registry": self.artefact.registry,
            "package": self.artefact.package,
            "version": self.version,
            "pinned_version": self.artefact.version,
            "artefact": os.path.basename(self.path),
            "sha256": self.sha256,
        }


def _download_pypi(a: Artefact, dest: str) -> str:
    """``pip download`` the sdist: pip honours the user's index configuration (mirrors, proxies, certs)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{a.package}=={a.version}",
            "-d",
            dest,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    hits = [f for f in os.listdir(dest) if f.startswith(f"{a.package}-{a.version}") and f.endswith(".tar.gz")]
    if not hits:
        raise SampleError(f"pip download {a.package}=={a.version} produced no sdist in {dest}")
    return os.path.join(dest, hits[0])


def _download_npm(a: Artefact, dest: str) -> str:
    """Fetch the tarball ``npm pack`` would fetch, straight from the registry: no Node.js needed."""
    registry = (
        os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org/"
    )
    url = f"{registry.rstrip('/')}/{a.package}/-/{a.package}-{a.version}.tgz"
    path = os.path.join(dest, f"{a.package}-{a.version}.tgz")
    with urllib.request.urlopen(url, timeout=60) as resp, open(path + ".part", "wb") as fh:
        shutil.copyfileobj(resp, fh)
    os.replace(path + ".part", path)
    return path


def _download_debian(a: Artefact, dest: str) -> str:
    """``apt-get download`` the pinned version, or the current one when the archive has moved on.

    apt verifies what it downloads against the signed archive index, so a version we did not pin is still
    authenticated; we record its sha256.
    """
    if shutil.which("apt-get") is None:
        raise SampleError("apt-get not found (Debian packages need a Debian/Ubuntu machine)")

    def attempt(spec: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["apt-get", "download", "-q", spec], cwd=dest, capture_output=True, text=True, timeout=300
        )

    before = set(os.listdir(dest))
    res = attempt(f"{a.package}={a.version}")
    if res.returncode != 0:
        log.warning(
            "sample: %s=%s not in the archive (%s); taking the current version",
            a.package,
            a.version,
            res.stderr.strip().splitlines()[-1:] or "",
        )
        res = attempt(a.package)
        if res.returncode != 0:
            hint = " (run 'apt-get update' first?)" if "Unable to locate" in res.stderr else ""
            raise SampleError(f"apt-get download {a.package} failed{hint}: {res.stderr.strip()[-300:]}")
    new = sorted(f for f in set(os.listdir(dest)) - before if f.endswith(".deb"))
    if not new:  # already there under the same name (a rerun that lost its record)
        new = sorted(f for f in os.listdir(dest) if f.startswith(a.package + "_") and f.endswith(".deb"))
    if not new:
        raise SampleError(f"apt-get download {a.package} left no .deb in {dest}")
    return os.path.join(dest, new[-1])


_DOWNLOADERS: dict[str, Callable[[Artefact, str], str]] = {
    "pypi": _download_pypi,
    "npm": _download_npm,
    "debian": _download_debian,
}


def _version_of(a: Artefact, path: str) -> str:
    if a.registry == "debian":  # file name: package_version_arch.deb, version with ':' escaped as %3a
        return os.path.basename(path).split("_")[1].replace("%3a", ":")
    return a.version


def fetch(a: Artefact, cache_dir: str, offline: bool = False) -> Fetched:
    """The artefact from the cache, downloading it first if needed; a pinned digest must match.

    ``cache_dir/fetched.json`` remembers which file each artefact resolved to, so a rerun reuses it without
    asking the registry (and keeps using the same Debian version even after the archive moves on).
    """
    dest = os.path.join(cache_dir, a.registry)
    os.makedirs(dest, exist_ok=True)
    index_path = os.path.join(cache_dir, "fetched.json")
    index: dict[str, Any] = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
    known = index.get(a.key)
    if known and os.path.exists(os.path.join(dest, known["file"])):
        path = os.path.join(dest, known["file"])
        digest = file_sha256(path)
        if digest != known["sha256"]:
            raise SampleError(f"{path}: cached file changed (sha256 {digest}, recorded {known['sha256']}); delete it")
        return Fetched(a, path, known["version"], digest)
    if offline:
        raise SampleError(f"not in the cache {cache_dir} (offline)")
    path = _DOWNLOADERS[a.registry](a, dest)
    digest = file_sha256(path)
    version = _version_of(a, path)
    if a.sha256 and version == a.version and digest != a.sha256:
        os.remove(path)
        raise SampleError(f"{a.key}: downloaded sha256 {digest} does not match the pinned {a.sha256}")
    index[a.key] = {"file": os.path.basename(path), "version": version, "sha256": digest}
    atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True))
    return Fetched(a, path, version, digest)
