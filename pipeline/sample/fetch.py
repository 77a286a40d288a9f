"""Getting a pinned artefact into the download cache: one downloader per registry, a digest check, and an index
of what each artefact resolved to so reruns reuse the cache without asking the registry.

Only pinned versions are taken: the artefact's own, then its fallback's (see ``pins``). A registry that no
longer has any of them stops the build (``PinMissing``) instead of handing over another version.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline import fs
from pipeline.fs import atomic_write_text
from pipeline.sample.pins import Artefact, PinMissing, SampleError

log = logging.getLogger("ccgpt.sample")


@dataclass
class Fetched:
    """An artefact as it lies in the cache: the pinned version actually used (the artefact's own or its
    fallback's) and its digest."""

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
            "fallback": self.version != self.artefact.version,
            "artefact": os.path.basename(self.path),
            "sha256": self.sha256,
        }


def _download_pypi(a: Artefact, dest: str) -> str:
    """``pip download`` the sdist: pip honours the user's index configuration (mirrors, proxies, certs)."""
    res = subprocess.run(
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
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        # "(from versions: 1.0, 2.0)": the index answered without this version; "(from versions: none)": it
        # did not answer, or has no such package
        if "No matching distribution" in res.stderr and "(from versions: none)" not in res.stderr:
            raise PinMissing(f"PyPI has no {a.package}=={a.version}")
        raise SampleError(f"pip download {a.package}=={a.version} failed: {res.stderr.strip()[-300:]}")
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
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(path + ".part", "wb") as fh:
            shutil.copyfileobj(resp, fh)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise PinMissing(f"the npm registry has no {a.package}@{a.version} ({url})") from e
        raise
    os.replace(path + ".part", path)
    return path


def _download_debian(a: Artefact, dest: str) -> str:
    """``apt-get download`` the pinned version (apt checks it against the signed archive index)."""
    if shutil.which("apt-get") is None:
        raise SampleError("apt-get not found (Debian packages need a Debian/Ubuntu machine)")
    before = set(os.listdir(dest))
    res = subprocess.run(
        ["apt-get", "download", "-q", f"{a.package}={a.version}"], cwd=dest, capture_output=True, text=True, timeout=300
    )
    if res.returncode != 0:
        if "Unable to locate" in res.stderr:
            raise SampleError(f"apt-get download {a.package}: no such package (run 'apt-get update' first?)")
        if "was not found" in res.stderr:  # E: Version 'V' for 'P' was not found
            raise PinMissing(f"the Debian archive apt knows has no {a.package}={a.version}")
        raise SampleError(f"apt-get download {a.package}={a.version} failed: {res.stderr.strip()[-300:]}")
    new = sorted(f for f in set(os.listdir(dest)) - before if f.endswith(".deb"))
    if not new:  # already there under the same name (a rerun that lost its record)
        name = f"{a.package}_{a.version.replace(':', '%3a')}_"
        new = sorted(f for f in os.listdir(dest) if f.startswith(name) and f.endswith(".deb"))
    if not new:
        raise SampleError(f"apt-get download {a.package}={a.version} left no .deb in {dest}")
    return os.path.join(dest, new[-1])


_DOWNLOADERS: dict[str, Callable[[Artefact, str], str]] = {
    "pypi": _download_pypi,
    "npm": _download_npm,
    "debian": _download_debian,
}


def fetch(a: Artefact, cache_dir: str, offline: bool = False) -> Fetched:
    """The artefact from the cache, downloading it first if needed: its pinned version, or its fallback's
    when the registry no longer has it; the download's digest must equal that version's pin.

    ``cache_dir/fetched.json`` remembers which file each pinned version resolved to, so a rerun reuses it
    without asking the registry (and keeps building the same sample after the archive moves on). Raises
    ``PinMissing`` when the registry has none of the pinned versions.
    """
    dest = os.path.join(cache_dir, a.registry)
    os.makedirs(dest, exist_ok=True)
    index_path = os.path.join(cache_dir, "fetched.json")
    index: dict[str, Any] = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
    for pin in a.candidates():
        known = index.get(pin.key)
        if known and known.get("version") == pin.version and os.path.exists(os.path.join(dest, known["file"])):
            path = os.path.join(dest, known["file"])
            digest = fs.sha256(path)
            if digest != known["sha256"]:
                raise SampleError(
                    f"{path}: cached file changed (sha256 {digest}, recorded {known['sha256']}); delete it"
                )
            return Fetched(a, path, pin.version, digest)
    if offline:
        raise SampleError(f"not in the cache {cache_dir} (offline)")
    missing = []
    for pin in a.candidates():
        try:
            path = _DOWNLOADERS[pin.registry](pin, dest)
        except PinMissing as e:
            missing.append(str(e))
            continue
        digest = fs.sha256(path)
        if digest != pin.sha256:
            os.remove(path)
            raise SampleError(f"{pin.key}: downloaded sha256 {digest} does not match the pinned {pin.sha256}")
        if pin is not a:
            log.warning("sample: %s is gone from the registry; using the pinned fallback %s", a.key, pin.key)
        index[pin.key] = {"file": os.path.basename(path), "version": pin.version, "sha256": digest}
        atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True))
        return Fetched(a, path, pin.version, digest)
    pins = ", ".join(p.key for p in a.candidates())
    raise PinMissing(
        f"none of the pinned versions of {a.package} can be downloaded ({'; '.join(missing)}). The sample takes "
        f"pinned versions only: if the package lists are old, refresh them (apt-get update); otherwise add the "
        f"version the registry now has, with its sha256, to pipeline/sample/pins.py. Pins tried: {pins}"
    )
