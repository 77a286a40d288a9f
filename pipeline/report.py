"""``ccgpt report RUN_DIR``: one self-contained HTML page (plots embedded as PNG) beside the stats.

It reads only what the stages wrote (``*/stats.json``, ``curate/examples.jsonl``, the quality model's
``eval.json``, the document tables, ``dedup``'s cluster files, ``shards/manifest.json``, ``train/log.jsonl``),
so it can be rebuilt at any time and shows exactly the figures the stages recorded. Document tables are
read column by column and batch by batch (text bytes, language, quality score), never whole.

Written for people: it opens with the funnel from raw crawl records to training tokens, numbers are rounded
(3 significant digits, thousands separators; counts stay exact), and a section or plot with nothing to show
is replaced by one line saying why (``MFU: needs a GPU ...``) rather than drawn empty.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from typing import Any

import matplotlib
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import fs
from pipeline.commit import untagged
from pipeline.dedup.stage import read_clusters
from pipeline.fs import atomic_write_text
from pipeline.shards import load_manifest
from pipeline.tables import document_files, read_jsonl
from schemas.documents import SchemaError
from schemas.manifest import MANIFEST_NAME

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGE_ORDER = ["curate", "source-", "quality_model", "quality", "dedup", "decontam", "tokenizer", "shards", "train"]
DOCUMENT_STAGES = ("curate", "source-", "quality", "dedup", "decontam")  # stages whose output is a document table
FEW_VALIDATION_DOCUMENTS = 5  # below this, a source's validation loss rests on a handful of documents: say so


def _order_key(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(STAGE_ORDER):
        if name == prefix or (prefix.endswith("-") and name.startswith(prefix)):
            return i, name
    return len(STAGE_ORDER), name


def _load_json(path: str) -> Any:
    return fs.read_json(path)


def _manifest(run_dir: str) -> tuple[dict[str, Any] | None, str]:
    """The mix's manifest as a dict, read as a trainer reads it (:func:`pipeline.shards.load_manifest`: version-
    and commit-checked, so the report never shows a manifest the commit refuses); else None and why."""
    folder = fs.join(run_dir, "shards")
    if not fs.exists(fs.join(folder, MANIFEST_NAME)):
        return None, "the mix stage has not written shards yet"
    try:
        return load_manifest(folder).model_dump(mode="json"), ""
    except SchemaError as e:
        return None, f"its manifest is not usable: {e}"


def fmt(value: Any) -> str:
    """A number as people read it: integers exact with thousands separators, other numbers to 3 significant
    digits (``0.9832551518121776`` -> ``0.983``, ``1655.4`` -> ``1,660``); anything else as text."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    rounded = round(value, 2 - math.floor(math.log10(abs(value))))
    return f"{rounded:,.0f}" if abs(rounded) >= 1000 else f"{rounded:.3g}"


def fmt_bytes(n: float) -> str:
    """``647642`` -> ``648 kB`` (decimal units, 3 significant digits)."""
    units = ["B", "kB", "MB", "GB", "TB"]
    k = 0
    while n >= 1000 and k < len(units) - 1:
        n /= 1000
        k += 1
    return f"{int(n):,} B" if k == 0 else f"{fmt(n)} {units[k]}"


def fmt_share(part: float, whole: float) -> str:
    return f"{fmt(100.0 * part / whole)}%" if whole else ""


def _none(title: str, why: str) -> str:
    """A section or plot left out, and why, in one line."""
    return f'<p class="none"><b>{html.escape(title)}:</b> {html.escape(why)}</p>'


def _png(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bar(labels: list[str], values: list[float], title: str, xlabel: str = "") -> str:
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig, title)


def stage_stats(run_dir: str) -> dict[str, dict[str, Any]]:
    """Every ``<stage>/stats.json`` under the run folder, in pipeline order."""
    found = {}
    for f in fs.match(fs.join(run_dir, "*", "stats.json")):
        found[f.path.rstrip("/").split("/")[-2]] = _load_json(f.path)
    return {k: found[k] for k in sorted(found, key=_order_key)}


