"""Tokenizer: training on document tables, GPT-2 in its two file formats, content hashing, special-token safety."""

from __future__ import annotations

import json
import os
import random

import pytest

from pipeline.stage import load_stats
from pipeline.tables import write_documents
from pipeline.tokenizer import (
    EOT,
    TokenizerConfig,
    TokenizerError,
    copy_tokenizer,
    encode_batch,
    load_tokenizer,
    tokenizer_content_hash,
    tokenizer_info,
    train_tokenizer,
)

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which "
    "river mountain café naïve Zürich 東京 данные"
).split()


def _corpus(folder: str, n: int = 120, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = [
        {"id": f"d{i}", "source": "crawl", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))}
        for i in range(n)
    ]
    rows.append({"id": "empty", "source": "crawl", "text": ""})
    os.makedirs(folder, exist_ok=True)
    write_documents(rows[: n // 2], os.path.join(folder, "part-0.parquet"))
    write_documents(rows[n // 2 :], os.path.join(folder, "part-1.parquet"))
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("tok")
    docs = str(base / "docs")
    rows = _corpus(docs)
    out = str(base / "tokenizer")
    info = train_tokenizer([docs], out, TokenizerConfig(vocab_size=320, seed=1))
    return docs, out, info, rows


def test_train_writes_tokenizer_info_and_exact_stats(trained):
    docs, out, info, rows = trained
    assert sorted(os.listdir(out)) == ["stats.json", "tokenizer.json", "tokenizer_info.json"]
    with open(os.path.join(out, "tokenizer_info.json")) as fh:
        assert json.load(fh) == info
    tok = load_tokenizer(out)
    assert info["vocab_size"] == tok.get_vocab_size() and 257 < info["vocab_size"] <= 320
    assert info["eot_id"] == tok.token_to_id(EOT)
    assert info["content_hash"] == tokenizer_content_hash(tok)
    stats = load_stats(out).check()
    assert stats.read == len(rows)
    assert stats.dropped == {"empty_text": 1, "not_sampled": 0}
    assert stats.kept == len(rows) - 1 == info["sample_documents"]
    text = "Zürich river 東京 — unseen bytes \x00 \U0001f600 too"
    assert tok.decode(tok.encode(text).ids) == text  # byte-level: nothing is unknown


def test_training_is_deterministic_and_skips_when_done(trained, tmp_path):
    docs, out, info, _ = trained
    again = train_tokenizer([docs], str(tmp_path / "again"), TokenizerConfig(vocab_size=320, seed=1))
    assert again["content_hash"] == info["content_hash"]
    mtime = os.stat(os.path.join(out, "tokenizer.json")).st_mtime_ns
    assert train_tokenizer([docs], out, TokenizerConfig(vocab_size=320, seed=1)) == info
    assert os.stat(os.path.join(out, "tokenizer.json")).st_mtime_ns == mtime


def test_sample_cap_is_seeded_and_counted(trained, tmp_path):
    docs, _, _, rows = trained
    a = train_tokenizer([docs], str(tmp_path / "a"), TokenizerConfig(vocab_size=300, max_documents=10, seed=3))
    stats = load_stats(str(tmp_path / "a")).check()
    assert a["sample_documents"] == stats.kept == 10
    assert stats.dropped == {"empty_text": 1, "not_sampled": len(rows) - 11}
    b = train_tokenizer([docs], str(tmp_path / "b"), TokenizerConfig(vocab_size=300, max_documents=10, seed=4))
    assert a["content_hash"] != b["content_hash"]  # another seed samples other documents


def test_literal_end_of_text_in_a_document_stays_text(trained):
    tok = load_tokenizer(trained[1])
    eot = tok.token_to_id(EOT)
    text = f"before {EOT} after<|endoftext|>"
    ids = tok.encode(text).ids
    assert eot not in ids
    assert tok.decode(ids) == text
    batch = encode_batch(tok, [text, "the river"], append_eot=True, batch_size=1)
    assert [b.count(eot) for b in batch] == [1, 1] and all(b[-1] == eot for b in batch)
    assert batch[0][:-1] == ids


def test_tokenizer_json_roundtrip_keeps_the_hash(trained, tmp_path):
    tok = load_tokenizer(trained[1])
    copy_tokenizer(tok, str(tmp_path))
    assert tokenizer_content_hash(load_tokenizer(str(tmp_path / "tokenizer.json"))) == tokenizer_content_hash(tok)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(str(tmp_path / "nope.json"))
    (tmp_path / "encoder.json").write_text(json.dumps({"a": 0}))
    with pytest.raises(TokenizerError, match="vocab.bpe or merges.txt"):
        load_tokenizer(str(tmp_path / "encoder.json"))
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01 not a tokenizer")
    with pytest.raises(TokenizerError, match="unknown tokenizer file format"):
        load_tokenizer(str(tmp_path / "junk.bin"))
    (tmp_path / "x.tiktoken").write_text("IQ== 0\nnot-base64! 1\n")
    with pytest.raises(TokenizerError, match="tiktoken"):
        load_tokenizer(str(tmp_path / "x.tiktoken"))


@pytest.fixture(scope="module")
def gpt2(shared_data):
    folder = os.path.join(shared_data, "tokenizer")
    return (
        load_tokenizer(os.path.join(folder, "gpt2", "encoder.json")),
        load_tokenizer(os.path.join(folder, "r50k_base.tiktoken")),
        folder,
    )


def test_gpt2_formats_hash_equal_and_encode_identically(gpt2, shared_data):
    from_pair, from_ranks, folder = gpt2
    info_pair, info_ranks = tokenizer_info(from_pair), tokenizer_info(from_ranks)
    assert info_pair == info_ranks
    assert info_pair["vocab_size"] == 50257 and info_pair["eot_id"] == 50256
    # the folder and the merges file resolve to the same tokenizer
    assert tokenizer_content_hash(load_tokenizer(os.path.join(folder, "gpt2"))) == info_pair["content_hash"]
    assert (
        tokenizer_content_hash(load_tokenizer(os.path.join(folder, "gpt2", "vocab.bpe"))) == info_pair["content_hash"]
    )
    with open(os.path.join(shared_data, "reference", "wikitext-2", "valid.txt"), encoding="utf-8") as fh:
        text = fh.read(150_000)
    a, b = encode_batch(from_pair, [text, "Hello world"]), encode_batch(from_ranks, [text, "Hello world"])
    assert a == b
    assert a[1] == [15496, 995]  # GPT-2's published ids for "Hello" and " world"
    assert from_pair.decode(a[0]) == text


def test_gpt2_literal_end_of_text_is_text(gpt2):
    for tok in gpt2[:2]:
        ids = tok.encode("x <|endoftext|> y").ids
        assert 50256 not in ids and tok.decode(ids) == "x <|endoftext|> y"
