"""Mix + packed shards through Beam: realised shares, epochs, packing, determinism across runs and runners."""

from __future__ import annotations

import glob
import json
import os
import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.commit import committed_file, untagged
from pipeline.mix import MixConfig, MixError, run_mix
from pipeline.mix.pack import row_shuffle_keys, shard_count, shard_of
from pipeline.mix.plan import (
    BucketPlan,
    ReachTokens,
    ValidationRule,
    allocate_rows,
    in_prefix,
    plan_budget,
    selection_goal,
    take_prefix,
    val_key,
)
from pipeline.shards import load_manifest
from pipeline.stage import load_stats
from pipeline.tables import write_documents
from pipeline.tokenizer import EOT, TokenizerConfig, load_tokenizer, train_tokenizer

WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which".split()
SIZES = {"crawl": 700, "books": 30, "wiki": 8}  # uneven on purpose: wiki must be repeated, crawl downsampled
WEIGHTS = {"crawl": 5, "books": 3, "wiki": 2}  # normalised to 0.5 / 0.3 / 0.2
SEQ_LEN = 32
BUDGET = 16_000


def make_documents(folder: str) -> dict[str, dict[str, str]]:
    """Three weighted sources over two files, one unweighted source, an empty document and a forged EOT."""
    rng = random.Random(7)
    texts: dict[str, dict[str, str]] = {}
    rows = []
    for source, n in SIZES.items():
        for i in range(n):
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40)))
            text = f"{source} {i}: {body}"
            if source == "books" and i == 1:  # (books-0 is held out for validation)
                text = f"books 1: a {EOT} inside"  # short, so some copy of it lands whole in a row
            texts.setdefault(source, {})[f"{source}-{i}"] = text
            rows.append({"id": f"{source}-{i}", "source": source, "text": text})
    rows += [{"id": f"forum-{i}", "source": "forum", "text": "not in the mix"} for i in range(4)]
    rows.append({"id": "crawl-empty", "source": "crawl", "text": "   "})
    rng.shuffle(rows)
    os.makedirs(folder, exist_ok=True)
    write_documents(rows[:300], os.path.join(folder, "part-0.parquet"))
    write_documents(rows[300:], os.path.join(folder, "part-1.parquet"))
    return texts


def mix_config(tokenizer: str, **kw) -> MixConfig:
    args = dict(tokenizer=tokenizer, weights=WEIGHTS, total_tokens=BUDGET, seq_len=SEQ_LEN, rows_per_shard=128, seed=11)
    args.update(kw)
    return MixConfig(**args)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    from pipeline.runner import RunnerConfig

    base = tmp_path_factory.mktemp("mix")
    docs = str(base / "docs")
    texts = make_documents(docs)
    train_tokenizer([docs], str(base / "tok"), TokenizerConfig(vocab_size=400))
    out = str(base / "shards")
    stats = run_mix([docs], out, mix_config(str(base / "tok")), RunnerConfig("local", 1, "in_memory"))
    return {"base": base, "docs": docs, "texts": texts, "tok": str(base / "tok"), "out": out, "stats": stats}


def read_rows(folder: str, pattern: str = "shard-*.arrow") -> list[tuple[list[int], list[int], str]]:
    """Every row of every shard (in file order), read with pyarrow.ipc alone (no ccgpt code)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, pattern))):
        with pa.memory_map(path) as src:
            table = pa.ipc.open_file(src).read_all()
        rows += zip(
            table.column("tokens").to_pylist(),
            table.column("doc_offsets").to_pylist(),
            table.column("source").to_pylist(),
        )
    return rows


def shard_bytes(folder: str, pattern: str = "shard-*.arrow") -> dict[str, bytes]:
    """Each shard's bytes by its name without the attempt tag (each run tags its files anew)."""
    paths = sorted(glob.glob(os.path.join(folder, pattern)))
    return {untagged(os.path.basename(p)): open(p, "rb").read() for p in paths}


def _untagged_files(infos: list[dict]) -> list[dict]:
    """A manifest's shard entries with their file names untagged: what two runs' manifests compare by."""
    return [{**info, "file": untagged(info["file"])} for info in infos]