def _iter_column(folder: str, column: str):
    """Batches of one column of a stage's document table (none when the folder holds no table)."""
    for f in document_files(folder):
        with fs.open_arrow(f) as source:
            for batch in pq.ParquetFile(source).iter_batches(columns=[column], batch_size=8192):
                yield batch.column(0)


def _table_size(folder: str) -> dict[str, int]:
    docs = nbytes = 0
    for col in _iter_column(folder, "text"):
        docs += len(col)
        nbytes += pc.sum(pc.binary_length(col)).as_py() or 0
    return {"documents": docs, "bytes": nbytes}


def table_sizes(run_dir: str, stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Documents and UTF-8 text bytes in each document-table stage's output, counted from the tables, and in
    curate's unfiltered crawl sample (``curate/raw``) when it was written."""
    sizes = {}
    for name in stats:
        if name == "quality_model" or not any(
            name == p or (p.endswith("-") and name.startswith(p)) for p in DOCUMENT_STAGES
        ):
            continue
        sizes[name] = _table_size(fs.join(run_dir, name))
    if "curate" in stats and fs.is_dir(fs.join(run_dir, "curate", "raw")):
        sizes["curate/raw"] = _table_size(fs.join(run_dir, "curate", "raw"))
    return sizes


def _overview(run_dir: str, stats: dict[str, dict[str, Any]], sizes: dict[str, dict[str, int]]) -> str:
    """The funnel GPT-3 reports for its data (Common Crawl before and after filtering, then the mix): from the
    crawl records read to the tokens trained on, one row per step, with the text left where it is known."""
    rows: list[tuple[str, str, Any, str, str]] = []  # (what, step, count, unit, text)

    def add(what: str, step: str, count: Any, unit: str, size_of: str | None = None) -> None:
        if count is not None:
            rows.append((what, step, count, unit, fmt_bytes(sizes[size_of]["bytes"]) if size_of in sizes else ""))

    cur = stats.get("curate")
    if cur:
        add("crawl", "WARC/WET records read", cur.get("read"), "records")
        extracted = cur.get("extracted")
        add("crawl", "pages with extracted text", extracted, "documents", "curate/raw")
        if extracted is not None:
            add("crawl", "in a kept language", extracted - (cur.get("dropped") or {}).get("language", 0), "documents")
        add("crawl", "past the heuristic filters", cur.get("kept"), "documents", "curate")
    if "quality" in stats:
        add("crawl", "past the quality filter", stats["quality"].get("kept"), "documents", "quality")
    dedup = stats.get("dedup") or {}
    if "crawl" in (dedup.get("per_source") or {}):
        add("crawl", "left by dedup", dedup["per_source"]["crawl"].get("kept"), "documents")
    for name, st in stats.items():
        if name.startswith("source-"):
            add(name[len("source-") :], "documents", st.get("kept"), "documents", name)
    if dedup:
        add("all sources", "left by dedup (within and across sources)", dedup.get("kept"), "documents", "dedup")
    if "decontam" in stats:
        dc = stats["decontam"]
        add(
            "all sources",
            "after decontamination (fragments counted)",
            dc.get("documents_written"),
            "documents",
            "decontam",
        )
    m, _ = _manifest(run_dir)
    if m is not None:
        add(
            "all sources",
            "tokens available for training",
            sum(s["tokens_available"] for s in m["sources"].values()),
            "tokens",
        )
        add("training mix", "tokens drawn by weight into shards", m.get("total_tokens"), "tokens")
        if m.get("validation"):
            add("validation", "tokens held out (whole documents)", m["validation"].get("total_tokens"), "tokens")
    if "train" in stats:
        add("training", "tokens trained on", stats["train"].get("tokens_seen"), "tokens")
    if not rows:
        return _none("Overview", "no stage has finished in this run folder yet")
    table_rows = []
    for i, (what, step, count, unit, text) in enumerate(rows):
        prev = rows[i - 1] if i else None
        same_chain = prev is not None and prev[0] == what and prev[3] == unit
        table_rows.append([what, step, count, unit, text, fmt_share(count, prev[2]) if same_chain else ""])
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    labels = [f"{what}: {step}" for what, step, *_ in rows]
    colors = {"records": "#999999", "documents": "#4c72b0", "tokens": "#dd8452"}
    ax.barh(labels[::-1], [max(r[2], 1) for r in rows][::-1], color=[colors.get(r[3], "#4c72b0") for r in rows][::-1])
    ax.set_xscale("log")
    ax.set_xlabel("records / documents / tokens (log scale; grey records, blue documents, orange tokens)")
    ax.set_title("From crawl records to training tokens")
    return "\n".join(
        [
            "<h2>Overview: from crawl records to training tokens</h2>",
            _table(table_rows, ["", "step", "count", "unit", "text", "of the step above"]),
            _png(fig, "funnel from crawl records to training tokens"),
        ]
    )


def _funnel(stats: dict[str, dict[str, Any]], sizes: dict[str, dict[str, int]]) -> str:
    names = [n for n, s in stats.items() if "read" in s]
    if not names:
        return ""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], [stats[n]["read"] for n in names], width=0.4, label="read")
    axes[0].bar([i + 0.2 for i in x], [stats[n]["kept"] for n in names], width=0.4, label="kept")
    axes[0].set_xticks(list(x), names, rotation=30, ha="right")
    axes[0].set_ylabel("records (documents; rows for shards/train)")
    axes[0].set_title("Read and kept per stage")
    axes[0].legend()
    with_bytes = [n for n in names if n in sizes]
    axes[1].bar(range(len(with_bytes)), [sizes[n]["bytes"] / 1e6 for n in with_bytes])
    axes[1].set_xticks(list(range(len(with_bytes))), with_bytes, rotation=30, ha="right")
    axes[1].set_ylabel("MB of text")
    axes[1].set_title("Text kept per stage (UTF-8 bytes)")
    return _png(fig, "read, kept and text per stage")


