"""Training throughput and peak memory: ccgpt's GPT vs Hugging Face ``GPT2LMHeadModel`` (SDPA attention).

Run by hand from the repository root (never in the tests)::

    .venv/bin/python -m bench.train                      # CPU: preset mini, vocab 8192, 8 x 256 tokens
    .venv/bin/python -m bench.train --device cuda        # CUDA: GPT-3 Small, vocab 50257, 8 x 2048 tokens, bf16

Both models get the same shape and the *same weights* (ccgpt's are copied into the HF model with
``train.export``, so the first losses printed must agree), the same batch of random tokens, AdamW (fused on
CUDA) and the same loss (full logits + ``F.cross_entropy`` for HF; ccgpt with each of its loss paths). Each
variant runs in a fresh spawned process so its peak memory is its own: on CUDA ``max_memory_allocated``, on
CPU the growth of the process's peak RSS (``ru_maxrss``) over the RSS before the model was built (weights,
optimizer state, activations, allocator slack). Tokens/s (wall clock; on CPU also per CPU-second of the
one-thread process, which a busy shared machine disturbs less) is measured over ``--steps`` optimizer steps after
``--warmup`` untimed ones; every variant is measured ``--rounds`` times in alternating order and the best
round counts (the load of a shared machine drifts).

On CUDA the run additionally reports MFU against the card's dense bf16 peak (``train.metrics.GPU_PEAK_BF16``,
FLOPs per token from ``GPT.estimate_flops_per_token``, PaLM's 6N + 12LHQT), and compares ccgpt's fused
Triton linear + cross-entropy with eager full logits (the memory it saves) and Triton LayerNorm with
``F.layer_norm``.

Prints, per variant, tokens/s (and per CPU-second on CPU), peak memory, MFU on CUDA and the first loss,
then ccgpt / HF throughput and memory ratios and what the lean loss path saves. Results:
``docs/BENCHMARKS.md``, sections ``train`` (CPU) and ``train-cuda`` (``python -m bench.run_all`` writes them;
the GPU section is kept from the last machine that had one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import resource
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Setup:
    preset: str
    vocab: int
    seq_len: int
    batch: int
    steps: int
    warmup: int
    device: str
    threads: int


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _variant(setup: Setup, name: str, kind: str, loss_impl: str, norm_impl: str, queue) -> None:
    """One measurement in a fresh process; puts a result dict on ``queue``."""
    sys.path.insert(0, REPO)
    import torch
    import torch.nn.functional as F

    from train.config import get_preset
    from train.model import GPT

    torch.set_num_threads(setup.threads)
    device = torch.device(setup.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    base = get_preset(setup.preset)
    cfg = dataclasses.replace(
        base,
        vocab_size=setup.vocab,
        n_ctx=setup.seq_len,
        attention="dense",
        dropout=0.0,
        loss_impl=loss_impl,
        norm_impl=norm_impl,
        attention_impl="sdpa",
    )
    if kind == "hf":
        from transformers import AutoModelForCausalLM, GPT2Config

        from train.export import hf_config_kwargs, hf_state_dict

    def warm_up() -> None:
        """One step of a minute model of the same kind before the baseline RSS, so that lazily imported code
        and the allocator's first arenas are not counted as the model's memory."""
        small = dataclasses.replace(cfg, n_layer=1, n_embd=16, n_head=1, vocab_size=32, n_ctx=8)
        m = GPT(small)
        if kind == "hf":
            m = AutoModelForCausalLM.from_config(
                GPT2Config(**hf_config_kwargs(small, None)), attn_implementation="sdpa"
            )
        m.to(device)  # the variant's kernels (Triton ones need CUDA tensors) are what gets warmed up
        ids = torch.zeros(1, 8, dtype=torch.long, device=device)
        out = m(ids, ids)[1] if kind != "hf" else m(input_ids=ids).logits.sum()
        out.backward()

    warm_up()
    rss0 = _rss_bytes()
    torch.manual_seed(0)
    ours = GPT(cfg)
    flops_per_token = ours.estimate_flops_per_token(setup.seq_len)
    if kind == "hf":
        hf_cfg = GPT2Config(**hf_config_kwargs(cfg, None))
        model = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa")
        model.load_state_dict(hf_state_dict(ours), strict=False)  # same weights (tied head)
        del ours

        def loss_fn(x, y):
            logits = model(input_ids=x).logits
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
    else:
        model = ours

        def loss_fn(x, y):
            return model(x, y)[1]

    model.to(device).train()
    if kind == "hf":
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
            lr=1e-4,
            betas=(0.9, 0.95),
            **({"fused": True} if cuda else {}),
        )
    else:
        opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), device.type)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, setup.vocab, (setup.batch, setup.seq_len), generator=g).to(device)
    y = torch.randint(0, setup.vocab, (setup.batch, setup.seq_len), generator=g).to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    first = None
    for i in range(setup.warmup + setup.steps):
        if i == setup.warmup:
            if cuda:
                torch.cuda.synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
        with amp:
            loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if first is None:
            first = loss.detach().item()
    if cuda:
        torch.cuda.synchronize(device)
    elapsed, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    tokens = setup.batch * setup.seq_len * setup.steps
    tok_s = tokens / elapsed
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    result = {
        "variant": name,
        "tokens_per_sec": tok_s,
        "tokens_per_cpu_sec": tokens / cpu_s,
        "peak_bytes": peak,
        "first_loss": first,
        "flops_per_token": flops_per_token,
    }
    if cuda:
        from train.metrics import GPU_PEAK_BF16

        card = torch.cuda.get_device_name(device)
        peak_flops = next((f for key, f in GPU_PEAK_BF16 if key in card), None)
        result["device"] = card
        result["mfu"] = flops_per_token * tok_s / peak_flops if peak_flops else None
    queue.put(result)


def _line(res: dict) -> str:
    mfu = f" | MFU {100 * res['mfu']:.1f}%" if res.get("mfu") is not None else ""
    cpu = f" ({res['tokens_per_cpu_sec']:,.0f} per CPU-s)" if "mfu" not in res else ""
    return (
        f"{res['variant']:<36} {res['tokens_per_sec']:>8,.0f} tok/s{cpu} | peak {res['peak_bytes'] / 2**20:>6,.0f} MiB"
        f" | first loss {res['first_loss']:.4f}{mfu}"
    )


def _result(p, queue) -> dict | None:
    """The variant's result, or None when its process died without one (an exception, out of memory):
    the other variants are still measured instead of the bench waiting forever."""
    import queue as queue_mod

    while True:
        try:
            res = queue.get(timeout=1.0)
        except queue_mod.Empty:
            if p.is_alive():
                continue
            try:  # it may have put its result just before exiting
                res = queue.get(timeout=1.0)
            except queue_mod.Empty:
                p.join()
                return None
        p.join()
        return res


def run(setup: Setup, variants: list[tuple[str, str, str, str]], rounds: int) -> list[dict]:
    """Every variant once per round, the order reversed every other round (a shared machine's load drifts);
    per variant the best round's tokens/s and the largest peak memory are kept."""
    ctx = mp.get_context("spawn")
    best: dict[str, dict] = {}
    for r in range(rounds):
        for name, kind, loss_impl, norm_impl in variants if r % 2 == 0 else variants[::-1]:
            queue = ctx.Queue()
            p = ctx.Process(target=_variant, args=(setup, name, kind, loss_impl, norm_impl, queue))
            p.start()
            res = _result(p, queue)
            if res is None:
                print(f"round {r + 1}: {name}: FAILED (exit code {p.exitcode}; its traceback is above)", flush=True)
                continue
            print(f"round {r + 1}: {_line(res)}", flush=True)
            old = best.get(name)
            if old is None or res["tokens_per_sec"] > old["tokens_per_sec"]:
                best[name] = {
                    **res,
                    "peak_bytes": max(res["peak_bytes"], old["peak_bytes"] if old else 0),
                    "tokens_per_cpu_sec": max(res["tokens_per_cpu_sec"], old["tokens_per_cpu_sec"] if old else 0),
                }
            else:
                old["peak_bytes"] = max(old["peak_bytes"], res["peak_bytes"])
                old["tokens_per_cpu_sec"] = max(old["tokens_per_cpu_sec"], res["tokens_per_cpu_sec"])
    results = [best[name] for name, *_ in variants if name in best]
    print("best of rounds:")
    for res in results:
        print(f"  {_line(res)}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (CUDA: GPT-3 Small defaults, bf16, MFU)")
    ap.add_argument("--preset", default=None, help="model preset (default: mini on CPU, gpt3-small on CUDA)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary (default: 8192 on CPU, 50257 on CUDA)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per row (default: 256 on CPU, 2048 on CUDA)")
    ap.add_argument("--batch", type=int, default=8, help="rows per step (default 8)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 on CPU, 50 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 on CPU, 10 on CUDA)")
    ap.add_argument("--rounds", type=int, default=2, help="measure every variant this many times, keep the best")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    setup = Setup(
        preset=args.preset or ("gpt3-small" if cuda else "mini"),
        vocab=args.vocab or (50257 if cuda else 8192),
        seq_len=args.seq_len or (2048 if cuda else 256),
        batch=args.batch,
        steps=args.steps or (50 if cuda else 5),
        warmup=args.warmup if args.warmup is not None else (10 if cuda else 1),
        device=args.device,
        threads=args.threads,
    )
    print(f"{setup}", flush=True)
    if cuda:
        variants = [
            ("ccgpt (fused CE + Triton LayerNorm)", "ccgpt", "fused", "triton"),
            ("ccgpt (fused CE, torch LayerNorm)", "ccgpt", "fused", "torch"),
            ("ccgpt (eager CE: full logits)", "ccgpt", "eager", "torch"),
            ("HF GPT2LMHeadModel (sdpa)", "hf", "eager", "torch"),
        ]
    else:
        variants = [
            ("ccgpt (eager CE)", "ccgpt", "eager", "torch"),
            ("ccgpt (chunked CE)", "ccgpt", "chunked", "torch"),
            ("HF GPT2LMHeadModel (sdpa)", "hf", "eager", "torch"),
        ]
    results = run(setup, variants, args.rounds)
    by_name = {r["variant"]: r for r in results}
    ours, hf = by_name.get(variants[0][0]), by_name.get(variants[-1][0])
    if ours and hf:
        per_cpu = "" if cuda else f" (per CPU-second {ours['tokens_per_cpu_sec'] / hf['tokens_per_cpu_sec']:.2f}x)"
        print(
            f"ccgpt / HF throughput: {ours['tokens_per_sec'] / hf['tokens_per_sec']:.2f}x{per_cpu}, "
            f"peak memory {ours['peak_bytes'] / hf['peak_bytes']:.2f}x",
            flush=True,
        )
    eager = next((r for r in results if "eager" in r["variant"]), None)
    lean = next((r for r in results if "fused" in r["variant"] or "chunked" in r["variant"]), None)
    if eager and lean:
        print(
            f"{lean['variant']} vs {eager['variant']}: peak memory "
            f"{(eager['peak_bytes'] - lean['peak_bytes']) / 2**20:,.0f} MiB less, "
            f"throughput {lean['tokens_per_sec'] / eager['tokens_per_sec']:.2f}x",
            flush=True,
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"setup": dataclasses.asdict(setup), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
