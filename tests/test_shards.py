"""``verify_shards``: a good folder passes; corrupt, truncated, missing or inconsistent shards fail clearly."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pyarrow as pa
import pytest

from pipeline.mix import MixConfig, run_mix, write_shard_file
from pipeline.shards import ShardError, read_shard, verify_shards
from pipeline.tokenizer import TokenizerConfig, train_tokenizer
from schemas.documents import write_documents
from schemas.manifest import Manifest
from schemas.shards import validate_shard_schema

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from pipeline.runner import RunnerConfig

    base = tmp_path_factory.mktemp("shards")
    rng = random.Random(2)
    rows = [
        {"id": f"{src}-{i}", "source": src, "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))}
        for src, n in (("web", 120), ("wiki", 15))
        for i in range(n)
    ]
    os.makedirs(base / "docs")
    write_documents(rows, str(base / "docs" / "part-0.parquet"))
    train_tokenizer([str(base / "docs")], str(base / "tok"), TokenizerConfig(vocab_size=300))
    cfg = MixConfig(tokenizer=str(base / "tok"), weights={"web": 3, "wiki": 1}, total_tokens=3000, seq_len=16,
                    rows_per_shard=40, seed=1)
    run_mix([str(base / "docs")], str(base / "out"), cfg, RunnerConfig("local", 1, "in_memory"))
    return str(base / "out")


@pytest.fixture
def copy(shards, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(shards, dst)
    return dst


def test_good_folder_verifies(shards):
    summary = verify_shards(shards)
    m = Manifest.load(shards)
    assert summary["shards"] == len(m.shards) >= 2
    assert summary["rows"] == sum(s.rows for s in m.shards)
    assert summary["tokens"] == m.total_tokens == summary["rows"] * 17
    assert summary["tokens_per_source"] == {s: v.tokens_drawn for s, v in m.sources.items()}
    table = read_shard(os.path.join(shards, m.shards[0].file))
    assert validate_shard_schema(table.schema) == "uint16" == m.token_dtype
    assert table.num_rows == m.shards[0].rows


def test_flipped_bytes_fail_the_checksum(copy):
    path = os.path.join(copy, "shard-00000.arrow")
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 4] = bytes(b ^ 0xFF for b in data[mid : mid + 4])
    open(path, "wb").write(bytes(data))
    with pytest.raises(ShardError, match=r"shard-00000.arrow: sha256 .* does not match"):
        verify_shards(copy)


def test_truncated_shard_is_a_clear_error(copy):
    path = os.path.join(copy, "shard-00001.arrow")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    with pytest.raises(ShardError, match="shard-00001.arrow: not a readable Arrow IPC file"):
        verify_shards(copy)


def test_missing_shard_and_unlisted_file(copy):
    os.remove(os.path.join(copy, "shard-00000.arrow"))
    shutil.copy(os.path.join(copy, "shard-00001.arrow"), os.path.join(copy, "shard-99999.arrow"))
    with pytest.raises(ShardError) as err:
        verify_shards(copy)
    assert "shard-00000.arrow: missing" in str(err.value)
    assert "not in the manifest: ['shard-99999.arrow']" in str(err.value)


def test_bad_manifest(copy):
    path = os.path.join(copy, "manifest.json")
    data = json.load(open(path))
    json.dump({**data, "schema_version": "0"}, open(path, "w"))
    with pytest.raises(ShardError, match="manifest version '0'"):
        verify_shards(copy)
    open(path, "w").write("{not json")
    with pytest.raises(ShardError, match="not a valid manifest"):
        verify_shards(copy)
    os.remove(path)
    with pytest.raises(ShardError, match="manifest not found"):
        verify_shards(copy)


def _rewrite(folder: str, mutate) -> None:
    """Change shard 0's content and re-record its checksum, so only the content checks can catch it."""
    path = os.path.join(folder, "shard-00000.arrow")
    table = read_shard(path)
    tokens = np.array(table.column("tokens").to_pylist(), dtype=np.uint16)
    offsets = table.column("doc_offsets").to_pylist()
    mutate(tokens, offsets)
    width = tokens.shape[1]
    new = pa.Table.from_arrays(
        [
            pa.ListArray.from_arrays(pa.array(np.arange(len(tokens) + 1, dtype=np.int32) * width), pa.array(tokens.ravel())),
            pa.array(offsets, type=pa.list_(pa.int32())),
            table.column("source"),
        ],
        schema=table.schema,
    )
    sha = write_shard_file(path, new)
    m = Manifest.load(folder)
    m.shards[0].sha256 = sha
    m.save(os.path.join(folder, "manifest.json"))


def test_token_id_beyond_vocab(copy):
    vocab = Manifest.load(copy).tokenizer.vocab_size

    def mutate(tokens, offsets):
        tokens[0, 1] = vocab

    _rewrite(copy, mutate)
    with pytest.raises(ShardError, match=f"token id {vocab} >= vocab size {vocab}"):
        verify_shards(copy)


def test_doc_offsets_that_lie(copy):
    def mutate(tokens, offsets):
        row = next(i for i, o in enumerate(offsets) if any(x > 1 for x in o))
        offsets[row] = [o - 1 if o > 1 else o for o in offsets[row]]  # starts no longer follow an end-of-text

    _rewrite(copy, mutate)
    with pytest.raises(ShardError, match="not right after an end-of-text token"):
        verify_shards(copy)


def test_unsorted_doc_offsets(copy):
    def mutate(tokens, offsets):
        row = next(i for i, o in enumerate(offsets) if len(o) >= 2)
        offsets[row] = list(reversed(offsets[row]))

    _rewrite(copy, mutate)
    with pytest.raises(ShardError, match="not strictly increasing"):
        verify_shards(copy)


def test_large_vocabularies_get_uint32_shards(tmp_path):
    from pipeline.mix import WriteShard

    rows = [(1, "a", (np.array([70000, 5, 9, 1], dtype=np.uint32).tobytes(), [0, 2])),
            (0, "b", (np.array([1, 2, 70001, 4], dtype=np.uint32).tobytes(), [0]))]
    (info,) = WriteShard(str(tmp_path), "uint32", seq_len=3).process((7, rows))
    assert json.loads(info)["file"] == "shard-00007.arrow"
    with pa.memory_map(str(tmp_path / "shard-00007.arrow")) as src:
        table = pa.ipc.open_file(src).read_all()
    assert validate_shard_schema(table.schema) == "uint32"
    assert table.column("tokens").to_pylist() == [[1, 2, 70001, 4], [70000, 5, 9, 1]]  # ordered by position
    assert table.column("source").to_pylist() == ["b", "a"]