def _value_counts(folder: str, column: str) -> dict[str, int]:
    """How often each value of a string column occurs in a stage's document table (nulls as "?")."""
    counts: dict[str, int] = {}
    for col in _iter_column(folder, column):
        vc = pc.value_counts(col)
        for value, n in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist()):
            counts[value or "?"] = counts.get(value or "?", 0) + n
    return counts


def _languages_section(run_dir: str, stats: dict[str, dict[str, Any]]) -> str:
    """Languages of every crawl page curate extracted, beside those of the pages it kept.

    The extracted pages' languages are curate's ``stats.json`` ``languages``: language ID counts each page it
    sees, before the language filter. They are not read from ``curate/raw``, whose table is written before
    language ID runs, so its ``language`` column is empty (every page would show as "?").
    """
    extracted = (stats.get("curate") or {}).get("languages") or {}
    kept = _value_counts(fs.join(run_dir, "curate"), "language")
    if not extracted and not kept:
        return _none("Languages", "curate kept no page and recorded no language (no crawl page was extracted)")
    base = extracted or kept
    langs = sorted(set(extracted) | set(kept), key=lambda k: (-base.get(k, 0), -kept.get(k, 0), k))[:25]
    rows = [[lang, extracted.get(lang, 0), kept.get(lang, 0)] for lang in langs]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(langs) + 1.2))
    y = np.arange(len(langs))[::-1]
    ax.barh(y + 0.2, [extracted.get(lang, 0) for lang in langs], height=0.4, label="extracted")
    ax.barh(y - 0.2, [kept.get(lang, 0) for lang in langs], height=0.4, label="kept by curate")
    ax.set_yticks(y, langs)
    ax.set_xlabel("pages")
    ax.set_title("Languages of the crawl pages")
    ax.legend()
    return "\n".join(
        [
            "<h2>Languages</h2>",
            _table(rows, ["language", "extracted pages", "kept by curate"]),
            _png(fig, "languages of the crawl pages"),
        ]
    )


def _scores_section(run_dir: str) -> str:
    """Quality scores of the crawl pages the quality stage scored (kept), beside the classifier's eval plot."""
    scores = [col.to_numpy(zero_copy_only=False) for col in _iter_column(fs.join(run_dir, "quality"), "quality_score")]
    values = np.concatenate(scores) if scores else np.array([])
    values = values[~np.isnan(values.astype(float))] if values.size else values
    if not values.size:
        return _none("Quality scores", "no crawl page was kept with a quality score (no quality filter ran)")
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(values, bins=40, range=(0, 1))
    ax.set_xlabel("quality score (P[reference-like])")
    ax.set_ylabel("kept pages")
    ax.set_title(f"Quality scores of the {values.size:,} kept crawl pages")
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return "\n".join(
        [
            "<h3>Quality scores of kept pages</h3>",
            _table([[float(q[0]), float(q[1]), float(q[2]), float(values.min())]], ["p10", "median", "p90", "min"]),
            _png(fig, "quality scores of kept pages"),
        ]
    )


