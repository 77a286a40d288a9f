"""``verify_shards``: a good folder passes; corrupt, truncated, missing or inconsistent shards fail clearly."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.commit import AlteredOutput, committed_file, tag_of, untagged
from pipeline.mix import MixConfig, run_mix
from pipeline.mix.pack import write_shard_file
from pipeline.shards import (
    ShardError,
    format_inspection,
    inspect_shards,
    load_manifest,
    read_shard,
    save_manifest,
    verify_shards,
)
from pipeline.tables import write_documents
from pipeline.tokenizer import TokenizerConfig, train_tokenizer
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
    cfg = MixConfig(
        tokenizer=str(base / "tok"),
        weights={"web": 3, "wiki": 1},
        total_tokens=3000,
        seq_len=16,
        rows_per_shard=40,
        seed=1,
    )
    run_mix([str(base / "docs")], str(base / "out"), cfg, RunnerConfig("local", 1, "in_memory"))
    return str(base / "out")


def _named(folder: str, name: str) -> str:
    """The file the mix wrote as ``name`` (``shard-00000.arrow``): its attempt-tagged name, from ``stats.json``."""
    path = committed_file(os.path.join(folder, name))
    assert tag_of(path) is not None and untagged(os.path.basename(path)) == name
    return path


def _recommit(folder: str) -> None:
    """Record the files a test changed on purpose in the folder's commit (``stats.json``: size, and sha256 where
    the commit keeps one), as if the mix had written them: what ``verify`` checks inside the files is then what
    fails, not the commit check that ``load_manifest`` runs first (tested on its own below)."""
    path = os.path.join(folder, "stats.json")
    stats = json.load(open(path))
    for record in stats["files"]:
        file = os.path.join(folder, *record["path"].split("/"))
        if os.path.exists(file):
            record["size"] = os.path.getsize(file)
            if record.get("sha256"):
                record["sha256"] = hashlib.sha256(open(file, "rb").read()).hexdigest()
    json.dump(stats, open(path, "w"))


@pytest.fixture
def copy(shards, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(shards, dst)
    return dst


@pytest.fixture(scope="module")
def texts(shards) -> dict[str, str]:
    """id -> text of the documents the shards were made from."""
    table = pq.read_table(os.path.join(os.path.dirname(shards), "docs", "part-0.parquet"))
    return dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))


def test_good_folder_verifies(shards):
    summary = verify_shards(shards)
    m = load_manifest(shards)
    assert m.validation is not None and [untagged(s.file) for s in m.validation.shards] == ["val-00000.arrow"]
    assert {tag_of(s.file) for s in [*m.shards, *m.validation.shards]} == {tag_of(_named(shards, "val-00000.arrow"))}
    assert summary["validation"] == {
        "shards": 1,
        "rows": m.validation.shards[0].rows,
        "tokens": m.validation.total_tokens,
        "tokens_per_source": {s: v.tokens_packed for s, v in m.validation.sources.items()},
    }
    assert set(m.validation.sources) == {"web", "wiki"}
    assert summary["shards"] == len(m.shards) >= 2
    assert summary["rows"] == sum(s.rows for s in m.shards)
    assert summary["tokens"] == m.total_tokens == summary["rows"] * 17
    assert summary["tokens_per_source"] == {s: v.tokens_drawn for s, v in m.sources.items()}
    table = read_shard(os.path.join(shards, m.shards[0].file))
    assert validate_shard_schema(table.schema) == "uint16" == m.token_dtype
    assert table.num_rows == m.shards[0].rows


def test_flipped_bytes_fail_the_checksum(copy):
    path = _named(copy, "shard-00000.arrow")
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 4] = bytes(b ^ 0xFF for b in data[mid : mid + 4])
    open(path, "wb").write(bytes(data))
    with pytest.raises(ShardError, match=rf"{re.escape(os.path.basename(path))}: sha256 .* does not match"):
        verify_shards(copy)


def test_truncated_shard_is_a_clear_error(copy):
    path = _named(copy, "shard-00001.arrow")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    with pytest.raises(ShardError, match=rf"{re.escape(os.path.basename(path))}: not a readable Arrow IPC file"):
        verify_shards(copy)


def test_missing_shard_and_unlisted_file(copy):
    first, second = _named(copy, "shard-00000.arrow"), _named(copy, "shard-00001.arrow")
    os.remove(first)
    shutil.copy(second, os.path.join(copy, "shard-99999.arrow"))
    with pytest.raises(ShardError) as err:
        verify_shards(copy)
    assert f"{os.path.basename(first)}: missing" in str(err.value)
    assert "not in the manifest: ['shard-99999.arrow']" in str(err.value)


def test_another_attempts_shard_beside_them_is_left_alone(copy):
    """A zombie of another attempt writes a shard after the commit: under its own tag, so the manifest and the
    commit never list it, no reader takes it, and verify does not count it as a stray (the next commit deletes
    it); an untagged stray is still one."""
    listed = _named(copy, "shard-00000.arrow")
    late = os.path.join(copy, untagged(os.path.basename(listed)).replace(".arrow", ".attempt-0123456789ab.arrow"))
    shutil.copy(_named(copy, "shard-00001.arrow"), late)
    assert tag_of(late) != tag_of(listed) and verify_shards(copy)["shards"] == len(load_manifest(copy).shards)
    assert committed_file(os.path.join(copy, "shard-00000.arrow")) == listed


def test_validation_shards_are_verified_too(copy):
    path = _named(copy, "val-00000.arrow")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    shutil.copy(_named(copy, "shard-00000.arrow"), os.path.join(copy, "val-00007.arrow"))
    with pytest.raises(ShardError) as err:
        verify_shards(copy)
    assert f"{os.path.basename(path)}: sha256" in str(err.value)
    assert "validation shard file(s) not in the manifest: ['val-00007.arrow']" in str(err.value)


def test_validation_token_counts_are_checked(copy):
    m = load_manifest(copy)
    m.validation.sources["wiki"].tokens_packed += 17
    save_manifest(m, copy)
    _recommit(copy)
    with pytest.raises(ShardError, match="validation source 'wiki': shards hold"):
        verify_shards(copy)


def test_manifest_from_before_the_validation_split_still_verifies(copy):
    val = _named(copy, "val-00000.arrow")
    data = json.load(open(os.path.join(copy, "manifest.json")))
    del data["validation"]  # as written before the split existed
    json.dump(data, open(os.path.join(copy, "manifest.json"), "w"))
    os.remove(val)
    _recommit(copy)
    summary = verify_shards(copy)
    assert summary["validation"] is None and summary["rows"] > 0
    with pytest.raises(ShardError, match="lists no validation split"):
        inspect_shards(copy, split="val")


def test_bad_manifest(copy):
    path = os.path.join(copy, "manifest.json")
    data = json.load(open(path))
    json.dump({**data, "schema_version": "0"}, open(path, "w"))
    _recommit(copy)
    with pytest.raises(ShardError, match="manifest version '0'"):
        verify_shards(copy)
    open(path, "w").write("{not json")
    _recommit(copy)
    with pytest.raises(ShardError, match="not a valid manifest"):
        verify_shards(copy)
    os.remove(path)
    with pytest.raises(ShardError, match="manifest not found"):
        verify_shards(copy)


def _rewrite(folder: str, mutate) -> None:
    """Change shard 0's content and re-record its checksum, so only the content checks can catch it."""
    path = _named(folder, "shard-00000.arrow")
    table = read_shard(path)
    tokens = np.array(table.column("tokens").to_pylist(), dtype=np.uint16)
    offsets = table.column("doc_offsets").to_pylist()
    mutate(tokens, offsets)
    width = tokens.shape[1]
    new = pa.Table.from_arrays(
        [
            pa.ListArray.from_arrays(
                pa.array(np.arange(len(tokens) + 1, dtype=np.int32) * width), pa.array(tokens.ravel())
            ),
            pa.array(offsets, type=pa.list_(pa.int32())),
            table.column("source"),
        ],
        schema=table.schema,
    )
    sha = write_shard_file(path, new)
    m = load_manifest(folder)
    m.shards[0].sha256 = sha
    save_manifest(m, folder)
    _recommit(folder)


