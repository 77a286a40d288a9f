"""The sample folder being written: its files with their provenance, and the URL list the rebuilt pages cite."""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any

from pipeline import fs
from pipeline.sample.fetch import Fetched
from pipeline.sample.warc import Page, count_warc_records, write_warc


def page_links(url: str, body: bytes) -> set[str]:
    """The absolute http(s) URLs a page's ``<a href>`` cite, fragments dropped, the page itself left out.

    lxml (libxml2's HTML parser, which trafilatura already brings) because the documentation indexes are
    megabytes of links: Python's ``html.parser`` takes 5x longer on them and Resiliparse's selector engine
    goes quadratic.
    """
    import lxml.etree
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(body)
    except (ValueError, lxml.etree.ParserError):
        return set()
    out = set()
    for href in {str(h).strip().split("#", 1)[0] for h in doc.xpath("//a/@href")}:
        try:
            target = urllib.parse.urljoin(url, href)
        except ValueError:  # e.g. a malformed IPv6 host
            continue
        if target.startswith(("http://", "https://")) and target != url:
            out.add(target)
    return out


class Output:
    """Writes output files under ``out_dir`` and keeps their provenance."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.files: dict[str, dict[str, Any]] = {}
        self.cited_by: dict[str, set[str]] = {}  # URL -> the rebuilt pages whose links cite it
        self.citing: dict[str, tuple[Fetched, list[str]]] = {}  # package -> (artefact, citing members)

    def record(self, rel: str, fetched: list[Fetched], members: list[str], records: Any) -> None:
        path = os.path.join(self.out_dir, rel)
        self.files[rel] = {
            "bytes": os.path.getsize(path),
            "sha256": fs.sha256(path),
            "records": records,
            "from": [f.provenance() for f in fetched],
            "members": members,
        }

    def jsonl(self, rel: str, fetched: Fetched, docs: list[tuple[str, str, str]]) -> None:
        """``docs``: (text, origin, member) triples -> ``rel`` as JSON lines."""
        path = os.path.join(self.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for text, origin, _ in docs:
                fh.write(json.dumps({"text": text, "origin": origin}, ensure_ascii=False, sort_keys=True) + "\n")
        self.record(rel, [fetched], sorted({m for _, _, m in docs}), len(docs))

    def warcs(self, stem: str, fetched: Fetched, pages: list[Page], per_file: int, info: dict[str, str]) -> int:
        total = 0
        for k in range(0, len(pages), per_file):
            chunk = pages[k : k + per_file]
            rel = f"crawl/{stem}-{k // per_file:05d}.warc.gz"
            path = os.path.join(self.out_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            total += write_warc(path, chunk, {**info, "isPartOf": f"ccgpt-sample/{stem}"})
            self.record(rel, [fetched], [p.origin.split(":", 1)[1] for p in chunk], count_warc_records(path))
        for page in pages:
            if page.content_type.startswith("text/html"):
                for link in page_links(page.url, page.body):
                    self.cited_by.setdefault(link, set()).add(page.url)
                self.citing.setdefault(fetched.artefact.package, (fetched, []))[1].append(page.origin.split(":", 1)[1])
        return total

    def url_list(self, rel: str) -> int:
        """The links the rebuilt documentation pages cite, as a scored URL list for ``ccgpt source webtext``.

        ``{"url", "score"}`` per cited URL, the score being how many distinct pages cite it: the analogue of
        the Reddit karma GPT-2's WebText list was filtered by (a link many pages point at is one many authors
        judged worth pointing at). URLs are absolute but not normalised, as a real list is; sorted by score.
        """
        if not self.cited_by:
            return 0
        rows = sorted(((-len(pages), url) for url, pages in self.cited_by.items()))
        path = os.path.join(self.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for neg, url in rows:
                fh.write(json.dumps({"score": -neg, "url": url}, ensure_ascii=False, sort_keys=True) + "\n")
        fetched = [f for _, (f, _) in sorted(self.citing.items())]
        members = sorted(m for _, (_, ms) in self.citing.items() for m in ms)
        self.record(rel, fetched, members, len(rows))
        return len(rows)
