"""Evaluation throughput, ``ccgpt eval`` vs lm-eval 0.4.13 (``--model hf``), on the same model and data.

Run by hand from the repository root (never in the tests; needs the ``eval-oracle`` extra and ../shared/data)::

    .venv/bin/python -m bench.eval                                   # full BLiMP + WikiText-2, CPU
    .venv/bin/python -m bench.eval --blimp-pairs 20 --wikitext-articles 4      # quick
    .venv/bin/python -m bench.eval --device cuda --checkpoint runs/demo/train  # a trained model on a GPU

The model is the ``--preset`` architecture (default ``tiny``, the demo's) at initialisation with GPT-2's
tokenizer (``../shared/data/tokenizer/gpt2``), written as a Hugging Face folder that both tools read, or
``--checkpoint``: ccgpt reads the checkpoint, lm-eval its ``ccgpt export`` folder. Both tools score the same
BLiMP pairs (the first ``--blimp-pairs`` of each paradigm) and WikiText-2 test articles (the first
``--wikitext-articles``) with the same batch size, one after the other in this process. lm-eval reads local
task YAMLs over the same data (:func:`write_oracle_tasks`, also used by ``tests/test_eval_parity.py``),
offline.

Reported per tool: wall-clock seconds of the whole call (tokenisation, model load, scoring, metrics) and
examples per second over it; ccgpt also reports its scoring time alone. The figures to compare are the ratio
and the accuracy: an untrained model is at chance on BLiMP (about 50 %).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(REPO), "shared", "data")

BLIMP_YAML = """task: oracle_blimp_{p}
dataset_path: json
dataset_kwargs:
  data_files: {{train: {data}}}
  cache_dir: {cache}
output_type: multiple_choice
validation_split: train
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
num_fewshot: 0
metric_list:
  - metric: acc
metadata: {{version: 1.0}}
"""

# lm-eval's own WikiText task (its detokenizer and word / byte counts), over local articles
WIKI_YAML = """task: oracle_wikitext
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
  cache_dir: {cache}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: !function oracle_wikitext.wikitext_detokenizer