def test_a_late_rewrite_of_the_manifest_is_refused(copy):
    """The mix's driver writes manifest.json under a fixed name, inside its commit: a rewrite after the commit (a
    zombie driver, a hand edit), even one of the same size, is refused by every reader of the manifest."""
    path = os.path.join(copy, "manifest.json")
    data = json.load(open(path))
    json.dump({**data, "total_tokens": data["total_tokens"] + 1}, open(path, "w"))
    with pytest.raises(AlteredOutput, match="manifest.json: changed since its stage's commit"):
        load_manifest(copy)
    with pytest.raises(ShardError, match="manifest.json: changed since its stage's commit"):
        verify_shards(copy)
    with pytest.raises(ShardError, match="changed since its stage's commit"):
        inspect_shards(copy)
    _recommit(copy)  # the same edit, committed: read as the stage's, and verify finds what it changed
    assert load_manifest(copy).total_tokens == data["total_tokens"] + 1
    with pytest.raises(ShardError, match="manifest total_tokens"):
        verify_shards(copy)


def test_token_id_beyond_vocab(copy):
    vocab = load_manifest(copy).tokenizer.vocab_size

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
    from pipeline.mix.pack import ShardRow, WriteShard

    rows = [
        ShardRow((1, "a", 0), "a", np.array([70000, 5, 9, 1], dtype=np.uint32).tobytes(), [0, 2]),
        ShardRow((0, "b", 0), "b", np.array([1, 2, 70001, 4], dtype=np.uint32).tobytes(), [0]),
    ]
    (info,) = WriteShard(str(tmp_path), "uint32", seq_len=3).process((7, rows))
    assert json.loads(info)["file"] == "shard-00007.arrow"
    with pa.memory_map(str(tmp_path / "shard-00007.arrow")) as src:
        table = pa.ipc.open_file(src).read_all()
    assert validate_shard_schema(table.schema) == "uint32"
    assert table.column("tokens").to_pylist() == [[1, 2, 70001, 4], [70000, 5, 9, 1]]  # ordered by their shuffle order
    assert table.column("source").to_pylist() == ["b", "a"]


