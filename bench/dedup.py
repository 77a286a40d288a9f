"""ccgpt dedup vs ``datasketch.MinHashLSH`` and datatrove's MinHash pipeline on the same corpus, by hand.

Run from the repository root::

    .venv/bin/python -m bench.dedup                          # 10k, 20k, 40k documents, all tools
    .venv/bin/python -m bench.dedup --sizes 10000 --tools ccgpt datatrove
    .venv/bin/python -m bench.dedup --minhash --docs 3000    # signatures only: ccgpt vs datasketch.MinHash
    .venv/bin/python -m bench.dedup --labelled               # near-duplicate quality on the labelled sets only

**Labelled sets** (``--labelled``, no scale runs): ``evaluate_dedup`` (``ccgpt dedup eval``) on
syndicated-news v1 and v2, the trafilatura set built by :mod:`bench.dedup_sets` and the synthetic corpus
below (``--labelled-synthetic`` documents), each with the earlier plain settings (``plain``: full texts,
Jaccard) and with the boilerplate-aware defaults (``default``, the Beam stage's too): F1, precision, recall,
recall on syndicated copies and false-positive pairs among template pages, candidate pairs, the one-process docs/s
ratio on the synthetic corpus, and (unless ``--no-sweep``) F1 / syndicated recall / template false positives
for several ``boilerplate.min_docs``. The trafilatura set is also run through the Beam stage itself
(``run_dedup`` on the local runner, ``via: beam`` rows) with both settings, beside the eval path, so the figure
for the untouched set is the stage's own. Written to the ``dedup-labelled`` section of ``docs/BENCHMARKS.md``.

**Corpus** (built once per size, not timed): "originals" are three random 60-word chunks of real WikiText-2
paragraphs (``../shared/data/reference``), so two originals share at most one chunk (Jaccard about 0.2);
30 % of originals get 1-4 near copies made by 1-3 word substitutions, deletions or insertions each
(word-5-gram Jaccard to the original about 0.8-0.95) and some exact copies (case and spacing
changed). Every document carries its ``cluster`` label, so each tool gets a pairwise F1 at every size (the
synthetic labels count every near copy as a duplicate, including copies whose Jaccard fell below 0.8,
so recall < 1 is partly the labels'). The real syndicated-news set (``../shared/data/dedup``) is scored too.

**Tools** (each in its own subprocess, so peak RSS is its own; wall time includes start-up):

- ``ccgpt``: ``run_dedup`` with its defaults (exact + MinHash-LSH at 0.8, 128 permutations; boilerplate
  lines counted, each document's core hashed, containment verification, banding for t/(2-t); connected
  components on the runner, index written) on Beam's local runner with 2 worker processes, Parquet in and out.
- ``ccgpt-plain`` (on request, ``--tools ccgpt-plain ccgpt``): the same ``run_dedup`` with the earlier
  settings (full texts, no boilerplate pass, Jaccard verification, banding for the threshold itself), so the
  cost of the boilerplate-aware defaults is measured in one run, on one corpus: the ratio
  ``ccgpt/ccgpt-plain`` (the issue's target: the defaults within 1.2x of the plain settings at 100k
  documents, ``--sizes 100000 --tools ccgpt-plain ccgpt --no-news``).
- ``datasketch``: ``MinHash`` (128 permutations, same word-5-gram shingles) + ``MinHashLSH(threshold=0.8)``
  query-then-insert in one process, union-find over the matches (no exact pass, no verification).
- ``datatrove``: ``MinhashDedupSignature`` -> ``MinhashDedupBuckets`` -> ``MinhashDedupCluster`` ->
  ``MinhashDedupFilter`` with ``LocalPipelineExecutor`` (2 workers, Parquet in and out, its default
  14 buckets x 8 hashes), cluster ids read back from the kept / excluded documents.

Peak RSS is ``ru_maxrss`` of the tool's process plus the largest of its child processes (a lower bound of
the sum when workers overlap), read when the tool returns, before the labels are loaded and scored. The
corpus is built in a process of its own: Linux carries a forked process's resident size into its
``ru_maxrss`` across ``exec``, so a parent that held the corpus while it started each tool would charge every
tool with the corpus too.

Prints one JSON line per tool and size (seconds, docs/s, peak RSS, precision, recall, F1, ARI; for ccgpt the
candidate and verified pairs and chunks) and the ratios of ccgpt's docs/s to each peer's; ``--out`` appends
the JSON lines to a file. Results: ``docs/BENCHMARKS.md``, sections ``dedup`` (all three tools) and
``dedup-scale`` (ccgpt from 10k to 1M documents); ``python -m bench.run_all`` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
NEWS = os.path.join(SHARED, "dedup", "syndicated-news.jsonl")
TOOLS = ("ccgpt", "datasketch", "datatrove")  # the default comparison; "ccgpt-plain" on request
CHOICES = (*TOOLS, "ccgpt-plain")
DETAILS: dict = {}  # a tool's own figures worth printing beside the common ones (ccgpt: pairs, chunks)


def load_texts(n: int) -> list[str]:
    texts: list[str] = []
    for name in ("valid.txt", "test.txt"):
        with open(os.path.join(SHARED, "reference", "wikitext-2", name), encoding="utf-8") as fh:
            texts.extend(line.strip() for line in fh if len(line.split()) >= 50)
    with open(NEWS, encoding="utf-8") as fh:
        texts.extend(json.loads(line)["text"] for line in fh)
    return [texts[i % len(texts)] for i in range(n)]


# --- corpus ---------------------------------------------------------------------------------------------------


def _chunks() -> list[list[str]]:
    out = []
    for name in ("train.txt", "valid.txt", "test.txt"):
        path = os.path.join(SHARED, "reference", "wikitext-2", name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                words = line.split()
                out.extend(words[i : i + 60] for i in range(0, len(words) - 59, 60))
    return out


def _mutate(words: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    out = list(words)
    for _ in range(rng.randint(1, 3)):
        op, i = rng.randrange(3), rng.randrange(len(out))
        if op == 0:
            out[i] = rng.choice(vocab)
        elif op == 1 and len(out) > 10:
            del out[i]
        else:
            out.insert(i, rng.choice(vocab))
    return out


def make_corpus(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    chunks = _chunks()
    vocab = [w for c in chunks[:2000] for w in c]
    docs: list[dict] = []
    c = 0
    while len(docs) < n:
        original = [w for _ in range(3) for w in rng.choice(chunks)]
        cluster = f"c{c}"
        c += 1
        docs.append({"text": " ".join(original), "cluster": cluster})
        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.2:
                    docs.append(
                        {
                            "text": "\n".join(original).upper() if rng.random() < 0.5 else "  ".join(original),
                            "cluster": cluster,
                        }
                    )
                else:
                    docs.append({"text": " ".join(_mutate(original, rng, vocab)), "cluster": cluster})
    docs = docs[:n]
    rng.shuffle(docs)
    for i, d in enumerate(docs):
        d["id"] = f"d{i:08d}"
    return docs


def write_corpus(docs: list[dict], folder: str) -> None:
    from pipeline.tables import write_documents

    os.makedirs(os.path.join(folder, "parquet"), exist_ok=True)
    os.makedirs(os.path.join(folder, "jsonl"), exist_ok=True)
    half = (len(docs) + 1) // 2
    for part, rows in enumerate((docs[:half], docs[half:])):
        # Row groups of 50k rows: about the 64 MB groups Beam's WriteToParquet gives these documents, so the
        # tables look like a curate output (dedup splits its work at row-group boundaries).
        write_documents(
            [{"id": d["id"], "source": "crawl", "text": d["text"]} for d in rows],
            os.path.join(folder, "parquet", f"part-{part}.parquet"),
            row_group_size=50_000,
        )
        with open(os.path.join(folder, "jsonl", f"part-{part}.jsonl"), "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in rows)
    with open(os.path.join(folder, "labels.json"), "w", encoding="utf-8") as fh:
        json.dump({d["id"]: d["cluster"] for d in docs}, fh)


# --- tools (each run in a child process: ``python -m bench.dedup --run TOOL FOLDER``) ---------------------


def run_ccgpt(folder: str, work: str, plain: bool = False) -> dict[str, str]:
    """``run_dedup`` with the defaults, or (``plain``) with the earlier settings: full texts, Jaccard."""
    from pipeline.dedup import DedupConfig, read_clusters, run_dedup
    from pipeline.dedup.evaluate import plain_near_config
    from pipeline.runner import RunnerConfig

    out = os.path.join(work, "out")
    cfg = DedupConfig(near=plain_near_config()) if plain else DedupConfig()
    stats = run_dedup(
        [os.path.join(folder, "parquet")], out, cfg, RunnerConfig(runner="local", num_workers=2), force=True
    )
    DETAILS.update(
        {
            k: stats.extra[k]
            for k in ("candidate_pairs", "verified_pairs", "oversized_buckets", "cc_unconverged_nodes", "chunks")
        }
    )
    DETAILS["boilerplate_lines"] = stats.extra["boilerplate"]["lines"]
    predicted = {d["id"]: d["cluster"] for d in read_clusters(out)}
    return predicted


def run_datasketch(folder: str, work: str) -> dict[str, str]:
    from datasketch import MinHash, MinHashLSH

    from pipeline.dedup.components import UnionFind
    from pipeline.dedup.minhash import ShingleConfig, shingles

    cfg = ShingleConfig()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    uf = UnionFind()
    jdir = os.path.join(folder, "jsonl")
    for name in sorted(os.listdir(jdir)):
        with open(os.path.join(jdir, name), encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                items = shingles(d["text"], cfg)
                if not items:
                    continue
                m = MinHash(num_perm=128)
                m.update_batch(items)
                for other in lsh.query(m):
                    uf.union(other, d["id"])
                lsh.insert(d["id"], m)
    return uf.components()


def run_datatrove(folder: str, work: str) -> dict[str, str]:
    import xxhash
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashes import xxhash as dt_xxhash

    # datatrove 0.10 hands str to xxhash, which xxhash 4 refuses: encode first (its default, fastest hash).
    dt_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)
    dt_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(data.encode("utf-8") if isinstance(data, str) else data)
    cfg = MinhashConfig()
    jdir = os.path.join(folder, "parquet")
    tasks = len(os.listdir(jdir))
    sig, buckets, clusters = (os.path.join(work, x) for x in ("sigs", "buckets", "clusters"))
    logs = os.path.join(work, "logs")
    LocalPipelineExecutor(
        pipeline=[ParquetReader(jdir), MinhashDedupSignature(output_folder=sig, config=cfg)],
        tasks=tasks,
        workers=2,
        logging_dir=f"{logs}/1",
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=sig, output_folder=buckets, config=cfg)],
        tasks=cfg.num_buckets,
        workers=2,
        logging_dir=f"{logs}/2",
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=buckets, output_folder=clusters, config=cfg, save_cluster_id=True)],
        tasks=1,
        workers=1,
        logging_dir=f"{logs}/3",
    ).run()
    LocalPipelineExecutor(
        pipeline=[
            ParquetReader(jdir),
            MinhashDedupFilter(
                input_folder=clusters,
                load_cluster_ids=True,
                exclusion_writer=ParquetWriter(os.path.join(work, "removed")),
            ),
            ParquetWriter(os.path.join(work, "kept")),
        ],
        tasks=tasks,
        workers=2,
        logging_dir=f"{logs}/4",
    ).run()
    import pyarrow.parquet as pq

    predicted = {}
    for sub in ("kept", "removed"):
        base = os.path.join(work, sub)
        for name in os.listdir(base) if os.path.isdir(base) else []:
            for d in pq.read_table(os.path.join(base, name), columns=["id", "metadata"]).to_pylist():
                cid = (d.get("metadata") or {}).get("minhash_cluster_id", -1)
                if cid != -1:
                    predicted[d["id"]] = f"dt{cid}"
    return predicted


def child(tool: str, folder: str) -> None:
    from pipeline.dedup.evaluate import pairwise_scores

    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        run = {
            "ccgpt": run_ccgpt,
            "ccgpt-plain": lambda f, w: run_ccgpt(f, w, plain=True),
            "datasketch": run_datasketch,
            "datatrove": run_datatrove,
        }[tool]
        predicted = run(folder, work)
        elapsed = time.perf_counter() - t
    # read before the labels are loaded and scored: at 1M documents the scoring alone peaks at gigabytes
    rss = (
        max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0)
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    with open(os.path.join(folder, "labels.json"), encoding="utf-8") as fh:
        truth = json.load(fh)
    scores = pairwise_scores(predicted, truth)
    print(
        json.dumps(
            {
                "tool": tool,
                "docs": len(truth),
                "seconds": round(elapsed, 2),
                "docs_per_s": round(len(truth) / elapsed, 1),
                "peak_rss_mb": round(rss / 1024),
                "precision": round(scores["precision"], 4),
                "recall": round(scores["recall"], 4),
                "f1": round(scores["f1"], 4),
                "ari": round(scores["ari"], 4),
                **DETAILS,
            }
        )
    )


def measure(tool: str, folder: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.dedup", "--run", tool, folder],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the tool's own worker processes too
        proc.communicate()
        return {"tool": tool, "error": f"over {timeout:.0f} s"}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"tool": tool, "error": stderr[-800:]}
    return json.loads(lines[-1])


def news_folder(work: str) -> str:
    folder = os.path.join(work, "news")
    with open(NEWS, encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh]
    write_corpus([{"id": str(d["id"]), "text": d["text"], "cluster": str(d["cluster"])} for d in docs], folder)
    return folder


# --- labelled sets in one process (ccgpt dedup eval): near-duplicate quality, plain vs boilerplate-aware ---------

V2 = os.path.join(SHARED, "dedup", "syndicated-news-v2.jsonl")
SWEEP_MIN_DOCS = (3, 4, 5, 6, 8, 12)  # boilerplate.min_docs values the sweep shows (the default among them)
BEAM_SETS = ("trafilatura-syndicated",)  # scored through the Beam stage (run_dedup) as well as the eval path


def labelled_sets(work: str, synthetic: int) -> list[tuple[str, str]]:
    """``(name, path)`` of the labelled JSON-lines sets: v1, v2, the trafilatura set (built into ``work`` by
    :mod:`bench.dedup_sets`) and, when ``synthetic`` > 0, the synthetic corpus of that size."""
    from bench import dedup_sets

    sets = [("syndicated-news-v1", NEWS), ("syndicated-news-v2", V2)]
    sets.append(("trafilatura-syndicated", dedup_sets.write(os.path.join(work, "sets"))))
    if synthetic:
        path = os.path.join(work, f"synthetic-{synthetic}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(d) + "\n" for d in make_corpus(synthetic))
        sets.append((f"synthetic-{synthetic}", path))
    return sets


def score_labelled(name: str, path: str, settings: str, min_docs: int = 0) -> dict:
    """``evaluate_dedup`` on one set: ``settings`` "plain" (the earlier settings: full texts, Jaccard) or
    "default" (boilerplate-aware), optionally with another ``boilerplate.min_docs``."""
    from pipeline.dedup.evaluate import default_near_config, evaluate_dedup, plain_near_config
    from pipeline.dedup.exact import NormalizeConfig

    near = plain_near_config() if settings == "plain" else default_near_config()
    if min_docs:
        near.boilerplate.min_docs = min_docs
    t = time.perf_counter()
    r = evaluate_dedup(path, 0.8, near, NormalizeConfig())
    elapsed = time.perf_counter() - t
    row = {"corpus": name, "settings": settings, "docs": r["documents"], "seconds": round(elapsed, 2)}
    row["docs_per_s"] = round(r["documents"] / elapsed, 1)
    for k in ("precision", "recall", "f1", "syndicated_recall"):
        if k in r:
            row[k] = round(r[k], 4)
    for k in ("template_fp_pairs", "template_other_fp_pairs", "candidate_pairs", "verified_pairs", "bands", "rows"):
        if k in r:
            row[k] = r[k]
    if r["boilerplate"]["enabled"]:
        row["min_docs"] = r["boilerplate"]["min_docs"]
        row["boilerplate_lines"] = r["boilerplate"]["lines"]
    return row


def score_labelled_beam(name: str, path: str, settings: str, work: str) -> dict:
    """The Beam stage itself (``run_dedup``, local runner, 2 workers, Parquet in) on one labelled set with
    ``settings`` "plain" or "default", scored like :func:`score_labelled` (``via``: beam)."""
    from pipeline.dedup import DedupConfig, read_clusters, run_dedup
    from pipeline.dedup.evaluate import kind_scores, pairwise_scores, plain_near_config, read_labelled
    from pipeline.runner import RunnerConfig
    from pipeline.tables import write_documents

    truth, texts, extras = read_labelled(path)
    folder = os.path.join(work, f"beam-{name}")
    os.makedirs(os.path.join(folder, "in"), exist_ok=True)
    rows = [{"id": i, "source": "crawl", "text": texts[i], "url": extras.get(i, {}).get("url")} for i in truth]
    write_documents(rows, os.path.join(folder, "in", "part-0.parquet"))
    cfg = DedupConfig(threshold=0.8, near=plain_near_config()) if settings == "plain" else DedupConfig(threshold=0.8)
    out = os.path.join(folder, settings)
    t = time.perf_counter()
    stats = run_dedup([os.path.join(folder, "in")], out, cfg, RunnerConfig(runner="local", num_workers=2), force=True)
    elapsed = time.perf_counter() - t
    predicted = {d["id"]: d["cluster"] for d in read_clusters(out)}
    kinds = {i: e["kind"] for i, e in extras.items() if "kind" in e}
    scores = {**pairwise_scores(predicted, truth), **kind_scores(predicted, truth, kinds)}
    row = {"corpus": name, "settings": settings, "via": "beam", "docs": len(truth), "seconds": round(elapsed, 2)}
    for k in ("precision", "recall", "f1", "syndicated_recall"):
        if k in scores:
            row[k] = round(scores[k], 4)
    for k in ("template_fp_pairs", "template_other_fp_pairs"):
        if k in scores:
            row[k] = scores[k]
    row["candidate_pairs"], row["verified_pairs"] = stats.extra["candidate_pairs"], stats.extra["verified_pairs"]
    if stats.extra["boilerplate"]["enabled"]:
        row["boilerplate_lines"] = stats.extra["boilerplate"]["lines"]
    return row


def labelled_main(synthetic: int, sweep: bool, report) -> None:
    """Score every labelled set with the plain settings and with the defaults (and the min_docs sweep); the
    third set (``BEAM_SETS``) through the Beam stage too, beside the one-process eval."""
    with tempfile.TemporaryDirectory() as work:
        sets = labelled_sets(work, synthetic)
        for name, path in sets:
            rows = {s: score_labelled(name, path, s) for s in ("plain", "default")}
            for row in rows.values():
                report(row)
            if name in BEAM_SETS:
                for s in ("plain", "default"):
                    beam_row = score_labelled_beam(name, path, s, work)
                    report(beam_row)
                    print(
                        f"{name} {s}: F1 Beam stage / eval {beam_row['f1']:.4f} / {rows[s]['f1']:.4f}: "
                        f"{beam_row['f1'] / rows[s]['f1'] if rows[s]['f1'] else 0.0:.2f}x",
                        flush=True,
                    )
            if name.startswith("synthetic"):
                ratio = rows["default"]["docs_per_s"] / rows["plain"]["docs_per_s"]
                print(f"one-process eval docs/s on {name}, boilerplate-aware / plain: {ratio:.2f}x", flush=True)
        if sweep:
            print("# boilerplate.min_docs sweep (F1; syndicated recall; template FP pairs)", flush=True)
            for name, path in sets:
                if name.startswith("synthetic"):
                    continue
                cells = []
                for k in SWEEP_MIN_DOCS:
                    r = score_labelled(name, path, "default", k)
                    cells.append(
                        f"{k}: {r['f1']:.4f}; {r.get('syndicated_recall', r['recall']):.4f}; "
                        f"{r.get('template_fp_pairs', '-')}"
                    )
                print(f"{name:24s} " + " | ".join(cells), flush=True)


# --- MinHash signatures only (the original micro-benchmark) ------------------------------------------------


def bench_minhash(texts: list[str], num_perm: int) -> dict[str, float]:
    from datasketch import MinHash

    from pipeline.dedup.minhash import MinHasher, ShingleConfig, shingles

    cfg = ShingleConfig()
    results: dict[str, float] = {}
    t = time.perf_counter()
    ours = []
    hasher = MinHasher(num_perm=num_perm)
    for text in texts:
        ours.append(hasher.sketch(shingles(text, cfg))[0])
    results["ccgpt sha1"] = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    fast = MinHasher(num_perm=num_perm, hash="xxh3")
    for text in texts:
        fast.sketch(shingles(text, cfg))
    results["ccgpt xxh3"] = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    theirs = []
    for text in texts:
        m = MinHash(num_perm=num_perm)
        m.update_batch(shingles(text, cfg))
        theirs.append(m.hashvalues)
    results["datasketch"] = len(texts) / (time.perf_counter() - t)
    mismatches = sum(not np.array_equal(a, b) for a, b in zip(ours, theirs))
    if mismatches:
        raise SystemExit(f"{mismatches} signatures differ from datasketch")
    return results


def make_folder(n: int, folder: str) -> None:
    """The labelled synthetic corpus of ``n`` documents in ``folder``, with a one-line summary."""
    docs = make_corpus(n)
    write_corpus(docs, folder)
    words = sum(len(d["text"].split()) for d in docs) / len(docs)
    labelled = Counter(d["cluster"] for d in docs)
    print(
        f"# {n} documents, {words:.0f} words on average, {sum(1 for v in labelled.values() if v > 1)} "
        f"duplicate clusters",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    ap.add_argument("--tools", nargs="+", choices=CHOICES, default=list(TOOLS))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per tool run; a tool over it stops growing")
    ap.add_argument("--out", default=None, help="append result JSON lines here")
    ap.add_argument("--no-news", action="store_true", help="skip the syndicated-news F1 runs")
    ap.add_argument("--minhash", action="store_true", help="only the signature micro-benchmark")
    ap.add_argument("--docs", type=int, default=2000, help="texts for --minhash")
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument(
        "--labelled",
        action="store_true",
        help="only score the labelled sets (v1, v2, the trafilatura set, a synthetic corpus) in one process "
        "(the trafilatura set through the Beam stage too), "
        "the plain settings vs the boilerplate-aware defaults, with a boilerplate.min_docs sweep",
    )
    ap.add_argument("--labelled-synthetic", type=int, default=10_000, help="synthetic documents for --labelled")
    ap.add_argument("--no-sweep", action="store_true", help="--labelled without the min_docs sweep")
    ap.add_argument("--run", nargs=2, metavar=("TOOL", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=2, metavar=("N", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        child(*args.run)
        return
    if args.make:
        make_folder(int(args.make[0]), args.make[1])
        return
    if args.minhash:
        res = bench_minhash(load_texts(args.docs), args.num_perm)
        for name, rate in res.items():
            print(f"{name:12s} {rate:10.1f} docs/s")
        print(f"ratio ccgpt sha1 / datasketch: {res['ccgpt sha1'] / res['datasketch']:.2f}x (identical signatures)")
        return

    def report(row: dict) -> None:
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    if args.labelled:
        labelled_main(args.labelled_synthetic, not args.no_sweep, report)
        return

    stopped: set[str] = set()
    with tempfile.TemporaryDirectory() as work:
        if not args.no_news:
            folder = news_folder(work)
            for tool in args.tools:
                report({"corpus": "syndicated-news", **measure(tool, folder, args.timeout)})
        for n in args.sizes:
            folder = os.path.join(work, f"synthetic-{n}")
            # Built in a child process: a tool's process is forked from this one, and Linux carries the
            # fork's resident size into the tool's ru_maxrss, so this process must never hold the corpus.
            subprocess.run([sys.executable, "-m", "bench.dedup", "--make", str(n), folder], cwd=REPO, check=True)
            rates = {}
            for tool in args.tools:
                if tool in stopped:
                    continue
                row = {"corpus": "synthetic", **measure(tool, folder, args.timeout)}
                report(row)
                if "error" in row:
                    stopped.add(tool)
                elif row.get("docs_per_s"):
                    rates[tool] = row["docs_per_s"]
            for peer in ("datatrove", "datasketch", "ccgpt-plain"):
                if "ccgpt" in rates and peer in rates:
                    print(
                        f"ratio ccgpt/{peer} at {n:,} documents: {rates['ccgpt'] / rates[peer]:.2f}x docs/s", flush=True
                    )


if __name__ == "__main__":
    main()