def _dedup_section(run_dir: str, stats: dict[str, dict[str, Any]], examples: int = 3) -> str:
    s = stats.get("dedup")
    if not s:
        return _none("Deduplication", "the dedup stage has not run")
    out = ["<h2>Deduplication</h2>", boilerplate_section(s.get("boilerplate") or {})]
    hist = s.get("cluster_size_histogram") or {}
    if not hist:
        out.append(_none("Duplicate clusters", f"none: the {fmt(s.get('read'))} documents are all distinct"))
        return "\n".join(out)
    sizes = sorted(hist, key=int)
    out.append(_table([[k, hist[k]] for k in sizes], ["cluster size", "clusters"]))
    if len(sizes) > 1:  # one bar says no more than the table
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar([str(k) for k in sizes], [hist[k] for k in sizes])
        ax.set_xlabel("documents in cluster")
        ax.set_ylabel("clusters")
        ax.set_title("Duplicate cluster sizes")
        out.append(_png(fig, "duplicate cluster sizes"))
    members: dict[str, list[dict[str, Any]]] = {}
    for row in read_clusters(fs.join(run_dir, "dedup")):
        members.setdefault(row["cluster"], []).append(row)
    largest = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:examples]
    for cluster, rows in largest:
        rows = sorted(rows, key=lambda r: (not r.get("survivor"), r["id"]))
        out.append(
            f"<details><summary>cluster {html.escape(cluster[:16])}… ({len(rows)} documents)</summary>"
            + _table(
                [
                    [r["id"][:16] + "…", r.get("source"), "survivor" if r.get("survivor") else r.get("reason")]
                    for r in rows[:30]
                ],
                ["document", "source", "outcome"],
            )
            + "</details>"
        )
    return "\n".join(out)


def boilerplate_section(b: dict[str, Any]) -> str:
    """The boilerplate lines dedup set aside before comparing documents: how many, their share of the
    documents' lines, and the most frequent (site templates: menus, cookie notices, footers)."""
    if not b.get("enabled"):
        return ""
    group = "URL host (corpus-wide without a URL)" if b.get("per_host") else "corpus"
    head = (
        f"<p>Boilerplate: {fmt(b.get('lines'))} lines recur in at least {b.get('min_docs')} documents of their "
        f"{group}; they are {fmt_share(b.get('document_lines_removed', 0), b.get('document_lines', 0))} of the "
        f"documents' lines and were set aside in {fmt(b.get('documents_with_boilerplate'))} documents.</p>"
    )
    top = b.get("top_lines") or []
    if not top:
        return head
    rows = [[t["docs"], t["group"] or "(corpus)", t["text"]] for t in top]
    return head + _table(rows, ["documents", "group", "most frequent template lines"])


def _decontam_section(stats: dict[str, dict[str, Any]]) -> str:
    s = stats.get("decontam")
    if not s or not s.get("benchmarks"):
        return _none("Decontamination", "no benchmark set (decontam.benchmarks), so nothing was checked")
    rows = [
        [name, b.get("documents", 0), b.get("characters_removed", 0), b.get("characters_lost", 0)]
        for name, b in sorted(s["benchmarks"].items())
    ]
    chars = s.get("characters") or {}
    return "\n".join(
        [
            f"<h2>Decontamination ({s.get('ngram')}-grams)</h2>",
            _table(rows, ["benchmark", "documents hit", "characters removed", "characters lost"]),
            _table(
                [
                    [
                        chars.get("read"),
                        chars.get("kept"),
                        chars.get("in_fragments"),
                        chars.get("removed"),
                        s.get("documents_contaminated"),
                        s.get("fragments_created"),
                    ]
                ],
                ["characters read", "kept whole", "in fragments", "removed", "documents contaminated", "fragments"],
            ),
        ]
    )