process_results: !function oracle_wikitext.process_results
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata: {{version: 2.0}}
"""


def write_oracle_tasks(
    folder: str, data_root: str, paradigms: list[str] | None, pairs: int, articles: int
) -> list[str]:
    """lm-eval task YAMLs (and their data) in ``folder`` for the BLiMP ``paradigms`` (all: ``None``; the first
    ``pairs`` of each) and the first ``articles`` WikiText-2 test articles; returns the task names."""
    from schemas.tasks import split_wikitext_articles

    cache = os.path.join(folder, "hf-datasets")
    names = []
    with tarfile.open(os.path.join(data_root, "eval", "blimp.tar.gz")) as tar:
        for member in sorted((m for m in tar if m.isfile() and m.name.endswith(".jsonl")), key=lambda m: m.name):
            p = os.path.basename(member.name)[: -len(".jsonl")]
            if paradigms is not None and p not in paradigms:
                continue
            lines = tar.extractfile(member).read().decode().splitlines()[:pairs]
            data = os.path.join(folder, f"{p}.jsonl")
            with open(data, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
            with open(os.path.join(folder, f"oracle_blimp_{p}.yaml"), "w", encoding="utf-8") as fh:
                fh.write(BLIMP_YAML.format(p=p, data=data, cache=cache))
            names.append(f"oracle_blimp_{p}")
    with open(os.path.join(data_root, "reference", "wikitext-2", "test.txt"), encoding="utf-8") as fh:
        docs = split_wikitext_articles(fh.read())[:articles]
    data = os.path.join(folder, "wikitext.jsonl")
    with open(data, "w", encoding="utf-8") as fh:
        fh.write("".join(json.dumps({"page": d}) + "\n" for d in docs))
    with open(os.path.join(folder, "oracle_wikitext.py"), "w", encoding="utf-8") as fh:
        fh.write(
            "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer  # noqa\n"
        )
    with open(os.path.join(folder, "oracle_wikitext.yaml"), "w", encoding="utf-8") as fh:
        fh.write(WIKI_YAML.format(data=data, cache=cache))
    return [*names, "oracle_wikitext"]


def untrained_folder(out: str, preset: str, n_ctx: int, seed: int) -> str:
    """The ``preset`` GPT at initialisation with GPT-2's tokenizer, as a Hugging Face folder."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from pipeline.tokenizer import load_tokenizer
    from train.config import get_preset
    from train.export import to_hf
    from train.model import GPT

    tok = load_tokenizer(os.path.join(DATA, "tokenizer", "gpt2"))
    eot = tok.token_to_id("<|endoftext|>")
    cfg = get_preset(preset)
    cfg = cfg.__class__(**{**cfg.__dict__, "vocab_size": tok.get_vocab_size(), "n_ctx": n_ctx, "dropout": 0.0})
    torch.manual_seed(seed)
    to_hf(GPT(cfg), eot).save_pretrained(out, safe_serialization=True)
    tok_file = os.path.join(out, "tokenizer.json")
    tok.save(tok_file)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=tok_file,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=n_ctx,
        split_special_tokens=True,  # as `ccgpt export` writes it
        clean_up_tokenization_spaces=False,
    )
    hf_tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="a ccgpt checkpoint or run folder (exported first); default: untrained")
    ap.add_argument("--preset", default="tiny", help="untrained model's shape (default tiny, the demo's)")
    ap.add_argument("--n-ctx", type=int, default=256, help="untrained model's context (default 256, the demo's)")
    ap.add_argument("--blimp-pairs", type=int, default=1000, help="pairs per BLiMP paradigm (default all 1000)")
    ap.add_argument("--wikitext-articles", type=int, default=62, help="WikiText-2 test articles (default all 62)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32, help="both tools' batch size (default 32)")
    ap.add_argument("--skip-lm-eval", action="store_true", help="time ccgpt eval only")
    args = ap.parse_args(argv)
    if not os.path.isdir(DATA):
        print(f"needs the real data at {DATA}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and datasets' progress bars
    import logging

    import torch

    logging.basicConfig(level=logging.ERROR)
    for name in ("lm_eval", "datasets", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from train.eval import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        model = ours = os.path.join(tmp, "model")
        if args.checkpoint:
            from train.export import export

            export(args.checkpoint, model)
            ours = args.checkpoint  # ccgpt reads the checkpoint itself, lm-eval its export
            what = f"checkpoint {args.checkpoint}"
        else:
            untrained_folder(model, args.preset, args.n_ctx, seed=0)
            what = f"untrained {args.preset} (n_ctx {args.n_ctx}, GPT-2 tokenizer, seed 0)"
        print(f"model: {what}; device {args.device}; torch {torch.__version__}, {torch.get_num_threads()} threads")
        pairs, articles = args.blimp_pairs, args.wikitext_articles
        print(f"data: BLiMP 67 paradigms x {pairs} pairs, WikiText-2 test {articles} articles")

        t0 = time.perf_counter()
        blimp = evaluate(ours, "blimp", None, limit=pairs, device=args.device, batch_size=args.batch_size)
        wiki = evaluate(ours, "wikitext2", None, limit=articles, device=args.device, batch_size=args.batch_size)
        ours_s = time.perf_counter() - t0
        n = blimp["timing"]["examples"] + wiki["timing"]["examples"]
        score_s = blimp["timing"]["score_seconds"] + wiki["timing"]["score_seconds"]
        acc = blimp["results"]["blimp"]["acc,none"]
        ppl = wiki["results"]["wikitext2"]["word_perplexity,none"]
        print(
            f"ccgpt eval: {n} examples in {ours_s:.1f} s = {n / ours_s:.1f} examples/s (scoring alone {score_s:.1f} s)"
        )
        print(f"ccgpt eval: BLiMP acc {acc:.4f} (chance 0.5), WikiText-2 word perplexity {ppl:.4g}")
        if args.skip_lm_eval:
            return 0
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        folder = os.path.join(tmp, "oracle")
        os.makedirs(folder)
        names = write_oracle_tasks(folder, DATA, None, pairs, articles)
        t0 = time.perf_counter()
        oracle = simple_evaluate(
            model="hf",
            model_args={"pretrained": model},
            tasks=names,
            task_manager=TaskManager(include_path=folder, include_defaults=False),
            batch_size=args.batch_size,
            device=args.device,
            bootstrap_iters=0,
            log_samples=False,
        )
        theirs_s = time.perf_counter() - t0
        res = oracle["results"]
        blimp_names = [k for k in names if k.startswith("oracle_blimp_")]
        their_acc = sum(res[k]["acc,none"] for k in blimp_names) / len(blimp_names)
        their_ppl = res["oracle_wikitext"]["word_perplexity,none"]
        print(f"lm-eval:    {n} examples in {theirs_s:.1f} s = {n / theirs_s:.1f} examples/s")
        print(f"lm-eval:    BLiMP acc {their_acc:.4f}, WikiText-2 word perplexity {their_ppl:.4g}")
        print(f"throughput ccgpt eval / lm-eval: {theirs_s / ours_s:.2f}x (whole calls, same model, data, batch size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
