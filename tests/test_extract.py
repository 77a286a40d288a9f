"""Decoding and main-text extraction on real pages (newspaper's pages with expected article text)."""

from __future__ import annotations

import os
import re
import tarfile

import pytest

from pipeline.extract import CapExceeded, ExtractConfig, decode_html, extract_text, record_to_document

ARTICLE = (
    "<html><head><title>t</title></head><body><nav>Home | About | Contact</nav>"
    "<article><h1>Rivers of the north</h1>"
    + "".join(
        f"<p>The river number {i} flows slowly through the old valley towards the cold sea.</p>" for i in range(8)
    )
    + "</article><footer>Copyright 2024 Example Corp. All rights reserved.</footer></body></html>"
)


def test_decode_declared_detected_and_invalid_bytes():
    html = "<html><body><p>Crème brûlée à la française</p></body></html>"
    assert decode_html(html.encode("cp1252"), "windows-1252") == html
    assert decode_html(html.encode("utf-8"), "x-no-such-charset") == html  # unknown label: detected instead
    assert decode_html(html.encode("utf-8"), None) == html
    meta = '<html><head><meta charset="iso-8859-1"></head><body>Grüße aus Köln</body></html>'
    assert "Grüße aus Köln" in decode_html(meta.encode("iso-8859-1"), None)
    broken = b"<p>valid \xff\xfe\xc3 then more</p>"
    out = decode_html(broken, "utf-8")  # invalid bytes never raise
    assert out.startswith("<p>valid") and out.endswith("then more</p>")


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_extract_keeps_article_drops_nothing_empty(extractor):
    cfg = ExtractConfig(extractor=extractor)
    text = extract_text(ARTICLE, cfg)
    assert "The river number 7 flows slowly" in text and "river number 0" in text
    assert extract_text("<html><body><script>var x=1;</script></body></html>", cfg) == ""
    assert extract_text("", cfg) == ""


def test_trafilatura_drops_boilerplate():
    text = extract_text(ARTICLE, ExtractConfig())
    assert "Copyright 2024" not in text and "Home | About" not in text


def test_record_to_document_fields_and_empty():
    raw = {
        "id": "abc",
        "source": "crawl",
        "url": "http://x.org/",
        "warc_record_id": "<urn:uuid:1>",
        "date": "2024-01-01T00:00:00Z",
        "source_file": "f.warc.gz",
        "source_offset": 12,
        "kind": "html",
        "payload": ARTICLE.encode("utf-8"),
        "charset": "utf-8",
        "record_type": "response",
    }
    doc = record_to_document(raw, ExtractConfig())
    assert doc["id"] == "abc" and doc["source_offset"] == 12 and doc["language"] is None
    assert doc["annotations"] == "{}" and "river number 3" in doc["text"]
    assert record_to_document({**raw, "payload": b"<html><body></body></html>"}, ExtractConfig()) is None
    wet = record_to_document({**raw, "kind": "text", "payload": b"  plain text line\n"}, ExtractConfig())
    assert wet["text"] == "plain text line"  # WET text is not run through the HTML extractor


def _newspaper_pairs(shared_data, n=12):
    pages, texts = {}, {}
    with tarfile.open(os.path.join(shared_data, "html", "newspaper.tar.gz")) as tf:
        for m in tf:
            name = m.name
            if name.startswith("./tests/data/html/") and name.endswith(".html"):
                pages[os.path.basename(name)[:-5]] = tf.extractfile(m).read()
            elif name.startswith("./tests/data/text/") and name.endswith(".txt"):
                texts[os.path.basename(name)[:-4]] = tf.extractfile(m).read().decode("utf-8", "ignore")
    keys = sorted(set(pages) & set(texts))[:n]
    return [(pages[k], texts[k]) for k in keys]


def _words(s):
    return set(re.findall(r"\w+", s.lower()))


def test_extractors_on_real_articles(shared_data):
    """Word recall of the expected article text, and trafilatura's edge in precision (its reason to be default)."""
    pairs = _newspaper_pairs(shared_data)
    scores = {}
    for extractor in ("trafilatura", "resiliparse"):
        recall, precision = [], []
        for html, expected in pairs:
            got = _words(extract_text(decode_html(html), ExtractConfig(extractor=extractor)))
            exp = _words(expected)
            recall.append(len(exp & got) / max(1, len(exp)))
            precision.append(len(exp & got) / max(1, len(got)))
        scores[extractor] = (sum(recall) / len(recall), sum(precision) / len(precision))
    assert scores["trafilatura"][0] > 0.8 and scores["resiliparse"][0] > 0.75
    assert scores["trafilatura"][1] > scores["resiliparse"][1]


