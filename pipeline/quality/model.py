"""The trained quality model: find it, check it, load it, score text with it.

Bad input never gets a default score: a text that cannot be scored is ``None`` with a ``reason`` from
:func:`score_documents` / :func:`score_paths`, and a missing, truncated or foreign model file (one trained
with other labels) raises :class:`QualityError` naming the file before any document is read. fastText
itself accepts a truncated file and scores a foreign one with 0.0, which is why the file is checked here.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from pipeline import fs
from pipeline.commit import verified
from pipeline.quality.text import DEFAULT_MAX_CHARS, iter_records, normalize_text, unscorable_reason

HQ_LABEL = "__label__hq"  # reference text ("high quality")
CC_LABEL = "__label__cc"  # raw crawl
MODEL_FILE = "model.bin"
CONFIG_FILE = "config.json"  # what training wrote beside the model: its config, labels and cross-fitting folds


class QualityError(ValueError):
    """A quality model that cannot be used: missing, unreadable, truncated, or trained for other labels."""


def resolve_model_path(model_path: str) -> str:
    """Accept the model file itself or the folder :func:`train_quality` wrote (local or on an object store)."""
    if model_path.endswith("/") or fs.is_dir(model_path):
        return fs.join(model_path, MODEL_FILE)
    return model_path


def fasttext_scores(model: Any, lines: list[str]) -> list[float]:
    """P(high quality) for already-normalised lines: the softmax probability of :data:`HQ_LABEL`.

    fastText adds a tiny epsilon inside its log-probabilities, so values are clipped to [0, 1].
    """
    if not lines:
        return []
    labels, probs = model.predict(lines, k=-1, threshold=0.0)
    out = []
    for labs, ps in zip(labels, probs):
        p = 0.0
        for lab, pr in zip(labs, ps):
            if lab == HQ_LABEL:
                p = float(pr)
                break
        out.append(min(1.0, max(0.0, p)))
    return out


FASTTEXT_MAGIC = 793712314  # fastText's file magic (int32) followed by its format version
FASTTEXT_VERSION = 12
_SUPERVISED = 3  # fastText's model_name enum: cbow 1, skipgram 2, supervised 3


def inspect_model(path: str) -> dict[str, Any]:
    """Read a local fastText ``.bin`` file's structure without loading it; :class:`QualityError` if unusable.

    fastText itself loads a truncated file without complaint (the missing weights are whatever memory held)
    and only rejects a wrong magic number, so the file is walked here: header, arguments, dictionary, and
    for an unquantised model the exact byte size of both weight matrices. Returns ``labels``, ``dim``,
    ``words``, ``quantized`` and ``bytes``. Labels are checked by :func:`check_model`.
    """
    try:
        data = fs.read_bytes(path)
    except FileNotFoundError:
        raise QualityError(f"quality model not found: {path}") from None
    except OSError as exc:
        raise QualityError(f"quality model {path} cannot be read: {exc}") from None

    def bad(why: str) -> QualityError:
        return QualityError(f"quality model {path} is not a usable fastText model: {why}")

    try:
        magic, version = struct.unpack_from("<ii", data, 0)
        if magic != FASTTEXT_MAGIC:
            raise bad("wrong magic number (not a fastText .bin file)")
        if version != FASTTEXT_VERSION:
            raise bad(f"fastText file version {version}, expected {FASTTEXT_VERSION}")
        # Args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate (int32), t (double)
        args = struct.unpack_from("<12id", data, 8)
        dim, model_kind = args[0], args[7]
        if model_kind != _SUPERVISED:
            raise bad("an unsupervised (word vector) model, not a classifier")
        off = 8 + struct.calcsize("<12id")
        n_entries, n_words, n_labels = struct.unpack_from("<iii", data, off)
        _, prune_size = struct.unpack_from("<qq", data, off + 12)
        off += 28
        if n_entries < 0 or n_words < 0 or n_labels < 0 or n_words + n_labels != n_entries:
            raise bad("corrupt dictionary header")
        labels = []
        for _ in range(n_entries):
            end = data.index(b"\0", off)
            word = data[off:end]
            (kind,) = struct.unpack_from("<b", data, end + 9)  # after the int64 count
            if kind == 1:
                labels.append(word.decode("utf-8", errors="replace"))
            off = end + 10
        off += 8 * max(0, prune_size)
        quantized = bool(data[off])
        if not quantized:
            for _ in range(2):  # input matrix, then (after its own quantisation flag) the output matrix
                rows, cols = struct.unpack_from("<qq", data, off + 1)
                if rows < 0 or cols != dim:
                    raise bad("corrupt weight matrix header")
                off += 1 + 16 + 4 * rows * cols
            if off != len(data):
                raise bad(f"{len(data)} bytes where its header describes {off} (truncated or damaged)")
            if n_labels and rows != n_labels:
                raise bad("output matrix does not match the labels")
    except (struct.error, ValueError, IndexError) as exc:
        if isinstance(exc, QualityError):
            raise
        raise bad("truncated or damaged") from None
    return {"labels": labels, "dim": dim, "words": n_words, "quantized": quantized, "bytes": len(data)}


def check_model(path: str) -> dict[str, Any]:
    """:func:`inspect_model` plus the labels this package trains: ``__label__hq`` and ``__label__cc``, only.

    A model trained for something else (a language or topic classifier) would score every document with a
    probability of a label it does not have: 0.0, a silent default. This refuses it instead.
    """
    info = inspect_model(path)
    labels = info["labels"]
    if sorted(labels) != sorted([HQ_LABEL, CC_LABEL]):
        shown = ", ".join(labels[:6]) + (f", ... ({len(labels)} labels)" if len(labels) > 6 else "")
        raise QualityError(
            f"quality model {path} was trained with labels [{shown}], not [{HQ_LABEL}, {CC_LABEL}]"
            " (train it with `ccgpt quality train`)"
        )
    return info


def _load_local(path: str) -> Any:
    import fasttext

    check_model(path)
    try:
        return fasttext.load_model(path)
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise QualityError(f"quality model {path} cannot be loaded: {exc}") from None


def validate_model(model_path: str) -> dict[str, Any]:
    """Check a model (local or on any Beam filesystem) without loading it; :class:`QualityError` if unusable."""
    return _on_local_copy(resolve_model_path(model_path), check_model)


def _on_local_copy(path: str, fn: Any) -> Any:
    """``fn(local_path)`` for a model anywhere: fastText reads only local files, so a model on an object store
    is downloaded to a temporary file first (:func:`pipeline.fs.local_copy`); errors name the original path,
    not the temporary copy."""
    if not fs.exists(path):
        raise QualityError(f"quality model not found: {path}")
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(fs.local_copy(path))
        except Exception as exc:  # any filesystem's own error type
            raise QualityError(f"quality model {path} cannot be read: {exc}") from None
        try:
            return fn(local)
        except QualityError as exc:
            raise QualityError(str(exc).replace(local, path)) from None


def load_model(model_path: str) -> Any:
    """Load a fastText model from a local path or any Beam filesystem (``gs://``, ``s3://``, ...).

    fastText only reads local files, so a remote model is copied to a temporary file first; that is what lets
    Dataflow or Flink workers run the filter with the model in object storage. The file is checked first
    (:func:`check_model`): a missing, damaged or foreign model raises :class:`QualityError` naming it, and one
    rewritten since its stage committed :class:`pipeline.commit.AlteredOutput` (:func:`pipeline.commit.verified`).
    """
    return _on_local_copy(verified(resolve_model_path(model_path)), _load_local)


@lru_cache(maxsize=4)
def _cached_model(path: str, mtime: float, size: int) -> Any:
    return load_model(path)


def _model_for(model_path: str) -> Any:
    """Load once per (path, file version): repeated calls from a CLI or notebook do not reload the model."""
    path = resolve_model_path(model_path)
    found = [] if fs.is_url(path) else fs.match(path)
    if not found:
        return load_model(path)  # remote, or missing: load_model says which
    return _cached_model(os.path.abspath(path), found[0].mtime, found[0].size)


def score_documents(
    model_path: str, texts: Iterable[str | None], max_chars: int = DEFAULT_MAX_CHARS
) -> list[float | None]:
    """P(high quality) for each text, with the same normalisation as training.

    A text that cannot be scored (empty, longer than ``max_chars``, not a string) gets ``None``, never a
    made-up number; :func:`unscorable_reason` says why. The model is checked before any text is read.
    """
    model = _model_for(model_path)
    lines: list[str | None] = []
    for text in texts:
        line = normalize_text(text) if unscorable_reason(text, max_chars) is None else ""
        lines.append(line or None)
    good = [line for line in lines if line is not None]
    it = iter(fasttext_scores(model, good))
    return [next(it) if line is not None else None for line in lines]


def score_paths(
    model_path: str, paths: list[str], batch_size: int = 1024, max_chars: int = DEFAULT_MAX_CHARS
) -> Iterator[dict[str, Any]]:
    """Score every record of the given inputs (same formats as training) for the command line.

    Yields ``{"path", "index", "id", "score"}`` per record in input order; ``id`` is None where the format
    has none (plain text blocks). A record that gets no score has ``score`` None and a ``reason``
    (``bad_record``, ``empty_text`` or ``too_long``).
    """
    model = _model_for(model_path)
    for path in paths:
        batch: list[tuple[int, str | None, str | None]] = []

        def flush(batch=batch, path=path) -> Iterator[dict[str, Any]]:
            reasons: dict[int, str] = {}
            good: list[tuple[int, str]] = []
            for i, _, t in batch:
                reason = unscorable_reason(t, max_chars)
                line = normalize_text(t) if reason is None else ""
                if reason is None and not line:
                    reason = "empty_text"
                if reason is None:
                    good.append((i, line))
                else:
                    reasons[i] = reason
            scores = dict(zip((i for i, _ in good), fasttext_scores(model, [line for _, line in good])))
            for i, d, _ in batch:
                rec: dict[str, Any] = {"path": path, "index": i, "id": d, "score": scores.get(i)}
                if i in reasons:
                    rec["reason"] = reasons[i]
                yield rec

        for index, (doc_id, text) in enumerate(iter_records(path)):
            batch.append((index, doc_id, text))
            if len(batch) >= batch_size:
                yield from flush(batch)
                batch = []
        yield from flush(batch)
