"""Throughput of ``ccgpt curate`` vs datatrove's WarcReader + Trafilatura + the same filters, same input.

Run by hand from the repository root::

    .venv/bin/python -m bench.curate --pages 300

The input is a per-record-gzip WARC built here from the real article pages in
``../shared/data/html/newspaper.tar.gz`` (repeated to ``--pages`` responses), so both sides read the same
bytes. Both run in one process on one core: ccgpt through Beam's local runner (1 worker, so Beam's own
overhead is included), datatrove by chaining its pipeline steps' ``run`` generators (no executor) behind a warcio
loop equivalent to its WarcReader (which needs cchardet/python-magic, not installed here). ccgpt
additionally runs language id (``languages=[]``, ``threshold=0``: the model runs, nothing is dropped);
datatrove's LanguageFilter is left out because it downloads its model. Prints pages/s for each and the ratio.

Beam's overhead: the same pure functions (``iter_warc``, ``record_to_document``, ``LanguageIdentifier``,
``FilterChain``) in a plain loop on the same file, no output written; the difference is what running them as
a Beam stage costs (runner start-up, stage set-up, Parquet and side-file writing).

Extraction quality: extraction dominates the cost, so the bench also scores the extractors on the first
``--eval-pages`` pages (by URL) of ``../shared/data/html/trafilatura-eval.tar.gz`` with trafilatura's own
method (snippets the text must contain: true positive or false negative; must not contain: false positive),
timing extraction only (decoded HTML in, text out).

Prints pages/s, seconds and pages kept for each side, the ratio, Beam's overhead in percent, peak RSS, and
per extractor precision, recall, F1, pages/s and the ratio to datatrove's. Results: ``docs/BENCHMARKS.md``,
section ``curate`` (``python -m bench.run_all`` writes it).
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from io import BytesIO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def build_warc(path: str, pages: int) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    html = []
    with tarfile.open(os.path.join(SHARED, "html", "newspaper.tar.gz")) as tf:
        for m in tf:
            if m.name.startswith("./tests/data/html/") and m.name.endswith(".html"):
                html.append((os.path.basename(m.name), tf.extractfile(m).read()))
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for i in range(pages):
            name, body = html[i % len(html)]
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            rec = w.create_warc_record(
                f"http://bench.example/{i}/{name}", "response", payload=BytesIO(body), http_headers=headers
            )
            w.write_record(rec)
    return pages


def run_ccgpt(warc: str, out: str) -> tuple[float, int]:
    from pipeline.curate import CurateConfig, run_curate
    from pipeline.runner import RunnerConfig

    cfg = CurateConfig(write_raw=False)
    cfg.langid.languages = []
    cfg.langid.threshold = 0.0
    t0 = time.perf_counter()
    stats = run_curate(
        [warc], out, cfg, RunnerConfig(runner="local", num_workers=1, running_mode="in_memory"), force=True
    )
    return time.perf_counter() - t0, stats.kept


def _warc_documents(folder: str):
    """What datatrove's WarcReader does (warcio, decode, one Document per HTML response). WarcReader itself
    needs ``cchardet`` and ``python-magic``, which ccgpt does not install, so its loop is reproduced here."""
    from datatrove.data import Document
    from warcio.archiveiterator import ArchiveIterator

    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type != "response" or "html" not in (rec.http_headers.get_header("Content-Type") or ""):
                    continue
                html = rec.content_stream().read().decode("utf-8", "replace")
                yield Document(
                    text=html,
                    id=rec.rec_headers.get_header("WARC-Record-ID"),
                    metadata={"url": rec.rec_headers.get_header("WARC-Target-URI")},
                )


def run_datatrove(folder: str) -> tuple[float, int]:
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    steps = [
        Trafilatura(favour_precision=True, timeout=10.0),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]
    t0 = time.perf_counter()
    data = _warc_documents(folder)
    for step in steps:
        data = step.run(data)
    kept = sum(1 for _ in data)
    return time.perf_counter() - t0, kept


def run_loop(warc: str) -> tuple[float, int]:
    """The same pure functions ``Curate`` runs (read, extract, language id, filters), called in a plain loop with
    the same config, no Beam and no output files: the baseline for Beam's overhead."""
    from pipeline.curate import CurateConfig
    from pipeline.extract import CapExceeded, record_to_document
    from pipeline.filters import FilterChain
    from pipeline.langid import LanguageIdentifier, keep_language
    from pipeline.read import iter_warc

    cfg = CurateConfig(write_raw=False)
    cfg.langid.languages = []
    cfg.langid.threshold = 0.0
    t0 = time.perf_counter()
    lid, chain = LanguageIdentifier(cfg.langid.model_path), FilterChain(cfg.filters)
    kept = 0
    for ev in iter_warc(warc, cfg.read):
        if ev.kind != "record":
            continue
        try:
            doc = record_to_document(ev.info, cfg.extract)
        except CapExceeded:
            continue
        if doc is None:
            continue
        language, score = lid.predict(doc["text"])
        if not keep_language(language, score, cfg.langid):
            continue
        row, _ = chain.apply({**doc, "language": language, "language_score": score})
        kept += row is not None
    return time.perf_counter() - t0, kept


