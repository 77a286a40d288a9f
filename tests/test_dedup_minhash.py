"""MinHash and LSH parameters against datasketch, the reference implementation."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import xxhash
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from pipeline.dedup.lsh import band_keys, bucket_pairs, collision_probability, lsh_params, optimal_param
from pipeline.dedup.minhash import MinHasher, ShingleConfig, jaccard, shingles, signature_similarity

WORDS = "the a of river city council vote budget school road park music film game team season price".split()


def _texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 400))) for _ in range(n)]


def _xxh3_low32(b: bytes) -> int:
    return xxhash.xxh3_64_intdigest(b) & 0xFFFFFFFF


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 42), (7, 12345)])
def test_signature_bit_identical_to_datasketch(scheme, num_perm, seed):
    hasher = MinHasher(num_perm=num_perm, seed=seed, scheme=scheme)
    for text in _texts(25) + ["Ünïcödé — text, with: punctuation!", "short"]:
        items = shingles(text, ShingleConfig())
        ref = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        ref.update_batch(items)
        ours, _ = hasher.sketch(items)
        assert ours.dtype == ref.hashvalues.dtype
        assert np.array_equal(ours, ref.hashvalues)


def test_signature_identical_with_fast_hash_and_char_shingles():
    """The xxh3 option equals datasketch given the same hash function; char shingles go through unchanged."""
    hasher = MinHasher(num_perm=96, seed=5, hash="xxh3")
    for text in _texts(10, seed=9):
        items = shingles(text, ShingleConfig(kind="char", ngram=7))
        ref = MinHash(num_perm=96, seed=5, hashfunc=_xxh3_low32)
        ref.update_batch(items)
        assert np.array_equal(hasher.sketch(items)[0], ref.hashvalues)
    default = MinHasher(num_perm=96, seed=5)
    items = shingles(_texts(1)[0], ShingleConfig())
    assert not np.array_equal(default.sketch(items)[0], hasher.sketch(items)[0])


def test_empty_set_signature_is_datasketch_initial_state():
    for scheme in ("affine32", "legacy"):
        assert np.array_equal(MinHasher(32, scheme=scheme).sketch([])[0], MinHash(32, scheme=scheme).hashvalues)


def test_shingles():
    cfg = ShingleConfig(ngram=3)
    assert shingles("One two, THREE four\ttwo three four", cfg) == [
        b"one two three",
        b"two three four",
        b"three four two",
        b"four two three",
    ]
    assert shingles("just two", cfg) == [b"just two"]  # shorter than n: one shingle
    assert shingles("!!! ...", cfg) == []
    assert shingles("abcd  ab", ShingleConfig(kind="char", ngram=3)) == [b"abc", b"bcd", b"cd ", b"d a", b" ab"]


def test_jaccard_is_true_jaccard_of_shingle_sets():
    a, b = _texts(2, seed=11)
    sa, sb = shingles(a, ShingleConfig(ngram=2)), shingles(b, ShingleConfig(ngram=2))
    truth = len(set(sa) & set(sb)) / len(set(sa) | set(sb))
    hasher = MinHasher()
    (siga, seta), (sigb, setb) = hasher.sketch(sa), hasher.sketch(sb)
    assert jaccard(seta, setb) == pytest.approx(truth, abs=1e-12)
    ref_a, ref_b = MinHash(), MinHash()
    ref_a.update_batch(sa)
    ref_b.update_batch(sb)
    assert signature_similarity(siga, sigb) == pytest.approx(ref_a.jaccard(ref_b), abs=1e-12)


@pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
def test_optimal_param_equals_datasketch(num_perm):
    for threshold in (0.5, 0.7, 0.8, 0.9):
        for weights in ((0.5, 0.5), (0.3, 0.7), (0.2, 0.8)):
            assert optimal_param(threshold, num_perm, *weights) == _optimal_param(threshold, num_perm, *weights)


def test_lsh_params_by_hand_and_validation():
    assert lsh_params(0.8, 128, bands=16, rows=8) == (16, 8)
    assert lsh_params(0.8, 128) == _optimal_param(0.8, 128, 0.5, 0.5)
    with pytest.raises(ValueError):
        lsh_params(0.8, 128, bands=20, rows=8)
    with pytest.raises(ValueError):
        lsh_params(0.8, 128, bands=20)
    b, r = lsh_params(0.8, 128)
    assert collision_probability(0.95, b, r) > 0.99 > 0.01 > collision_probability(0.3, b, r)


def test_bucket_pairs_star_for_oversized_buckets():
    assert sorted(bucket_pairs(["c", "a", "b", "a"], all_pairs_max=8)) == [("a", "b"), ("a", "c"), ("b", "c")]
    star = list(bucket_pairs([f"d{i:03d}" for i in range(500)], all_pairs_max=8))
    assert len(star) == 499 and {a for a, _ in star} == {"d000"}
    assert list(bucket_pairs(["only"], 8)) == []


def test_lsh_candidates_equal_datasketch_index(shared_data):
    """Our bands give exactly the candidate pairs a datasketch MinHashLSH index returns, on real articles."""
    with open(os.path.join(shared_data, "dedup", "syndicated-news.jsonl"), encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh][:120]
    bands, rows = lsh_params(0.8, 128)
    hasher = MinHasher()
    index = MinHashLSH(threshold=0.8, num_perm=128)
    assert (index.b, index.r) == (bands, rows)
    buckets: dict = {}
    refs = {}
    for d in docs:
        items = shingles(d["text"], ShingleConfig())
        sig, _ = hasher.sketch(items)
        ref = MinHash(num_perm=128)
        ref.update_batch(items)
        refs[d["id"]] = ref
        index.insert(d["id"], ref)
        for band in band_keys(sig, bands, rows):
            buckets.setdefault(band, []).append(d["id"])
    ours = {p for members in buckets.values() for p in bucket_pairs(members, all_pairs_max=10**9)}
    theirs = {tuple(sorted((i, j))) for i, ref in refs.items() for j in index.query(ref) if i != j}
    assert theirs and ours == theirs
