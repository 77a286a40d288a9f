"""``ccgpt report RUN_DIR``: one self-contained HTML page (plots embedded as PNG) beside the stats.

It reads only what the stages wrote (``*/stats.json``, ``curate/examples.jsonl``, the quality model's
``eval.json``, ``shards/manifest.json``, ``train/log.jsonl``), so it can be rebuilt at any time and shows
exactly the figures the stages recorded.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGE_ORDER = ["curate", "source-", "quality_model", "quality", "dedup", "tokenizer", "shards", "train"]


def _order_key(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(STAGE_ORDER):
        if name == prefix or (prefix.endswith("-") and name.startswith(prefix)):
            return i, name
    return len(STAGE_ORDER), name


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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


def _funnel(stats: dict[str, dict[str, Any]]) -> str:
    names = [n for n, s in stats.items() if "read" in s]
    if not names:
        return ""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [stats[n]["read"] for n in names], width=0.4, label="read")
    ax.bar([i + 0.2 for i in x], [stats[n]["kept"] for n in names], width=0.4, label="kept")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("documents")
    ax.set_title("Documents read and kept per stage")
    ax.legend()
    return _png(fig)


def _stage_section(name: str, s: dict[str, Any], run_dir: str) -> str:
    parts = [f"<h3>{html.escape(name)}</h3>"]
    base = ["stage", "read", "kept", "dropped"]
    parts.append(_table([[s.get("read"), s.get("kept"), sum((s.get("dropped") or {}).values())]],
                        ["read", "kept", "dropped"]))
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
    examples = _read_jsonl(os.path.join(run_dir, name, "examples.jsonl"))
    if examples:
        rows = [[e.get("reason"), e.get("url") or "", (e.get("text") or "")[:200]] for e in examples[:60]]
        parts.append("<details><summary>dropped examples</summary>"
                     + _table(rows, ["reason", "url", "text (start)"]) + "</details>")
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
            out.append(f'<img alt="score histogram" src="data:image/png;base64,{base64.b64encode(fh.read()).decode()}">')
    return "\n".join(out)


def _mix_section(run_dir: str) -> str:
    path = os.path.join(run_dir, "shards", "manifest.json")
    if not os.path.exists(path):
        return ""
    m = _load_json(path)
    total = m.get("total_tokens", 0)
    rows = [[name, f"{src['tokens_available']:,}", f"{src['weight'] * 100:.1f}%", f"{src['realised_share'] * 100:.2f}%",
             f"{src['epochs']:.2f}", src["documents"]] for name, src in m["sources"].items()]
    out = [f"<h2>Training mix ({total:,} tokens, seq_len {m['seq_len']}, {m['token_dtype']}, "
           f"vocab {m['tokenizer']['vocab_size']:,})</h2>",
           _table(rows, ["Dataset", "Quantity (tokens)", "Weight in training mix", "Realised share",
                         f"Epochs elapsed when training for {total:,} tokens", "documents"])]
    shard_rows = [[s["file"], s["rows"], f"{s['tokens']:,}", s["sha256"][:16] + "…"] for s in m["shards"]]
    out += ["<h3>Shards</h3>", _table(shard_rows, ["file", "rows", "tokens", "sha256"])]
    return "\n".join(out)


def _train_section(run_dir: str) -> str:
    log = _read_jsonl(os.path.join(run_dir, "train", "log.jsonl"))
    train_rows = [r for r in log if r.get("kind") == "train"]
    if not train_rows:
        return ""
    evals = [r for r in log if r.get("kind") == "eval" and r.get("eval_loss") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train")
    if evals:
        axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation")
        for source in sorted(evals[-1].get("eval_loss_by_source") or {}):
            pts = [(r["step"], r["eval_loss_by_source"][source]) for r in evals
                   if source in (r.get("eval_loss_by_source") or {})]
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "--", label=f"val {source}")
    axes[0].set_title("loss")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    tps = [r for r in train_rows if r.get("tokens_per_sec")]
    axes[1].plot([r["step"] for r in tps], [r["tokens_per_sec"] for r in tps])
    axes[1].set_title("tokens / s")
    axes[1].set_xlabel("step")
    first, last = train_rows[0], train_rows[-1]
    rows = [["train loss", f"{first['loss']:.4f} (step {first['step']})", f"{last['loss']:.4f} (step {last['step']})"]]
    if evals:
        rows.append(["validation loss", f"{evals[0]['eval_loss']:.4f} (step {evals[0]['step']})",
                     f"{evals[-1]['eval_loss']:.4f} (step {evals[-1]['step']})"])
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
    body = [
        "<h1>ccgpt run report</h1>",
        f"<p>Run folder: <code>{html.escape(os.path.basename(os.path.abspath(run_dir)))}</code></p>",
        "<h2>Funnel</h2>",
        _table([[n, s.get("read"), s.get("kept"), sum((s.get("dropped") or {}).values())] for n, s in stats.items()],
               ["stage", "read", "kept", "dropped"]),
        _funnel(stats),
        _quality_section(run_dir),
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
    tmp = f"{out}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, out)
    return out
