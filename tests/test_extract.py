"""Decoding and main-text extraction on real pages (newspaper's pages with expected article text)."""

from __future__ import annotations

import os
import re
import tarfile

import pytest

from pipeline.extract import ExtractConfig, decode_html, extract_text, record_to_document

ARTICLE = (
    "<html><head><title>t</title></head><body><nav>Home | About | Contact</nav>"
    "<article><h1>Rivers of the north</h1>"
    + "".join(f"<p>The river number {i} flows slowly through the old valley towards the cold sea.</p>" for i in range(8))
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
        "id": "abc", "source": "crawl", "url": "http://x.org/", "warc_record_id": "<urn:uuid:1>",
        "date": "2024-01-01T00:00:00Z", "source_file": "f.warc.gz", "source_offset": 12,
        "kind": "html", "payload": ARTICLE.encode("utf-8"), "charset": "utf-8", "record_type": "response",
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
