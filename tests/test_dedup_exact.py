"""Exact-dedup normalisation and the survivor order (source priority, quality, id)."""

from __future__ import annotations

import random

from pipeline.dedup.exact import NormalizeConfig, exact_hash, key_id, normalize_text, rank_key

PRIORITY = ["books", "wiki"]
LOWEST = ["crawl"]


def test_normalisation_options():
    text = "  Ｔhe  PRICE:\u00a0 42 €,\n\tnow!  "
    assert normalize_text(text, NormalizeConfig()) == "the price: 42 €, now!"
    assert normalize_text(text, NormalizeConfig(strip_punctuation=True)) == "the price 42 € now"
    assert normalize_text(text, NormalizeConfig(strip_punctuation=True, strip_digits=True)) == "the price € now"
    raw = NormalizeConfig(unicode_nfkc=False, lowercase=False, collapse_whitespace=False)
    assert normalize_text(text, raw) == text
    assert exact_hash("Hello   World", NormalizeConfig()) == exact_hash("hello world\n", NormalizeConfig())
    assert exact_hash("Hello World", NormalizeConfig()) != exact_hash("Hello World!", NormalizeConfig())


def _key(source, quality, doc_id):
    return rank_key(source, quality, doc_id, exact_hash(doc_id, NormalizeConfig()), PRIORITY, LOWEST)


def test_rank_key_orders_by_priority_then_quality_then_id():
    docs = [
        ("books", None, "z"),
        ("wiki", 0.99, "a"),
        ("news", 0.5, "b"),
        ("crawl", 1.0, "a"),
        ("books", 0.1, "y"),
        ("news", None, "a"),
        ("news", 0.5, "a"),
        ("news", -3.0, "a"),
        ("news", 2.5, "c"),
        ("news", float("nan"), "0"),
        ("news", 0.5, "ab"),
    ]
    expected = sorted(
        docs,
        key=lambda d: (
            PRIORITY.index(d[0]) if d[0] in PRIORITY else len(PRIORITY) + (1 if d[0] in LOWEST else 0),
            0 if d[1] is not None and d[1] == d[1] else 1,  # scored before unscored (NaN = unscored)
            -(d[1] if d[1] is not None and d[1] == d[1] else 0.0),
            d[2],
        ),
    )
    shuffled = list(docs)
    random.Random(0).shuffle(shuffled)
    assert sorted(shuffled, key=lambda d: _key(*d)) == expected
    assert expected[0] == ("books", 0.1, "y") and expected[-1] == ("crawl", 1.0, "a")


def test_key_id_recovers_any_id():
    for doc_id in ["a", "crawl/0001#x", "with\x00nul", "ü", "|" * 40]:
        assert key_id(_key("news", 0.3, doc_id)) == doc_id
