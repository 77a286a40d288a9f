"""What the mix draws, decided before any row is packed: budgets, checks, held-out and drawn documents.

Per source: a validation set of whole documents chosen by a hash of (source, document id) -- independent of
the seed and the weights, so the same documents stay held out across mixes -- and the training tokens left;
from those, each source's share of the budget (``weight * budget``) and the documents drawn to fill it
(whole epochs by repetition, plus a seeded hash-ordered subset for the fractional epoch). The checks that
need no tokens (:func:`preflight`) run before the pipeline; those that need the token counts
(:func:`plan_problems`) run in it and again on the driver.

Both choices are prefixes of hash orders, found from per-bin counts and one bin's documents
(:func:`find_boundary`, :func:`cut_in_bin`), so no worker ever holds a whole source's document list; the
pure functions here are what :mod:`pipeline.mix.draw` runs across workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from pipeline import fs
from pipeline.mix.config import MixConfig, MixError

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


# --------------------------------------------------------------------------------------------- hash orders

# Every choice the mix makes is a prefix of a hash order, so it can be found from counts alone (see
# ``find_boundary``) and each document can then tell on its own, from a small cut record, which side it is on.


def val_key(source: str, doc_id: str) -> int:
    """A document's place in its source's validation order (independent of the seed and the weights)."""
    return xxhash.xxh64_intdigest(f"val\x00{source}\x00{doc_id}".encode())


def select_key(seed: int, source: str, doc_id: str) -> int:
    """A document's place in the seeded order the fractional epoch (and downsampling) draws from."""
    return xxhash.xxh64_intdigest(f"{seed}\x00{source}\x00select\x00{doc_id}".encode())


def epoch_key(seed: int, source: str, epoch: int, doc_id: str) -> int:
    """A document's place in epoch ``epoch``'s stream order: each epoch has its own seeded order."""
    return xxhash.xxh64_intdigest(f"{seed}\x00{source}\x00epoch{epoch}\x00{doc_id}".encode())


def bucket_of(source: str, doc_id: str, buckets: int) -> int:
    """The packing bucket of a document: a hash of (source, id), so copies of one id meet in one bucket."""
    return xxhash.xxh64_intdigest(f"bucket\x00{source}\x00{doc_id}".encode()) % buckets


BIN_BITS = 16
BINS = 1 << BIN_BITS  # histogram bins of a hash order: the top 16 bits of the 64-bit key


def bin_of(key: int) -> int:
    return key >> (64 - BIN_BITS)


class Cut(NamedTuple):
    """The last document of a prefix of a hash order: a document is in it when ``(key, id) <= cut``."""

    key: int
    id: str


TAKE_NONE = Cut(-1, "")
TAKE_ALL = Cut(1 << 64, "")


def in_prefix(key: int, doc_id: str, cut: Cut) -> bool:
    return (key, doc_id) <= cut


# --------------------------------------------------------------------------------------------- prefix rules


@dataclass(frozen=True)
class ValidationRule:
    """When a source's held-out prefix is complete, given the documents and tokens taken so far.

    ``val_fraction`` of the documents (``want``, at least one) or ``max_tokens`` tokens (0 = no cap), whichever
    comes first -- but never less than one row of ``width`` tokens, and never the last document (one must stay
    to train on).
    """

    documents: int
    want: int
    max_tokens: int
    width: int

    @classmethod
    def for_source(cls, documents: int, fraction: float, max_tokens: int, width: int) -> ValidationRule | None:
        """The rule for a source of ``documents`` documents; None when it holds nothing out."""
        if fraction <= 0 or documents < 2:
            return None
        return cls(documents, min(documents - 1, max(1, math.ceil(fraction * documents))), max_tokens, width)

    def stop(self, count: int, tokens: int) -> bool:
        if count >= self.documents - 1:
            return True
        reached = count >= self.want or (self.max_tokens > 0 and tokens >= self.max_tokens)
        return reached and tokens >= self.width


@dataclass(frozen=True)
class ReachTokens:
    """The shortest prefix holding at least ``goal`` tokens (the fractional epoch's documents)."""

    goal: int

    def stop(self, count: int, tokens: int) -> bool:
        return tokens >= self.goal


Rule = ValidationRule | ReachTokens


class Boundary(NamedTuple):
    """Where a prefix ends, found from a histogram: the bin holding its last document and the documents and
    tokens of all earlier bins. ``bin == -1``: the prefix is empty; ``bin == BINS``: it holds everything."""

    bin: int
    count: int
    tokens: int


