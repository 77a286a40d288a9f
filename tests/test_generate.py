"""Sampling from a tiny trained checkpoint: determinism, greedy / top-k semantics, the tokenizer lookup, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_data import load_manifest, make_shards, save_manifest  # noqa: E402  (shared shard-writing helpers)

from train.checkpoint import CheckpointError  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.generate import GenerateError, find_tokenizer, generate, load_model, main  # noqa: E402
from train.trainer import train  # noqa: E402

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the sun is hot and the sky is blue"] * 20


def byte_bpe(path: str, vocab_size: int = 300) -> int:
    """A small byte-level BPE tokenizer.json, as the mix stage writes; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        TEXTS,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.save(path)
    return tok.get_vocab_size()


def train_tiny_run(root, **overrides) -> str:
    """A 3-step nano run on synthetic shards with a real byte-level BPE beside them; returns the run folder."""
    shards = make_shards(str(root / "shards"), vocab_size=300, rows_per_shard=(32,))
    n = byte_bpe(os.path.join(shards, "tokenizer.json"))
    assert n <= 300
    manifest = load_manifest(shards)
    manifest.tokenizer.path = "tokenizer.json"
    manifest.tokenizer.eot_id = 0  # <|endoftext|> is the tokenizer's first token
    save_manifest(manifest, shards)
    out = str(root / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            TrainConfig(
                **{
                    "shards": shards,
                    "out": out,
                    "preset": "nano",
                    "batch_size": 4,
                    "max_steps": 3,
                    "warmup_steps": 1,
                    "log_every": 1,
                    "eval_every": 0,
                    "eval_rows": 0,
                    "seed": 1,
                    **overrides,
                }
            )
        )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    return train_tiny_run(tmp_path_factory.mktemp("gen"))


def test_seeded_sampling_is_deterministic(run_dir):
    model, meta = load_model(run_dir)
    a = generate(model, [5, 6, 7], 12, temperature=1.0, top_k=None, seed=3)
    b = generate(
        os.path.join(run_dir, "checkpoints", "step-00000003"), [5, 6, 7], 12, temperature=1.0, top_k=None, seed=3
    )
    c = generate(model, [5, 6, 7], 12, temperature=1.0, top_k=None, seed=4)
    assert a == b and len(a) == 12 and a != c
    assert all(0 <= t < model.config.vocab_size for t in a)
    assert meta["step"] == 3 and "model" not in meta


def test_greedy_and_top1_follow_the_argmax(run_dir):
    model, _ = load_model(run_dir)
    greedy = generate(model, [9], 6, temperature=0.0)
    assert generate(model, [9], 6, temperature=1.0, top_k=1, seed=11) == greedy
    ids = [9]
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    assert greedy == ids[1:]


def test_long_prompts_are_cropped_and_stop_token_ends_early(run_dir):
    model, _ = load_model(run_dir)
    n_ctx = model.config.n_ctx
    out = generate(model, list(range(1, n_ctx + 10)), 3, temperature=0.0)
    assert len(out) == 3
    first = generate(model, [1, 2], 1, temperature=0.0)[0]
    assert generate(model, [1, 2], 10, temperature=0.0, stop_token=first) == [first]


def test_bad_inputs(run_dir, tmp_path):
    model, _ = load_model(run_dir)
    with pytest.raises(GenerateError, match="empty"):
        generate(model, [], 3)
    with pytest.raises(GenerateError, match="prompt ids"):
        generate(model, [model.config.vocab_size], 3)
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model(str(bad))


def test_tokenizer_found_through_the_manifest(run_dir, tmp_path):
    path = find_tokenizer(run_dir, load_model(run_dir)[1])  # via the run's shard folder
    assert path and path.endswith("tokenizer.json")
    copy = tmp_path / "copied"  # a checkpoint moved elsewhere with its manifest + tokenizer beside it
    copy.mkdir()
    shutil.copytree(os.path.join(run_dir, "checkpoints", "step-00000003"), copy, dirs_exist_ok=True)
    shards = os.path.dirname(path)
    shutil.copy(os.path.join(shards, "manifest.json"), copy)
    shutil.copy(path, copy)
    assert find_tokenizer(str(copy)) == str(copy / "tokenizer.json")
    assert find_tokenizer(str(tmp_path / "nowhere" / "checkpoint.pt")) is None


def test_cli_help_text_prompt_and_ids(run_dir, capsys):
    """``python -m train.generate`` is this ``main`` (checked by hand: ``--help`` exits 0)."""
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--max-new-tokens" in capsys.readouterr().out
    assert (
        main(
            [
                run_dir,
                "--prompt",
                "the cat",
                "--max-new-tokens",
                "5",
                "--seed",
                "1",
                "--json",
                "--device",
                "cpu",
                "--no-stop-at-eot",
            ]
        )
        == 0
    )
    rec = json.loads(capsys.readouterr().out.strip())
    assert len(rec["ids"]) == 5 and rec["text"].startswith("the cat")
    assert (
        main(
            [
                run_dir,
                "--prompt-ids",
                "3,4",
                "--max-new-tokens",
                "4",
                "--temperature",
                "0",
                "--num-samples",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("-" * 40) == 1
    assert main([run_dir + "/missing.pt", "--prompt-ids", "3"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
