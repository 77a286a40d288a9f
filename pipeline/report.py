"""``ccgpt report RUN_DIR``: one self-contained HTML page (plots embedded as PNG) beside the stats.

It reads only what the stages wrote (``*/stats.json``, ``curate/examples.jsonl``, the quality model's
``eval.json``, the document tables, ``dedup/clusters.jsonl``, ``shards/manifest.json``, ``train/log.jsonl``),
so it can be rebuilt at any time and shows exactly the figures the stages recorded. Document tables are
read column by column and batch by batch (text bytes, language, quality score), never whole.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

import matplotlib
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.tables import read_jsonl
from schemas.atomic import atomic_write_text
from schemas.documents import document_files

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGE_ORDER = ["curate", "source-", "quality_model", "quality", "dedup", "decontam", "tokenizer", "shards", "train"]
DOCUMENT_STAGES = ("curate", "source-", "quality", "dedup", "decontam")  # stages whose output is a document table


def _order_key(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(STAGE_ORDER):
        if name == prefix or (prefix.endswith("-") and name.startswith(prefix)):
            return i, name
    return len(STAGE_ORDER), name


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bar(labels: list[str], values: list[float], title: str, xlabel: str = "") -> str:
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)


def stage_stats(run_dir: str) -> dict[str, dict[str, Any]]:
    """Every ``<stage>/stats.json`` under the run folder, in pipeline order."""
    found = {}
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name, "stats.json")
        if os.path.isfile(path):
            found[name] = _load_json(path)
    return {k: found[k] for k in sorted(found, key=_order_key)}


def _iter_column(folder: str, column: str):
    """Batches of one column of a stage's document table (none when the folder holds no table)."""
    for f in document_files(folder):
        for batch in pq.ParquetFile(f).iter_batches(columns=[column], batch_size=8192):
            yield batch.column(0)


def table_sizes(run_dir: str, stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Documents and UTF-8 text bytes in each document-table stage's output, counted from the tables."""
    sizes = {}
    for name in stats:
        if name == "quality_model" or not any(
            name == p or (p.endswith("-") and name.startswith(p)) for p in DOCUMENT_STAGES
        ):
            continue
        docs = nbytes = 0
        for col in _iter_column(os.path.join(run_dir, name), "text"):
            docs += len(col)
            nbytes += pc.sum(pc.binary_length(col)).as_py() or 0
        sizes[name] = {"documents": docs, "bytes": nbytes}
    return sizes


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
    return _png(fig)


def _value_counts(folder: str, column: str) -> dict[str, int]:
    """How often each value of a string column occurs in a stage's document table (nulls as "?")."""
    counts: dict[str, int] = {}
    for col in _iter_column(folder, column):
        vc = pc.value_counts(col)
        for value, n in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist()):
            counts[value or "?"] = counts.get(value or "?", 0) + n
    return counts


def _languages_section(run_dir: str) -> str:
    counts = _value_counts(os.path.join(run_dir, "curate", "raw"), "language")
    kept = _value_counts(os.path.join(run_dir, "curate"), "language")
    if not counts and not kept:
        return ""
    langs = sorted(set(counts) | set(kept), key=lambda k: -(counts.get(k, 0) or kept.get(k, 0)))[:25]
    rows = [[lang, counts.get(lang, ""), kept.get(lang, 0)] for lang in langs]
    out = [
        "<h2>Languages</h2>",
        _table(rows, ["language", "extracted pages (raw sample)" if counts else "", "kept by curate"]),
    ]
    base = counts or kept
    out.append(
        _bar(
            langs,
            [base.get(lang, 0) for lang in langs],
            "Languages of extracted pages" if counts else "Languages of kept pages",
            "documents",
        )
    )
    return "\n".join(out)


