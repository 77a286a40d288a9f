"""The shard loader: validation, deterministic disjoint slices, exact resume, held-out rows, clear errors.

``make_shards`` (also used by the trainer tests) writes small shards with plain pyarrow and the schema
contracts, the way the pipeline does, so these tests do not depend on ``pipeline/``.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from schemas.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    SourceMix,
    TokenizerInfo,
    ValidationSource,
    ValidationSplit,
)
from schemas.shards import SHARD_SCHEMA_VERSION, shard_schema
from train.config import ModelConfig
from train.data import DataError, ShardLoader, check_compatibility, resolve_model_config

EOT = 0


def load_manifest(folder: str) -> Manifest:
    """The manifest beside the shards in ``folder``, read as the trainer reads a local one."""
    with open(os.path.join(folder, MANIFEST_NAME), encoding="utf-8") as fh:
        return Manifest.from_json(fh.read())


def save_manifest(manifest: Manifest, folder: str) -> None:
    with open(os.path.join(folder, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        fh.write(manifest.to_json())


def _cycle_docs(rng: np.random.Generator, cycle: np.ndarray, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents that walk a fixed cycle of token ids from a random start, each followed by EOT.

    Next-token prediction is learnable (the successor in the cycle) except at a document start, so a
    small model's loss falls within a few dozen steps. Returns the token stream and the document starts.
    """
    tokens, starts = [], []
    n = 0
    while n < n_tokens:
        length = int(rng.integers(6, 40))
        start = int(rng.integers(len(cycle)))
        doc = cycle[(start + np.arange(length)) % len(cycle)]
        starts.append(n)
        tokens.extend(doc.tolist())
        tokens.append(EOT)
        n += length + 1
    return np.asarray(tokens, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def make_shards(
    root: str,
    *,
    seq_len: int = 32,
    vocab_size: int = 64,
    rows_per_shard: tuple[int, ...] = (48, 40),
    sources: tuple[str, ...] = ("web", "books"),
    token_dtype: str = "uint16",
    batch_rows: int = 16,
    seed: int = 0,
    val_rows: int = 0,
) -> str:
    """Write shards + manifest.json into ``root``; rows alternate between sources. Returns ``root``.

    ``val_rows > 0`` also writes a validation split, ``val-00000.arrow``: that many rows per source, from
    documents of their own, ordered by source (as the mix stage writes it).
    """
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    total_rows = sum(rows_per_shard)
    # One token stream per source, each with its own cycle, packed into rows of seq_len + 1.
    streams = {}
    for s in sources:
        cycle = rng.permutation(np.arange(1, vocab_size))[: max(8, vocab_size // 2)]
        need = (total_rows // len(sources) + 2) * (seq_len + 1)
        streams[s] = _cycle_docs(rng, cycle, need)
    cursor = {s: 0 for s in sources}
    schema = shard_schema(token_dtype)
    infos, per_source_rows = [], {s: 0 for s in sources}

    def take_row(s: str) -> tuple[list[int], list[int]]:
        toks, starts = streams[s]
        a = cursor[s]
        cursor[s] += seq_len + 1
        inside = starts[(starts >= a) & (starts < a + seq_len + 1)] - a
        return toks[a : a + seq_len + 1].tolist(), inside.astype(np.int32).tolist()

    def write(name: str, table: pa.Table) -> ShardInfo:
        path = os.path.join(root, name)
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        return ShardInfo(file=name, rows=table.num_rows, tokens=table.num_rows * (seq_len + 1), sha256=digest)

    row_no = 0
    for i, n_rows in enumerate(rows_per_shard):
        tokens, offsets, srcs = [], [], []
        for _ in range(n_rows):
            s = sources[row_no % len(sources)]
            row_no += 1
            row, offs = take_row(s)
            tokens.append(row)
            offsets.append(offs)
            srcs.append(s)
            per_source_rows[s] += 1
        table = pa.Table.from_pydict({"tokens": tokens, "doc_offsets": offsets, "source": srcs}, schema=schema)
        infos.append(write(f"shard-{i:05d}.arrow", table))
    validation = None
    if val_rows:
        for s in sources:  # documents of their own: the held-out rows start on a fresh document
            toks, starts = streams[s]
            later = starts[starts >= cursor[s]]
            cursor[s] = int(later[0])
            need = cursor[s] + (val_rows + 1) * (seq_len + 1)
            if need > len(toks):
                cycle = np.unique(toks[toks != EOT])
                more, more_starts = _cycle_docs(rng, cycle, need - len(toks))
                streams[s] = (np.concatenate([toks, more]), np.concatenate([starts, more_starts + len(toks)]))
        vt, vo, vs = [], [], []
        for s in sorted(sources):
            for _ in range(val_rows):
                row, offs = take_row(s)
                vt.append(row)
                vo.append(offs)
                vs.append(s)
        table = pa.Table.from_pydict({"tokens": vt, "doc_offsets": vo, "source": vs}, schema=schema)
        vinfo = write("val-00000.arrow", table)
        validation = ValidationSplit(
            fraction=0.01,
            max_tokens_per_source=0,
            total_tokens=vinfo.tokens,
            shards=[vinfo],
            sources={
                s: ValidationSource(
                    documents=1, tokens=val_rows * (seq_len + 1), tokens_packed=val_rows * (seq_len + 1)
                )
                for s in sources
            },
        )
    total_tokens = total_rows * (seq_len + 1)
    mix = {
        s: SourceMix(
            weight=1.0 / len(sources),
            documents=per_source_rows[s],
            tokens_available=per_source_rows[s] * (seq_len + 1),
            tokens_drawn=per_source_rows[s] * (seq_len + 1),
            epochs=1.0,
            realised_share=per_source_rows[s] / total_rows,
        )
        for s in sources
    }
    manifest = Manifest(
        shard_schema_version=SHARD_SCHEMA_VERSION,
        seq_len=seq_len,
        token_dtype=token_dtype,
        tokenizer=TokenizerInfo(content_hash="ab" * 32, vocab_size=vocab_size, eot_id=EOT),
        seed=seed,
        total_tokens=total_tokens,
        sources=mix,
        shards=infos,
        validation=validation,
    )
    save_manifest(manifest, root)
    return root


def read_rows(root: str, split: str = "train") -> list[tuple[list[int], list[int], str]]:
    """All rows of a split in global order, read independently of the loader."""
    m = load_manifest(root)
    out = []
    for s in m.shards if split == "train" else m.validation.shards:
        with pa.memory_map(os.path.join(root, s.file)) as src:
            t = pa.ipc.open_file(src).read_all()
            out.extend(
                zip(t.column("tokens").to_pylist(), t.column("doc_offsets").to_pylist(), t.column("source").to_pylist())
            )
    return out


@pytest.fixture
def shards(tmp_path) -> str:
    return make_shards(str(tmp_path / "shards"))


def take(loader: ShardLoader, n: int) -> list:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_batches_match_the_files(shards):
    rows = read_rows(shards)
    loader = ShardLoader(shards, batch_size=4, seed=1)
    for batch in take(loader, 5):
        assert batch.x.shape == batch.y.shape == batch.doc_ids.shape == (4, 32)
        assert batch.x.dtype == torch.int64
        for i, g in enumerate(batch.index.tolist()):
            tokens, offsets, source = rows[g]
            assert batch.x[i].tolist() == tokens[:-1]
            assert batch.y[i].tolist() == tokens[1:]
            assert batch.sources[i] == source
            assert loader.sources[int(batch.source_ids[i])] == source
            expected_ids = [sum(1 for o in offsets if o <= t) for t in range(32)]
            assert batch.doc_ids[i].tolist() == expected_ids


def test_uint32_shards_read_the_same(tmp_path):
    a = make_shards(str(tmp_path / "a"), token_dtype="uint16")
    b = make_shards(str(tmp_path / "b"), token_dtype="uint32")
    for x, y in zip(take(ShardLoader(a, 4, seed=3), 3), take(ShardLoader(b, 4, seed=3), 3)):
        assert torch.equal(x.x, y.x) and torch.equal(x.doc_ids, y.doc_ids)


def test_order_is_deterministic_and_seeded(shards):
    a = [b.index.tolist() for b in take(ShardLoader(shards, 4, seed=7), 6)]
    b = [b.index.tolist() for b in take(ShardLoader(shards, 4, seed=7), 6)]
    c = [b.index.tolist() for b in take(ShardLoader(shards, 4, seed=8), 6)]
    assert a == b
    assert a != c


def test_ranks_are_disjoint_and_union_is_the_single_process_batch(shards):
    world, bs = 3, 2
    single = ShardLoader(shards, batch_size=world * bs, seed=5, rank=0, world_size=1)
    ranks = [ShardLoader(shards, batch_size=bs, seed=5, rank=r, world_size=world) for r in range(world)]
    n_micro = len(single.train_index) // (world * bs)
    singles = take(single, n_micro)
    per_rank = [take(ld, n_micro) for ld in ranks]
    seen = []
    for k in range(n_micro):
        parts = [set(per_rank[r][k].index.tolist()) for r in range(world)]
        for r in range(world):
            for q in range(r + 1, world):
                assert not parts[r] & parts[q]
        assert set().union(*parts) == set(singles[k].index.tolist())
        seen.extend(singles[k].index.tolist())
    # One epoch covers every training row once (up to the tail that cannot fill a global micro-batch).
    assert len(seen) == len(set(seen))
    assert len(set(single.train_index.tolist()) - set(seen)) == len(single.train_index) % (world * bs)


def test_workers_produce_the_same_stream(shards):
    plain = [b.index.tolist() for b in take(ShardLoader(shards, 3, seed=2), 40)]  # crosses an epoch boundary
    workers = [b.index.tolist() for b in take(ShardLoader(shards, 3, seed=2, num_workers=2), 40)]
    assert plain == workers


def test_exact_resume_mid_epoch_and_across_epochs(shards):
    ref = ShardLoader(shards, 4, seed=11)
    stream = [b.index.tolist() for b in take(ref, 50)]
    for cut in (7, 20, 33):
        first = ShardLoader(shards, 4, seed=11)
        take(first, cut)
        state = first.state_dict()
        resumed = ShardLoader(shards, 4, seed=11)
        resumed.load_state_dict(state)
        assert [b.index.tolist() for b in take(resumed, 50 - cut)] == stream[cut:]
        assert resumed.source_samples() != {s: 0 for s in resumed.sources}


def test_resume_with_a_different_world_size(shards):
    single = ShardLoader(shards, batch_size=4, seed=4)
    take(single, 5)
    state = single.state_dict()
    continued = take(single, 6)
    ranks = [ShardLoader(shards, batch_size=2, seed=4, rank=r, world_size=2) for r in range(2)]
    for ld in ranks:
        ld.load_state_dict(state)
    parts = [take(ld, 6) for ld in ranks]
    for k in range(6):
        union = set(parts[0][k].index.tolist()) | set(parts[1][k].index.tolist())
        assert union == set(continued[k].index.tolist())
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


def test_state_survives_weights_only_load(shards, tmp_path):
    ld = ShardLoader(shards, 4, seed=1)
    take(ld, 3)
    path = tmp_path / "state.pt"
    torch.save(ld.state_dict(), path)
    assert torch.load(path, weights_only=True) == ld.state_dict()


def test_source_counters_count_global_samples(shards):
    world, bs = 2, 3
    ranks = [ShardLoader(shards, bs, seed=9, rank=r, world_size=world) for r in range(world)]
    batches = [take(ld, 10) for ld in ranks]
    counted: dict[str, int] = {}
    for per_rank in batches:
        for b in per_rank:
            for s in b.sources:
                counted[s] = counted.get(s, 0) + 1
    assert ranks[0].source_samples() == counted == ranks[1].source_samples()
    assert sum(counted.values()) == 10 * world * bs


def test_held_out_rows_are_stratified_and_never_trained_on(shards):
    """A manifest without a validation split (as written before it existed): rows are held out of training."""
    assert load_manifest(shards).validation is None
    ld = ShardLoader(shards, 4, seed=3, eval_rows=6)
    assert ld.eval_rows == 6 and ld.eval_split == "train"
    held = set(ld.eval_index.tolist())
    rows = read_rows(shards)
    assert {rows[g][2] for g in held} == {"web", "books"}
    trained = {g for b in take(ld, 60) for g in b.index.tolist()}
    assert trained and not trained & held
    assert len(trained) == len(ld.train_index) == ld.total_rows - 6
    # The ranks' eval shares partition the held-out rows.
    got = []
    for r in range(2):
        part = ShardLoader(shards, 2, seed=3, eval_rows=6, rank=r, world_size=2)
        got.extend(g for b in part.eval_batches() for g in b.index.tolist())
    assert sorted(got) == sorted(held)


def test_held_out_is_capped(shards):
    ld = ShardLoader(shards, 4, eval_rows=10_000)
    assert ld.eval_rows == int(ld.total_rows * 0.1)


def test_missing_shard_is_a_clear_error(shards):
    os.remove(os.path.join(shards, "shard-00001.arrow"))
    with pytest.raises(DataError, match="missing.*shard-00001"):
        ShardLoader(shards, 4)


def test_sha256_mismatch_is_caught_before_the_first_step(shards):
    path = os.path.join(shards, "shard-00000.arrow")
    m = load_manifest(shards)
    m.shards[0].sha256 = "0" * 64
    save_manifest(m, shards)
    with pytest.raises(DataError, match="shard-00000.arrow: sha256"):
        ShardLoader(shards, 4)  # verified by default
    # each rank hashes its own share: rank 1 of 2 does not hold shard 0, rank 0 does
    ShardLoader(shards, 4, rank=1, world_size=2)
    with pytest.raises(DataError, match="sha256"):
        ShardLoader(shards, 4, rank=0, world_size=2)
    ShardLoader(shards, 4, verify_sha256=False)  # a user who opts out
    assert os.path.exists(path)


def test_row_count_and_schema_are_checked(shards, tmp_path):
    m = load_manifest(shards)
    m.shards[1].rows += 1
    save_manifest(m, shards)
    with pytest.raises(DataError, match="rows"):
        ShardLoader(shards, 4)
    m.shards[1].rows -= 1
    save_manifest(m, shards)
    bad = pa.table({"tokens": pa.array([[1, 2]], pa.list_(pa.uint16()))})
    with pa.OSFile(os.path.join(shards, "shard-00001.arrow"), "wb") as sink, pa.ipc.new_file(sink, bad.schema) as w:
        w.write_table(bad)
    with pytest.raises(DataError, match="shard-00001.arrow: sha256"):
        ShardLoader(shards, 4)  # hashed first, by default
    with pytest.raises(DataError, match="not a ccgpt token shard"):
        ShardLoader(shards, 4, verify_sha256=False)  # and the schema is checked without the hash too


def test_out_of_range_tokens_fail_when_read(tmp_path):
    root = make_shards(str(tmp_path / "s"), vocab_size=64)
    m = load_manifest(root)
    m.tokenizer.vocab_size = 10  # the shards hold ids up to 63
    save_manifest(m, root)
    with pytest.raises(DataError, match="vocab_size"):
        take(ShardLoader(root, 4), 1)


def test_model_compatibility(shards):
    m = load_manifest(shards)
    cfg = resolve_model_config(ModelConfig(n_layer=1, n_head=1, n_embd=8), m)
    assert (cfg.vocab_size, cfg.n_ctx) == (64, 32)
    padded = ModelConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=128, n_ctx=64)
    assert resolve_model_config(padded, m) == padded  # a larger table / context is fine
    with pytest.raises(DataError, match="vocab_size=32 is smaller"):
        check_compatibility(m, ModelConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=32, n_ctx=32))
    with pytest.raises(DataError, match="n_ctx=16 is shorter"):
        check_compatibility(m, ModelConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=64, n_ctx=16))
    with pytest.raises(DataError, match="tokenizer"):
        check_compatibility(m, cfg, tokenizer_hash="cd" * 32)
    check_compatibility(m, cfg, tokenizer_hash="ab" * 32)


def test_too_few_rows_for_a_global_batch(tmp_path):
    root = make_shards(str(tmp_path / "s"), rows_per_shard=(3,))
    with pytest.raises(DataError, match="cannot fill"):
        take(ShardLoader(root, 4), 1)


def test_validation_split_is_evaluated_and_every_training_row_trains(tmp_path):
    root = make_shards(str(tmp_path / "s"), val_rows=5)
    val_rows = read_rows(root, "val")
    train_rows = read_rows(root)
    ld = ShardLoader(root, 4, seed=3, eval_rows=6)
    assert ld.eval_split == "val" and ld.eval_rows == 6
    assert len(ld.train_index) == ld.total_rows == len(train_rows)  # nothing held out of training
    batches = list(ld.eval_batches(batch_size=4))
    got = [g for b in batches for g in b.index.tolist()]
    assert got == ld.eval_index.tolist() and len(got) == 6
    for b in batches:  # the rows come from val-00000.arrow, with their sources
        for i, g in enumerate(b.index.tolist()):
            tokens, offsets, source = val_rows[g]
            assert b.x[i].tolist() == tokens[:-1] and b.y[i].tolist() == tokens[1:]
            assert b.sources[i] == source == ld.sources[int(b.source_ids[i])]
            assert b.doc_ids[i].tolist() == [sum(1 for o in offsets if o <= t) for t in range(32)]
    assert sorted({val_rows[g][2] for g in got}) == ["books", "web"]  # round-robin: every source evaluated
    # the validation documents are not in any training row
    val_windows = {tuple(t) for t, _, _ in val_rows}
    assert not val_windows & {tuple(t) for t, _, _ in train_rows}
    # eval_rows only caps the validation rows: the training order does not depend on it
    all_val = ShardLoader(root, 4, seed=3, eval_rows=10_000)
    assert all_val.eval_rows == len(val_rows) == 10 and all_val.fingerprint == ld.fingerprint
    assert [b.index.tolist() for b in take(all_val, 5)] == [b.index.tolist() for b in take(ld, 5)]
    # ranks partition the evaluation rows
    parts = [
        g
        for r in range(2)
        for b in ShardLoader(root, 2, seed=3, eval_rows=6, rank=r, world_size=2).eval_batches()
        for g in b.index.tolist()
    ]
    assert sorted(parts) == got
    assert ShardLoader(root, 4, eval_rows=0).eval_rows == 0


def test_missing_or_corrupt_validation_shard_is_a_clear_error(tmp_path):
    root = make_shards(str(tmp_path / "s"), val_rows=2)
    m = load_manifest(root)
    m.validation.shards[0].sha256 = "0" * 64
    save_manifest(m, root)
    with pytest.raises(DataError, match="val-00000.arrow: sha256"):
        ShardLoader(root, 4)
    os.remove(os.path.join(root, "val-00000.arrow"))
    with pytest.raises(DataError, match="missing.*val-00000"):
        ShardLoader(root, 4)