def _stage_section(name: str, s: dict[str, Any], run_dir: str) -> str:
    parts = [f"<h3>{html.escape(name)}</h3>"]
    base = ["stage", "read", "kept", "dropped"]
    dropped = {k: v for k, v in (s.get("dropped") or {}).items() if v}
    parts.append(_table([[s.get("read"), s.get("kept"), sum(dropped.values())]], ["read", "kept", "dropped"]))
    if dropped:
        items = sorted(dropped.items(), key=lambda kv: -kv[1])
        parts.append(_table([[k, v] for k, v in items], ["drop reason", "documents"]))
        if len(items) > 1:
            parts.append(_bar([k for k, _ in items[:20]], [v for _, v in items[:20]], f"{name}: drop reasons"))
    scalars, charts = [], []
    for key, value in s.items():
        if key in base:
            continue
        if isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
            items = [kv for kv in sorted(value.items(), key=lambda kv: -kv[1]) if kv[1]][:25]
            if len(items) > 1:  # one bar says no more than the table
                charts.append(_bar([str(k) for k, _ in items], [v for _, v in items], f"{name}: {key}"))
            elif items:
                scalars.append([f"{key}: {items[0][0]}", items[0][1]])
        elif isinstance(value, (int, float, str, bool)) or value is None:
            scalars.append([key, value])
        elif key == "files" and isinstance(value, list):  # the commit's file list (pipeline.commit)
            scalars.append(["output files", len(value)])
    if scalars:
        parts.append(_table(scalars, ["field", "value"]))
    parts.extend(charts)
    examples = read_jsonl(fs.join(run_dir, name, "examples.jsonl"))
    if examples:
        rows = [[e.get("reason"), e.get("url") or "", (e.get("text") or "")[:200]] for e in examples[:60]]
        parts.append(
            "<details><summary>dropped examples</summary>"
            + _table(rows, ["reason", "url", "text (start)"])
            + "</details>"
        )
    return "\n".join(parts)


def _quality_section(run_dir: str) -> str:
    path = fs.join(run_dir, "quality_model", "eval.json")
    if not fs.exists(path):
        return _none("Quality classifier", "not trained in this run (a model was given, or the stage has not run)")
    ev = _load_json(path)
    rows = [[k, v] for k, v in ev.items() if isinstance(v, (int, float, str))]
    out = ["<h2>Quality classifier (held-out evaluation)</h2>", _table(rows, ["metric", "value"])]
    png = fs.join(run_dir, "quality_model", "score_hist.png")
    if fs.exists(png):
        with fs.open_read(png) as fh:
            out.append(
                f'<img alt="score histogram" src="data:image/png;base64,{base64.b64encode(fh.read()).decode()}">'
            )
    return "\n".join(out)


def _validation_note(m: dict[str, Any]) -> str:
    """Why a source's validation split is small, when it is (its per-source loss then rests on a few documents).

    The mix holds out ``ceil(val_fraction * documents)`` whole documents per source (at least one row of
    tokens, never the last document), so a small source gets one or two."""
    val = m["validation"]
    few = []
    for name, v in val["sources"].items():
        total = m["sources"].get(name, {}).get("documents", v["documents"])  # held-out documents included
        if v["documents"] < FEW_VALIDATION_DOCUMENTS:
            few.append(f"{name} {v['documents']} of {total:,}")
    if not few:
        return ""
    return (
        f"<p>Few validation documents: {html.escape(', '.join(few))}. The mix holds out "
        f"{fmt(100 * val['fraction'])}% of each source's documents (mix.val_fraction), at least one row of "
        "tokens, so on a small dataset a source's validation loss rests on one or two documents; raise "
        "mix.val_fraction to hold out more.</p>"
    )


