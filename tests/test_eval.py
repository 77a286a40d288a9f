"""`ccgpt eval`: task files (schema, reading BLiMP and WikiText-2 in place), request building and scoring,
the lm-eval results layout, and clear errors for bad input before the model is loaded."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_data import load_manifest, make_shards, save_manifest  # noqa: E402
from test_generate import byte_bpe  # noqa: E402

from schemas.tasks import (  # noqa: E402
    MinimalPair,
    MultipleChoice,
    TaskError,
    parse_task,
    split_wikitext_articles,
    wikitext_detokenize,
)
from train.config import TrainConfig  # noqa: E402
from train.eval import EvalModelError, evaluate, open_model, rolling_requests, score_requests  # noqa: E402
from train.tasks import load_task, load_tasks, read_examples  # noqa: E402
from train.trainer import train  # noqa: E402


def train_eval_run(root, seq_len: int = 128, out_name: str = "run", **overrides) -> str:
    """A 3-step nano run whose context fits a BLiMP sentence, with a real byte-level BPE whose size the
    manifest records; returns the run folder. ``overrides``: other TrainConfig values."""
    shards = str(root / "shards")
    if not os.path.exists(os.path.join(shards, "manifest.json")):
        os.makedirs(shards, exist_ok=True)
        n = byte_bpe(os.path.join(shards, "tokenizer.json"))
        make_shards(shards, seq_len=seq_len, vocab_size=n, rows_per_shard=(16,))
        manifest = load_manifest(shards)
        manifest.tokenizer.path = "tokenizer.json"
        manifest.tokenizer.eot_id = 0
        manifest.tokenizer.vocab_size = n
        save_manifest(manifest, shards)
    out = str(root / out_name)
    base = dict(shards=shards, out=out, preset="nano", batch_size=4, max_steps=3, warmup_steps=1, log_every=1)
    base.update(eval_every=0, eval_rows=0, seed=1, lr=1e-2, tensorboard=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(**{**base, **overrides}))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    return train_eval_run(tmp_path_factory.mktemp("eval"))


def _task(tmp_path, text: str, name: str = "t.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------------------------- task files


def test_shipped_tasks_read_the_real_data_in_place(shared_data):
    blimp = load_task("blimp")
    subs = read_examples(blimp, shared_data, limit=3)
    assert len(subs) == 67 and all(s.total == 1000 and len(s.examples) == 3 for s in subs)
    assert subs[0].name == "blimp_adjunct_island"
    pair = subs[0].examples[0]
    assert pair == MinimalPair(
        "Who should Derek hug after shocking Richard?", "Who should Derek hug Richard after shocking?", "syntax"
    )
    wiki = load_task("wikitext2")
    (sub,) = read_examples(wiki, shared_data)
    assert sub.name == "wikitext2" and sub.total == len(sub.examples) == 62
    doc = sub.examples[0]
    assert doc.text.startswith(" = Robert <unk> =\n") and " @-@ " not in doc.text and "guest-starring" in doc.text
    with open(os.path.join(shared_data, "reference", "wikitext-2", "test.txt"), encoding="utf-8") as fh:
        raw = fh.read()
    first = split_wikitext_articles(raw)[0]
    assert doc.words == len(re.split(r"\s+", first)) and doc.bytes == len(first.encode())  # lm-eval's counts
    assert all(a.startswith(" = ") and not a.startswith(" = = ") for a in split_wikitext_articles(raw))


def test_detokenizer_undoes_wikitext_tokenisation():
    assert wikitext_detokenize(' He said " yes " , then 3 @.@ 5 @-@ inch guns ; ( see ) . ') == (
        ' He said "yes", then 3.5-inch guns; (see). '
    )


def test_task_schema_errors_name_the_file(tmp_path):
    good = {"version": 1, "name": "x", "format": "minimal_pairs", "data": {"path": "a.jsonl"}}
    good["fields"] = {"good": "g", "bad": "b"}
    assert parse_task(good, "f.yaml").metrics == ("acc",)
    cases = [
        ({**good, "version": 2}, "version must be 1"),
        ({**good, "formt": "x"}, "unknown key"),
        ({**good, "format": "cloze"}, "format must be one of"),
        ({**good, "fields": {"good": "g"}}, "missing \\['bad'\\]"),
        ({**good, "metrics": ["acc_norm"]}, "unknown metric"),
        ({**good, "name": "a b"}, "name must match"),
        ({**good, "data": {}}, "data.path is required"),
        ({**good, "preprocess": "wikitext_detokenize"}, "rolling_perplexity only"),
    ]
    for raw, message in cases:
        with pytest.raises(TaskError, match=message) as e:
            parse_task(raw, "f.yaml")
        assert str(e.value).startswith("f.yaml: ")
    with pytest.raises(TaskError, match="unknown task 'nope'.*blimp"):
        load_tasks("nope")
    with pytest.raises(TaskError, match="does not exist"):
        load_tasks(str(tmp_path / "missing.yaml"))
    with pytest.raises(TaskError, match="not valid YAML"):
        load_tasks(_task(tmp_path, "version: [1"))
    with pytest.raises(TaskError, match="given twice"):
        load_tasks("blimp,blimp")


def test_multiple_choice_records_and_bad_data(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text(
        json.dumps({"ctx": "The sky is", "endings": ["blue", "a fish"], "label": 0, "kind": "a"})
        + "\n\n"
        + json.dumps({"ctx": "Two plus two is", "endings": ["four", "five"], "label": "five", "kind": "b"})
        + "\n"
    )
    spec = (
        "version: 1\nname: mc\nformat: multiple_choice\ndata: {path: mc.jsonl}\n"
        "fields: {context: ctx, choices: endings, label: label}\ngroup_by: kind\n"
    )
    task = load_task(_task(tmp_path, spec))
    (sub,) = read_examples(task, str(tmp_path))
    assert sub.examples == [
        MultipleChoice("The sky is", ("blue", "a fish"), 0, "a"),
        MultipleChoice("Two plus two is", ("four", "five"), 1, "b"),
    ]
    data.write_text(json.dumps({"ctx": "x", "endings": ["a", "b"], "label": 2, "kind": "a"}) + "\n")
    with pytest.raises(TaskError, match="line 1: label 2"):
        read_examples(task, str(tmp_path))
    data.write_text("{not json\n")
    with pytest.raises(TaskError, match="not JSON"):
        read_examples(task, str(tmp_path))
    data.write_text("\n")
    with pytest.raises(TaskError, match="has no examples"):
        read_examples(task, str(tmp_path))
    with pytest.raises(TaskError, match="not found.*--data-root"):
        read_examples(task, str(tmp_path / "elsewhere"))


# ----------------------------------------------------------------------------------------------- scoring


def test_rolling_windows_score_every_token_once():
    tokens = list(range(1, 24))
    for stride in (None, 8, 3):
        reqs = rolling_requests(tokens, 0, 8, stride)
        assert [t for _, cont in reqs for t in cont] == tokens
        for ctx, cont in reqs:
            assert len((ctx + cont)[-9:]) - 1 <= 8 and ctx  # the window fits; something conditions it
    disjoint = rolling_requests(tokens, 0, 8)
    assert disjoint[0] == ([0], tokens[:8]) and disjoint[1] == ([8], tokens[8:16])
    assert disjoint[2] == (tokens[14:16], tokens[16:])  # the last window reads a full window of context


def test_batched_scores_equal_one_by_one():
    torch.manual_seed(0)
    table = torch.randn(50, 50)

    def forward(ids):  # a toy bigram "model": logits depend on the current token only
        return table[ids]

    reqs = [([1], [2, 3, 4]), ([5, 6], [7]), ([0], [9, 8, 7, 6, 5, 4]), ([3], [3])]
    batched = score_requests(forward, reqs, 16, torch.device("cpu"), batch_size=3, max_batch_tokens=8)
    single = [score_requests(forward, [r], 16, torch.device("cpu"))[0] for r in reqs]
    logp = torch.log_softmax(table, -1).double()
    assert batched[0] == pytest.approx(float(logp[1, 2] + logp[2, 3] + logp[3, 4]), abs=1e-5)  # float32 scores
    assert batched.tolist() == pytest.approx(single, abs=1e-12)


# ----------------------------------------------------------------------------------------------- end to end


def test_eval_writes_lm_eval_layout(run_dir, tmp_path, shared_data):
    out = str(tmp_path / "out")
    res = evaluate(run_dir, "blimp,wikitext2", out, data_root=shared_data, limit=3, device="cpu")
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps(res["results"]))
    r = res["results"]
    assert 0.0 <= r["blimp"]["acc,none"] <= 1.0 and r["blimp"]["acc_stderr,none"] > 0
    assert r["blimp_adjunct_island"]["alias"] == " - blimp_adjunct_island"
    assert {"blimp_field_syntax", "blimp_field_morphology"} <= set(res["groups"])
    assert len(res["group_subtasks"]["blimp"]) == 67 and res["n-samples"]["wikitext2"] == {
        "original": 62,
        "effective": 3,
    }
    wiki = r["wikitext2"]
    assert math.isclose(wiki["bits_per_byte,none"], math.log2(wiki["byte_perplexity,none"]), rel_tol=1e-9)
    assert wiki["word_perplexity,none"] > wiki["byte_perplexity,none"] > 1
    assert res["higher_is_better"]["wikitext2"]["word_perplexity"] is False and res["n-shot"]["blimp"] == 0
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples_blimp.jsonl").read_text().splitlines()]
    assert len(samples) == 67 * 3 and samples[0]["acc"] == int(samples[0]["ll"][0] >= samples[0]["ll"][1])
    # deterministic, and independent of batch shape up to float rounding
    again = evaluate(run_dir, "blimp", None, data_root=shared_data, limit=3, device="cpu", batch_size=7)
    assert again["results"]["blimp"]["acc,none"] == r["blimp"]["acc,none"]


def test_bad_input_fails_before_the_model_loads(run_dir, tmp_path, shared_data, monkeypatch):
    import train.eval.models as models

    def no_load(*_a, **_k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "model_from_checkpoint", no_load)
    with pytest.raises(TaskError, match="unknown task"):
        evaluate(run_dir, "blimpp", data_root=shared_data)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    spec = f"version: 1\nname: e\nformat: rolling_perplexity\ndata: {{path: {empty}}}\n"
    with pytest.raises(TaskError, match="has no examples"):
        evaluate(run_dir, _task(tmp_path, spec), data_root=shared_data)
    # a tokenizer that is not the model's: 258 tokens vs the 300-odd the checkpoint recorded
    other = tmp_path / "other.json"
    byte_bpe(str(other), vocab_size=258)
    with pytest.raises(EvalModelError, match="not the tokenizer this model was trained with"):
        evaluate(run_dir, "wikitext2", data_root=shared_data, tokenizer=str(other))
    with pytest.raises(EvalModelError, match="neither a ccgpt checkpoint"):
        open_model(str(tmp_path / "nowhere"))
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EvalModelError, match="cannot read the checkpoint"):
        open_model(str(bad))


def test_ccgpt_eval_cli(run_dir, tmp_path, shared_data, capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0 and "--tasks" in capsys.readouterr().out
    out = str(tmp_path / "cli")
    args = ["eval", run_dir, "--tasks", "wikitext2", "--out", out, "--limit", "1", "--data-root", shared_data]
    assert main([*args, "--device", "cpu", "--sliding-stride", "64"]) == 0
    printed = capsys.readouterr().out
    assert "wikitext2" in printed and "word_perplexity" in printed and "examples/s" in printed
    res = json.loads(open(os.path.join(out, "results.json")).read())["results"]["wikitext2"]
    # the sliding window sees more context than disjoint windows: it cannot be much worse
    assert res["bits_per_byte_sliding,none"] < res["bits_per_byte,none"] + 0.05
    assert main(["eval", run_dir, "--tasks", "nope", "--data-root", shared_data]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- during training


def tiny_tasks(tmp_path, shared_data) -> list[str]:
    """One BLiMP paradigm and one WikiText-2 article, as task files."""
    with open(os.path.join(shared_data, "reference", "wikitext-2", "test.txt"), encoding="utf-8") as fh:
        (tmp_path / "wiki.txt").write_text(split_wikitext_articles(fh.read())[0])
    blimp = open(os.path.join("schemas", "task_files", "blimp.yaml")).read()
    blimp = blimp.replace("name: blimp", "name: blimp_one").replace("data/*.jsonl", "data/adjunct_island.jsonl")
    wiki = open(os.path.join("schemas", "task_files", "wikitext2.yaml")).read()
    wiki = wiki.replace("name: wikitext2", "name: wiki_one").replace(
        "reference/wikitext-2/test.txt", str(tmp_path / "wiki.txt")
    )
    return [_task(tmp_path, blimp, "blimp_one.yaml"), _task(tmp_path, wiki, "wiki_one.yaml")]


def test_eval_tasks_during_training(run_dir, tmp_path, shared_data):
    tasks = tiny_tasks(tmp_path, shared_data)
    root = os.path.dirname(run_dir)
    out = train_eval_run(
        pathlib.Path(root),
        out_name="run_tasks",
        eval_every=2,
        eval_tasks=tasks,
        eval_task_limit=5,
        eval_data_root=shared_data,
        tensorboard=True,
    )
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as fh:
        log = [json.loads(line) for line in fh]
    scored = [r for r in log if r["kind"] == "eval_task"]
    assert [r["step"] for r in scored] == [0, 2, 3]  # the initialisation, every eval_every steps, the end
    assert set(scored[0]["tasks"]) == {"blimp_one", "wiki_one"}
    assert set(scored[0]["tasks"]["wiki_one"]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    # the in-memory scores are ccgpt eval's on the checkpoint, and scoring leaves training untouched
    res = evaluate(out, tasks, data_root=shared_data, limit=5, device="cpu")["results"]
    assert scored[-1]["tasks"]["blimp_one"]["acc"] == res["blimp_one"]["acc,none"]
    assert scored[-1]["tasks"]["wiki_one"]["bits_per_byte"] == pytest.approx(res["wiki_one"]["bits_per_byte,none"])
    with open(os.path.join(run_dir, "log.jsonl"), encoding="utf-8") as fh:
        plain = [json.loads(line)["loss"] for line in fh if '"train"' in line]
    assert [r["loss"] for r in log if r["kind"] == "train"] == plain
    assert json.load(open(os.path.join(out, "summary.json")))["eval_tasks"] == scored[-1]["tasks"]
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(os.path.join(out, "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/blimp_one/acc")] == [0, 2, 3]
    assert "eval/wiki_one/word_perplexity" in events.Tags()["scalars"]

    # ccgpt run's eval stage: the trained model and its initialisation, rebuilt from the run's seed
    from pipeline.run import Run, RunConfig, _eval_lines
    from schemas.tasks import EvalConfig

    cfg = RunConfig(out_dir=str(tmp_path / "r"), eval=EvalConfig(tasks=tasks, limit=5, data_root=shared_data))
    run = Run(cfg)
    run.dirs["train"] = out
    scores = run.eval()
    assert scores["initialisation"]["blimp_one"] == scored[0]["tasks"]["blimp_one"]
    assert scores["trained"]["blimp_one"] == scored[-1]["tasks"]["blimp_one"]
    assert scores["initialisation"]["wiki_one"]["word_perplexity"] == pytest.approx(
        scored[0]["tasks"]["wiki_one"]["word_perplexity"]
    )
    assert json.load(open(tmp_path / "r" / "eval" / "stats.json"))["read"] == 6  # 5 pairs + 1 article
    from pipeline.report import _eval_section

    assert "<td>blimp_one</td><td>acc</td>" in _eval_section(str(tmp_path / "r"))
    assert "Evaluation:</b> no eval stage" in _eval_section(str(tmp_path))
    lines = _eval_lines(scores)
    assert lines[1].startswith("  blimp_one acc: ") and "untrained" in lines[1] and "chance 50.0 %" in lines[1]
    assert lines[2].startswith("  wiki_one word_perplexity: ") and "chance" not in lines[2]


def test_run_goes_on_without_task_data_saying_so(tmp_path, capsys):
    from pipeline.decontam import DecontamConfig
    from pipeline.run import Run, RunConfig
    from schemas.tasks import EvalConfig

    empty = str(tmp_path / "no-data")
    cfg = RunConfig(
        out_dir=str(tmp_path / "r"),
        decontam=DecontamConfig(benchmarks=["b.jsonl"], tasks=["blimp"], data_root=empty),
        eval=EvalConfig(tasks=["blimp", "wikitext2"], data_root=empty),
        train=TrainConfig(eval_tasks=["blimp"], eval_data_root=empty),
    )
    run = Run(cfg)
    assert run.skips("eval") and not run.skips("decontam")  # decontam still has its benchmark file
    assert run.eval() is None
    run.say_missing_data("decontam")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[ccgpt] eval skipped: task data not found (") and "blimp.tar.gz" in out[0]
    assert "test.txt" in out[0] and len(out) == 2
    assert out[1].startswith("[ccgpt] decontam goes on without its tasks: task data not found (")
    assert run.missing_data("train") == [os.path.join(empty, "eval", "blimp.tar.gz")]
    cfg.decontam.benchmarks = []
    assert run.skips("decontam")


def test_report_draws_task_scores_beside_the_validation_loss(tmp_path):
    from pipeline.report import _train_section

    os.makedirs(tmp_path / "train")
    log = [{"kind": "train", "step": s, "loss": 5.0 - s} for s in (1, 2)]
    log += [{"kind": "eval", "step": 2, "eval_loss": 3.5, "eval_loss_by_source": {"web": 3.5}}]
    (tmp_path / "train" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    html = _train_section(str(tmp_path))
    assert "Downstream tasks:</b> not scored during training" in html
    log += [{"kind": "eval_task", "step": s, "tasks": {"blimp": {"acc": 0.5 + s / 10}}} for s in (0, 2)]
    (tmp_path / "train" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    html = _train_section(str(tmp_path))
    assert "<td>blimp acc</td><td>0.5 (step 0)</td><td>0.7 (step 2)</td>" in html
    assert 'alt="downstream tasks during training"' in html and "Downstream tasks:" not in html


@pytest.mark.slow
def test_eval_tasks_under_fsdp_score_the_gathered_model(run_dir, tmp_path, shared_data):
    """2 FSDP ranks (sharded weights) score the same as 1 process at the same global batch: rank 0 scores the
    gathered full model, and the gathering leaves the training (and its random streams) unchanged."""
    import torch.multiprocessing as mp
    from conftest import _free_port
    from test_trainer import _ddp_worker

    tasks = tiny_tasks(tmp_path, shared_data)
    root = pathlib.Path(os.path.dirname(run_dir))
    common = dict(eval_every=2, eval_tasks=tasks, eval_task_limit=5, eval_data_root=shared_data)
    single = train_eval_run(root, out_name="single_tasks", **common)
    fsdp = str(root / "fsdp_tasks")
    base = dict(shards=str(root / "shards"), out=fsdp, preset="nano", max_steps=3, warmup_steps=1, log_every=1)
    base.update(eval_rows=0, seed=1, lr=1e-2, tensorboard=False, batch_size=2, parallel="fsdp", **common)
    mp.spawn(_ddp_worker, args=(2, _free_port(), TrainConfig(**base)), nprocs=2, join=True)

    def log(out: str, kind: str) -> list[dict]:
        with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as fh:
            return [r for r in map(json.loads, fh) if r["kind"] == kind]

    assert [r["loss"] for r in log(fsdp, "train")] == pytest.approx([r["loss"] for r in log(single, "train")], 1e-5)
    a, b = log(single, "eval_task"), log(fsdp, "eval_task")
    assert [r["step"] for r in b] == [r["step"] for r in a] == [0, 2, 3]
    for x, y in zip(a, b):
        assert y["tasks"]["blimp_one"] == x["tasks"]["blimp_one"]
        assert y["tasks"]["wiki_one"]["bits_per_byte"] == pytest.approx(x["tasks"]["wiki_one"]["bits_per_byte"], 1e-5)


def test_no_task_set_means_no_task_data_missing():
    """A run config without tasks (the default) skips decontam's tasks and the eval stage quietly."""
    from pipeline.benchmarks import missing_task_data

    assert missing_task_data([]) == [] and missing_task_data("") == []
    assert missing_task_data(["blimp"], data_root="/nonexistent-data-root") != []
