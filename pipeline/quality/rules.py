"""The keep rules of the quality filter, as pure functions the Beam stage and the tests share.

GPT-3 kept a crawl document when ``np.random.pareto(alpha) > 1 - score`` with ``alpha = 9``: nearly every
document the classifier likes, plus some low-scoring ones, so the curated set does not collapse onto
whatever narrow style the reference has. DCLM keeps a fixed top fraction instead. Every random choice here
is a pure function of (document id, run seed): reruns, any number of workers and any runner keep exactly
the same documents.
"""

from __future__ import annotations

import xxhash


def _unit_hash(doc_id: str, seed: int, salt: str) -> float:
    """A uniform number in [0, 1) from (id, seed): 53 bits of xxh64, the resolution of a float64."""
    h = xxhash.xxh64_intdigest(f"{salt}\x00{doc_id}".encode(), seed=seed & 0xFFFFFFFFFFFFFFFF)
    return (h >> 11) * (1.0 / (1 << 53))


def pareto_draw(doc_id: str, seed: int, alpha: float) -> float:
    """The document's draw from ``np.random.pareto(alpha)`` (Lomax: ``P(X > x) = (1 + x) ** -alpha``).

    Computed by inverse transform of a hash of (id, seed) rather than a numpy Generator: numpy does not
    promise that a Generator's stream stays the same across releases, while this formula does, so the same
    run seed keeps the same documents on any machine, runner, worker count and numpy version.
    """
    u = _unit_hash(doc_id, seed, "pareto")
    return (1.0 - u) ** (-1.0 / alpha) - 1.0


def pareto_keep(score: float, doc_id: str, seed: int, alpha: float = 9.0) -> bool:
    """GPT-3's rule: keep when the Pareto draw exceeds ``1 - score``, i.e. with probability ``(2 - s) ** -alpha``."""
    return pareto_draw(doc_id, seed, alpha) > 1.0 - score


def pareto_keep_probability(score: float, alpha: float = 9.0) -> float:
    """The analytic keep probability of :func:`pareto_keep` for a score in [0, 1]."""
    return (2.0 - score) ** -alpha


def rank_key(score: float, doc_id: str, seed: int) -> tuple[float, float]:
    """Order for ``top_fraction``: by score, ties broken by a hash of the id so exactly k documents pass."""
    return (score, _unit_hash(doc_id, seed, "tie"))


def exact_cutoff(keys: list[tuple[float, float]], fraction: float) -> tuple[float, float] | None:
    """The smallest rank key among the top ``round(fraction * n)``; None means keep nothing."""
    k = round(fraction * len(keys))
    if k <= 0:
        return None
    return sorted(keys, reverse=True)[min(k, len(keys)) - 1]


def approximate_cutoff(quantiles: list[tuple[float, float]], fraction: float) -> tuple[float, float] | None:
    """The cutoff from ``ApproximateQuantiles`` (evenly spaced ranks, min first, max last)."""
    if not quantiles or fraction <= 0.0:
        return None
    if fraction >= 1.0:
        return quantiles[0]
    idx = round((1.0 - fraction) * (len(quantiles) - 1))
    return quantiles[max(0, min(len(quantiles) - 1, idx))]
