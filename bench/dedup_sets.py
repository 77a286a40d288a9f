"""A third labelled near-duplicate set, built from other real text the way ``syndicated-news-v2`` was built.

Run from the repository root (deterministic: the same seed and data give the same file)::

    .venv/bin/python -m bench.dedup_sets --out /tmp/dedup-sets      # writes trafilatura-syndicated.jsonl there

The text is trafilatura's evaluation pages (``../shared/data/html/trafilatura-eval.tar.gz``: real pages of
hundreds of sites, none of them in the newspaper or goose3 sets behind v1 and v2), read in URL order and
extracted with the curate stage's fast extractor (:func:`pipeline.extract.extract_text`, resiliparse). From
them:

- **originals**: ``--originals`` articles of at least 6 paragraphs and 250 words, paragraphs separated by a
  blank line;
- **syndicated copies**: 1-4 per original, each on a "site" whose boilerplate lines are real: the short lines
  (3-12 words) of another page's full text (resiliparse, main content off) that are not in its main text,
  some put above the article and some below; with probability 0.5 one paragraph (not the first) dropped; 0-2 %
  of the words replaced, deleted or doubled; paragraphs separated by one newline;
- **template hard negatives**: ``--templates`` site templates, each the text (150-400 words) of another page
  cut in two at a random character (as v2 does), and ``--per-template`` distinct short articles (the opening
  8-60 words of a page of their own, about the length of v2's, each used once) published between the two
  halves: by word shingles two such pages are alike only through the template.

Pages are assigned to these roles in a seeded random order, each page to one role.

Each line is ``{"id", "text", "cluster", "kind"}`` (``kind``: original / syndicated / template); documents
sharing ``cluster`` are duplicates. The file goes to ``--out`` (a cache or temporary folder, never the
repository). ``bench.dedup`` builds it and scores it beside v1 and v2; nothing was tuned on it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
ARCHIVE = os.path.join(SHARED, "html", "trafilatura-eval.tar.gz")
NAME = "trafilatura-syndicated.jsonl"
_WORDS = re.compile(r"\w+")


def _pages():
    """``(url, html)`` of the evaluation pages in URL order.

    The archive is read once, in its own order: a member looked up out of order makes tarfile seek back through
    the gzip stream from the start, and reading the pages by URL that way took minutes.
    """
    from pipeline.extract import decode_html

    raw: dict[str, bytes] = {}
    evaldata: dict = {}
    with tarfile.open(ARCHIVE, "r:gz") as tf:
        for member in tf:
            if not member.isfile():
                continue
            name = os.path.basename(member.name)
            if name == "evaldata.json":
                evaldata = json.load(tf.extractfile(member))
            elif name.endswith(".html"):
                raw[name] = tf.extractfile(member).read()
    for url in sorted(evaldata):
        payload = raw.get(evaldata[url].get("file", ""))
        if payload is not None:
            yield url, decode_html(payload)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.splitlines() if len(_WORDS.findall(p)) >= 3]


def _site_lines(html: str, main: str) -> list[str]:
    """A page's own boilerplate: short lines of its full text (3-12 words) that are not in its main text."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    full = extract_plain_text(HTMLTree.parse(html), main_content=False, alt_texts=False, links=False)
    seen, out = set(), []
    for line in (x.strip() for x in full.splitlines()):
        n = len(_WORDS.findall(line))
        if 3 <= n <= 12 and line not in main and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def _edit(paragraph: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    out = []
    for word in paragraph.split(" "):
        if rng.random() >= rate:
            out.append(word)
            continue
        op = rng.randrange(3)
        if op == 0:
            out.append(rng.choice(vocab))
        elif op == 2:
            out.extend([word, word])
    return " ".join(out)


def build(originals: int = 100, templates: int = 7, per_template: int = 7, sites: int = 8, seed: int = 0) -> list[dict]:
    """The labelled documents (see the module docstring), in a seeded random order."""
    from pipeline.extract import ExtractConfig, extract_text

    rng = random.Random(seed)
    cfg = ExtractConfig(extractor="resiliparse")  # ten times trafilatura's speed; the text is as real
    pages = []
    for url, html in _pages():
        try:
            main = extract_text(html, cfg, url)
        except Exception:  # noqa: BLE001 - a page the extractor refuses is just not used
            continue
        paragraphs = _paragraphs(main)
        pages.append((html, main, paragraphs, sum(len(_WORDS.findall(p)) for p in paragraphs)))
    order = list(range(len(pages)))
    rng.shuffle(order)
    used: set[int] = set()

    def take(n: int, ok) -> list[int]:
        got = [i for i in order if i not in used and ok(pages[i])][:n]
        used.update(got)
        return got

    site_lines: list[list[str]] = []
    for i in order:
        if len(site_lines) == sites:
            break
        lines = _site_lines(pages[i][0], pages[i][1])
        if len(lines) >= 6:
            site_lines.append(lines[:3] + lines[-3:])
            used.add(i)
    long_texts = [pages[i][2] for i in take(originals, lambda p: len(p[2]) >= 6 and p[3] >= 250)]
    template_texts = [" ".join(pages[i][2]) for i in take(templates, lambda p: 150 <= p[3] <= 400)]
    short_texts = []  # a short article: the opening words (8-60, as v2's) of a page of its own, cut after a word
    for i in take(templates * per_template, lambda p: p[3] >= 20):
        words = " ".join(pages[i][2]).split(" ")
        short_texts.append(" ".join(words[: rng.randint(8, 60)]))
    vocab = sorted({w for p in long_texts for para in p for w in para.split(" ") if w.isalpha()})
    docs: list[dict] = []
    for i, paragraphs in enumerate(long_texts):
        cluster = f"o{i}"
        docs.append({"id": cluster, "text": "\n\n".join(paragraphs), "cluster": cluster, "kind": "original"})
        for c in range(rng.randint(1, 4)):
            kept = list(paragraphs)
            if rng.random() < 0.5:
                del kept[rng.randrange(1, len(kept))]
            rate = rng.uniform(0.0, 0.02)
            kept = [_edit(p, rate, rng, vocab) for p in kept]
            lines = rng.choice(site_lines)
            top = rng.sample(lines[:3], rng.randint(1, 3))
            bottom = rng.sample(lines[3:], rng.randint(0, 3))
            text = "\n".join(top + kept + bottom)
            docs.append({"id": f"{cluster}c{c}", "text": text, "cluster": cluster, "kind": "syndicated"})
    shorts = iter(short_texts)
    for t, template in enumerate(template_texts):
        cut = rng.randrange(len(template) // 3, 2 * len(template) // 3)
        for j in range(per_template):
            article = next(shorts, None)
            if article is None:
                break
            page_id = f"t{t}_{j}"
            text = f"{template[:cut]}\n{article}\n{template[cut:]}"
            docs.append({"id": page_id, "text": text, "cluster": page_id, "kind": "template"})
    rng.shuffle(docs)
    return docs


def write(folder: str, **kwargs) -> str:
    """Build the set and write it to ``folder/trafilatura-syndicated.jsonl``; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, NAME)
    docs = build(**kwargs)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write trafilatura-syndicated.jsonl to")
    ap.add_argument("--originals", type=int, default=100)
    ap.add_argument("--templates", type=int, default=7)
    ap.add_argument("--per-template", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    path = write(
        args.out, originals=args.originals, templates=args.templates, per_template=args.per_template, seed=args.seed
    )
    kinds: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            kind = json.loads(line)["kind"]
            kinds[kind] = kinds.get(kind, 0) + 1
    print(f"wrote {path}: {sum(kinds.values())} documents, {kinds}")


if __name__ == "__main__":
    main()