def _scores_section(run_dir: str) -> str:
    """Quality scores of the crawl pages the quality stage scored (kept), beside the classifier's eval plot."""
    scores = [
        col.to_numpy(zero_copy_only=False) for col in _iter_column(os.path.join(run_dir, "quality"), "quality_score")
    ]
    values = np.concatenate(scores) if scores else np.array([])
    values = values[~np.isnan(values.astype(float))] if values.size else values
    if not values.size:
        return ""
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(values, bins=40, range=(0, 1))
    ax.set_xlabel("quality score (P[reference-like])")
    ax.set_ylabel("kept pages")
    ax.set_title(f"Quality scores of the {values.size:,} kept crawl pages")
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return "\n".join(
        [
            "<h3>Quality scores of kept pages</h3>",
            _table(
                [[f"{q[0]:.3f}", f"{q[1]:.3f}", f"{q[2]:.3f}", f"{values.min():.3f}"]], ["p10", "median", "p90", "min"]
            ),
            _png(fig),
        ]
    )


def _dedup_section(run_dir: str, stats: dict[str, dict[str, Any]], examples: int = 3) -> str:
    s = stats.get("dedup")
    if not s:
        return ""
    out = ["<h2>Deduplication</h2>"]
    hist = s.get("cluster_size_histogram") or {}
    if hist:
        sizes = sorted(hist, key=int)
        out.append(_table([[k, hist[k]] for k in sizes], ["cluster size", "clusters"]))
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar([str(k) for k in sizes], [hist[k] for k in sizes])
        ax.set_xlabel("documents in cluster")
        ax.set_ylabel("clusters")
        ax.set_title("Duplicate cluster sizes")
        out.append(_png(fig))
    members: dict[str, list[dict[str, Any]]] = {}
    for row in read_jsonl(os.path.join(run_dir, "dedup", "clusters.jsonl")):
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


