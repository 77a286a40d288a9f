"""LSH banding: choosing bands x rows for a Jaccard threshold, band keys, and candidate pairs per bucket.

**Choosing (bands, rows).** Two documents with Jaccard ``s`` share at least one of ``b`` bands of ``r`` rows
with probability ``P(s) = 1 - (1 - s**r)**b``. Like ``datasketch.lsh._optimal_param`` we pick the ``(b, r)``
with ``b * r <= num_perm`` minimising ``w_fp * ∫_0^t P(s) ds + w_fn * ∫_t^1 (1 - P(s)) ds`` (the false
positive and false negative mass around the threshold ``t``). datasketch integrates with ``scipy.quad`` one
pair at a time; both integrands are polynomials in ``s`` of degree ``b * r <= num_perm``, so Gauss-Legendre
quadrature with ``num_perm // 2 + 1`` nodes is *exact* (up to rounding) and vectorises over every pair at
once. The tests check that the chosen parameters equal datasketch's.

**Band keys.** Band ``i`` covers signature positions ``[i*r, (i+1)*r)`` (datasketch's ``hashranges``). Its key
is ``(i, xxh3_64(bytes of the band))``: a fixed-size shuffle key whatever ``r`` is; a 64-bit collision merely
adds a candidate that verification rejects.

**Buckets without quadratic blow-up.** A bucket shared by ``k`` documents implies ``k(k-1)/2`` pairs; a
template page repeated a million times would make that 5·10¹¹. Buckets of at most ``all_pairs_max`` members
emit all pairs (best recall for the common small bucket); larger ones emit a *star*: every member paired
with the bucket's smallest id, ``k - 1`` pairs. Connectivity through the bucket is preserved whenever the
centre really is a near-duplicate of the members, and the remaining bands usually supply the pairs a star
misses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np
import xxhash


@lru_cache(maxsize=64)
def optimal_param(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """``(bands, rows)`` minimising weighted false-positive + false-negative probability mass.

    Same search space, objective and tie-breaking (first minimum in ``b``-major, ``r``-minor order) as
    ``datasketch.lsh._optimal_param``; the integrals are computed exactly by Gauss-Legendre quadrature.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be in [0, 1]")
    if num_perm < 1:
        raise ValueError("num_perm must be positive")
    bs, rs = [], []
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            bs.append(b)
            rs.append(r)
    b = np.array(bs, dtype=np.float64)[:, None]
    r = np.array(rs, dtype=np.float64)[:, None]
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(lo: float, hi: float, false_positive: bool) -> np.ndarray:
        s = (hi - lo) / 2.0 * x + (hi + lo) / 2.0  # nodes mapped from [-1, 1] to [lo, hi]
        miss = (1.0 - s[None, :] ** r) ** b  # probability of sharing no band
        f = (1.0 - miss) if false_positive else miss
        return (f * w[None, :]).sum(axis=1) * (hi - lo) / 2.0

    error = false_positive_weight * integral(0.0, threshold, True) + false_negative_weight * integral(
        threshold, 1.0, False
    )
    best = int(np.argmin(error))  # argmin returns the first minimum, as datasketch's strict `<` does
    return bs[best], rs[best]


def lsh_params(
    threshold: float, num_perm: int, bands: int = 0, rows: int = 0, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """The banding to use: ``bands`` x ``rows`` when both are set, else :func:`optimal_param`."""
    if bands > 0 and rows > 0:
        if bands * rows > num_perm:
            raise ValueError(f"bands * rows = {bands * rows} exceeds num_perm = {num_perm}")
        return bands, rows
    if bands > 0 or rows > 0:
        raise ValueError("set both bands and rows, or neither (then they are chosen from the threshold)")
    return optimal_param(float(threshold), int(num_perm), float(fp_weight), float(fn_weight))


def collision_probability(s: float, bands: int, rows: int) -> float:
    """Probability that two documents of Jaccard ``s`` share at least one band."""
    return 1.0 - (1.0 - s**rows) ** bands


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[tuple[int, int]]:
    """``(band index, 64-bit hash of the band's bytes)`` for each band of a signature."""
    sig = np.ascontiguousarray(signature)
    h = xxhash.xxh3_64_intdigest
    return [(i, h(sig[i * rows : (i + 1) * rows].tobytes())) for i in range(bands)]


def bucket_pairs(members: Iterable[str], all_pairs_max: int) -> Iterator[tuple[str, str]]:
    """Candidate pairs ``(smaller, larger)`` of one LSH bucket: all pairs if small, else a star on the min."""
    ids = sorted(set(members))
    if len(ids) < 2:
        return
    if len(ids) <= all_pairs_max:
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                yield a, b
        return
    centre = ids[0]
    for b in ids[1:]:
        yield centre, b