def test_realised_shares_and_epochs(mixed):
    m = load_manifest(mixed["out"])
    total = sum(WEIGHTS.values())
    assert set(m.sources) == set(SIZES)
    assert abs(m.total_tokens - BUDGET) <= 3 * (SEQ_LEN + 1)
    for source, s in m.sources.items():
        assert s.weight == pytest.approx(WEIGHTS[source] / total)
        assert abs(s.realised_share - s.weight) < 0.005, (source, s.realised_share, s.weight)
        assert s.realised_share == pytest.approx(s.tokens_drawn / m.total_tokens)
        assert s.epochs == pytest.approx(s.tokens_drawn / s.tokens_available)
        assert s.documents == SIZES[source]
    assert m.sources["crawl"].epochs < 1 < m.sources["books"].epochs < m.sources["wiki"].epochs
    assert m.sources["wiki"].epochs > 5  # ~3,200 tokens drawn from a few hundred available
    assert sum(s.tokens for s in m.shards) == m.total_tokens


def test_accounting_is_exact(mixed):
    stats = load_stats(mixed["out"]).check()
    assert stats.read == sum(SIZES.values()) + 4 + 1
    assert stats.dropped["source_not_in_mix"] == 4
    assert stats.dropped["empty_text"] == 1
    assert stats.dropped.get("not_drawn", 0) > 0  # crawl is downsampled
    # sources drawn for more than one epoch keep every document, and repeat the rest
    m = load_manifest(mixed["out"])
    assert stats.kept >= SIZES["books"] + SIZES["wiki"]
    assert stats.kept + sum(stats.dropped.get(k, 0) for k in ("not_drawn", "packing_tail", "val_packing_tail")) == sum(
        SIZES.values()
    )
    assert 3 <= stats.extra["validation_documents"] <= stats.kept
    assert stats.extra["repeated_documents"] > 0
    assert stats.extra["tokens_per_source"] == {s: v.tokens_drawn for s, v in m.sources.items()}
    with open(committed_file(os.path.join(mixed["out"], "outcomes.jsonl"))) as fh:
        assert sum(json.loads(line)["n"] for line in fh) == stats.read


def test_rows_offsets_and_sources_decode_back(mixed):
    tok = load_tokenizer(mixed["tok"])
    eot = tok.token_to_id(EOT)
    rows = read_rows(mixed["out"])
    m = load_manifest(mixed["out"])
    assert len(rows) == sum(s.rows for s in m.shards)
    assert m.token_dtype == "uint16"
    rows += read_rows(mixed["out"], "val-*.arrow")  # validation rows are packed the same way
    whole: set[str] = set()
    for tokens, offsets, source in rows:
        assert len(tokens) == SEQ_LEN + 1
        assert offsets == sorted(set(offsets)) and all(0 <= o <= SEQ_LEN for o in offsets)
        # a document starts exactly where the previous one's end-of-text token ends
        after_eot = [i + 1 for i, t in enumerate(tokens[:-1]) if t == eot]
        assert [o for o in offsets if o > 0] == after_eot
        for a, b in zip(offsets, offsets[1:]):  # a whole document inside the row decodes to one of its texts
            assert tokens[b - 1] == eot
            text = tok.decode(tokens[a : b - 1])
            assert text in mixed["texts"][source].values()
            whole.add(text)
    assert len(whole) > 50
    # the forged end-of-text inside books-1 never became a boundary: its whole text is one document
    assert mixed["texts"]["books"]["books-1"] in whole


def _documents_of(stream: list[int], eot: int, tok, texts: dict[str, str]) -> tuple[list[str], str | None]:
    """Ids of the whole documents in a source's token stream (in order), and the id the cut last piece starts."""
    by_text = {t: i for i, t in texts.items()}
    pieces, cur = [], []
    for t in stream:
        if t == eot:
            pieces.append(cur)
            cur = []
        else:
            cur.append(t)
    whole = [by_text[tok.decode(p)] for p in pieces]  # KeyError: a piece that is no document's whole text
    cut = None
    if cur:
        starts = [i for t, i in by_text.items() if t.startswith(tok.decode(cur))]
        cut = starts[0] if len(starts) == 1 else None
    return whole, cut


