"""The sample build: fetch each pinned package, turn its files into crawl captures, reference prose and extra
sources (one builder per package), and check that enough came out.

The output folder is replaced in one rename, so a failed build never leaves a half-written sample.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import posixpath
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.fs import atomic_folder
from pipeline.sample.archives import Member, iter_members
from pipeline.sample.fetch import Fetched, fetch
from pipeline.sample.output import Output
from pipeline.sample.pins import (
    DEBFAQ,
    DEBREF,
    DEVREF,
    HANDBOOK,
    JARGON,
    NPM_WARC,
    PYDOC,
    PYWB,
    Artefact,
    PinMissing,
    SampleError,
)
from pipeline.sample.text import rst_to_text, split_jargon_entries, split_numbered_sections, split_rst_sections
from pipeline.sample.warc import Page, content_type, count_warc_records, regzip_per_record

log = logging.getLogger("ccgpt.sample")


# Well-translated languages for language ID, plus el-GR and pl-PL, whose translations are largely unfinished:
# most of their pages are the English text in another language's page frame (real near-duplicates of en-US).
DEFAULT_HANDBOOK_LANGUAGES = [
    "en-US",
    "de-DE",
    "fr-FR",
    "es-ES",
    "it-IT",
    "pt-BR",
    "ru-RU",
    "ja-JP",
    "zh-CN",
    "ar-MA",
    "el-GR",
    "pl-PL",
]


DOC_LINKS = "urls/doc-links.jsonl"


@dataclass
class SampleConfig:
    cache_dir: str = field(default="data/cache", metadata={"help": "where downloaded packages are kept and reused"})
    handbook_languages: list[str] = field(
        default_factory=lambda: list(DEFAULT_HANDBOOK_LANGUAGES),
        metadata={"help": "debian-handbook languages to crawl (127 pages each; 26 exist)"},
    )
    pages_per_file: int = field(default=500, metadata={"help": "rebuilt captures per WARC file"})
    min_pages: int = field(default=1000, metadata={"help": "fail unless at least this many HTML pages are built"})
    min_reference_docs: int = field(default=200, metadata={"help": "fail unless the reference has this many docs"})
    offline: bool = field(default=False, metadata={"help": "use only what is already in the cache"})


def _info(f: Fetched, what: str) -> dict[str, str]:
    return {
        "software": "ccgpt sample builder",
        "format": "WARC File Format 1.0",
        "description": f"{what}; rebuilt from {f.artefact.registry} package {f.artefact.package} {f.version}"
        f" (sha256 {f.sha256}); HTTP headers are reconstructed, bodies are the package's files",
    }


def _pages(f: Fetched, members: list[Member], url_of: Callable[[str], str]) -> list[Page]:
    return [
        Page(url_of(m.name), m.data, content_type(m.name, m.data), m.mtime, f"{f.artefact.package}:{m.name}")
        for m in members
    ]


def _origin(f: Fetched, member: str, part: str | None = None) -> str:
    base = f"{f.artefact.registry}:{f.artefact.package}={f.version}:{member}"
    return f"{base}#{part}" if part is not None else base


def _build_pydoc(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/doc/python3.11/html/"
    members = iter_members(f.path, lambda n: n.startswith(root))
    html = [m for m in members if m.name.endswith(".html")]
    assets = [m for m in members if m.name.startswith((root + "_static/", root + "_images/"))]
    pages = _pages(f, html + assets, lambda n: "https://docs.python.org/3.11/" + n[len(root) :])
    n = out.warcs("python3.11-doc", f, pages, cfg.pages_per_file, _info(f, "docs.python.org/3.11 pages"))
    sources = [m for m in members if m.name.startswith(root + "_sources/") and m.name.endswith(".rst.txt")]
    docs = [doc for m in sources for doc in _rst_documents(f, m)]
    out.jsonl("reference/python-docs.jsonl", f, docs)
    return {"html_pages": len(html), "other_responses": len(assets), "responses": n, "reference_docs": len(docs)}


def _build_handbook(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/doc/debian-handbook/html/"
    langs = set(cfg.handbook_languages)
    members = iter_members(
        f.path, lambda n: n.startswith(root) and n.endswith(".html") and n[len(root) :].split("/")[0] in langs
    )
    found = sorted({m.name[len(root) :].split("/")[0] for m in members})
    missing = sorted(langs - set(found))
    if missing:
        log.warning("sample: debian-handbook has no pages for %s", missing)
    pages = _pages(
        f, members, lambda n: "https://debian-handbook.info/browse/" + n[len(root) :].replace("/", "/stable/", 1)
    )
    n = 0
    for lang in found:
        chunk = [p for p in pages if p.url.startswith(f"https://debian-handbook.info/browse/{lang}/")]
        n += out.warcs(
            f"debian-handbook-{lang}",
            f,
            chunk,
            cfg.pages_per_file,
            _info(f, f"The Debian Administrator's Handbook ({lang})"),
        )
    return {"html_pages": len(members), "responses": n, "languages": len(found)}


def _build_debfaq(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/doc/debian/FAQ/"
    members = iter_members(f.path, lambda n: n.startswith(root) and n.endswith((".en.html", ".en.txt.gz")))
    html = [m for m in members if m.name.endswith(".html")]
    pages = _pages(f, html, lambda n: "https://www.debian.org/doc/manuals/debian-faq/" + n[len(root) :])
    n = out.warcs("debian-faq", f, pages, cfg.pages_per_file, _info(f, "The Debian GNU/Linux FAQ"))
    docs = []
    for m in members:
        if m.name.endswith(".txt.gz"):
            for i, s in enumerate(split_numbered_sections(gzip.decompress(m.data).decode("utf-8"))):
                docs.append((s, _origin(f, m.name, f"section={i}"), m.name))
    out.jsonl("sources/docs/debian-faq.jsonl", f, docs)
    return {"html_pages": len(html), "responses": n, "docs": len(docs)}


def _rst_documents(f: Fetched, m: Member) -> list[tuple[str, str, str]]:
    """A reST member's sections as plain-prose documents ``(text, origin, member)``."""
    docs = []
    for i, section in enumerate(split_rst_sections(m.data.decode("utf-8", errors="strict"))):
        prose = rst_to_text(section)
        if prose:
            docs.append((prose, _origin(f, m.name, f"section={i}"), m.name))
    return docs


