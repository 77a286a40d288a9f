"""Shingling and MinHash signatures, vectorised with numpy and bit-identical to ``datasketch.MinHash``.

Why reproduce datasketch instead of calling it: ``datasketch.MinHash`` draws its permutations from
``np.random.RandomState(seed)`` on every construction and hashes through a per-value Python callback; in a
Beam DoFn that processes millions of documents we want the permutations drawn once per worker and the
shingle hashes extracted in one batch. Reproducing it *exactly* (same seed and ``num_perm`` give the same
``hashvalues`` array, checked in the tests) keeps signatures comparable with any datasketch index or
notebook and lets datasketch serve as the reference implementation.

What datasketch 2.x does, and what :class:`MinHasher` reproduces:

* the shingle's bytes are hashed with ``sha1_hash32``: the first 4 bytes of SHA-1, little-endian;
* ``scheme="affine32"`` (datasketch's default since 2.0): the hash is pre-mixed with the 32-bit MurmurHash3
  finaliser, then permuted as ``a * h + b mod 2**32`` in uint32 (``a`` odd, so each permutation is a
  bijection), with ``a = 2 * randint(0, 2**31) + 1`` and ``b = randint(0, 2**32)`` drawn from
  ``RandomState(seed)``;
* ``scheme="legacy"`` (datasketch < 2.0): ``(a * h + b) mod (2**61 - 1)`` computed in uint64 -- including
  the wrap-around of ``a * h`` beyond 2**64, which datasketch inherits from numpy -- then truncated to the
  low 32 bits; ``(a, b)`` pairs drawn one after the other from ``RandomState(seed)``.

``hash="xxh3"`` replaces SHA-1 by the low 32 bits of XXH3-64, several times faster; the signature then
equals ``datasketch.MinHash(hashfunc=lambda b: xxh3_64_intdigest(b) & 0xFFFFFFFF)``, not the default one.

The same per-shingle digest also yields a 64-bit hash of each shingle (the first 8 bytes of SHA-1, or the
full XXH3-64), which the verification step uses as the document's shingle *set*: at 64 bits a collision
between two distinct shingles of two documents has probability ~n²/2⁶⁴, so Jaccard computed on these sets
is the true Jaccard of the shingle sets for any realistic document.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import xxhash

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH32 = np.uint64((1 << 32) - 1)
_WORD_RE = re.compile(r"\w+", re.UNICODE)
# Scripts written without spaces between words: Thai, Lao, Tibetan, Myanmar, Khmer, Hiragana, Katakana, CJK
# ideographs (and their extensions and compatibility forms), halfwidth Katakana.
_UNSEGMENTED_RE = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]"
)


@dataclass
class ShingleConfig:
    kind: Literal["word", "char"] = field(
        default="word", metadata={"help": "shingle type: word n-grams or character n-grams"}
    )
    ngram: int = field(default=5, metadata={"help": "shingle length n (words or characters)"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase (and NFKC-normalise) text before shingling"})
    unsegmented: Literal["char", "word"] = field(
        default="char",
        metadata={
            "help": "word shingles of a text mostly in a script without spaces (Chinese, Japanese, Thai...): "
            "n-grams of its word characters (char) or of its space-separated runs (word)"
        },
    )

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ValueError(f"ShingleConfig.ngram must be >= 1, got {self.ngram}")


def shingles(text: str, cfg: ShingleConfig) -> list[bytes]:
    """The distinct shingles of ``text`` as UTF-8 bytes, in first-occurrence order.

    Word shingles are n consecutive ``\\w+`` tokens joined by one space, so punctuation, markup residue and
    spacing differences do not separate two copies of an article. A document shorter than n tokens yields
    one shingle (all its tokens), so short documents can still be near-duplicates; one without any token
    yields none (it cannot be compared and is left to exact dedup). A text mostly written in a script without
    spaces (:func:`is_unsegmented`: Chinese, Japanese, Thai, ...) gets n-grams of its word characters instead
    (``unsegmented="char"``, the default), n characters each. Character shingles (``kind="char"``) are taken
    over the whitespace-collapsed text.
    """
    if cfg.lowercase:
        if not text.isascii():  # NFKC leaves ASCII unchanged; skipping it saves a pass over most texts
            text = unicodedata.normalize("NFKC", text)
        text = text.lower()
    n = max(1, int(cfg.ngram))
    if cfg.kind == "char":
        s = " ".join(text.split())
        if not s:
            return []
        grams = [s] if len(s) <= n else [s[i : i + n] for i in range(len(s) - n + 1)]
        return [g.encode("utf-8", "surrogatepass") for g in dict.fromkeys(grams)]
    words = _WORD_RE.findall(text)
    if not words:
        return []
    if cfg.unsegmented == "char" and is_unsegmented(text):
        s = "".join(words)  # the word characters: no spaces to split on, punctuation dropped as for words
        grams = [s] if len(s) <= n else [s[i : i + n] for i in range(len(s) - n + 1)]
        return [g.encode("utf-8", "surrogatepass") for g in dict.fromkeys(grams)]
    if len(words) <= n:
        return [" ".join(words).encode("utf-8", "surrogatepass")]
    windows = map(" ".join, zip(*[words[i:] for i in range(n)]))  # the n-word windows, in order
    return [g.encode("utf-8", "surrogatepass") for g in dict.fromkeys(windows)]


def is_unsegmented(text: str) -> bool:
    """Whether most of ``text``'s word characters are in a script written without spaces (CJK, Thai, ...).

    Such a text has no word boundaries for ``\\w+`` to find: a whole sentence is one "word", so word n-grams
    would make each sentence one shingle and a single edited character would change it. :func:`shingles`
    takes n-grams of its characters instead. ASCII texts are answered without a scan.
    """
    if text.isascii():
        return False
    unsegmented = len(_UNSEGMENTED_RE.findall(text))
    return unsegmented > 0 and 2 * unsegmented >= sum(map(len, _WORD_RE.findall(text)))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (datasketch ``_fmix`` with width 32), wrapping in uint32."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` permutation parameters datasketch draws for (num_perm, seed, scheme), cached per process."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array(
            [
                (gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
                for _ in range(num_perm)
            ],
            dtype=np.uint64,
        ).T
        a, b = ab[0].copy(), ab[1].copy()
    elif scheme == "affine32":
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    else:
        raise ValueError(f"unknown MinHash scheme {scheme!r} (affine32 | legacy)")
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


class MinHasher:
    """Hashes shingles and computes MinHash signatures for one (num_perm, seed, scheme, hash) setting.

    Cheap to construct and picklable (the permutations are drawn lazily and cached per process), so a DoFn
    can hold one.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1, scheme: str = "affine32", hash: str = "sha1") -> None:
        if num_perm < 1:
            raise ValueError("num_perm must be positive")
        if scheme not in ("affine32", "legacy"):
            raise ValueError(f"unknown MinHash scheme {scheme!r} (affine32 | legacy)")
        if hash not in ("sha1", "xxh3"):
            raise ValueError(f"unknown shingle hash {hash!r} (sha1 | xxh3)")
        self.num_perm = int(num_perm)
        self.seed = int(seed)
        self.scheme = scheme
        self.hash = hash

    def hash_shingles(self, items: list[bytes]) -> np.ndarray:
        """One uint64 per shingle; its low 32 bits are the hash datasketch feeds its permutations.

        For SHA-1 the 8 leading digest bytes read little-endian, whose low half is exactly ``sha1_hash32``.
        Digests are joined and converted in one ``frombuffer`` instead of one ``struct.unpack`` per shingle.
        """
        if not items:
            return np.empty(0, dtype=np.uint64)
        if self.hash == "sha1":
            sha1 = hashlib.sha1
            buf = b"".join([sha1(s).digest()[:8] for s in items])
            return np.frombuffer(buf, dtype="<u8").astype(np.uint64)
        f = xxhash.xxh3_64_intdigest
        return np.fromiter((f(s) for s in items), dtype=np.uint64, count=len(items))

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """MinHash signature of a set given by :meth:`hash_shingles` (datasketch's ``hashvalues``).

        An empty set gives the all-``2**32-1`` array datasketch starts from. Shingles are processed in
        blocks so the (shingles x num_perm) product never exceeds a few MiB, whatever the document length.
        """
        a, b = permutations(self.num_perm, self.seed, self.scheme)
        h32 = hashes & MAX_HASH32
        if self.scheme == "affine32":
            out = np.full(self.num_perm, np.uint32(0xFFFFFFFF), dtype=np.uint32)
            hv = _fmix32(h32.astype(np.uint32))
            for start in range(0, hv.size, 4096):
                block = hv[start : start + 4096, None] * a + b
                np.minimum(out, block.min(axis=0), out=out)
            return out
        out = np.full(self.num_perm, MAX_HASH32, dtype=np.uint64)
        for start in range(0, h32.size, 4096):
            block = np.bitwise_and((h32[start : start + 4096, None] * a + b) % MERSENNE_PRIME, MAX_HASH32)
            np.minimum(out, block.min(axis=0), out=out)
        return out

    def sketch(self, items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """``(signature, shingle set)``: the set is the sorted, distinct 64-bit shingle hashes."""
        hashes = self.hash_shingles(items)
        return self.signature(hashes), np.unique(hashes)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted, distinct hash arrays (as :meth:`MinHasher.sketch` returns)."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / float(a.size + b.size - inter)


def signature_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of Jaccard: the fraction of equal signature positions (datasketch ``jaccard``)."""
    return float(np.count_nonzero(a == b)) / float(a.size)
