"""Splitting prose into sensible documents: reST sections as plain text, numbered manual sections, Jargon File
entries. A document is a section of readable length, not a line and not a whole book.
"""

from __future__ import annotations

import re

_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.<>_])\1{2,}\s*$")


def split_rst_sections(text: str, min_chars: int = 400) -> list[str]:
    """reST split at section titles (a title line underlined with a repeated punctuation character).

    Sections shorter than ``min_chars`` are merged into the next, so a bare chapter title does not become
    a document of its own; a document is a section of readable length, not a line.
    """
    lines = text.splitlines()
    starts = [0]
    for i in range(1, len(lines)):
        title = lines[i - 1].strip()
        if (
            title
            and _RST_UNDERLINE.match(lines[i])
            and len(lines[i].strip()) >= len(title)
            and not _RST_UNDERLINE.match(lines[i - 1])
        ):
            start = i - 1
            if start >= 1 and _RST_UNDERLINE.match(lines[start - 1]):  # overlined title
                start -= 1
            if start > starts[-1]:
                starts.append(start)
    starts.append(len(lines))
    return _merge_short(["\n".join(lines[a:b]).strip() for a, b in zip(starts, starts[1:])], min_chars)


_RST_ROLE = re.compile(r":[\w:+.-]+:`(?:[^`<]*<)?([^`>]+)>?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*(?:<[^>]*>)?`_{1,2}")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_ADMONITION = re.compile(r"\.\. (note|warning|seealso|versionadded|versionchanged|deprecated|important|tip)::")


def rst_to_text(text: str) -> str:
    """reST source as the plain prose a reader sees: markup removed, directive blocks (code, index, toctree,
    targets) dropped, admonition text kept.

    The reference corpus is the quality classifier's positive class; left as raw reST it would teach the
    classifier to spot markup (``:func:``, ``.. note::``) instead of well-written prose, and every crawl
    page would score as "not reference" for a reason that has nothing to do with quality.
    """
    out: list[str] = []
    skip_indent: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        if stripped.startswith(".. "):
            if _RST_ADMONITION.match(stripped):
                rest = stripped.split("::", 1)[1].strip()
                if rest:
                    out.append(rest)
            else:
                skip_indent = indent
            continue
        if _RST_UNDERLINE.match(stripped):
            continue
        line = _RST_LITERAL.sub(r"\1", _RST_LINK.sub(r"\1", _RST_ROLE.sub(r"\1", line)))
        out.append(line.replace("**", "").replace("::", ":"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


_NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\.\s+\S")


def split_numbered_sections(text: str, min_chars: int = 400) -> list[str]:
    """Plain-text manuals (``1.2. Title`` headings at column 0) split at headings, table of contents skipped.

    The body starts where the first chapter heading appears a second time: the first time is the contents.
    """
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if _NUMBERED.match(line)]
    if not heads:
        return _merge_short([text.strip()], min_chars)
    first = lines[heads[0]].strip()
    body = next((i for i in heads[1:] if lines[i].strip() == first), heads[0])
    heads = [i for i in heads if i >= body] + [len(lines)]
    return _merge_short(["\n".join(lines[a:b]).strip() for a, b in zip(heads, heads[1:])], min_chars)


_JARGON_ENTRY = re.compile(r"^   :[^:\n]+:")


def split_jargon_entries(text: str) -> list[str]:
    """The Jargon File's lexicon, one entry (``:headword: ...`` and its senses) per document.

    The front matter before the first entry (contents, introduction) is one more document.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _JARGON_ENTRY.match(line)]
    if not starts:
        return [text.strip()] if text.strip() else []
    bounds = [0] + starts + [len(lines)] if starts[0] > 0 else starts + [len(lines)]
    docs = [
        "\n".join(
            line.strip() if j == 0 else line[3:] if line.startswith("   ") else line
            for j, line in enumerate(lines[a:b])
        ).strip()
        for a, b in zip(bounds, bounds[1:])
    ]
    return [d for d in docs if d]


def _merge_short(parts: list[str], min_chars: int) -> list[str]:
    out: list[str] = []
    carry = ""
    for part in parts:
        if not part:
            continue
        carry = f"{carry}\n\n{part}" if carry else part
        if len(carry) >= min_chars:
            out.append(carry)
            carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]}\n\n{carry}"
        else:
            out.append(carry)
    return out
