"""Cross-fitting: which fold a document is in, and which fold models a model folder holds.

A run's negatives are the raw crawl and the filter then scores the same crawl documents. fastText memorises
its training negatives, so every document it trained on scores near 0 and the Pareto rule keeps ~1 % of the
crawl, reference-like pages included. GPT-3 trained on a small sample of a huge crawl, so nearly every
document it scored was unseen; at small scale the same holds only if the classifier never scores a document
it was trained on. ``folds=K`` assigns each negative to fold :func:`fold_of` (a hash of its id) and trains
one model per fold without that fold's negatives; the filter scores a document of fold k with
``model-fold{k}.bin``, which never saw it.

This module is the contract between training and the filter, which run in different processes and
machines: both must put a document in the same fold, and the filter finds the fold models from the
``config.json`` training wrote.
"""

from __future__ import annotations

import os
from typing import Any

import xxhash

from pipeline import fs
from pipeline.quality.model import CONFIG_FILE, resolve_model_path
from pipeline.quality.text import normalize_text

FOLD_MODEL_FILE = "model-fold{k}.bin"
FOLD_HASH = "xxh64(b'fold\\x00' + key, seed) mod folds; key = id, else 'text:' + xxh64 of the normalised text"


def fold_key(doc_id: str | None, text: str | None) -> str:
    """What decides a document's fold: its id, or for a record without one (plain text blocks) its text.

    The filter stage only scores documents with ids, and a crawl document keeps its id from ``curate/raw``
    (the negatives) to ``curate/`` (what is filtered), so the id is what must agree at train and filter time.
    The text fallback hashes the normalised text, so whitespace or case differences do not move a document.
    """
    if doc_id:
        return str(doc_id)
    return "text:" + xxhash.xxh64_hexdigest(normalize_text(text or "").encode("utf-8"))


def fold_of(key: str, seed: int, folds: int) -> int:
    """The cross-fitting fold in ``[0, folds)`` of a document key (see :func:`fold_key`; an id at filter time).

    A pure, stable hash of (key, training seed), not Python's ``hash`` (salted per process) nor a random
    generator: training and the filter run in different processes, on different machines, and must agree.
    """
    if folds <= 1:
        return 0
    h = xxhash.xxh64_intdigest(f"fold\x00{key}".encode(), seed=seed & 0xFFFFFFFFFFFFFFFF)
    return h % folds


def fold_model_file(k: int) -> str:
    """The file name of fold k's model inside a model folder."""
    return FOLD_MODEL_FILE.format(k=k)


def _read_model_config(folder: str) -> dict[str, Any] | None:
    """The ``config.json`` training wrote beside the model, local or on an object store; None when absent."""
    path = fs.join(folder, CONFIG_FILE)
    return fs.read_json(path) if fs.exists(path) else None


def cross_fit_models(model_path: str) -> tuple[list[str], int]:
    """The fold model paths beside ``model_path`` (a model.bin or its folder) and their fold seed.

    Read from the folder's ``config.json``; ``([], 0)`` when the model was trained without folds or has no
    ``config.json`` beside it (a model file copied on its own is scored as a single model).
    """
    path = resolve_model_path(model_path)
    folder = os.path.dirname(path)  # a URL's folder too: its separator is "/"
    config = _read_model_config(folder)
    if not config or int(config.get("folds", 1)) < 2:
        return [], 0
    files = config.get("fold_models") or [fold_model_file(k) for k in range(int(config["folds"]))]
    if len(files) != int(config["folds"]):
        raise ValueError(f"{folder}/{CONFIG_FILE}: {config['folds']} folds but fold models {files}")
    return [fs.join(folder, f) for f in files], int(config.get("fold_seed", config.get("config", {}).get("seed", 0)))