def _nested(n: int, tag: str = "div") -> str:
    return "<html><body>" + f"<{tag}>" * n + "<p>deep text</p>" + f"</{tag}>" * n + "</body></html>"


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_nesting_bomb_is_too_deep_quickly_for_both_extractors(extractor):
    """100,000 nested <div>: resiliparse alone would take minutes or crash, lxml would drop the text; the
    depth cap answers in well under a second with a clear reason, the same for both extractors."""
    import time

    cfg = ExtractConfig(extractor=extractor)
    t0 = time.perf_counter()
    with pytest.raises(CapExceeded) as e:
        extract_text(_nested(100_000), cfg)
    assert e.value.reason == "too_deep" and time.perf_counter() - t0 < 5
    # the cap counts elements from <html> (1) and <body> (2): 254 divs put <p> at 257
    assert extract_text(_nested(253), cfg) == "deep text"
    with pytest.raises(CapExceeded):
        extract_text(_nested(254), cfg)
    assert extract_text(_nested(100, "span"), ExtractConfig(extractor=extractor, max_depth=200)) == "deep text"
    with pytest.raises(CapExceeded):
        extract_text(_nested(300, "span"), ExtractConfig(extractor=extractor, max_depth=200))
    assert "deep text" in extract_text(_nested(1000), ExtractConfig(extractor="resiliparse", max_depth=0))  # 0: no cap


def test_max_chars_counts_decoded_characters():
    raw = {
        "id": "a",
        "source": "crawl",
        "url": "http://x.org/",
        "kind": "html",
        "charset": "utf-8",
        "payload": ("<html><body><p>" + "é" * 600 + "</p></body></html>").encode("utf-8"),
    }
    # 1,233 bytes but 633 characters: the cap is on characters, what the extractor works through
    assert record_to_document(raw, ExtractConfig(max_chars=700)) is not None
    with pytest.raises(CapExceeded) as e:
        record_to_document(raw, ExtractConfig(max_chars=600))
    assert e.value.reason == "too_many_chars" and "633 characters" in str(e.value)
    with pytest.raises(CapExceeded):  # WET text too
        record_to_document({**raw, "kind": "text", "payload": b"x" * 601}, ExtractConfig(max_chars=600))


def test_caps_through_reader_and_extract(tmp_path):
    """Reader + extraction on a generated WARC: every cap ends as its own counted reason, nothing raises."""
    import gzip
    from collections import Counter
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from pipeline.read import ReadConfig, iter_warc

    pages = [
        ("ok", [], ARTICLE.encode()),
        ("bomb", [], _nested(100_000).encode()),
        ("long", [], ("<html><body><p>" + "word " * 340_000 + "</p></body></html>").encode()),
        # 5 MB of HTML gzip-encoded into ~5 KB: small on disk, over max_bytes once decoded
        ("gzip-bomb", [("Content-Encoding", "gzip")], gzip.compress(b"<p>" + b"a" * 5_000_000 + b"</p>")),
    ]
    path = tmp_path / "caps.warc.gz"
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for name, extra, body in pages:
            headers = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html; charset=utf-8"), *extra], protocol="HTTP/1.1"
            )
            w.write_record(
                w.create_warc_record(
                    f"http://caps.example/{name}", "response", payload=BytesIO(body), http_headers=headers
                )
            )
    cfg = ExtractConfig(max_chars=1_500_000)
    outcomes = Counter()
    for ev in iter_warc(str(path), ReadConfig(max_bytes=4_000_000)):
        if ev.kind != "record":
            outcomes[(ev.info["url"], ev.reason)] += 1
            continue
        try:
            doc = record_to_document(ev.info, cfg)
            outcomes[(ev.info["url"], "kept" if doc else "empty_text")] += 1
        except CapExceeded as e:
            outcomes[(ev.info["url"], e.reason)] += 1
    assert outcomes == Counter(
        {
            ("http://caps.example/ok", "kept"): 1,
            ("http://caps.example/bomb", "too_deep"): 1,
            ("http://caps.example/long", "too_many_chars"): 1,
            ("http://caps.example/gzip-bomb", "too_large"): 1,
        }
    )
