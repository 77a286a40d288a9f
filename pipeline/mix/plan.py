"""What the mix draws, decided before any row is packed: budgets, checks, held-out and drawn documents.

Per source: a validation set of whole documents chosen by a hash of (source, document id) -- independent of
the seed and the weights, so the same documents stay held out across mixes -- and the training tokens left;
from those, each source's share of the budget (``weight * budget``) and the documents drawn to fill it
(whole epochs by repetition, plus a seeded hash-ordered subset for the fractional epoch). The checks that
need no tokens (:func:`preflight`) run before the pipeline; those that need the token counts
(:func:`plan_problems`) run in it and again on the driver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from pipeline import fs
from pipeline.mix.config import MixConfig, MixError
from pipeline.mix.encode import Doc

# --------------------------------------------------------------------------------------------- budgets


def normalise_weights(weights: dict[str, float]) -> dict[str, float]:
    """Weights as shares summing to 1 (GPT-3's own table sums to 101 %)."""
    if not weights:
        raise MixError("mix weights are empty: give at least one source -> weight")
    bad = {s: w for s, w in weights.items() if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0}
    if bad:
        raise MixError(f"mix weights must be finite and >= 0, got {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise MixError("mix weights sum to 0")
    return {s: float(w) / total for s, w in sorted(weights.items())}


def plan_budget(available: dict[str, int], weights: dict[str, float], total_tokens: int) -> int:
    """The token budget to draw: ``total_tokens``, or when 0 the largest that repeats no source.

    Raises :class:`MixError` when a source with a positive weight has no tokens.
    """
    shares = normalise_weights(weights)
    missing = sorted(s for s, w in shares.items() if w > 0 and available.get(s, 0) <= 0)
    if missing:
        present = sorted(s for s, n in available.items() if n > 0)
        raise MixError(f"weighted source(s) {missing} have no documents in the inputs (sources present: {present})")
    if total_tokens > 0:
        return int(total_tokens)
    return int(min(available[s] / w for s, w in shares.items() if w > 0))


def source_target(source: str, available: dict[str, int], weights: dict[str, float], total_tokens: int) -> int:
    """Tokens to draw from ``source``: its normalised weight times the budget, rounded."""
    shares = normalise_weights(weights)
    return int(round(shares.get(source, 0.0) * plan_budget(available, weights, total_tokens)))


def _missing_message(missing: list[str], present: dict[str, int], what: str) -> str:
    return (
        f"weighted source(s) {missing} have no {what} in the inputs "
        f"(sources present: {sorted(s for s, n in present.items() if n > 0)})"
    )


def plan_problems(
    available: dict[str, int], weights: dict[str, float], total_tokens: int, seq_len: int, max_epochs: float = 0.0
) -> list[str]:
    """Why a mix cannot be met as asked, from the training tokens per source (empty list: it can).

    A weighted source with no tokens, a share of the budget smaller than one row (the source would get no
    row at all, a silently skewed mix), or a share needing more than ``max_epochs`` passes over the source.
    """
    shares = normalise_weights(weights)
    missing = sorted(s for s, w in shares.items() if w > 0 and available.get(s, 0) <= 0)
    if missing:
        return [_missing_message(missing, available, "documents")]
    budget = plan_budget(available, weights, total_tokens)
    width = seq_len + 1
    problems = []
    for s, w in shares.items():
        if w <= 0:
            continue
        target = int(round(w * budget))
        if target < width:
            problems.append(
                f"source {s!r}: weight {w:.4g} of a {budget}-token budget is {target} tokens, less than one row of "
                f"{width}: its share cannot be met (raise total_tokens or the weight, or lower seq_len)"
            )
        elif max_epochs > 0 and target > max_epochs * available[s]:
            problems.append(
                f"source {s!r}: weight {w:.4g} of a {budget}-token budget needs {target / available[s]:.2f} epochs of "
                f"its {available[s]} training tokens, more than max_epochs={max_epochs:g} (lower its weight or "
                f"total_tokens, add documents, or raise max_epochs)"
            )
    return problems


# --------------------------------------------------------------------------------------------- preflight


def count_documents(files: list[str]) -> dict[str, int]:
    """Documents per source, from the ``source`` column alone (dictionary-encoded Parquet: no text is read)."""
    counts: dict[str, int] = {}
    for f in files:
        with fs.open_arrow(f) as source:
            column = pq.read_table(source, columns=["source"]).column("source")
        for item in pc.value_counts(column).to_pylist():
            if item["values"] is not None:
                counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])
    return counts


def preflight(documents: dict[str, int], cfg: MixConfig) -> None:
    """Every check that needs no tokenizing, run before the pipeline: raise :class:`MixError` on the first.

    ``documents`` is the count per source (:func:`count_documents`). Weighted sources must be present; with a
    validation split each needs two documents (one held out, one to train on); with a fixed budget every
    weighted source's share must fill at least one row.
    """
    shares = normalise_weights(cfg.weights)
    weighted = [s for s, w in shares.items() if w > 0]
    missing = sorted(s for s in weighted if documents.get(s, 0) <= 0)
    if missing:
        raise MixError(_missing_message(missing, documents, "documents"))
    if cfg.val_fraction > 0:
        small = {s: documents[s] for s in weighted if documents[s] < 2}
        if small:
            raise MixError(
                f"source(s) {small} have fewer than 2 documents: a validation split (val_fraction="
                f"{cfg.val_fraction:g}) holds one out and one must stay to train on (add documents or set "
                "val_fraction 0)"
            )
    if cfg.total_tokens > 0:  # the token counts do not matter for a fixed budget's per-source targets
        problems = plan_problems({s: 1 for s in weighted}, cfg.weights, cfg.total_tokens, cfg.seq_len)
        if problems:
            raise MixError("; ".join(problems))


