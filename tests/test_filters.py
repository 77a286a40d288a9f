"""Heuristic filters: each wrapper agrees with datatrove's filter called on its own; order and PII."""

from __future__ import annotations

import os

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

from pipeline.filters import (
    FilterChain,
    FiltersConfig,
    PiiConfig,
    UrlBlocklistConfig,
)

GOOD = (
    "The history of the town goes back to the twelfth century, when a small group of farmers settled on the "
    "banks of the river. Over the following decades they built a mill, a church and a market square.\n"
    "In the sixteenth century the town became an important stop on the trade route between the coast and the "
    "interior, and merchants from many countries came to sell wool, salt and wine.\n"
    "Today the old centre is protected as a heritage site. Visitors can walk along the walls, see the restored "
    "mill and taste the local cheese that is still made with the same methods as four hundred years ago.\n"
    "The town museum, which opened in 1952, holds a collection of tools, maps and letters that tell the story "
    "of the people who lived here. It is open every day except Monday."
)
REPETITIVE = "\n".join(["Buy cheap shoes online now and save money today."] * 30)
SHORT = "Click here to continue."
MENU = "\n".join(["Home", "About us", "Products", "Contact", "Login", "Register", "Cart", "Help"] * 3)


def _docs(shared_data=None):
    docs = {
        "good": GOOD,
        "repetitive": REPETITIVE,
        "short": SHORT,
        "menu": MENU,
        "lorem": GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
    }
    docs["braces"] = GOOD + "\nThe function is written as f(x) = {x + 1} in this old manual."
    if shared_data:
        with open(os.path.join(shared_data, "reference", "wikitext-2", "valid.txt"), encoding="utf-8") as fh:
            wiki = fh.read()
        docs["wikitext"] = wiki[:4000]
        docs["wikitext_tail"] = wiki[20000:24000]
    return docs


def _only(name, **overrides) -> FiltersConfig:
    cfg = FiltersConfig(url_blocklist=UrlBlocklistConfig(enabled=False))
    for other in ("gopher_repetition", "gopher_quality", "c4", "fineweb_quality"):
        getattr(cfg, other).enabled = other == name
    for k, v in overrides.items():
        setattr(getattr(cfg, name), k, v)
    return cfg


