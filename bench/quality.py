"""Scoring throughput of ccgpt's quality classifier vs datatrove's ``FastTextClassifierFilter``, same model.

Run by hand from the repository root::

    .venv/bin/python -m bench.quality --docs 3000
    .venv/bin/python -m bench.quality --docs 3000 --model path/to/model.bin   # an existing model

Documents are real: crawl pages from ``../shared/data/html/*.tar.gz`` through the project's own decoding
and extraction (resiliparse, boilerplate and all) and WikiText-2 paragraphs, cycled to ``--docs``. Without
``--model`` a model is trained first with ``QualityTrainConfig``'s defaults (dim 64, word bigrams, 200k
buckets: the size a run uses) on the same kinds of text. Both sides then load that one ``model.bin``;
datatrove gets it as a local ``model_url`` (its asset cache is pointed at a temporary folder, nothing is
downloaded) with ``keep_labels=("hq", 0.0)`` (keeps every document, scores in metadata) and
``newline_replacement=" "``. Everything
runs in this process on one core (fastText's predict is single-threaded), model loading outside the timed
part. Timed:

* ``ccgpt score_documents`` — the batch API: normalise, one ``predict`` call for all texts.
* ``ccgpt ScoreDocuments`` — the filter stage's DoFn, document by document (``process`` on a row, Beam's
  own per-element overhead excluded): checks, normalisation, predict, float32 rounding, the output row.
* ``datatrove FastTextClassifierFilter.run`` — its pipeline step: split (document mode), predict per
  document, the label scores into metadata, stats.

It also checks that both sides compute the same probability when given the same normalised line.

Nearly all the time is fastText's predict: the batch API makes one ``predict`` call for all texts instead of
one per document, and the per-document DoFn does less around it than datatrove's step (no span splitting,
no metadata dict, no stats), which is what the ratios show.

Prints docs/s for each scorer, the ratios to datatrove, and the largest probability difference between the
two sides on the same lines. Results: ``docs/BENCHMARKS.md``, section ``quality`` (``python -m bench.run_all``
writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
ARCHIVES = ("newspaper.tar.gz", "goose3.tar.gz", "trafilatura-eval.tar.gz")


def crawl_texts(limit: int) -> list[str]:
    """Visible text of real pages, decoded and extracted with the project's own functions."""
    from pipeline.extract import ExtractConfig, decode_html, extract_text

    cfg = ExtractConfig(extractor="resiliparse")
    out: list[str] = []
    for name in ARCHIVES:
        with tarfile.open(os.path.join(SHARED, "html", name)) as tf:
            for member in tf:
                if len(out) >= limit:
                    return out
                if member.isfile() and member.name.endswith((".html", ".htm")):
                    text = extract_text(decode_html(tf.extractfile(member).read()), cfg)
                    if len(text.split()) >= 50:
                        out.append(text)
    return out


def reference_texts() -> list[str]:
    with open(os.path.join(SHARED, "reference", "wikitext-2", "valid.txt"), encoding="utf-8") as fh:
        return [line.strip() for line in fh if len(line.split()) >= 50 and not line.strip().startswith("=")]


def train_model(folder: str, crawl: list[str], ref: list[str]) -> str:
    from pipeline.quality import QualityTrainConfig, train_quality

    pos, neg = os.path.join(folder, "ref.jsonl"), os.path.join(folder, "crawl.jsonl")
    for path, texts in ((pos, ref), (neg, crawl)):
        with open(path, "w", encoding="utf-8") as fh:
            for i, t in enumerate(texts):
                fh.write(json.dumps({"id": f"{os.path.basename(path)}-{i}", "text": t}) + "\n")
    out = os.path.join(folder, "model")
    result = train_quality([pos], [neg], out, QualityTrainConfig(baseline=False))
    print(f"trained a default-size model: held-out ROC AUC {result['roc_auc']:.3f}, {result['n_train']} docs")
    return os.path.join(out, "model.bin")


def bench(model: str, texts: list[str], repeat: int) -> dict[str, float]:
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.filters import FastTextClassifierFilter

    from pipeline.quality import HQ_LABEL, ScoreDocuments, normalize_text, score_documents

    n = len(texts)
    score_documents(model, texts[:10])  # load (and cache) the model outside the timed part
    dofn = ScoreDocuments(model)
    dofn.setup()
    rows = [{"id": f"doc-{i}", "source": "crawl", "text": text} for i, text in enumerate(texts)]
    # keep_labels with min score 0 keeps every document; with neither keep nor remove labels the installed
    # datatrove fails on loading the model (it concatenates [] + None)
    dt = FastTextClassifierFilter(
        model_url=model, keep_labels=(HQ_LABEL.removeprefix("__label__"), 0.0), newline_replacement=" "
    )
    _ = dt.model  # load outside the timed part

    def ccgpt_batch() -> None:
        assert len(score_documents(model, texts)) == n

    def ccgpt_per_doc() -> None:
        assert sum(isinstance(out, dict) for row in rows for out in dofn.process(row)) == n

    def datatrove_filter() -> None:
        docs = [Document(text=text, id=str(i)) for i, text in enumerate(texts)]
        assert len(list(dt.run(iter(docs)))) == n

    sides = {
        "ccgpt score_documents (batch)": ccgpt_batch,
        "ccgpt ScoreDocuments (per doc)": ccgpt_per_doc,
        "datatrove FastTextClassifierFilter": datatrove_filter,
    }
    best = {name: 0.0 for name in sides}
    for _ in range(repeat):  # interleaved rounds, best of each: other load on the machine hits all sides alike
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            best[name] = max(best[name], n / (time.perf_counter() - t))

    batch = score_documents(model, texts)
    per_doc = [out["quality_score"] for row in rows for out in dofn.process(row) if isinstance(out, dict)]
    assert np.allclose(per_doc, batch, atol=1e-6)
    # Same normalised line in, same probability out: the two sides differ only in text preparation.
    check = [normalize_text(text) for text in texts[:200]]
    ours = score_documents(model, check)
    theirs = [d.metadata[HQ_LABEL] for d in dt.run(iter(Document(text=c, id=str(i)) for i, c in enumerate(check)))]
    diff = max(abs(a - b) for a, b in zip(ours, theirs))
    print(f"same-line agreement on {len(check)} docs: max |ccgpt - datatrove| = {diff:.2e}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=3000, help="documents scored (cycled from the real ones)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (best of each side)")
    parser.add_argument("--model", help="an existing model.bin (default: train a default-size one first)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ccgpt-bench-quality-") as tmp:
        os.environ["HF_ASSETS_CACHE"] = os.path.join(tmp, "assets")  # datatrove copies model_url here
        crawl = crawl_texts(600)
        ref = reference_texts()
        model = args.model or train_model(tmp, crawl[:400], ref[:400])
        pool = crawl + ref
        texts = [pool[i % len(pool)] for i in range(args.docs)]
        words = sum(len(t.split()) for t in texts) / len(texts)
        print(
            f"{len(texts)} documents ({len(crawl)} crawl pages + {len(ref)} WikiText paragraphs, cycled),"
            f" {words:.0f} words on average; one core"
        )
        results = bench(model, texts, args.repeat)
    for name, rate in results.items():
        print(f"{name:40s} {rate:10.0f} docs/s")
    base = results["datatrove FastTextClassifierFilter"]
    for name, rate in results.items():
        if name.startswith("ccgpt"):
            print(f"{name} / datatrove = {rate / base:.2f}x")


if __name__ == "__main__":
    main()