def eval_pages(n: int) -> list[tuple[str, list[str], list[str]]]:
    """The first ``n`` pages (by URL) of trafilatura's evaluation set: (decoded HTML, must contain, must not)."""
    import json

    out = []
    with tarfile.open(os.path.join(SHARED, "html", "trafilatura-eval.tar.gz")) as tf:
        members = {os.path.basename(m.name): m for m in tf if m.isfile() and m.name.endswith(".html")}
        evaldata = json.load(tf.extractfile("evaldata.json"))
        from pipeline.extract import decode_html

        for url in sorted(evaldata):
            item = evaldata[url]
            if item["file"] in members and (item.get("with") or item.get("without")):
                html = decode_html(tf.extractfile(members[item["file"]]).read())
                out.append((html, item.get("with") or [], item.get("without") or []))
            if len(out) == n:
                break
    return out


def score(texts: list[str], pages) -> dict[str, float]:
    """trafilatura's own evaluation: a must-contain snippet found is a true positive, missed a false negative;
    a must-not-contain snippet found is a false positive."""
    tp = fn = fp = 0
    for text, (_, with_, without) in zip(texts, pages):
        for snip in with_:
            tp, fn = (tp + 1, fn) if snip in text else (tp, fn + 1)
        fp += sum(snip in text for snip in without)
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12)}


def extraction_quality(n: int) -> dict[str, dict[str, float]]:
    """Precision / recall / F1 on the evaluation snippets and pages/s (extraction only, decoded HTML in) for
    ccgpt's extractor in both modes and datatrove's Trafilatura step (run through its ``run`` generator, as in
    a datatrove pipeline: it extracts in a sandbox subprocess with a per-page timeout)."""
    import logging

    from datatrove.data import Document
    from datatrove.pipeline.extractors import Trafilatura

    from pipeline.extract import CapExceeded, ExtractConfig, extract_text

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    pages = eval_pages(n)
    results = {}
    for mode in ("trafilatura", "resiliparse"):
        cfg = ExtractConfig(extractor=mode)
        texts, t0 = [], time.perf_counter()
        for html, _, _ in pages:
            try:
                texts.append(extract_text(html, cfg))
            except CapExceeded:
                texts.append("")
        results[f"ccgpt {mode}"] = {**score(texts, pages), "pages_s": len(pages) / (time.perf_counter() - t0)}
    step = Trafilatura(favour_precision=True, timeout=10.0)
    t0 = time.perf_counter()
    got = {d.id: d.text for d in step.run(Document(text=html, id=str(i)) for i, (html, _, _) in enumerate(pages))}
    elapsed = time.perf_counter() - t0
    texts = [got.get(str(i), "") for i in range(len(pages))]
    results["datatrove Trafilatura"] = {**score(texts, pages), "pages_s": len(pages) / elapsed}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--eval-pages", type=int, default=250, help="pages of the extraction quality set (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "in")
        os.makedirs(folder)
        warc = os.path.join(folder, "bench.warc.gz")
        n = build_warc(warc, args.pages)
        import resource

        dt_s, dt_kept = run_datatrove(folder)
        rss_dt = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cc_s, cc_kept = run_ccgpt(warc, os.path.join(tmp, "out"))
        rss_all = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        loop_s, loop_kept = run_loop(warc)
    print(f"pages: {n}")
    print(f"ccgpt curate : {n / cc_s:8.1f} pages/s ({cc_s:.1f} s, kept {cc_kept})")
    print(f"datatrove    : {n / dt_s:8.1f} pages/s ({dt_s:.1f} s, kept {dt_kept})")
    print(f"ratio ccgpt/datatrove: {dt_s / cc_s:.2f}x (one core each: pages/s = pages/s per core)")
    print(
        f"plain loop   : {n / loop_s:8.1f} pages/s ({loop_s:.1f} s, kept {loop_kept}); "
        f"Beam overhead of the curate stage: {100 * (cc_s - loop_s) / loop_s:+.0f} %"
    )
    print(f"peak RSS: {rss_dt:.0f} MiB after datatrove, {rss_all:.0f} MiB after both (one process)")
    if args.eval_pages:
        q = extraction_quality(args.eval_pages)
        base = q["datatrove Trafilatura"]["pages_s"]
        print(f"extraction quality on {args.eval_pages} pages of trafilatura's evaluation set (snippets):")
        print(f"  {'extractor':24s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'pages/s':>8s} {'vs datatrove':>12s}")
        for name, r in q.items():
            print(
                f"  {name:24s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['pages_s']:8.1f} "
                f"{r['pages_s'] / base:11.2f}x"
            )


if __name__ == "__main__":
    main()
