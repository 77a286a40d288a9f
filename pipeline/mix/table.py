"""The mix as GPT-3's Table 2.2, the summary a reader of ``mix_table.md`` compares with the paper."""

from __future__ import annotations

from schemas.manifest import Manifest


def _human(n: float) -> str:
    for scale, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if n >= scale:
            return f"{n / scale:.3g} {word}"
    return f"{int(n)}"


def format_mix_table(manifest: Manifest) -> str:
    """The mix as GPT-3's Table 2.2 (Markdown): dataset, quantity, weight, epochs for the trained tokens.

    Quantity is the training pool (validation documents excluded); a last column gives the held-out tokens.
    """
    total = manifest.total_tokens
    val = manifest.validation
    lines = [
        "| Dataset | Quantity (tokens) | Weight in training mix | "
        f"Epochs elapsed when training for {_human(total)} tokens |"
        + (" Held out for validation (tokens) |" if val else ""),
        "|---|---:|---:|---:|" + ("---:|" if val else ""),
    ]
    for name, s in sorted(manifest.sources.items(), key=lambda kv: (-kv[1].weight, kv[0])):
        held = ""
        if val:
            v = val.sources.get(name)
            held = f" {_human(v.tokens_packed) if v else 0} |"
        lines.append(f"| {name} | {_human(s.tokens_available)} | {s.weight * 100:.3g}% | {s.epochs:.2f} |{held}")
    return "\n".join(lines) + "\n"