def test_validation_documents_never_reach_a_training_row(mixed):
    """Rebuild every source's training and validation token streams from the files and compare documents."""
    tok = load_tokenizer(mixed["tok"])
    eot = tok.token_to_id(EOT)
    m = load_manifest(mixed["out"])
    stats = load_stats(mixed["out"])
    train_rows = read_rows(mixed["out"])
    counts = {s: sum(1 for _, _, src in train_rows if src == s) for s in SIZES}
    ranks = _shuffle_ranks(11, counts, 128)  # the shuffle is public: row r of a source sits at ranks[source][r]
    val_rows = read_rows(mixed["out"], "val-*.arrow")
    assert [src for _, _, src in val_rows] == sorted(src for _, _, src in val_rows)  # ordered by source
    assert m.validation is not None and m.validation.fraction == 0.01
    held_total = 0
    for source in SIZES:
        train_stream = [t for r in range(counts[source]) for t in train_rows[ranks[source][r]][0]]
        val_stream = [t for tokens, _, src in val_rows if src == source for t in tokens]
        trained_list, train_cut = _documents_of(train_stream, eot, tok, mixed["texts"][source])
        held_list, val_cut = _documents_of(val_stream, eot, tok, mixed["texts"][source])
        assert len(held_list) == len(set(held_list)) and val_cut not in held_list  # held out once, never repeated
        held = set(held_list) | ({val_cut} - {None})
        trained = set(trained_list) | ({train_cut} - {None})
        assert held and trained and not held & trained, source
        v = m.validation.sources[source]
        assert len(val_stream) == v.tokens_packed >= SEQ_LEN + 1  # at least one full row per source
        assert v.documents >= max(1, round(0.01 * SIZES[source])) and v.documents < SIZES[source]
        assert v.documents - len(held) <= 1 + (val_cut is None)  # only the dropped final row's documents are missing
        held_total += len(held)
        # the training pool excludes the held-out documents
        assert m.sources[source].tokens_available + v.tokens == sum(
            len(tok.encode(t).ids) + 1 for t in mixed["texts"][source].values()
        )
    assert held_total == stats.extra["validation_documents"]
    assert m.validation.total_tokens == len(val_rows) * (SEQ_LEN + 1) == stats.extra["validation_tokens"]


def _whole_documents(rows, tok, eot) -> list[str]:
    """The texts of the documents that lie whole inside rows (between two document starts)."""
    whole = []
    for tokens, offsets, _ in rows:
        for a, b in zip(offsets, offsets[1:]):
            assert tokens[b - 1] == eot
            whole.append(tok.decode(tokens[a : b - 1]))
    return whole


def test_sources_packed_in_buckets_keep_exact_shares_accounting_and_held_out_documents(mixed, tmp_path):
    """Crawl in 12 hash buckets (each packed on its own, dropping its own tail): every source still fills exactly
    round(target / row) rows, every document is accounted for, and 2 worker processes give the same bytes."""
    from pipeline.runner import RunnerConfig

    cfg = mix_config(mixed["tok"], pack_bucket_documents=60)
    out = str(tmp_path / "buckets")
    stats = run_mix([mixed["docs"]], out, cfg, RunnerConfig("local", 1, "in_memory")).check()
    m = load_manifest(out)
    total = sum(WEIGHTS.values())
    for source, s in m.sources.items():
        assert s.tokens_drawn == round(BUDGET * WEIGHTS[source] / total / (SEQ_LEN + 1)) * (SEQ_LEN + 1), source
    assert stats.read == sum(SIZES.values()) + 4 + 1
    assert stats.kept + sum(stats.dropped.get(k, 0) for k in ("not_drawn", "packing_tail", "val_packing_tail")) == sum(
        SIZES.values()
    )
    tok = load_tokenizer(mixed["tok"])
    eot = tok.token_to_id(EOT)
    trained = set(_whole_documents(read_rows(out), tok, eot))
    held = set(_whole_documents(read_rows(out, "val-*.arrow"), tok, eot))
    assert held and trained and not held & trained
    assert stats.extra["validation_documents"] >= len(held)
    two = str(tmp_path / "two-workers")
    run_mix([mixed["docs"]], two, cfg, RunnerConfig("local", 2))
    assert shard_bytes(two) == shard_bytes(out) and shard_bytes(two, "val-*") == shard_bytes(out, "val-*")
    assert shard_bytes(out) != shard_bytes(mixed["out"])  # the buckets did change the packing