def _decontam_section(stats: dict[str, dict[str, Any]]) -> str:
    s = stats.get("decontam")
    if not s or not s.get("benchmarks"):
        return ""
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
    parts.append(
        _table([[s.get("read"), s.get("kept"), sum((s.get("dropped") or {}).values())]], ["read", "kept", "dropped"])
    )
    dropped = s.get("dropped") or {}
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
            items = sorted(value.items(), key=lambda kv: -kv[1])[:25]
            charts.append(_bar([str(k) for k, _ in items], [v for _, v in items], f"{name}: {key}"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            scalars.append([key, value])
    if scalars:
        parts.append(_table(scalars, ["field", "value"]))
    parts.extend(charts)
    examples = read_jsonl(os.path.join(run_dir, name, "examples.jsonl"))
    if examples:
        rows = [[e.get("reason"), e.get("url") or "", (e.get("text") or "")[:200]] for e in examples[:60]]
        parts.append(
            "<details><summary>dropped examples</summary>"
            + _table(rows, ["reason", "url", "text (start)"])
            + "</details>"
        )
    return "\n".join(parts)


def _quality_section(run_dir: str) -> str:
    path = os.path.join(run_dir, "quality_model", "eval.json")
    if not os.path.exists(path):
        return ""
    ev = _load_json(path)
    rows = [[k, v] for k, v in ev.items() if isinstance(v, (int, float, str))]
    out = ["<h2>Quality classifier (held-out evaluation)</h2>", _table(rows, ["metric", "value"])]
    png = os.path.join(run_dir, "quality_model", "score_hist.png")
    if os.path.exists(png):
        with open(png, "rb") as fh:
            out.append(
                f'<img alt="score histogram" src="data:image/png;base64,{base64.b64encode(fh.read()).decode()}">'
            )
    return "\n".join(out)


def _mix_section(run_dir: str) -> str:
    path = os.path.join(run_dir, "shards", "manifest.json")
    if not os.path.exists(path):
        return ""
    m = _load_json(path)
    total = m.get("total_tokens", 0)
    rows = [
        [
            name,
            f"{src['tokens_available']:,}",
            f"{src['weight'] * 100:.1f}%",
            f"{src['realised_share'] * 100:.2f}%",
            f"{src['epochs']:.2f}",
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
    shard_rows = [[s["file"], s["rows"], f"{s['tokens']:,}", s["sha256"][:16] + "…"] for s in m["shards"]]
    out += ["<h3>Shards</h3>", _table(shard_rows, ["file", "rows", "tokens", "sha256"])]
    val = m.get("validation")
    if val:
        val_rows = [[name, v["documents"], f"{v['tokens_packed']:,}"] for name, v in val["sources"].items()]
        val_rows += [[s["file"], s["rows"], f"{s['tokens']:,}"] for s in val["shards"]]
        out += [
            f"<h3>Validation split ({val['total_tokens']:,} tokens; whole documents held out of training, "
            f"{val['fraction'] * 100:.3g}% per source)</h3>",
            _table(val_rows, ["source / file", "documents / rows", "tokens"]),
        ]
    return "\n".join(out)


def _train_section(run_dir: str) -> str:
    log = read_jsonl(os.path.join(run_dir, "train", "log.jsonl"))
    train_rows = [r for r in log if r.get("kind") == "train"]
    if not train_rows:
        return ""
    evals = [r for r in log if r.get("kind") == "eval" and r.get("eval_loss") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
    axes[0].plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train")
    if evals:
        axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation")
        for source in sorted(evals[-1].get("eval_loss_by_source") or {}):
            pts = [
                (r["step"], r["eval_loss_by_source"][source])
                for r in evals
                if source in (r.get("eval_loss_by_source") or {})
            ]
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "--", label=f"val {source}")
    axes[0].set_title("loss")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    tps = [r for r in train_rows if r.get("tokens_per_sec")]
    axes[1].plot([r["step"] for r in tps], [r["tokens_per_sec"] for r in tps])
    axes[1].set_title("tokens / s")
    axes[1].set_xlabel("step")
    mfus = [r for r in train_rows if r.get("mfu") is not None]
    axes[2].plot([r["step"] for r in mfus], [100 * r["mfu"] for r in mfus])
    axes[2].set_title("MFU (%)")
    axes[2].set_xlabel("step")
    first, last = train_rows[0], train_rows[-1]
    rows = [["train loss", f"{first['loss']:.4f} (step {first['step']})", f"{last['loss']:.4f} (step {last['step']})"]]
    if evals:
        rows.append(
            [
                "validation loss",
                f"{evals[0]['eval_loss']:.4f} (step {evals[0]['step']})",
                f"{evals[-1]['eval_loss']:.4f} (step {evals[-1]['step']})",
            ]
        )
        for source, v in sorted((evals[-1].get("eval_loss_by_source") or {}).items()):
            rows.append([f"validation loss: {source}", "", f"{v:.4f}"])
    mfu = [r["mfu"] for r in train_rows if r.get("mfu") is not None]
    if mfu:
        rows.append(["MFU", "", f"{mfu[-1]:.1%}"])
    return "\n".join(["<h2>Training</h2>", _table(rows, ["", "first", "last"]), _png(fig)])


def write_report(run_dir: str, out: str | None = None) -> str:
    """Render ``run_dir``'s report; returns the HTML path (written atomically)."""
    out = out or os.path.join(run_dir, "report.html")
    stats = stage_stats(run_dir)
    sizes = table_sizes(run_dir, stats)
    body = [
        "<h1>ccgpt run report</h1>",
        f"<p>Run folder: <code>{html.escape(os.path.basename(os.path.abspath(run_dir)))}</code></p>",
        "<h2>Funnel</h2>",
        _table(
            [
                [
                    n,
                    s.get("read"),
                    s.get("kept"),
                    sum((s.get("dropped") or {}).values()),
                    f"{sizes[n]['bytes']:,}" if n in sizes else "",
                ]
                for n, s in stats.items()
            ],
            ["stage", "read", "kept", "dropped", "text bytes kept"],
        ),
        _funnel(stats, sizes),
        _languages_section(run_dir),
        _quality_section(run_dir),
        _scores_section(run_dir),
        _dedup_section(run_dir, stats),
        _decontam_section(stats),
        _mix_section(run_dir),
        _train_section(run_dir),
        "<h2>Stages in detail</h2>",
        *[_stage_section(n, s, run_dir) for n, s in stats.items()],
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>ccgpt report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:left}th{background:#f3f3f3}img{display:block;margin:.5em 0}</style></head>"
        "<body>" + "\n".join(p for p in body if p) + "</body></html>"
    )
    return atomic_write_text(out, page)
