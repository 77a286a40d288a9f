"""The demo-sample builder on local inputs only: no test downloads anything.

Real pages come from ``../shared/data/html/goose3.tar.gz``; the .deb and sdist readers are tested on tiny
archives built here, and the build itself on a cache filled with such archives (``offline=True``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest
from fastwarc.warc import ArchiveIterator as FastArchiveIterator
from fastwarc.warc import WarcRecordType
from warcio.archiveiterator import ArchiveIterator

from pipeline import fs
from pipeline.sample import Page, SampleConfig, build_sample, write_warc
from pipeline.sample.archives import iter_members, read_ar
from pipeline.sample.build import DOC_LINKS
from pipeline.sample.fetch import fetch
from pipeline.sample.output import page_links
from pipeline.sample.pins import DEBFAQ, DEBREF, DEVREF, HANDBOOK, JARGON, NPM_WARC, PYDOC, PYWB, SampleError
from pipeline.sample.text import split_jargon_entries, split_numbered_sections, split_rst_sections
from pipeline.sample.warc import content_type, record_id, regzip_per_record


def _goose_pages(shared_data: str, n: int = 12) -> list[Page]:
    with tarfile.open(os.path.join(shared_data, "html", "goose3.tar.gz")) as tf:
        members = sorted((m for m in tf if m.isreg() and m.name.endswith(".html")), key=lambda m: m.name)[:n]
        return [
            Page(
                f"https://example.org/goose3/{m.name}",
                tf.extractfile(m).read(),
                content_type(m.name, b""),
                int(m.mtime) or 1_600_000_000,
                f"goose3:{m.name}",
            )
            for m in members
        ]


def test_warc_reads_back_with_warcio_and_fastwarc(tmp_path, shared_data):
    pages = _goose_pages(shared_data)
    path = str(tmp_path / "t.warc.gz")
    assert write_warc(path, pages, {"software": "test"}) == len(pages)

    types, bodies = [], {}
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh, check_digests=True):  # digests warcio wrote must verify
            types.append(rec.rec_type)
            if rec.rec_type == "response":
                assert rec.http_headers.get_statuscode() == "200"
                bodies[rec.rec_headers.get_header("WARC-Target-URI")] = rec.content_stream().read()
    assert types[0] == "warcinfo"
    assert types[1:] == ["request", "response"] * len(pages)
    assert bodies == {p.url: p.body for p in pages}

    fast = {}
    with open(path, "rb") as fh:  # block digests cover the HTTP headers: check them before parsing those
        assert all(r.verify_block_digest() for r in FastArchiveIterator(fh, parse_http=False))
    with open(path, "rb") as fh:
        for rec in FastArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
            assert rec.verify_payload_digest()
            fast[rec.headers["WARC-Target-URI"]] = rec.reader.read()
    assert fast == bodies


def test_record_ids_and_files_are_deterministic(tmp_path, shared_data):
    pages = _goose_pages(shared_data, 5)
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    a, b = str(tmp_path / "a" / "t.warc.gz"), str(tmp_path / "b" / "t.warc.gz")  # the name is in warcinfo
    write_warc(a, pages, {"x": "1"})
    write_warc(b, pages, {"x": "1"})
    assert open(a, "rb").read() == open(b, "rb").read()

    ids = []
    with open(a, "rb") as fh:
        for rec in ArchiveIterator(fh):
            ids.append(rec.rec_headers.get_header("WARC-Record-ID"))
    assert len(set(ids)) == len(ids) == 1 + 2 * len(pages)
    assert all(i.startswith("<urn:uuid:") and i.endswith(">") for i in ids)
    # a different body at the same URL is a different capture, hence a different id
    assert record_id("response", "u", "d1") != record_id("response", "u", "d2")
    assert record_id("response", "u", "d1") == record_id("response", "u", "d1")


def test_request_and_response_are_linked(tmp_path, shared_data):
    pages = _goose_pages(shared_data, 3)
    path = str(tmp_path / "t.warc.gz")
    write_warc(path, pages, {})
    with open(path, "rb") as fh:
        recs = [(r.rec_type, dict(r.rec_headers.headers)) for r in ArchiveIterator(fh)]
    for (t1, req), (t2, resp) in zip(recs[1::2], recs[2::2]):
        assert (t1, t2) == ("request", "response")
        assert req["WARC-Concurrent-To"] == resp["WARC-Record-ID"]
        assert req["WARC-Target-URI"] == resp["WARC-Target-URI"]


def _tar_bytes(files: dict[str, bytes], mtime: int = 1_650_000_000, mode: str = "w:xz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./usr/share/link.html")
        link.type, link.linkname = tarfile.SYMTYPE, "elsewhere.html"
        tf.addfile(link)
    return buf.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members.items():
        out.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
        out.write(data + (b"\n" if len(data) % 2 else b""))
    return out.getvalue()


def _deb(path: str, files: dict[str, bytes]) -> None:
    with open(path, "wb") as fh:
        fh.write(_ar({"debian-binary": b"2.0\n", "control.tar.xz": _tar_bytes({}), "data.tar.xz": _tar_bytes(files)}))


def test_deb_and_sdist_member_extraction(tmp_path):
    deb = str(tmp_path / "pkg_1.0_all.deb")
    _deb(deb, {"./usr/share/b.html": b"<p>b</p>", "./usr/share/a.html": b"<p>odd</p>", "./usr/other.txt": b"x"})
    got = iter_members(deb, lambda n: n.startswith("usr/share/"))
    assert [m.name for m in got] == ["usr/share/a.html", "usr/share/b.html"]  # sorted, symlink skipped
    assert got[0].data == b"<p>odd</p>" and got[0].mtime == 1_650_000_000

    sdist = tmp_path / "pkg-1.0.tar.gz"
    sdist.write_bytes(_tar_bytes({"pkg-1.0/sample_archive/warcs/x.warc.gz": b"zz"}, mode="w:gz"))
    (m,) = iter_members(str(sdist), lambda n: n.endswith(".warc.gz"))
    assert m.name == "pkg-1.0/sample_archive/warcs/x.warc.gz" and m.data == b"zz"

    with pytest.raises(SampleError):
        read_ar(b"not an archive")


def test_regzip_keeps_record_bytes(shared_data):
    raw_path = os.path.join(shared_data, "warc", "cc-main-2014-35")
    (warc,) = [os.path.join(raw_path, f) for f in os.listdir(raw_path) if f.endswith(".warc")]
    raw = open(warc, "rb").read()
    data, n = regzip_per_record(raw)
    assert n == 13  # warcinfo + 4 x (request, response, metadata)
    # concatenated gzip members decompress to the original bytes exactly
    assert gzip.decompress(data) == raw
    types = [r.record_type for r in FastArchiveIterator(io.BytesIO(data))]
    assert len(types) == n


def test_splitters_give_sections_not_lines():
    rst = "Title\n=====\n\n" + "intro words. " * 50 + "\n\nSub\n---\n\n" + "body text. " * 60 + "\n\nTiny\n----\n\nx\n"
    parts = split_rst_sections(rst, min_chars=300)
    assert len(parts) == 2 and parts[0].startswith("Title") and parts[1].startswith("Sub") and parts[1].endswith("x")

    manual = "1. One\n2. Two\n\n1. One\n" + "a " * 300 + "\n2. Two\n" + "b " * 300 + "\n2.1. Deeper\n" + "c " * 300
    secs = split_numbered_sections(manual, min_chars=100)
    assert [s.splitlines()[0] for s in secs] == ["1. One", "2. Two", "2.1. Deeper"]  # contents skipped

    jargon = "Front matter\n\n   :foo: n.\n\n   A thing.\n\n   :bar baz: v.\n\n   1. To do.\n"
    assert split_jargon_entries(jargon) == ["Front matter", ":foo: n.\n\nA thing.", ":bar baz: v.\n\n1. To do."]


def _fill_cache(cache: str, shared_data: str, pages: int) -> None:
    """A cache holding small stand-ins for the packages (real pages, tiny archives) and their index."""
    with tarfile.open(os.path.join(shared_data, "html", "goose3.tar.gz")) as tf:
        html = [
            tf.extractfile(m).read()
            for m in sorted(tf.getmembers(), key=lambda m: m.name)
            if m.isreg() and m.name.endswith(".html")
        ][:pages]
    root = "./usr/share/doc/python3.11/html/"
    pyfiles = {f"{root}page{i:03d}.html": body for i, body in enumerate(html)}
    pyfiles[f"{root}_static/basic.css"] = b"body { margin: 0 }"
    pyfiles[f"{root}_sources/tutorial/x.rst.txt"] = ("Tutorial\n========\n\n" + "Python prose. " * 80).encode()
    contents = {
        PYDOC: pyfiles,
        HANDBOOK: {
            f"./usr/share/doc/debian-handbook/html/{lang}/p{i}.html": html[i]
            for lang in ("en-US", "de-DE")
            for i in range(3)
        },
        JARGON: {
            "./usr/share/doc/jargon-text/jargon.txt.gz": gzip.compress(
                b"Front\n\n   :foo: n.\n\n   A thing that is long enough to matter.\n", mtime=0
            )
        },
        DEVREF: {
            "./usr/share/developers-reference/index.html": html[0],
            "./usr/share/developers-reference/_static/skip.html": b"<p>not a page of the manual</p>",
            "./usr/share/developers-reference/_sources/scope.rst.txt": (
                "Scope\n=====\n\n" + "Developer duties. " * 40
            ).encode(),
        },
        DEBREF: {
            "./usr/share/debian-reference/debian-reference.en.txt.gz": gzip.compress(
                ("1. One\n\n1. One\n" + "words " * 100).encode(), mtime=0
            )
        },
    }
    index = {}
    os.makedirs(os.path.join(cache, "debian"))
    for art, files in contents.items():
        name = f"{art.package}_{art.version.replace(':', '%3a')}_all.deb"
        path = os.path.join(cache, "debian", name)
        _deb(path, files)
        index[art.key] = {"file": name, "version": art.version, "sha256": fs.sha256(path)}
    with open(os.path.join(cache, "fetched.json"), "w") as fh:
        json.dump(index, fh)


def test_build_offline_from_cache(tmp_path, shared_data):
    cache = str(tmp_path / "cache")
    _fill_cache(cache, shared_data, pages=20)
    cfg = SampleConfig(cache_dir=cache, offline=True, min_pages=20, min_reference_docs=1, pages_per_file=8)
    out = str(tmp_path / "sample")
    manifest = build_sample(out, cfg)

    # packages missing from an offline cache are skipped, and say why
    assert set(manifest["skipped"]) == {PYWB.key, NPM_WARC.key, DEBFAQ.key}
    assert all("offline" in why for why in manifest["skipped"].values())
    summary = manifest["summary"]
    assert summary["html_pages_rebuilt"] == 20 + 6 + 1
    assert summary["sources"]["reference"]["documents"] == 1
    assert {k: v["documents"] for k, v in summary["sources"].items()} == {"reference": 1, "books": 3, "docs": 1}
    # python docs: 21 responses (20 pages + 1 stylesheet) in files of 8
    assert sorted(f for f in os.listdir(os.path.join(out, "crawl")) if f.startswith("python")) == [
        "python3.11-doc-00000.warc.gz",
        "python3.11-doc-00001.warc.gz",
        "python3.11-doc-00002.warc.gz",
    ]

    prov = json.load(open(os.path.join(out, "provenance.json")))
    on_disk = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, names in os.walk(out) for f in names)
    assert sorted(prov["files"]) == [f for f in on_disk if f != "provenance.json"]
    for rel, meta in prov["files"].items():
        assert meta["sha256"] == fs.sha256(os.path.join(out, rel))
        assert meta["members"] and meta["from"][0]["sha256"] and meta["from"][0]["version"]
        assert meta["records"]
    css = [m for m in prov["files"]["crawl/python3.11-doc-00002.warc.gz"]["members"] if m.endswith(".css")]
    assert css == ["usr/share/doc/python3.11/html/_static/basic.css"]

    with open(os.path.join(out, "crawl", "debian-handbook-de-DE-00000.warc.gz"), "rb") as fh:
        uris = [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(fh) if r.rec_type == "response"]
    assert uris == [f"https://debian-handbook.info/browse/de-DE/stable/p{i}.html" for i in range(3)]

    # same cache -> byte-identical output
    again = str(tmp_path / "again")
    build_sample(again, cfg)
    for rel in on_disk:
        assert open(os.path.join(out, rel), "rb").read() == open(os.path.join(again, rel), "rb").read(), rel


def test_provenance_records_a_pinned_fallback(tmp_path, shared_data):
    """The cache holds python3.11-doc's pinned fallback (its first pin gone from the archive): the sample is
    built from it and provenance.json says so, file by file."""
    cache = str(tmp_path / "cache")
    _fill_cache(cache, shared_data, pages=8)
    index = json.load(open(os.path.join(cache, "fetched.json")))
    old = PYDOC.fallback
    index[old.key] = {**index.pop(PYDOC.key), "version": old.version}
    with open(os.path.join(cache, "fetched.json"), "w") as fh:
        json.dump(index, fh)
    out = str(tmp_path / "sample")
    build_sample(out, SampleConfig(cache_dir=cache, offline=True, min_pages=8, min_reference_docs=1))
    prov = json.load(open(os.path.join(out, "provenance.json")))
    froms = [f for meta in prov["files"].values() for f in meta["from"] if f["package"] == "python3.11-doc"]
    assert froms and all(
        f["version"] == old.version and f["pinned_version"] == PYDOC.version and f["fallback"] for f in froms
    )
    others = [f for meta in prov["files"].values() for f in meta["from"] if f["package"] != "python3.11-doc"]
    assert others and not any(f["fallback"] for f in others)


def test_too_small_fails_clearly(tmp_path, shared_data):
    cache = str(tmp_path / "cache")
    _fill_cache(cache, shared_data, pages=5)
    cfg = SampleConfig(cache_dir=cache, offline=True, min_pages=1000)
    with pytest.raises(SampleError, match="sample too small: 12 HTML pages"):
        build_sample(str(tmp_path / "sample"), cfg)
    assert not os.path.exists(tmp_path / "sample")
    assert [p for p in os.listdir(tmp_path) if "partial" in p] == []


def test_cached_file_that_changed_is_refused(tmp_path, shared_data):
    cache = str(tmp_path / "cache")
    _fill_cache(cache, shared_data, pages=3)
    name = json.load(open(os.path.join(cache, "fetched.json")))[JARGON.key]["file"]
    with open(os.path.join(cache, "debian", name), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(SampleError, match="cached file changed"):
        fetch(JARGON, cache, offline=True)


def test_page_links():
    html = b"""<html><head><link href="/style.css"></head><body>
      <a href="../library/os.html#os.walk">walk</a> <a href="#top">top</a> <a href="">self</a>
      <a href="https://www.python.org/">python</a> <a href="//docs.python.org/3/">protocol-relative</a>
      <a href="mailto:docs@python.org">mail</a> <a href="javascript:void(0)">js</a> <a name="anchor">x</a>
      <a href="glossary.html">glossary</a> <a href="http://[bad">broken</a></body></html>"""
    got = page_links("https://docs.python.org/3.11/tutorial/index.html", html)
    assert got == {
        "https://docs.python.org/3.11/library/os.html",
        "https://www.python.org/",
        "https://docs.python.org/3/",
        "https://docs.python.org/3.11/tutorial/glossary.html",
    }


def test_url_list_of_cited_links(tmp_path, shared_data):
    """The sample's URL list: every link the rebuilt pages cite, scored by the number of pages citing it;
    checked against lxml's own link iterator (its resolver, not ours) on the real pages."""
    import lxml.html

    cache = str(tmp_path / "cache")
    _fill_cache(cache, shared_data, pages=20)
    out = str(tmp_path / "sample")
    manifest = build_sample(out, SampleConfig(cache_dir=cache, offline=True, min_pages=20, min_reference_docs=1))

    expected: dict[str, set[str]] = {}
    for rel in sorted(os.listdir(os.path.join(out, "crawl"))):
        with open(os.path.join(out, "crawl", rel), "rb") as fh:
            for r in ArchiveIterator(fh):
                if r.rec_type != "response" or "text/html" not in r.http_headers.get_header("Content-Type"):
                    continue
                url = r.rec_headers.get_header("WARC-Target-URI")
                doc = lxml.html.document_fromstring(r.content_stream().read())
                doc.make_links_absolute(url, resolve_base_href=False, handle_failures="discard")
                for el, attr, link, _ in doc.iterlinks():
                    target = link.split("#", 1)[0]
                    if (
                        el.tag == "a"
                        and attr == "href"
                        and target.startswith(("http://", "https://"))
                        and target != url
                    ):
                        expected.setdefault(target, set()).add(url)
    rows = [json.loads(line) for line in open(os.path.join(out, DOC_LINKS), encoding="utf-8")]
    assert {r["url"]: r["score"] for r in rows} == {u: len(pages) for u, pages in expected.items()}
    assert len(rows) > 100 and max(r["score"] for r in rows) > 1
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert manifest["summary"]["url_lists"] == {DOC_LINKS: len(rows)}
    prov = manifest["files"][DOC_LINKS]
    assert {f["package"] for f in prov["from"]} == {"python3.11-doc", "debian-handbook", "developers-reference"}
    assert prov["sha256"] == fs.sha256(os.path.join(out, DOC_LINKS))
