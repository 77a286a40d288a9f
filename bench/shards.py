"""Tokenize + pack throughput of ``ccgpt mix`` vs datatrove's tokenizer step, and random-row reads, by hand.

Run from the repository root::

    .venv/bin/python -m bench.shards                      # 0.94M tokens of real text, 20,000 random rows
    .venv/bin/python -m bench.shards --repeat 3 --reads 50000

**Corpus** (built once, not timed): real English prose from ``../shared/data/reference`` -- WikiText-2
articles (``test.txt`` + ``valid.txt``, split at their top-level ``= Title =`` headings) and Tiny
Shakespeare in chunks of 40 speeches -- as one source, repeated ``--repeat`` times under new ids. A
byte-level BPE of 8,192 tokens is trained on it with ``ccgpt tokenizer`` (not timed); both tools use that
same ``tokenizer.json`` from disk (no download).

**Write side**, one core each (``TOKENIZERS_PARALLELISM=false``, so the Rust tokenizer runs one thread):

- ``ccgpt``: ``run_mix`` on Beam's local runner, one worker, in-process: read Parquet, encode with
  ``<|endoftext|>`` appended, plan, pack into 1,025-token rows, global seeded shuffle, Arrow IPC shards with
  sha256, manifest, accounting. No validation split (``val_fraction 0``), every token drawn once.
- ``datatrove``: ``DocumentTokenizer`` (same tokenizer file, ``eos_token="<|endoftext|>"``, its defaults:
  batches of 10,000 documents, document shuffle, ``.ds`` + index files), its ``run`` generator driven
  directly over in-memory ``Document`` objects (no reader, no executor), so it does less than ccgpt: no
  Parquet read, no packing into rows, no checksums.

**Read side**: the same random row indices (seeded) of ``seq_len + 1`` = 1,025 tokens, each copied into an
int64 buffer (what a batch needs), files in the page cache:

- ``arrow``: the shards memory-mapped with plain ``pyarrow`` (``ipc.open_file``), rows sliced through the
  list offsets (the zero-copy path in README);
- ``loader``: ccgpt's ``ShardLoader`` assembling batches of 8 (row checks, document ids for the attention
  mask included);
- ``memmap``: the same rows as a flat ``.bin`` read with ``np.memmap`` (row ``i`` at ``i * 1025``), the
  nanoGPT layout: the floor any format can reach;
- ``datatrove``: its ``DatatroveFolderDataset`` over the ``.ds`` files it wrote (``seq_len`` 1,024).

The comparison is not like for like, on purpose: the mix stage also reads Parquet, packs rows, shuffles them
globally, checksums and accounts, and pays Beam's fixed start-up cost, which shrinks relative to the work as
the corpus grows (``--repeat``); ``encode_batch alone`` isolates the encoder. The loader reads do per-row
Python work (row checks, document ids for the attention mask, batch tensors) that the others do not.

Prints tokens/s for each writer (and ccgpt's encoder alone), the ratios to datatrove, whether both wrote
the same token ids, and rows/s and tokens/s per reader with the ratio to ``np.memmap``. Results:
``docs/BENCHMARKS.md``, section ``shards`` (``python -m bench.run_all`` writes it).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one tokenizer thread: throughput per core

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
SEQ_LEN = 1024


def corpus(repeat: int) -> list[str]:
    """Real documents: WikiText-2 articles and Tiny Shakespeare in 40-speech chunks."""
    ref = os.path.join(SHARED, "reference")
    docs: list[str] = []
    for name in ("test.txt", "valid.txt"):
        with open(os.path.join(ref, "wikitext-2", name), encoding="utf-8") as fh:
            text = fh.read()
        for article in re.split(r"\n(?= = [^=].* = \n)", text):
            if len(article.strip()) > 200:
                docs.append(article.strip())
    with open(os.path.join(ref, "tinyshakespeare.txt"), encoding="utf-8") as fh:
        speeches = fh.read().split("\n\n")
    docs += ["\n\n".join(speeches[i : i + 40]) for i in range(0, len(speeches), 40)]
    return docs * repeat


def time_ccgpt(docs_dir: str, tok: str, out: str) -> tuple[float, int]:
    from pipeline.mix import MixConfig, run_mix
    from pipeline.runner import RunnerConfig

    cfg = MixConfig(
        tokenizer=tok,
        weights={"ref": 1.0},
        total_tokens=0,
        seq_len=SEQ_LEN,
        rows_per_shard=256,
        val_fraction=0.0,
        seed=0,
    )
    t = time.perf_counter()
    stats = run_mix([docs_dir], out, cfg, RunnerConfig("local", 1, "in_memory"), force=True)
    return time.perf_counter() - t, int(stats.extra["tokens_available"]["ref"])


def time_encode_only(docs: list[str], tok: str) -> tuple[float, int]:
    """ccgpt's encoder without Beam (what the mix stage's Encode step runs per batch of 256 documents)."""
    from pipeline.tokenizer import encode_batch, load_tokenizer

    tokenizer = load_tokenizer(tok)
    t = time.perf_counter()
    ids = encode_batch(tokenizer, docs, append_eot=True, batch_size=256)
    return time.perf_counter() - t, sum(len(i) for i in ids)


def time_datatrove(docs: list[str], tok: str, out: str) -> tuple[float, int]:
    from datatrove.data import Document
    from datatrove.pipeline.tokens import DocumentTokenizer

    step = DocumentTokenizer(output_folder=out, tokenizer_name_or_path=tok, eos_token="<|endoftext|>", seed=0)
    documents = [Document(text=t, id=str(i)) for i, t in enumerate(docs)]
    t = time.perf_counter()
    result = step.run(iter(documents), rank=0, world_size=1)  # a generator in some versions, None in others
    for _ in result or ():
        pass
    seconds = time.perf_counter() - t
    tokens = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "*.ds"))) // 2
    return seconds, tokens


def time_reads(shards: str, dt_out: str, reads: int, seed: int) -> dict[str, float]:
    import pyarrow as pa

    from pipeline.shards import load_manifest
    from train.data import ShardLoader, _make_batch

    m = load_manifest(shards)
    width = m.seq_len + 1
    tables = [pa.ipc.open_file(pa.memory_map(os.path.join(shards, s.file))).read_all() for s in m.shards]
    parts = []
    for t in tables:
        col = t.column("tokens").combine_chunks()  # one chunk per shard as written: no copy
        parts.append((col.values.to_numpy(), col.offsets.to_numpy()))
    starts = np.cumsum([0] + [t.num_rows for t in tables])
    n_rows = int(starts[-1])
    rows = np.random.default_rng(seed).integers(0, n_rows, reads)
    out = np.empty(width, dtype=np.int64)
    results: dict[str, float] = {}

    t0 = time.perf_counter()
    for g in rows.tolist():
        s = int(np.searchsorted(starts, g, side="right") - 1)
        values, offsets = parts[s]
        r = g - int(starts[s])
        out[:] = values[offsets[r] : offsets[r + 1]]
    results["arrow"] = reads / (time.perf_counter() - t0)

    loader = ShardLoader(shards, batch_size=8, seed=seed, eval_rows=0)
    t0 = time.perf_counter()
    for i in range(0, reads - 7, 8):
        _make_batch(loader, rows[i : i + 8])
    results["loader"] = (reads // 8 * 8) / (time.perf_counter() - t0)
    loader.close()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens.bin")
        with open(path, "wb") as fh:
            for values, offsets in parts:
                fh.write(values[offsets[0] : offsets[-1]].tobytes())
        mm = np.memmap(path, dtype=np.uint16, mode="r")
        t0 = time.perf_counter()
        for g in rows.tolist():
            out[:] = mm[g * width : (g + 1) * width]
        results["memmap"] = reads / (time.perf_counter() - t0)
        del mm

    from datatrove.utils.dataset import DatatroveFolderDataset

    ds = DatatroveFolderDataset(dt_out, seq_len=SEQ_LEN, token_size=2)
    dt_rows = np.random.default_rng(seed).integers(0, len(ds), reads)
    t0 = time.perf_counter()
    for g in dt_rows.tolist():
        out[:] = ds[g]["input_ids"].numpy()
    results["datatrove"] = reads / (time.perf_counter() - t0)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="copies of the real corpus (new ids each)")
    ap.add_argument("--reads", type=int, default=20_000, help="random rows read per reader")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, REPO)
    from pipeline.tables import write_documents
    from pipeline.tokenizer import TokenizerConfig, train_tokenizer

    docs = corpus(args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        docs_dir = os.path.join(tmp, "docs")
        os.makedirs(docs_dir)
        write_documents(
            [{"id": f"ref-{i}", "source": "ref", "text": t} for i, t in enumerate(docs)],
            os.path.join(docs_dir, "part-0.parquet"),
        )
        train_tokenizer([docs_dir], os.path.join(tmp, "tok"), TokenizerConfig(vocab_size=8192))
        tok = os.path.join(tmp, "tok", "tokenizer.json")
        print(f"corpus: {len(docs):,} documents, {sum(len(t) for t in docs) / 1e6:.2f} MB of text")

        dt_out = os.path.join(tmp, "datatrove")
        dt_s, dt_tokens = time_datatrove(docs, tok, dt_out)
        cc_s, cc_tokens = time_ccgpt(docs_dir, tok, os.path.join(tmp, "shards"))
        enc_s, enc_tokens = time_encode_only(docs, tok)
        print(f"tokens: ccgpt {cc_tokens:,} (end-of-text included), datatrove {dt_tokens:,}")
        print(f"ccgpt mix (encode + pack + shuffle + write) : {cc_tokens / cc_s:12,.0f} tokens/s ({cc_s:.1f} s)")
        print(f"datatrove DocumentTokenizer                 : {dt_tokens / dt_s:12,.0f} tokens/s ({dt_s:.1f} s)")
        print(f"ratio ccgpt/datatrove: {(cc_tokens / cc_s) / (dt_tokens / dt_s):.2f}x (one core each)")
        print(
            f"ccgpt encode_batch alone (no Beam)          : {enc_tokens / enc_s:12,.0f} tokens/s ({enc_s:.1f} s), "
            f"{(enc_tokens / enc_s) / (dt_tokens / dt_s):.2f}x datatrove"
        )

        reads = time_reads(os.path.join(tmp, "shards"), dt_out, args.reads, args.seed)
        width = SEQ_LEN + 1
        for name, rate in reads.items():
            print(
                f"random rows {name:10s}: {rate:10,.0f} rows/s = {rate * width / 1e6:8.1f} M tokens/s "
                f"({rate / reads['memmap']:.2f}x np.memmap)"
            )


if __name__ == "__main__":
    main()