def find_boundary(histogram: Iterable[tuple[int, int, int]], rule: Rule | None) -> Boundary:
    """The bin where ``rule``'s prefix ends, from ``(bin, documents, tokens)`` triples of one source.

    Rules are monotone in (documents, tokens), so the prefix ends in the first bin after which the rule says
    stop; only that bin's documents need to be looked at one by one (:func:`cut_in_bin`).
    """
    if rule is None or rule.stop(0, 0):
        return Boundary(-1, 0, 0)
    count = tokens = 0
    for b, c, t in sorted(histogram):
        if rule.stop(count + c, tokens + t):
            return Boundary(b, count, tokens)
        count, tokens = count + c, tokens + t
    return Boundary(BINS, count, tokens)


def cut_in_bin(items: Iterable[tuple[int, str, int]], boundary: Boundary, rule: Rule | None) -> tuple[Cut, int, int]:
    """The exact end of the prefix: ``(cut, documents, tokens)`` in it, from the boundary bin's
    ``(key, id, tokens)`` items (one item per document)."""
    if rule is None or boundary.bin < 0:
        return TAKE_NONE, 0, 0
    if boundary.bin >= BINS:
        return TAKE_ALL, boundary.count, boundary.tokens
    cut, count, tokens = TAKE_NONE, boundary.count, boundary.tokens
    for key, doc_id, n in sorted(items):
        if rule.stop(count, tokens):
            break
        cut, count, tokens = Cut(key, doc_id), count + 1, tokens + n
    return cut, count, tokens


def take_prefix(items: list[tuple[int, str, int]], rule: Rule | None) -> tuple[Cut, int, int]:
    """:func:`find_boundary` then :func:`cut_in_bin` over all of one source's items in one process: what the
    pipeline computes across workers, for tests and small inputs."""
    histogram: dict[int, tuple[int, int]] = {}
    for key, _, n in items:
        c, t = histogram.get(bin_of(key), (0, 0))
        histogram[bin_of(key)] = (c + 1, t + n)
    boundary = find_boundary(((b, c, t) for b, (c, t) in histogram.items()), rule)
    return cut_in_bin([it for it in items if bin_of(it[0]) == boundary.bin], boundary, rule)


# --------------------------------------------------------------------------------------------- the draw


def selection_goal(target: int, available: int, buckets: int, width: int) -> int:
    """Tokens to select from a source so that its ``round(target / width)`` rows can be filled from
    ``buckets`` separately packed buckets, each of which drops its own partial final row.

    One row per bucket more than the target when the source is repeated anyway; when it is downsampled, never
    more than the source holds (a mix that repeats nothing stays so, and may then fall up to a row per bucket
    short of its target).
    """
    if target <= 0:
        return 0
    margin = int(target) + buckets * width
    return margin if target > available else min(margin, available)


def bucket_counts(documents: dict[str, int], bucket_documents: int) -> dict[str, int]:
    """Packing buckets per source, from its document count (known before the pipeline, from the ``source``
    column alone): one bucket per ``bucket_documents`` documents."""
    return {s: max(1, math.ceil(n / max(1, bucket_documents))) for s, n in sorted(documents.items())}


class BucketPlan(NamedTuple):
    """What one packing bucket contributes: its training rows and where they start in its source's row
    numbering, and the same for its validation rows."""

    rows: int
    offset: int
    val_rows: int
    val_offset: int


def allocate_rows(goal_rows: int, capacity: dict[int, tuple[int, int]]) -> dict[int, BucketPlan]:
    """Share a source's ``goal_rows`` among its buckets, each able to fill ``capacity[b][0]`` training rows
    (``capacity[b][1]`` validation rows are all kept).

    Proportional to capacity, the rows left over by rounding going to the largest remainders (ties: lower
    bucket), so every bucket drops a like share of its stream's end. Fewer rows only when the buckets cannot
    fill the goal.
    """
    buckets = sorted(capacity)
    total = sum(capacity[b][0] for b in buckets)
    goal = min(goal_rows, total)
    rows = {b: goal * capacity[b][0] // total if total else 0 for b in buckets}
    left = goal - sum(rows.values())
    for b in sorted(buckets, key=lambda b: (-(goal * capacity[b][0] % total) if total else 0, b))[:left]:
        rows[b] += 1
    plans: dict[int, BucketPlan] = {}
    offset = val_offset = 0
    for b in buckets:
        plans[b] = BucketPlan(rows[b], offset, capacity[b][1], val_offset)
        offset += rows[b]
        val_offset += capacity[b][1]
    return plans