# --------------------------------------------------------------------------------------------- the validation split


def _val_key(source: str, doc_id: str) -> int:
    return xxhash.xxh64_intdigest(f"val\x00{source}\x00{doc_id}".encode())


def select_validation(
    ids: list[str], lengths: np.ndarray, source: str, fraction: float, max_tokens: int, width: int
) -> list[int]:
    """Indices of ``source``'s held-out documents, in validation-stream order.

    Documents are taken in the order of a hash of (source, id) -- independent of the seed and the weights --
    until ``ceil(fraction * n)`` documents are taken or their tokens reach ``max_tokens`` (0 = no cap),
    but at least until they fill one row of ``width`` tokens, and never the last document (one stays to train
    on). No documents when ``fraction`` is 0 or the source has fewer than two.
    """
    n = len(ids)
    if fraction <= 0 or n < 2:
        return []
    want = min(n - 1, max(1, math.ceil(fraction * n)))
    chosen: list[int] = []
    total = 0
    for i in sorted(range(n), key=lambda i: (_val_key(source, ids[i]), ids[i])):
        if len(chosen) >= n - 1:
            break
        done = len(chosen) >= want or (max_tokens > 0 and total >= max_tokens)
        if done and total >= width:
            break
        chosen.append(i)
        total += int(lengths[i])
    return chosen


class DocMeta(NamedTuple):
    """What the validation plan needs of a document: not its tokens, only their digest and count."""

    id: str
    digest: str
    tokens: int


def doc_meta(element: tuple[str, Doc], itemsize: int) -> tuple[str, DocMeta]:
    source, doc = element
    return source, DocMeta(doc.id, xxhash.xxh64_hexdigest(doc.tokens), len(doc.tokens) // itemsize)


class SourcePlan(NamedTuple):
    """One source's held-out documents (in validation-stream order) and the training tokens left."""

    val_ids: list[str]
    val_tokens: int
    train_tokens: int


class PlanSource(beam.DoFn):
    """One source's ``DocMeta`` records -> ``(source, SourcePlan)``.

    Duplicate ids are resolved as :class:`pipeline.mix.pack.PackSource` does (the copy with the smallest
    digest stays), so the training tokens counted here are exactly those PackSource draws from.
    """

    def __init__(self, weights: dict[str, float], val_fraction: float, val_max_tokens: int, seq_len: int):
        self.weights = dict(weights)
        self.val_fraction = val_fraction
        self.val_max_tokens = val_max_tokens
        self.seq_len = seq_len

    def process(self, element: tuple[str, Iterable[DocMeta]]) -> Iterator[tuple[str, SourcePlan]]:
        source, grouped = element
        seen: set[str] = set()
        ids: list[str] = []
        lengths: list[int] = []
        for meta in sorted(grouped):
            if meta.id not in seen:
                seen.add(meta.id)
                ids.append(meta.id)
                lengths.append(meta.tokens)
        lens = np.asarray(lengths, dtype=np.int64)
        fraction = self.val_fraction if self.weights.get(source, 0.0) > 0 else 0.0
        val = select_validation(ids, lens, source, fraction, self.val_max_tokens, self.seq_len + 1)
        val_tokens = int(lens[val].sum()) if val else 0
        yield source, SourcePlan([ids[i] for i in val], val_tokens, int(lens.sum()) - val_tokens)


# --------------------------------------------------------------------------------------------- the draw


def _doc_key(seed: int, source: str, tag: str, doc_id: str) -> int:
    return xxhash.xxh64_intdigest(f"{seed}\x00{source}\x00{tag}\x00{doc_id}".encode())


def draw_plan(ids: list[str], lengths: np.ndarray, target: int, seed: int, source: str) -> tuple[list[int], list[int]]:
    """Which documents to draw and in what order, to reach at least ``target`` tokens.

    ``epochs = target / available``: every document is drawn ``floor(epochs)`` times, then a seeded hash-ordered
    subset covers the remainder (the shortest prefix that reaches it; packing then cuts the stream at the
    target, so the last drawn document may be cut short and shares land within a row of the target whatever
    the document sizes). Each epoch has its own seeded
    order, so a repeated document never sits next to its earlier copy. Returns ``(order, times)``: document
    indices in stream order and how often each index is drawn.
    """
    n = len(ids)
    available = int(lengths.sum())
    if n == 0 or target <= 0 or available <= 0:
        return [], [0] * n
    whole, remainder = divmod(int(target), available)
    by_select = sorted(range(n), key=lambda i: (_doc_key(seed, source, "select", ids[i]), ids[i]))
    partial: list[int] = []
    total = 0
    for i in by_select:
        if total >= remainder:
            break
        partial.append(i)
        total += int(lengths[i])
    order: list[int] = []
    for epoch in range(whole):
        order.extend(sorted(range(n), key=lambda i: (_doc_key(seed, source, f"epoch{epoch}", ids[i]), ids[i])))
    order.extend(sorted(partial, key=lambda i: (_doc_key(seed, source, f"epoch{whole}", ids[i]), ids[i])))
    times = [whole] * n
    for i in partial:
        times[i] += 1
    return order, times