# --------------------------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("split", ["train", "val"])
def test_inspect_decodes_rows_back_to_their_documents(shards, texts, split):
    m = load_manifest(shards)
    infos = m.shards if split == "train" else m.validation.shards
    n = min(40, infos[0].rows)
    rows = inspect_shards(shards, rows=n, split=split)
    assert len(rows) == n
    table = read_shard(os.path.join(shards, infos[0].file))
    whole = 0
    for k, row in enumerate(rows):
        assert (row["file"], row["row"]) == (infos[0].file, k)
        assert row["source"] == table.column("source")[k].as_py()
        assert row["doc_offsets"] == table.column("doc_offsets")[k].as_py()
        segs = row["segments"]
        assert segs[0]["start"] == 0 and segs[-1]["end"] == m.seq_len + 1
        assert [s["start"] for s in segs if s["starts_document"]] == row["doc_offsets"]
        for seg in segs:
            if seg["starts_document"] and seg["ends_document"]:  # a whole document: exactly one input text
                assert seg["text"] in {t for i, t in texts.items() if i.startswith(row["source"] + "-")}
                whole += 1
            elif seg["ends_document"]:  # the end of a document begun in an earlier row
                assert any(t.endswith(seg["text"]) for t in texts.values())
            elif seg["starts_document"]:  # a document that goes on in the next row
                assert any(t.startswith(seg["text"]) for t in texts.values())
    assert whole > 0 or split == "val"  # (the few validation rows of 17 tokens may hold no whole document)
    text = format_inspection(rows, max_chars=30)
    assert f"{infos[0].file} row 0 · source {rows[0]['source']}" in text and "▶ new document" in text


