"""The sample takes pinned versions only: the pin, else its pinned fallback, else a clear stop (no network here:
the registry is a fake downloader)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pipeline.sample import fetch as fetch_module
from pipeline.sample.fetch import fetch
from pipeline.sample.pins import PYDOC, Artefact, PinMissing, SampleError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


OLD = Artefact("debian", "fake-doc", "1.0-1", _sha(b"deb 1.0-1"))
PIN = Artefact("debian", "fake-doc", "1.0-2", _sha(b"deb 1.0-2"), fallback=OLD)


def _registry(monkeypatch, has: dict[str, bytes]) -> list[str]:
    """A fake Debian archive holding ``has`` (version -> .deb bytes); returns the versions asked for."""
    asked = []

    def download(a: Artefact, dest: str) -> str:
        asked.append(a.version)
        if a.version not in has:
            raise PinMissing(f"the fake archive has no {a.package}={a.version}")
        path = os.path.join(dest, f"{a.package}_{a.version}_all.deb")
        with open(path, "wb") as fh:
            fh.write(has[a.version])
        return path

    monkeypatch.setitem(fetch_module._DOWNLOADERS, "debian", download)
    return asked


def test_the_pinned_version_when_the_registry_has_it(tmp_path, monkeypatch):
    asked = _registry(monkeypatch, {"1.0-2": b"deb 1.0-2", "1.0-1": b"deb 1.0-1", "1.0-3": b"deb 1.0-3"})
    got = fetch(PIN, str(tmp_path))
    assert asked == ["1.0-2"] and got.version == "1.0-2" and got.sha256 == PIN.sha256
    assert got.provenance()["fallback"] is False


def test_the_pinned_fallback_when_the_pin_is_gone_and_it_is_remembered(tmp_path, monkeypatch):
    asked = _registry(monkeypatch, {"1.0-1": b"deb 1.0-1", "1.0-3": b"deb 1.0-3"})
    got = fetch(PIN, str(tmp_path))
    assert asked == ["1.0-2", "1.0-1"] and got.version == "1.0-1" and got.sha256 == OLD.sha256
    prov = got.provenance()
    assert prov["version"] == "1.0-1" and prov["pinned_version"] == "1.0-2" and prov["fallback"] is True
    assert prov["sha256"] == OLD.sha256 and prov["artefact"] == "fake-doc_1.0-1_all.deb"
    # a rerun takes the cached fallback without asking the registry, offline too
    index = json.load(open(tmp_path / "fetched.json"))
    assert index[OLD.key]["version"] == "1.0-1" and PIN.key not in index
    assert fetch(PIN, str(tmp_path), offline=True).version == "1.0-1" and asked == ["1.0-2", "1.0-1"]


def test_no_pinned_version_left_stops_naming_the_pins(tmp_path, monkeypatch):
    _registry(monkeypatch, {"1.0-3": b"deb 1.0-3"})  # only a version nobody pinned
    with pytest.raises(PinMissing) as exc:
        fetch(PIN, str(tmp_path))
    message = str(exc.value)
    assert PIN.key in message and OLD.key in message and "pipeline/sample/pins.py" in message
    assert not [f for f in os.listdir(tmp_path / "debian") if f.endswith(".deb")]


def test_a_fallback_that_does_not_match_its_pin_is_refused(tmp_path, monkeypatch):
    _registry(monkeypatch, {"1.0-1": b"tampered"})
    with pytest.raises(SampleError, match="does not match the pinned"):
        fetch(PIN, str(tmp_path))
    assert not os.path.exists(tmp_path / "debian" / "fake-doc_1.0-1_all.deb")


def test_a_cache_entry_of_an_unpinned_version_is_not_used(tmp_path, monkeypatch):
    """Caches written before pins were enforced may hold the archive's "current" version under the pin's key."""
    os.makedirs(tmp_path / "debian")
    (tmp_path / "debian" / "fake-doc_1.0-3_all.deb").write_bytes(b"deb 1.0-3")
    entry = {"file": "fake-doc_1.0-3_all.deb", "version": "1.0-3", "sha256": _sha(b"deb 1.0-3")}
    (tmp_path / "fetched.json").write_text(json.dumps({PIN.key: entry}))
    _registry(monkeypatch, {"1.0-2": b"deb 1.0-2"})
    assert fetch(PIN, str(tmp_path)).version == "1.0-2"


def test_every_pin_has_a_digest_and_fallbacks_are_the_same_package():
    from pipeline.sample.build import _BUILDERS

    for artefact, _ in _BUILDERS:
        for pin in artefact.candidates():
            assert len(pin.sha256) == 64 and pin.package == artefact.package and pin.registry == artefact.registry
    assert PYDOC.fallback is not None and PYDOC.fallback.version != PYDOC.version