def _mix_section(run_dir: str) -> str:
    m, why = _manifest(run_dir)
    if m is None:
        return _none("Training mix", why)
    total = m.get("total_tokens", 0)
    rows = [
        [
            name,
            src["tokens_available"],
            fmt_share(src["weight"], 1),
            fmt_share(src["realised_share"], 1),
            float(src["epochs"]),
            src["documents"],
        ]
        for name, src in m["sources"].items()
    ]
    out = [
        f"<h2>Training mix ({total:,} tokens, seq_len {m['seq_len']}, {m['token_dtype']}, "
        f"vocab {m['tokenizer']['vocab_size']:,})</h2>",
        _table(
            rows,
            [
                "Dataset",
                "Quantity (tokens)",
                "Weight in training mix",
                "Realised share",
                f"Epochs elapsed when training for {total:,} tokens",
                "documents",
            ],
        ),
    ]
    # shards are named by the attempt that wrote them (``shard-00000.attempt-<tag>.arrow``, pipeline.commit): the
    # tag tells a reader nothing, so the tables show the name without it
    shard_rows = [[untagged(s["file"]), s["rows"], s["tokens"], s["sha256"][:16] + "…"] for s in m["shards"]]
    out += ["<h3>Shards</h3>", _table(shard_rows, ["file", "rows", "tokens", "sha256"])]
    val = m.get("validation")
    if val:
        val_rows = [[name, v["documents"], v["tokens_packed"]] for name, v in val["sources"].items()]
        val_rows += [[untagged(s["file"]), s["rows"], s["tokens"]] for s in val["shards"]]
        out += [
            f"<h3>Validation split ({val['total_tokens']:,} tokens; whole documents held out of training, "
            f"{fmt(val['fraction'] * 100)}% per source)</h3>",
            _table(val_rows, ["source / file", "documents / rows", "tokens"]),
            _validation_note(m),
        ]
    else:
        out.append(_none("Validation split", "none (mix.val_fraction is 0): training loss only"))
    return "\n".join(out)