def _build_devref(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/developers-reference/"
    members = iter_members(f.path, lambda n: n.startswith(root) and n.endswith((".html", ".rst.txt")))
    html = [m for m in members if m.name.endswith(".html") and "/" not in m.name[len(root) :]]
    pages = _pages(f, html, lambda n: "https://www.debian.org/doc/manuals/developers-reference/" + n[len(root) :])
    n = out.warcs("developers-reference", f, pages, cfg.pages_per_file, _info(f, "Debian Developer's Reference"))
    docs = [doc for m in members if m.name.endswith(".rst.txt") for doc in _rst_documents(f, m)]
    out.jsonl("sources/docs/developers-reference.jsonl", f, docs)
    return {"html_pages": len(html), "responses": n, "docs": len(docs)}


def _build_debref(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    name = "usr/share/debian-reference/debian-reference.en.txt.gz"
    (m,) = iter_members(f.path, lambda n: n == name)
    sections = split_numbered_sections(gzip.decompress(m.data).decode("utf-8"))
    out.jsonl(
        "sources/books/debian-reference.jsonl",
        f,
        [(s, _origin(f, name, f"section={i}"), name) for i, s in enumerate(sections)],
    )
    return {"docs": len(sections)}


def _build_jargon(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    members = iter_members(f.path, lambda n: n.startswith("usr/share/doc/jargon-text/jargon."))
    docs = []
    for m in members:
        if m.name.endswith(".txt.gz"):
            for i, e in enumerate(split_jargon_entries(gzip.decompress(m.data).decode("utf-8"))):
                docs.append((e, _origin(f, m.name, f"entry={i}"), m.name))
    out.jsonl("sources/books/jargon-file.jsonl", f, docs)
    return {"docs": len(docs)}


def _build_pywb(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    """pywb's sample archives as they are (its deliberately broken files, ``*.bad`` and ARCs, left out)."""
    members = iter_members(f.path, lambda n: "/sample_archive/warcs/" in n and n.endswith(".warc.gz"))
    totals: dict[str, int] = {}
    for m in members:
        rel = f"crawl/pywb-{posixpath.basename(m.name)}"
        path = os.path.join(out.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(m.data)
        counts = count_warc_records(path)
        out.record(rel, [f], [m.name], counts)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    return {"files": len(members), **totals}


def _build_cc(out: Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    """Common Crawl's CC-MAIN-2014-35 excerpt; the WARC re-gzipped per record (records byte-identical)."""
    members = iter_members(f.path, lambda n: n.startswith("package/test/fixtures/") and ".warc" in n)
    totals: dict[str, int] = {}
    for m in members:
        base = posixpath.basename(m.name)
        if base.endswith(".warc"):
            rel = f"crawl/{base}.gz"
            data, _ = regzip_per_record(m.data)
        else:  # WET / WAT: Common Crawl's own derivatives, kept for comparison, not crawl input
            rel = f"crawl-derived/{base}"
            data = m.data
        path = os.path.join(out.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        counts = count_warc_records(path)
        out.record(rel, [f], [m.name], counts)
        if rel.startswith("crawl/"):
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
    return {"files": len(members), **totals}


_BUILDERS: list[tuple[Artefact, Callable[[Output, Fetched, SampleConfig], dict[str, int]]]] = [
    (PYDOC, _build_pydoc),
    (HANDBOOK, _build_handbook),
    (DEBFAQ, _build_debfaq),
    (DEVREF, _build_devref),
    (DEBREF, _build_debref),
    (JARGON, _build_jargon),
    (PYWB, _build_pywb),
    (NPM_WARC, _build_cc),
]


def build_sample(out_dir: str, cfg: SampleConfig) -> dict[str, Any]:
    """Download (or reuse) the pinned packages and build the sample into ``out_dir``; return the manifest.

    A package that cannot be fetched (no apt on this machine, registry unreachable) is skipped with a
    warning and listed under ``skipped``; a registry that has none of a package's pinned versions stops the
    build (``PinMissing``, naming the pins); the build fails if what remains is below ``cfg.min_pages`` HTML
    pages, ``cfg.min_reference_docs`` reference documents, or fewer than two non-crawl sources. The folder
    is replaced in one rename, so a failed build never leaves a half-written sample. The manifest adds the
    build time to what ``provenance.json`` holds (kept out of the file so rebuilds are byte-identical).
    """
    t0 = time.monotonic()
    out_dir = os.path.abspath(out_dir)
    cfg = dataclasses.replace(cfg, cache_dir=os.path.abspath(cfg.cache_dir))
    with atomic_folder(out_dir) as tmp:  # replaced in one rename: a failed build leaves no half-written sample
        out = Output(tmp)
        built: dict[str, dict[str, int]] = {}
        skipped: dict[str, str] = {}
        timings: dict[str, float] = {}
        for artefact, builder in _BUILDERS:
            t = time.monotonic()
            try:
                fetched = fetch(artefact, cfg.cache_dir, offline=cfg.offline)
            except PinMissing:
                raise  # the registry has moved on: another version would silently change the sample
            except (SampleError, OSError, subprocess.SubprocessError) as exc:
                msg = str(exc).strip() or type(exc).__name__
                log.warning("sample: skipping %s: %s", artefact.key, msg)
                skipped[artefact.key] = msg
                continue
            built[artefact.package] = builder(out, fetched, cfg)
            timings[artefact.package] = round(time.monotonic() - t, 2)
            log.info("sample: %s -> %s (%.1fs)", artefact.key, built[artefact.package], timings[artefact.package])
        out.url_list(DOC_LINKS)
        summary = _summarise(out.files)
        provenance = {
            "summary": summary,
            "packages": built,
            "skipped": skipped,
            "files": dict(sorted(out.files.items())),
        }
        _check_enough(summary, cfg, skipped)
        with open(os.path.join(tmp, "provenance.json"), "w", encoding="utf-8") as fh:
            json.dump(provenance, fh, indent=1, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
    return {**provenance, "out_dir": out_dir, "seconds": round(time.monotonic() - t0, 1), "timings": timings}


def _summarise(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-file record counts and per-area totals (crawl responses, HTML pages, documents per source)."""
    crawl = {"files": 0, "bytes": 0, "records": {}}
    html = 0
    sources: dict[str, dict[str, int]] = {}
    url_lists: dict[str, int] = {}
    for rel, meta in files.items():
        if rel.startswith("crawl/"):
            crawl["files"] += 1
            crawl["bytes"] += meta["bytes"]
            for k, v in meta["records"].items():
                crawl["records"][k] = crawl["records"].get(k, 0) + v
        elif rel.startswith("urls/"):
            url_lists[rel] = meta["records"]
        elif rel.endswith(".jsonl"):
            area = "reference" if rel.startswith("reference/") else rel.split("/")[1]
            s = sources.setdefault(area, {"files": 0, "documents": 0, "bytes": 0})
            s["files"] += 1
            s["documents"] += meta["records"]
            s["bytes"] += meta["bytes"]
    crawl["records"] = dict(sorted(crawl["records"].items()))
    for rel, meta in files.items():  # rebuilt captures: members ending in .html
        if rel.startswith("crawl/") and not rel.startswith("crawl/pywb-") and not rel.startswith("crawl/CC-"):
            html += sum(1 for m in meta["members"] if m.endswith(".html"))
    return {
        "crawl": crawl,
        "html_pages_rebuilt": html,
        "sources": dict(sorted(sources.items())),
        "url_lists": dict(sorted(url_lists.items())),
        "records_per_file": {rel: meta["records"] for rel, meta in sorted(files.items())},
    }


def _check_enough(summary: dict[str, Any], cfg: SampleConfig, skipped: dict[str, str]) -> None:
    problems = []
    if summary["html_pages_rebuilt"] < cfg.min_pages:
        problems.append(f"{summary['html_pages_rebuilt']} HTML pages (need {cfg.min_pages})")
    ref = summary["sources"].get("reference", {}).get("documents", 0)
    if ref < cfg.min_reference_docs:
        problems.append(f"{ref} reference documents (need {cfg.min_reference_docs})")
    others = [k for k in summary["sources"] if k != "reference"]
    if len(others) < 2:
        problems.append(f"non-crawl sources {others} (need at least 2)")
    if problems:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "nothing was skipped"
        raise SampleError(f"sample too small: {', '.join(problems)}. Skipped packages: {why}")
