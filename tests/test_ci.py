"""A CI run cannot pass by skipping: what a test needs (``../shared/data``, Chromium) skips it outside CI and
fails it in CI (``CI`` set)."""

from __future__ import annotations

import conftest
import pytest


def test_missing_requirement_skips_outside_ci_and_fails_in_ci(unavailable, monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="thing missing"):
        unavailable("thing missing")
    monkeypatch.setattr(conftest, "IN_CI", True)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="thing missing; CI=true: required in CI"):
        unavailable("thing missing")


def test_shared_data_fails_in_ci_when_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DATA", str(tmp_path / "absent"))
    monkeypatch.setattr(conftest, "IN_CI", True)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="real test data not found at .*absent"):
        conftest.shared_data_dir()