def test_inspect_start_crosses_files_and_cli(shards, capsys):
    from pipeline.cli import main

    m = load_manifest(shards)
    first = m.shards[0].rows
    (row,) = inspect_shards(shards, rows=1, start=first + 2)
    assert (row["file"], row["row"]) == (m.shards[1].file, 2)
    assert main(["shards", "inspect", shards, "--rows", "2", "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in out] == [os.path.basename(_named(shards, "val-00000.arrow"))] * 2
    assert main(["shards", "inspect", shards, "--rows", "1"]) == 0
    assert f"{os.path.basename(_named(shards, 'shard-00000.arrow'))} row 0" in capsys.readouterr().out
    assert main(["shards", "inspect", shards, "--tokenizer", os.path.join(shards, "missing.json")]) != 0


# ------------------------------------------------------------------- readers that know nothing of ccgpt


def test_plain_pyarrow_reads_any_row_zero_copy(shards):
    """The recipe in README ("Reading the shards without ccgpt"): memory map + IPC file reader, no copy."""
    m = load_manifest(shards)
    path = os.path.join(shards, m.shards[1].file)
    mm = pa.memory_map(path)
    before = pa.total_allocated_bytes()
    table = pa.ipc.open_file(mm).read_all()  # the footer locates every record batch: no scan, no read
    i = table.num_rows - 3
    row = table.column("tokens")[i].values.to_numpy()  # O(1): list offsets into the mapped buffer
    offsets = table.column("doc_offsets")[i].values.to_numpy()
    assert pa.total_allocated_bytes() == before  # nothing was copied into Arrow memory
    assert row.dtype == np.uint16 and len(row) == m.seq_len + 1 and not row.flags.owndata
    expected = read_shard(path).column("tokens")[i].as_py()
    assert row.tolist() == expected and offsets.tolist() == read_shard(path).column("doc_offsets")[i].as_py()
    # the numpy view's memory lies inside the mapped file
    mm.seek(0)
    mapped = mm.read_buffer(mm.size())  # zero copy on a memory map: the mapping itself
    addr = row.__array_interface__["data"][0]
    assert mapped.address <= addr and addr + row.nbytes <= mapped.address + mapped.size
    mm.close()


def test_hugging_face_datasets_reads_the_shards(shards, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    m = load_manifest(shards)
    path = os.path.join(shards, m.shards[0].file)
    expected = read_shard(path)
    # zero copy: the IPC file format is "ARROW1" + 2 padding bytes + an IPC stream + footer; datasets reads the
    # stream straight out of the memory-mapped buffer
    buffer = pa.memory_map(path).read_buffer()
    before = pa.total_allocated_bytes()
    ds = datasets.Dataset.from_buffer(buffer.slice(8))
    arrow_ds = ds.with_format("arrow")
    row = arrow_ds[7]
    assert pa.total_allocated_bytes() == before
    assert row.column("tokens")[0].as_py() == expected.column("tokens")[7].as_py()
    assert ds.num_rows == m.shards[0].rows and ds[3]["source"] == expected.column("source")[3].as_py()
    torch_rows = ds.with_format("numpy")[0:4]["tokens"]
    assert np.array_equal(torch_rows, np.array(expected.column("tokens").to_pylist()[:4]))
    # Dataset.from_file reads only the IPC stream format, so it refuses the file format (see README)
    with pytest.raises(pa.ArrowInvalid):
        datasets.Dataset.from_file(path)
    # load_dataset("arrow") reads the file format, copying it once into its cache (then memory-mapped)
    loaded = datasets.load_dataset(
        "arrow",
        data_files=[os.path.join(shards, s.file) for s in m.shards],
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert loaded.num_rows == sum(s.rows for s in m.shards)
    assert loaded[0]["tokens"] == expected.column("tokens")[0].as_py()