def _train_section(run_dir: str) -> str:
    log = read_jsonl(fs.join(run_dir, "train", "log.jsonl"))
    train_rows = [r for r in log if r.get("kind") == "train"]
    if not train_rows:
        return _none("Training", "no training step logged yet (train/log.jsonl)")
    evals = [r for r in log if r.get("kind") == "eval" and r.get("eval_loss") is not None]
    tps = [r for r in train_rows if r.get("tokens_per_sec")]
    mfus = [r for r in train_rows if r.get("mfu") is not None]
    panels = 1 + bool(tps) + bool(mfus)
    fig, axes = plt.subplots(1, panels, figsize=(4.7 * panels, 3.2), squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation")
        for source in sorted(evals[-1].get("eval_loss_by_source") or {}):
            pts = [
                (r["step"], r["eval_loss_by_source"][source])
                for r in evals
                if source in (r.get("eval_loss_by_source") or {})
            ]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", label=f"val {source}")
    ax.set_title("loss")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    panel = 1
    if tps:
        axes[0][panel].plot([r["step"] for r in tps], [r["tokens_per_sec"] for r in tps])
        axes[0][panel].set_title("tokens / s")
        axes[0][panel].set_xlabel("step")
        panel += 1
    if mfus:
        axes[0][panel].plot([r["step"] for r in mfus], [100 * r["mfu"] for r in mfus])
        axes[0][panel].set_title("MFU (%)")
        axes[0][panel].set_xlabel("step")
    first, last = train_rows[0], train_rows[-1]
    rows = [
        ["train loss", f"{fmt(first['loss'])} (step {first['step']})", f"{fmt(last['loss'])} (step {last['step']})"]
    ]
    if evals:
        rows.append(
            [
                "validation loss",
                f"{fmt(evals[0]['eval_loss'])} (step {evals[0]['step']})",
                f"{fmt(evals[-1]['eval_loss'])} (step {evals[-1]['step']})",
            ]
        )
        for source, v in sorted((evals[-1].get("eval_loss_by_source") or {}).items()):
            rows.append([f"validation loss: {source}", "", v])
    if mfus:
        rows.append(["MFU", "", f"{fmt(100 * mfus[-1]['mfu'])}%"])
    scored = [r for r in log if r.get("kind") == "eval_task" and r.get("tasks")]
    for task, row in (scored[-1]["tasks"] if scored else {}).items():
        for metric, v in row.items():
            first = scored[0]["tasks"].get(task, {}).get(metric)
            rows.append(
                [
                    f"{task} {metric}",
                    f"{fmt(first)} (step {scored[0]['step']})",
                    f"{fmt(v)} (step {scored[-1]['step']})",
                ]
            )
    out = ["<h2>Training</h2>", _table(rows, ["", "first", "last"]), _png(fig, "training curves")]
    if not evals:
        out.append(_none("Validation loss", "not evaluated (no validation split, or no eval step reached)"))
    out.append(
        _task_curves(scored)
        if scored
        else _none("Downstream tasks", "not scored during training (train.eval_tasks unset)")
    )
    if not mfus:
        out.append(_none("MFU", "needs a GPU: model FLOPs utilisation is measured against a GPU's peak FLOP/s"))
    return "\n".join(out)


def _task_curves(scored: list[dict[str, Any]]) -> str:
    """One small panel per task: its first metric (accuracy, word perplexity) over the training steps, from
    step 0 (the initialisation, the baseline to read the rest against)."""
    tasks = list(scored[-1]["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 2.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = next(iter(scored[-1]["tasks"][task]))
        pts = [(r["step"], r["tasks"][task][metric]) for r in scored if metric in r["tasks"].get(task, {})]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        ax.set_title(f"{task}: {metric}")
        ax.set_xlabel("step")
    return _png(fig, "downstream tasks during training")


def _eval_section(run_dir: str) -> str:
    """The eval stage: each task's metrics, trained vs the initialisation (and chance, where a task has one)."""
    path = fs.join(run_dir, "eval", "scores.json")
    if not fs.exists(path):
        return _none("Evaluation", "no eval stage (eval.tasks unset, or their data not found)")
    scores = _load_json(path)
    rows = [
        [
            task,
            metric,
            v,
            scores["initialisation"][task][metric],
            (scores.get("chance") or {}).get(task, {}).get(metric),
        ]
        for task, row in scores["trained"].items()
        for metric, v in row.items()
    ]
    limit = f"at most {scores['limit']} examples per task or subtask" if scores.get("limit") else "every example"
    return f"<h2>Evaluation</h2><p>{scores['examples']} examples ({limit}), zero-shot.</p>" + _table(
        rows, ["task", "metric", "trained", "untrained", "chance"]
    )


def _run_name(run_dir: str) -> str:
    return run_dir if fs.is_url(run_dir) else os.path.basename(os.path.abspath(run_dir))


def write_report(run_dir: str, out: str | None = None, local_dir: str | None = None) -> str:
    """Render ``run_dir``'s report (a local folder or an object-store URL); returns the HTML path (written
    atomically, on local disk). ``local_dir`` holds the train and eval stages when ``run_dir`` is a URL (they
    write local files); the report goes there by default."""
    local = local_dir or run_dir
    out = out or os.path.join(local, "report.html")
    stats = stage_stats(run_dir)
    if local != run_dir:
        stats = {k: v for k, v in sorted({**stats, **stage_stats(local)}.items(), key=lambda kv: _order_key(kv[0]))}
    sizes = table_sizes(run_dir, stats)
    body = [
        "<h1>ccgpt run report</h1>",
        f"<p>Run folder: <code>{html.escape(_run_name(run_dir))}</code></p>",
        _overview(run_dir, stats, sizes),
        "<h2>Stages</h2>",
        _table(
            [
                [
                    n,
                    s.get("read"),
                    s.get("kept"),
                    sum((s.get("dropped") or {}).values()),
                    fmt_bytes(sizes[n]["bytes"]) if n in sizes else "",
                ]
                for n, s in stats.items()
            ],
            ["stage", "read", "kept", "dropped", "text kept"],
        ),
        _funnel(stats, sizes),
        _languages_section(run_dir, stats),
        _quality_section(run_dir),
        _scores_section(run_dir),
        _dedup_section(run_dir, stats),
        _decontam_section(stats),
        _mix_section(run_dir),
        _train_section(local),
        _eval_section(local),
        "<h2>Stages in detail</h2>",
        *[_stage_section(n, s, run_dir) for n, s in stats.items()],
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>ccgpt report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:left}th{background:#f3f3f3}img{display:block;margin:.5em 0;max-width:100%}"
        "p.none{color:#666}</style></head>"
        "<body>" + "\n".join(p for p in body if p) + "</body></html>"
    )
    return atomic_write_text(out, page)