def _sequential_prefix(items, rule):
    """The prefix rule applied to one source's documents one by one: the oracle of the binned search."""
    count = tokens = 0
    taken = []
    for _key, doc_id, n in sorted(items):
        if rule is None or rule.stop(count, tokens):
            break
        taken.append(doc_id)
        count, tokens = count + 1, tokens + n
    return taken, tokens


def _validation(ids, lengths, source, fraction, max_tokens, width):
    rule = ValidationRule.for_source(len(ids), fraction, max_tokens, width)
    items = [(val_key(source, i), i, int(n)) for i, n in zip(ids, lengths)]
    cut, count, tokens = take_prefix(items, rule)
    chosen = [i for key, i, _ in sorted(items) if in_prefix(key, i, cut)]
    assert (chosen, tokens) == _sequential_prefix(items, rule) and count == len(chosen)
    return chosen


def test_validation_rules():
    ids = [f"d{i}" for i in range(1000)]
    lengths = np.full(1000, 10, dtype=np.int64)
    chosen = _validation(ids, lengths, "s", 0.02, 0, width=33)
    assert len(chosen) == 20 and chosen == _validation(list(reversed(ids)), lengths, "s", 0.02, 0, 33)
    assert _validation(ids, lengths, "t", 0.02, 0, 33) != chosen  # each source its own hash order
    assert len(_validation(ids, lengths, "s", 0.02, 55, 33)) == 6  # capped: stops once 55 tokens are reached
    assert len(_validation(ids, lengths, "s", 0.02, 5, 33)) == 4  # but holds out at least one full row
    assert len(_validation(ids[:3], lengths[:3], "s", 0.01, 0, 33)) == 2  # never the last document
    assert _validation(ids[:1], lengths[:1], "s", 0.5, 0, 33) == []
    assert _validation(ids, lengths, "s", 0.0, 0, 33) == []


def test_binned_prefix_matches_the_sequential_rule_on_crowded_bins():
    """Keys packed into a few histogram bins (and ties between keys) still give the exact sequential prefix."""
    rng = random.Random(3)
    for trial in range(30):
        n = rng.randint(1, 400)
        spread = rng.choice([1, 3, 1 << 50, 1 << 63])  # 1: every key in bin 0 and equal; 1 << 63: two bins
        items = [(rng.randrange(spread), f"id{i}", rng.randint(1, 50)) for i in range(n)]
        for rule in (ReachTokens(rng.randint(1, 30 * n)), ValidationRule.for_source(n, 0.1, rng.randint(0, 500), 33)):
            cut, count, tokens = take_prefix(items, rule)
            taken = sorted(i for key, i, _ in items if in_prefix(key, i, cut))
            expected, expected_tokens = _sequential_prefix(items, rule)
            assert (taken, tokens, count) == (sorted(expected), expected_tokens, len(expected)), (trial, rule)


def test_rows_are_shared_among_buckets_by_capacity():
    plans = allocate_rows(10, {0: (7, 1), 1: (3, 0), 2: (5, 2)})
    assert sum(p.rows for p in plans.values()) == 10 and all(plans[b].rows <= c for b, c in {0: 7, 1: 3, 2: 5}.items())
    assert [p.offset for p in plans.values()] == [0, plans[0].rows, plans[0].rows + plans[1].rows]
    assert [(p.val_rows, p.val_offset) for p in plans.values()] == [(1, 0), (0, 1), (2, 1)]
    assert sum(p.rows for p in allocate_rows(99, {0: (2, 0), 1: (4, 0)}).values()) == 6  # short: every row it can
    assert allocate_rows(5, {3: (0, 1)}) == {3: BucketPlan(0, 0, 1, 0)}


def test_selection_goal_overdraws_by_a_row_per_bucket_unless_that_would_repeat():
    assert selection_goal(1000, 400, 3, 33) == 1000 + 3 * 33  # repeated anyway: a row per bucket more
    assert selection_goal(100, 400, 3, 33) == 199 and selection_goal(390, 400, 3, 33) == 400  # never repeats
    assert selection_goal(0, 400, 3, 33) == 0


