"""lm-eval is the oracle: on a tiny trained model, exported with `ccgpt export`, `lm-eval --model hf` with local
task YAMLs over the same data agrees with `ccgpt eval` (on the checkpoint and on the export): identical
per-pair decisions on BLiMP (and per-item acc / acc_norm on a multiple-choice task), log-likelihoods and
perplexities equal to 1e-4 relative.

Needs the `eval-oracle` extra (lm-eval[hf]==0.4.13, installed by `make test`); runs offline. The lm-eval task
YAMLs are bench/eval.py's (lm-eval's own WikiText detokenizer and word/byte counts, over local articles)."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_eval import train_eval_run  # noqa: E402

from bench.eval import write_oracle_tasks  # noqa: E402
from train.eval import evaluate  # noqa: E402
from train.tasks import load_task, read_examples  # noqa: E402

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is the `eval-oracle` extra: pip install -e '.[eval-oracle]'")

PARADIGMS = ("adjunct_island", "anaphor_gender_agreement")
PAIRS = 20
ARTICLES = 2
RTOL = 1e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from train.export import export

    root = tmp_path_factory.mktemp("parity")
    run = train_eval_run(root)
    return run, export(run, str(root / "hf"))


def _ccgpt_blimp(folder, paradigms=PARADIGMS) -> str:
    """The shipped BLiMP task file, narrowed to ``paradigms`` (the first pairs are taken with `limit`)."""
    blimp = load_task("blimp")
    members = ", ".join(f"data/{p}.jsonl" for p in paradigms)
    text = open(blimp.source, encoding="utf-8").read().replace("members: data/*.jsonl", f"members: [{members}]")
    path = folder / f"blimp-{len(paradigms)}.yaml"
    path.write_text(text)
    return str(path)


MC_YAML = """task: oracle_mc
dataset_path: json
dataset_kwargs:
  data_files: {{train: {data}}}
  cache_dir: {cache}
output_type: multiple_choice
validation_split: train
doc_to_text: "{{{{ctx}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{endings}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def _multiple_choice(folder, shared_data) -> str:
    """A multiple-choice task over real sentences (context: a BLiMP good sentence's first words; choices: the
    rest of it, the rest of its bad twin, and a shuffled copy), as JSONL, an lm-eval YAML and a ccgpt task file.
    """
    (sub,) = read_examples(load_task(_ccgpt_blimp(folder, PARADIGMS[:1])), shared_data, limit=PAIRS)
    rows = []
    for i, ex in enumerate(sub.examples):
        good, bad = ex.good.split(), ex.bad.split()
        k = 2 + i % 3
        endings = [" ".join(good[k:]), " ".join(bad[k:]), " ".join(reversed(good[k:]))]
        ctx = " ".join(good[:k]) + (" " if i % 2 else "")  # a trailing space moves into the continuation
        rows.append({"ctx": ctx, "endings": endings, "label": i % 3})
    data = folder / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "oracle" / "oracle_mc.yaml").write_text(MC_YAML.format(data=data, cache=folder / "hf-mc"))
    spec = folder / "mc.yaml"
    spec.write_text(
        f"version: 1\nname: mc\nformat: multiple_choice\ndata: {{path: {data}}}\n"
        "fields: {context: ctx, choices: endings, label: label}\nmetrics: [acc, acc_norm]\n"
    )
    return str(spec)


def test_ccgpt_eval_agrees_with_lm_eval(models, tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    run, hf = models
    (tmp_path / "oracle").mkdir()
    names = write_oracle_tasks(str(tmp_path / "oracle"), shared_data, list(PARADIGMS), PAIRS, ARTICLES)
    blimp = _ccgpt_blimp(tmp_path)
    assert len(read_examples(load_task(blimp), shared_data, limit=PAIRS)) == len(PARADIGMS)
    mc = _multiple_choice(tmp_path, shared_data)

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    oracle = simple_evaluate(
        model="hf",
        model_args={"pretrained": hf},
        tasks=[*names, "oracle_mc"],
        task_manager=TaskManager(include_path=str(tmp_path / "oracle"), include_defaults=False),
        batch_size=8,
        device="cpu",
        bootstrap_iters=0,
        log_samples=True,
    )
    for i, model in enumerate((run, hf)):
        out = tmp_path / f"ours{i}"
        ours = evaluate(model, blimp, str(out), data_root=shared_data, limit=PAIRS, device="cpu", batch_size=16)
        wiki = evaluate(model, "wikitext2", None, data_root=shared_data, limit=ARTICLES, device="cpu")
        choice = evaluate(model, mc, str(out), device="cpu")
        ours_samples = _samples(out / "samples_blimp.jsonl")
        for p in PARADIGMS:
            theirs = sorted(oracle["samples"][f"oracle_blimp_{p}"], key=lambda s: s["doc_id"])
            mine = ours_samples[f"blimp_{p}"]
            assert len(theirs) == len(mine) == PAIRS
            assert [int(s["acc"]) for s in theirs] == [s["acc"] for s in mine], (model, p)
            for s, m in zip(theirs, mine):
                lls = [r[0] for r in s["filtered_resps"]]
                assert m["ll"] == pytest.approx(lls, rel=RTOL)
            acc = oracle["results"][f"oracle_blimp_{p}"]["acc,none"]
            assert ours["results"][f"blimp_{p}"]["acc,none"] == pytest.approx(acc, abs=1e-12)
        theirs = sorted(oracle["samples"]["oracle_mc"], key=lambda s: s["doc_id"])
        mine = _samples(out / "samples_mc.jsonl")["mc"]
        assert 0 < sum(m["acc"] for m in mine) < len(mine)  # decisions that can disagree
        for metric in ("acc", "acc_norm"):
            assert [int(s[metric]) for s in theirs] == [m[metric] for m in mine], (model, metric)
            assert choice["results"]["mc"][f"{metric},none"] == oracle["results"]["oracle_mc"][f"{metric},none"]
        for s, m in zip(theirs, mine):
            assert m["ll"] == pytest.approx([r[0] for r in s["filtered_resps"]], rel=RTOL)
        wiki, theirs = wiki["results"]["wikitext2"], oracle["results"]["oracle_wikitext"]
        for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
            assert wiki[f"{metric},none"] == pytest.approx(theirs[f"{metric},none"], rel=RTOL), (model, metric)


def _samples(path) -> dict[str, list[dict]]:
    """ccgpt's per-example records by subtask, in data order."""
    out: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["subtask"], []).append(rec)
    return out
