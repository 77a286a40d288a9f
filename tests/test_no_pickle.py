"""No untrusted pickle on the data path: every loader of files a user may be handed is safe by construction.

Data files (WARC, Parquet, Arrow, JSON, checkpoints) can come from anywhere; unpickling one runs arbitrary
code. This scans the shipped code for the calls that unpickle and allows only their safe forms. (Beam
pickles ccgpt's own DoFns to ship them to workers: that is code, not data, and never read from input files.)
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipeline", "train", "schemas", "dags")
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _sources():
    for pkg in PACKAGES:
        for root, _, files in os.walk(os.path.join(REPO, pkg)):
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(root, f)
                    yield os.path.relpath(path, REPO), ast.parse(open(path, encoding="utf-8").read(), path)


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _problems(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            attr = node.func.attr
            if owner == "torch" and attr == "load":
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append(f"line {node.lineno}: torch.load without weights_only=True")
            if owner in ("np", "numpy") and attr == "load":
                ap = _kw(node, "allow_pickle")
                if isinstance(ap, ast.Constant) and ap.value is True:
                    found.append(f"line {node.lineno}: np.load(allow_pickle=True)")
            if owner == "yaml" and attr in ("load", "unsafe_load", "full_load"):
                found.append(f"line {node.lineno}: yaml.{attr} (use yaml.safe_load)")
    return found


@pytest.mark.parametrize("rel,tree", list(_sources()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_unsafe_deserialisation(rel, tree):
    assert not _problems(tree), f"{rel}: {_problems(tree)}"


def test_the_scan_catches_unsafe_calls():
    bad = ast.parse(
        "import pickle\nimport torch, numpy as np, yaml\n"
        "torch.load('c.pt')\ntorch.load('c.pt', weights_only=False)\n"
        "np.load('a.npy', allow_pickle=True)\nyaml.load(open('x'))\n"
    )
    assert len(_problems(bad)) == 5
    good = ast.parse(
        "import torch, yaml\ntorch.load('c.pt', map_location='cpu', weights_only=True)\nyaml.safe_load('a: 1')\n"
    )
    assert _problems(good) == []