def test_rows_are_shuffled_across_sources(mixed):
    sources = [s for _, _, s in read_rows(mixed["out"])]
    assert sources[:40].count("crawl") < 40 and len(set(sources[:40])) == 3
    files = sorted(glob.glob(os.path.join(mixed["out"], "shard-*.arrow")))
    assert len(files) == -(-len(sources) // 128)  # rows_per_shard rows per file, the last one partial


def test_same_seed_gives_byte_identical_shards_on_both_runners(mixed, local_runner, portable_runner):
    base = mixed["base"]
    reference = shard_bytes(mixed["out"])
    assert reference
    again = str(base / "again")
    run_mix([mixed["docs"]], again, mix_config(mixed["tok"]), local_runner)
    assert shard_bytes(again) == reference
    portable = str(base / "portable")
    stats = run_mix([mixed["docs"]], portable, mix_config(mixed["tok"]), portable_runner)
    assert shard_bytes(portable) == reference
    assert stats.to_dict()["dropped"] == mixed["stats"].to_dict()["dropped"]
    with open(os.path.join(mixed["out"], "manifest.json")) as a, open(os.path.join(portable, "manifest.json")) as b:
        ma, mb = json.load(a), json.load(b)
    assert _untagged_files(ma["shards"]) == _untagged_files(mb["shards"]) and ma["sources"] == mb["sources"]
    assert shard_bytes(portable, "val-*.arrow") == shard_bytes(mixed["out"], "val-*.arrow")
    other = str(base / "other-seed")
    run_mix([mixed["docs"]], other, mix_config(mixed["tok"], seed=12), local_runner)
    assert shard_bytes(other) != reference
    # the held-out documents depend on the document ids only: another seed holds out the very same rows
    assert shard_bytes(other, "val-*.arrow") == shard_bytes(mixed["out"], "val-*.arrow") != {}


def test_rerun_is_skipped_when_complete(mixed, local_runner):
    before = os.stat(os.path.join(mixed["out"], "stats.json")).st_mtime_ns
    stats = run_mix([mixed["docs"]], mixed["out"], mix_config(mixed["tok"]), local_runner)
    assert stats.to_dict() == mixed["stats"].to_dict()
    assert os.stat(os.path.join(mixed["out"], "stats.json")).st_mtime_ns == before


def test_mix_table_is_gpt3_table_2_2(mixed):
    with open(os.path.join(mixed["out"], "mix_table.md")) as fh:
        lines = fh.read().splitlines()
    assert lines[0].startswith(
        "| Dataset | Quantity (tokens) | Weight in training mix | Epochs elapsed when training for"
    )
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["crawl", "books", "wiki"]
    assert lines[2].split("|")[3].strip() == "50%"


@pytest.fixture
def no_pipeline(monkeypatch):
    """Fail the test if the mix starts a Beam pipeline: the error must come before any work."""
    import pipeline.runner

    def refuse(*args, **kwargs):
        raise AssertionError("the Beam pipeline was started")

    monkeypatch.setattr(pipeline.runner, "make_pipeline", refuse)


def test_weighted_source_without_documents_is_a_clear_error(mixed, local_runner, tmp_path, no_pipeline):
    cfg = mix_config(mixed["tok"], weights={"crawl": 1, "books": 1, "papers": 1})
    with pytest.raises(MixError, match=r"\['papers'\] have no documents"):
        run_mix([mixed["docs"]], str(tmp_path / "out"), cfg, local_runner)
    assert not os.path.exists(tmp_path / "out")  # nothing half-written


def test_unmeetable_weights_fail_before_the_pipeline(mixed, local_runner, tmp_path, no_pipeline):
    out = str(tmp_path / "out")
    # a 0.1 % share of 16,000 tokens is 16 tokens: the source could not get a single row of 33
    tiny = mix_config(mixed["tok"], weights={"crawl": 998, "books": 1, "wiki": 1})
    with pytest.raises(
        MixError, match=r"source 'books': weight 0.001 of a 16000-token budget is 16 tokens, less than one row"
    ):
        run_mix([mixed["docs"]], out, tiny, local_runner)
    one = str(tmp_path / "one")  # a weighted source of one document cannot give one to validation and keep one
    os.makedirs(one)
    write_documents([{"id": "solo", "source": "solo", "text": "a lone document"}], os.path.join(one, "part-0.parquet"))
    cfg = mix_config(mixed["tok"], weights={"crawl": 1, "solo": 1})
    with pytest.raises(MixError, match=r"\{'solo': 1\} have fewer than 2 documents"):
        run_mix([mixed["docs"], one], out, cfg, local_runner)
    with pytest.raises(MixError, match="val_fraction"):  # checked as the config is built
        mix_config(mixed["tok"], val_fraction=1.0)
    assert not os.path.exists(out)


def test_weight_beyond_max_epochs_is_an_error_before_anything_is_written(mixed, local_runner, tmp_path):
    # wiki's 20 % of the budget needs > 5 passes over its few hundred tokens (test_realised_shares_and_epochs)
    out = str(tmp_path / "out")
    with pytest.raises(
        MixError,
        match=r"source 'wiki': weight 0.2 of a 16000-token budget needs [\d.]+ epochs .* "
        r"more than max_epochs=4",
    ):
        run_mix([mixed["docs"]], out, mix_config(mixed["tok"], max_epochs=4), local_runner)
    assert not os.path.exists(os.path.join(out, "stats.json"))  # nothing committed


def test_bad_weights_fail_before_any_work(tmp_path, local_runner):
    for weights in ({}, {"a": -1.0}, {"a": 0.0}):
        with pytest.raises(MixError):
            run_mix([str(tmp_path)], str(tmp_path / "out"), MixConfig(tokenizer="t", weights=weights), local_runner)


def test_budget_zero_repeats_no_source():
    available = {"crawl": 1000, "books": 100, "wiki": 50}
    weights = {"crawl": 6, "books": 2, "wiki": 2}
    budget = plan_budget(available, weights, 0)
    assert budget == 250  # wiki (20 % of the mix) has 50 tokens: the binding source
    assert all(budget * w / 10 <= available[s] + 1e-9 for s, w in weights.items())
    with pytest.raises(MixError, match="no documents"):
        plan_budget({"crawl": 10}, weights, 0)


def _shuffle_ranks(seed: int, rows_per_source: dict[str, int], rows_per_shard: int) -> dict[str, list[int]]:
    """Where every row of every source lands in the shard files read in order: the shuffle's public rule, each
    row's seeded key choosing its shard by range and its place in the shard by value."""
    shards = shard_count(rows_per_source, rows_per_shard)
    rows = [
        (shard_of(key, shards), int(key), s, i)
        for s, n in rows_per_source.items()
        for i, key in enumerate(row_shuffle_keys(seed, s, np.arange(n)))
    ]
    ranks: dict[str, list[int]] = {s: [0] * n for s, n in rows_per_source.items()}
    for rank, (_, _, s, i) in enumerate(sorted(rows)):
        ranks[s][i] = rank
    return ranks


def test_the_shuffle_spreads_rows_evenly_without_a_rank_table():
    from pipeline.mix.pack import AssignShard, Row

    counts = {"a": 7000, "b": 3000, "c": 0}
    assign = AssignShard(seed=5, rows_per_shard=1000)
    shards: dict[int, list] = {}
    for s, n in counts.items():
        for i in range(n):
            ((shard, row),) = assign.process(Row(s, i, b"", []), counts)
            shards.setdefault(shard, []).append(row.order)
    assert sorted(shards) == list(range(10)) and all(800 < len(v) < 1200 for v in shards.values())
    ranks = _shuffle_ranks(5, counts, 1000)
    order = [o for k in sorted(shards) for o in sorted(shards[k])]
    assert [ranks[s][i] for _, s, i in order] == list(range(10_000))
    assert ranks["a"][:20] != sorted(ranks["a"][:20])  # shuffled, not in source order


def test_gpt3_preset_loads_as_a_mix_config():
    from pipeline.mix.plan import normalise_weights
    from schemas.config import from_dict, parse_yaml

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(repo, "configs", "mix-gpt3.yaml")
    cfg = from_dict(MixConfig, parse_yaml(open(path, encoding="utf-8").read(), path)["mix"])
    shares = normalise_weights(cfg.weights)
    assert set(shares) == {"crawl", "webtext2", "books1", "books2", "wikipedia"}
    assert shares["crawl"] == pytest.approx(60 / 101) and sum(shares.values()) == pytest.approx(1.0)