REFERENCES = {
    "gopher_repetition": lambda: GopherRepetitionFilter(),
    "gopher_quality": lambda: GopherQualityFilter(),
    "c4": lambda: C4QualityFilter(filter_no_terminal_punct=False),
    "fineweb_quality": lambda: FineWebQualityFilter(),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_each_filter_matches_datatrove(shared_data, name):
    chain = FilterChain(_only(name))
    reference = REFERENCES[name]()
    verdicts = set()
    for key, text in _docs(shared_data).items():
        doc = Document(text=text, id=key)
        res = reference.filter(doc)
        ok, reason = res if isinstance(res, tuple) else (res, None)
        kept, our_reason = chain.apply({"id": key, "text": text, "url": "http://example.org/", "language": "en"})
        if ok:
            assert our_reason is None and kept["text"] == doc.text, (name, key)  # same (C4-cleaned) text
        else:
            assert kept is None and our_reason == f"{name}:{reason}", (name, key)
        verdicts.add(bool(ok))
    assert verdicts == {True, False}, f"{name}: the sample must contain both kept and dropped documents"


def test_known_reasons():
    assert (
        FilterChain(_only("gopher_quality")).apply({"id": "a", "text": SHORT})[1] == "gopher_quality:gopher_short_doc"
    )
    assert (
        FilterChain(_only("gopher_repetition"))
        .apply({"id": "a", "text": REPETITIVE})[1]
        .startswith("gopher_repetition:dup_")
    )
    assert (
        FilterChain(_only("c4")).apply({"id": "a", "text": GOOD + "\nlorem ipsum dolor sit amet."})[1]
        == "c4:lorem_ipsum"
    )
    assert (
        FilterChain(_only("fineweb_quality")).apply({"id": "a", "text": MENU})[1] == "fineweb_quality:line_punct_ratio"
    )
    # configurable: lowering the word minimum lets the short text through Gopher quality's first rule
    got = FilterChain(_only("gopher_quality", min_doc_words=2)).apply({"id": "a", "text": SHORT})[1]
    assert got != "gopher_quality:gopher_short_doc"


def test_first_failing_filter_names_the_reason():
    # REPETITIVE fails both repetition and quality rules; repetition runs first (FineWeb's order)
    cfg = FiltersConfig()
    assert FilterChain(cfg).apply({"id": "a", "text": REPETITIVE})[1].startswith("gopher_repetition:")
    cfg.gopher_repetition.enabled = False
    assert FilterChain(cfg).apply({"id": "a", "text": REPETITIVE})[1].startswith("gopher_quality:")


def test_good_text_passes_every_default_filter():
    kept, reason = FilterChain(FiltersConfig()).apply({"id": "a", "text": GOOD, "url": "https://town.example/history"})
    assert reason is None and kept["text"] == GOOD


def test_c4_line_cleaning_rewrites_text():
    text = GOOD + "\nThis site uses cookies to improve your experience.\nEnable Javascript to see the map."
    kept, reason = FilterChain(_only("c4")).apply({"id": "a", "text": text})
    assert reason is None and "cookies" not in kept["text"] and "Javascript" not in kept["text"]
    assert "twelfth century" in kept["text"]


def test_url_blocklist_domains_subdomains_substrings_and_file(tmp_path):
    listfile = tmp_path / "blocked.txt"
    listfile.write_text("# adult sites\nbad-site.com\n", encoding="utf-8")
    cfg = FiltersConfig(
        url_blocklist=UrlBlocklistConfig(domains=["spam.example"], substrings=["/casino/"], domains_file=str(listfile))
    )
    chain = FilterChain(cfg)
    row = {"id": "a", "text": GOOD}
    assert chain.apply({**row, "url": "http://spam.example/page"})[1] == "url_blocklist"
    assert chain.apply({**row, "url": "https://www.SPAM.example:8080/x"})[1] == "url_blocklist"
    assert chain.apply({**row, "url": "https://news.example/casino/win"})[1] == "url_blocklist"
    assert chain.apply({**row, "url": "http://bad-site.com/"})[1] == "url_blocklist"
    assert chain.apply({**row, "url": "http://notspam.example/page"})[1] is None  # suffix, not a subdomain
    assert chain.apply({**row, "url": "http://[bad"})[1] is None  # malformed URL: not blocked, no crash
    assert chain.apply({**row, "url": None})[1] is None
    off = FiltersConfig(url_blocklist=UrlBlocklistConfig(enabled=False, domains=["spam.example"]))
    assert FilterChain(off).apply({**row, "url": "http://spam.example/"})[1] is None


def test_pii_scrubbing_matches_datatrove_formatter():
    from datatrove.pipeline.formatters import PIIFormatter

    text = GOOD + "\nWrite to jane.doe@mail.example.com or visit our server at 8.8.8.8 (router 192.168.0.1)."
    kept, _ = FilterChain(FiltersConfig(pii=PiiConfig(enabled=True))).apply({"id": "a", "text": text})
    assert "jane.doe@mail.example.com" not in kept["text"] and "8.8.8.8" not in kept["text"]
    assert "192.168.0.1" in kept["text"]  # private address: not personal, kept
    assert kept["text"] == PIIFormatter().format(text)
    plain, _ = FilterChain(FiltersConfig()).apply({"id": "a", "text": text})
    assert "jane.doe@mail.example.com" in plain["text"]  # off by default


def test_degenerate_input_never_crashes():
    chain = FilterChain(FiltersConfig())
    for text in ["", " ", "\n\n\n", "#" * 500, "…" * 100, "a"]:
        kept, reason = chain.apply({"id": "a", "text": text})
        assert kept is None and reason and ":" in reason


def _real_texts(shared_data: str, per_archive: int = 55) -> list[str]:
    """Extracted text of real pages: the first ``per_archive`` pages of each HTML archive in ``../shared/data/html``
    plus every HTML response / WET record of the WARC files there."""
    import glob
    import tarfile

    from pipeline.extract import (
        ExtractConfig,
        decode_html,
        extract_text,
        record_to_document,
    )
    from pipeline.read import ReadConfig, iter_warc

    cfg = ExtractConfig(extractor="resiliparse")  # fast; keeps more boilerplate, so more drop reasons occur
    texts = []
    for archive in sorted(glob.glob(os.path.join(shared_data, "html", "*.tar.gz"))):
        n = 0
        with tarfile.open(archive) as tf:
            for m in tf:
                if n < per_archive and m.name.endswith((".html", ".htm")):
                    text = extract_text(decode_html(tf.extractfile(m).read()), cfg)
                    if text:
                        texts.append(text)
                        n += 1
    for path in sorted(glob.glob(os.path.join(shared_data, "warc", "*", "*"))):
        for ev in iter_warc(path, ReadConfig()):
            if ev.kind == "record" and (doc := record_to_document(ev.info, cfg)) is not None:
                texts.append(doc["text"])
    # long pages are cut at a line break (datatrove's C4 splits sentences line by line: seconds per long page)
    return [t if len(t) <= 4000 else t[: t.rfind("\n", 0, 4000) + 1 or 4000] for t in texts]


def test_ccgpt_filters_match_datatrove_on_real_text(shared_data):
    """The default (ccgpt) implementation vs datatrove's classes on the same real extracted text: keep/drop,
    reason and cleaned text, for the whole chain and for C4 + FineWeb alone (which the chain rarely reaches on
    boilerplate-heavy pages). Issue 4 asks for >= 99.9 % identical decisions; we see 100 %."""
    texts = _real_texts(shared_data)
    assert len(texts) >= 200
    chains = {}
    for impl in ("ccgpt", "datatrove"):
        full = FiltersConfig(url_blocklist=UrlBlocklistConfig(enabled=False), implementation=impl)
        late = FiltersConfig(url_blocklist=UrlBlocklistConfig(enabled=False), implementation=impl)
        late.gopher_repetition.enabled = late.gopher_quality.enabled = False
        chains[impl] = (FilterChain(full), FilterChain(late))
    compared = same = 0
    reasons: set = set()
    for i, text in enumerate(texts):
        row = {"id": str(i), "text": text, "url": None, "language": "en"}
        for ours, ref in zip(chains["ccgpt"], chains["datatrove"]):
            got, want = ours.apply(row), ref.apply(row)
            compared += 1
            same += (got[1], got[0] and got[0]["text"]) == (want[1], want[0] and want[0]["text"])
            reasons.add(want[1])
    assert same / compared >= 0.999, f"{compared - same} of {compared} decisions differ"
    # the sample exercises every filter, kept documents and several rules
    assert None in reasons and {r.split(":")[0] for r in reasons if r} >= {
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb_quality",
    }
    assert len(reasons) >= 10


def test_all_duplicate_ngrams_match_datatrove_walk():
    """The candidate-only walk equals datatrove's position-by-position walk, ties and skips included, with
    n-grams compared as concatenations (("ab", "c") equals ("a", "bc"))."""
    import random

    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

    from pipeline.filters import _all_duplicate_chars

    rng = random.Random(4)
    for _ in range(1500):
        vocab = ["a", "b", "ab", "ba", "c", "aa"][: rng.randint(1, 6)]
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        offsets = [0]
        for w in words:
            offsets.append(offsets[-1] + len(w))
        for n in range(1, 11):
            assert _all_duplicate_chars("".join(words), offsets, n) == find_all_duplicate(words, n), (words, n)


def test_implementation_switch_gives_the_same_answers():
    texts = [GOOD, REPETITIVE, SHORT, MENU, "", " ", "\n\n", "#" * 500, "…" * 100, "a"]
    ours = FilterChain(FiltersConfig(implementation="ccgpt"))
    ref = FilterChain(FiltersConfig(implementation="datatrove"))
    for text in texts:
        got, want = ours.apply({"id": "a", "text": text}), ref.apply({"id": "a", "text": text})
        assert (got[1], got[0] and got[0]["text"]) == (want[1], want[0] and want[0]["text"]), text[:40]


def test_attribute_name_texts_go_to_the_tokenizer_whole():
    """spaCy reads the string "IS_ALPHA" as a token attribute, and how it then splits the text depends on its
    tokenizer's history in the process, so a decision on such a text is only comparable given the same call:
    ccgpt hands these texts to datatrove's tokenizer whole, exactly as datatrove's filters do."""
    from pipeline.filters import _Words

    words = _Words("en")
    calls = []
    real = words.tokenizer.word_tokenize
    words.tokenizer = type("Spy", (), {"word_tokenize": lambda self, t: calls.append(t) or real(t)})()
    text = "IS_ALPHA " * 60 + GOOD
    words.words(text)
    assert calls == [text]


def test_filter_chains_on_threads_keep_their_own_tokenizer():
    """Runners such as Flink's SDK harness run bundles on several threads of one process, each with its own
    DoFn and so its own filter chain. The chains must not share a spaCy pipeline (datatrove's cached word
    tokenizer is one per process, and not safe across threads): each chain's tokenizer is its own, and four
    chains on four threads decide as one chain on one thread does."""
    import sys
    import threading

    from datatrove.utils.word_tokenizers import load_word_tokenizer

    long_text = "\n".join(
        f"Paragraph {i} tells of the harbour, the mill and market day number {i}." for i in range(3000)
    )
    rows = [{"id": str(i), "text": t} for i, t in enumerate((GOOD, REPETITIVE, long_text, GOOD * 3, "short words"))]
    expected = [FilterChain(FiltersConfig()).apply(dict(r))[1] for r in rows]
    chains = [FilterChain(FiltersConfig()) for _ in range(4)]
    tokenizers = [chain._filters("en")[0][1].tokenizer for chain in chains]  # the chain's shared word splitter
    assert len({id(t) for t in tokenizers}) == 4 and load_word_tokenizer("en") not in tokenizers
    got: list[list[str | None]] = [[] for _ in chains]

    def work(k: int) -> None:
        for _ in range(6):
            got[k].extend(chains[k].apply(dict(r))[1] for r in rows)

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(chains))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(before)
    assert got == [expected * 6] * len(chains)
