"""``ccgpt dedup eval``: pairwise precision / recall / F1 and the adjusted Rand index on a labelled file."""

from __future__ import annotations

import json
import os
import random

import pytest
from sklearn.metrics import adjusted_rand_score

from pipeline.dedup import eval_main, pairwise_scores


def test_ari_matches_sklearn():
    rng = random.Random(0)
    for trial in range(200):
        n = rng.randrange(1, 40)
        truth = {str(i): rng.randrange(1 + trial % 7) for i in range(n)}
        pred = {str(i): rng.randrange(1 + trial % 11) for i in range(n)}
        if trial % 5 == 0:
            pred = dict(truth)  # identical partitions, including all-in-one and all-singletons
        got = pairwise_scores(pred, truth)["ari"]
        want = adjusted_rand_score([truth[i] for i in truth], [pred[i] for i in truth])
        assert got == pytest.approx(want, abs=1e-12)


def _write(path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def test_eval_main_scores_and_writes_json(tmp_path, capsys):
    rng = random.Random(5)
    words = [f"w{rng.randrange(3000)}" for _ in range(120)]
    other = [f"w{rng.randrange(3000)}" for _ in range(120)]
    edited = list(words)
    edited[60] = "changed"
    rows = [
        {"id": "a", "text": " ".join(words), "cluster": "A"},
        {"id": "a2", "text": " ".join(edited), "cluster": "A"},
        {"id": 7, "text": " ".join(other), "cluster": 3},  # integer id and cluster: fine
        {"id": "short", "text": "Breaking news", "cluster": None},  # null: its own singleton
        {"id": "short-copy", "text": "breaking   NEWS", "cluster": "S"},  # found by the exact pass only
        {"id": "short-copy2", "text": "Breaking news.", "cluster": "S"},
        {"id": "empty", "text": "", "cluster": "E"},
    ]
    path = _write(tmp_path / "labelled.jsonl", rows)
    out = tmp_path / "sub" / "scores.json"
    assert eval_main([path, "--threshold", "0.8", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert {"precision", "recall", "f1", "ari"} <= set(printed)
    # Truth pairs: (a, a2), (short-copy, short-copy2). Predicted: (a, a2) and the three "breaking news" texts.
    assert printed["true_pairs"] == 2 and printed["predicted_pairs"] == 4 and printed["true_positive_pairs"] == 2
    assert printed["precision"] == 0.5 and printed["recall"] == 1.0 and printed["documents"] == 7
    truth = ["A", "A", "3", "n", "S", "S", "E"]
    pred = [0, 0, 1, 2, 2, 2, 3]
    assert printed["ari"] == pytest.approx(adjusted_rand_score(truth, pred))


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"id": "a", "text": "x"}\n', "labelled.jsonl:1: missing field(s) cluster"),
        (
            '{"id": "a", "text": "x", "cluster": 1}\n\n{"text": "y", "cluster": 1}\n',
            "labelled.jsonl:3: missing field(s) id",
        ),
        ('{"id": "a", "text": "x", "cluster": 1}\n{"id": "a", "text": "y", "cluster": 1}\n', "repeats"),
        ('{"id": "a", "text": null, "cluster": 1}\n', "text must be a string"),
        ("not json\n", "not valid JSON"),
        ("[1, 2]\n", "expected a JSON object"),
    ],
)
def test_eval_main_bad_files(tmp_path, capsys, content, message):
    path = tmp_path / "labelled.jsonl"
    path.write_text(content, encoding="utf-8")
    assert eval_main([str(path)]) == 2
    assert message in capsys.readouterr().err


def test_eval_main_missing_file_and_help(tmp_path, capsys):
    assert eval_main([str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot open" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        eval_main(["--help"])
    assert exc.value.code == 0 and "--threshold" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        eval_main([str(tmp_path / "x.jsonl"), "--threshold", "1.5"])
    assert exc.value.code == 2


def test_eval_main_syndicated_news(shared_data, tmp_path, capsys):
    path = os.path.join(shared_data, "dedup", "syndicated-news.jsonl")
    assert eval_main([path, "--out", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["f1"] >= 0.95 and scores["ari"] >= 0.95
