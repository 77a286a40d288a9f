"""Measured figures live in generated pages only; the hand-written docs link to them instead of copying them.

The rule, kept simple on purpose: in README.md, docs/ARCHITECTURE.md and docs/DEDUP.md, every *figure* must
sit in a paragraph that links to a generated page (``docs/BENCHMARKS.md``, written by ``bench/run_all.py``, or
``docs/SCALE.md``, written by ``bench/scale.py``).

- A figure is a ratio (``2.8×``, ``1.9x``), a number with a unit of time, size, rate or share (``15 pages/s``,
  ``461 s``, ``6 minutes``, ``899 MB``, ``17.8 %``), or a score written as a decimal fraction of two or more
  digits (``0.918``). Counts (``264 articles``), versions (``3.11``), settings without a unit (``Jaccard 0.8``)
  and sizes of inputs (``10k documents``) are not figures.
- A paragraph is a run of lines between blank lines; each table row and each list item is a paragraph of its
  own; fenced code blocks are skipped.
- A link to a generated page is a Markdown link whose target names ``BENCHMARKS.md`` or ``SCALE.md``.

The README must also say exactly what the demo downloads: every pinned artefact of the sample, with its
version and registry.
"""

from __future__ import annotations

import os
import re

import pytest

from pipeline.sample.build import _BUILDERS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "docs/ARCHITECTURE.md", "docs/DEDUP.md"]
GENERATED = ("BENCHMARKS.md", "SCALE.md")
UNIT = (
    r"%|ms|s|sec|seconds?|min|minutes?|h|hours?|[kKMGT]i?B|bytes"
    r"|(?:pages|docs|documents|tokens|tok|rows|records|steps|it)/s"
)
FIGURE = re.compile(
    rf"(?<![\w.])\d[\d,]*(?:\.\d+)?[×x](?![\w])"  # ratio: 2.8×, 1.9x
    rf"|(?<![\w.])\d[\d,]*(?:\.\d+)?(?:½)?\s?(?:{UNIT})(?![\w/])"  # 15 pages/s, 461 s, 6 minutes, 899 MB, 17.8 %
    r"|(?<![\w.])0\.\d{2,}(?![\w.])"  # a score: 0.918
)
LINK = re.compile(r"\]\(([^)]*)\)")


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a Markdown text by the rule above (fenced code left out)."""
    out: list[list[str]] = []
    current: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        stripped = line.strip()
        starts_item = stripped.startswith(("|", "- ", "* ")) or bool(re.match(r"\d+\. ", stripped))
        if not stripped or starts_item:
            if current:
                out.append(current)
            current = [line] if stripped else []
        else:
            current.append(line)
    if current:
        out.append(current)
    return ["\n".join(p) for p in out]


def unlinked_figures(text: str) -> list[str]:
    bad = []
    for para in paragraphs(text):
        figures = [m.group(0) for m in FIGURE.finditer(para)]
        linked = any(any(g in target for g in GENERATED) for target in LINK.findall(para))
        if figures and not linked:
            bad.append(f"{figures} in: {para[:160]!r}")
    return bad


def test_the_rule_itself():
    assert FIGURE.findall("ccgpt 15.3 pages/s vs 7.5 → **2.02×**; F1 0.918; 461 s; 899 MB; 17.8 %; 4½ minutes")
    assert len(FIGURE.findall("ccgpt 15.3 pages/s vs 7.5 → **2.02×**; F1 0.918; 461 s; 899 MB; 17.8 %")) == 6
    for text in ("Python 3.11", "torch==2.13.0", "Jaccard 0.8", "264 articles", "10k documents", "16 × 8 bands"):
        assert not FIGURE.search(text), text
    assert unlinked_figures("It takes 6 minutes.\n\nSee [the page](docs/BENCHMARKS.md#demo): 6 minutes.") == [
        "['6 minutes'] in: 'It takes 6 minutes.'"
    ]
    assert paragraphs("a\nb\n\n| x |\n| y |\n- one\n  more\n```\n9 s\n```") == [
        "a\nb",
        "| x |",
        "| y |",
        "- one\n  more",
    ]


@pytest.mark.parametrize("doc", DOCS)
def test_figures_link_to_the_generated_page(doc):
    with open(os.path.join(REPO, doc), encoding="utf-8") as fh:
        bad = unlinked_figures(fh.read())
    assert bad == [], f"{doc}: figures without a link to docs/BENCHMARKS.md in the same paragraph:\n" + "\n".join(bad)


def test_readme_names_every_download_of_the_demo():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    section = readme[readme.index("## What the demo downloads") :].split("\n## ", 1)[0]
    registries = {"pypi": "PyPI", "npm": "npm", "debian": "Debian"}
    for artefact, _ in _BUILDERS:
        for pin in artefact.candidates():
            assert f"{pin.package}" in section and pin.version in section, pin.key
            assert registries[pin.registry] in section, pin.key
