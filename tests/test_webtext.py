"""``ccgpt source webtext``: URL normalisation, URL lists, and the join with a real crawl, both join strategies
on the local and the portable runner giving the same documents, every crawl record and list row accounted for."""

from __future__ import annotations

import gzip
import json
import os
import tarfile

import pytest
from warcio.archiveiterator import ArchiveIterator

from pipeline.cli import main
from pipeline.commit import committed_file, untagged
from pipeline.extract import ExtractConfig
from pipeline.sample import Page, write_warc
from pipeline.sources.common import SourceError
from pipeline.sources.urls import excluded, normalize_url
from pipeline.sources.webtext import WebTextConfig, run_webtext
from pipeline.tables import read_documents


@pytest.mark.parametrize(
    "url, key",
    [
        ("https://www.Example.com:443/a/b/?utm_source=x&b=2&a=1#frag", "example.com/a/b?a=1&b=2"),
        ("http://example.com/a/b?a=1&b=2", "example.com/a/b?a=1&b=2"),
        ("example.com/a/b?b=2&a=1", "example.com/a/b?a=1&b=2"),  # scheme-less, as lists often have them
        ("//www.example.com/", "example.com/"),
        ("https://example.com", "example.com/"),
        ("HTTP://EXAMPLE.COM/Path/", "example.com/Path"),  # the path keeps its case
        ("http://example.com:80/x", "example.com/x"),
        ("https://example.com:8443/x", "example.com:8443/x"),
        ("https://user:pw@www.example.com/?fbclid=1&gclid=2&utm_campaign=c", "example.com/"),
        ("https://example.com/?ref=1&UTM_Medium=2&mc_cid=3", "example.com/?ref=1"),
        ("https://example.com/%7euser/caf%c3%a9", "example.com/~user/caf%C3%A9"),
        ("https://example.com/café", "example.com/caf%C3%A9"),
        ("https://bücher.de/", "xn--bcher-kva.de/"),
        ("https://example.com./x", "example.com/x"),
        ("https://www.com/", "www.com/"),  # a bare www.<tld> host is not a www. prefix
        ("https://example.com/a?q=a+b", "example.com/a?q=a%20b"),
        ("https://example.com/a?q=a%20b", "example.com/a?q=a%20b"),
        ("http://[2001:db8::1]/x", "[2001:db8::1]/x"),
    ],
)
def test_normalize_url(url, key):
    assert normalize_url(url) == key


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "not a url",
        "ftp://example.com/file",
        "mailto:someone@example.com",
        "javascript:void(0)",
        "http://",
        "https:///path",
        "http://exa mple.com/",
        "http://a..b/",
        "http://-bad.com/",
        "https://x.org:99999/",
        "https://x.org:port/",
        "http://under_score!.com/",
        "about:blank",
        "/relative/path",
        None,
        42,
    ],
)
def test_malformed_urls(url):
    assert normalize_url(url) is None


def test_excluded_domains():
    domains = ["wikipedia.org", "www.Example.NET"]
    assert excluded(normalize_url("https://en.wikipedia.org/wiki/X"), domains)
    assert excluded(normalize_url("https://wikipedia.org/"), domains)
    assert excluded(normalize_url("http://www.example.net:8080/a"), domains)
    assert excluded(normalize_url("https://sub.example.net/a"), domains)
    assert not excluded(normalize_url("https://notwikipedia.org/"), domains)
    assert not excluded(normalize_url("https://wikipedia.org.evil.com/"), domains)


# ------------------------------------------------------------------------------------------------------------
# The join on a real crawl


def _goose_urls(n: int) -> list[str]:
    return [f"https://example.org/goose3/page{i:03d}.html" for i in range(n)]


@pytest.fixture(scope="module")
def crawl(shared_data, tmp_path_factory):
    """Real news pages as WARC responses at known URLs, beside real web-archive and Common Crawl WARCs."""
    d = tmp_path_factory.mktemp("crawl")
    with tarfile.open(os.path.join(shared_data, "html", "goose3.tar.gz")) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".html")), key=lambda m: m.name)
        bodies = [tar.extractfile(m).read() for m in members[:40]]
    pages = [
        Page(url=u, body=b, content_type="text/html; charset=utf-8", mtime=1700000000, origin=f"goose3:{i}")
        for i, (u, b) in enumerate(zip(_goose_urls(40), bodies))
    ]
    write_warc(str(d / "news.warc.gz"), pages, {"software": "tests"})
    warc = os.path.join(shared_data, "warc")
    return [
        str(d / "news.warc.gz"),
        os.path.join(warc, "pywb-sample", "iana.warc.gz"),
        os.path.join(warc, "cc-main-2024-22-whirlwind", "whirlwind.warc.gz"),
        os.path.join(warc, "cc-main-2014-35", "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"),
    ]


def _list_rows() -> list:
    g = _goose_urls(40)
    forms = [
        lambda u: u,
        lambda u: u.replace("https://", "http://www."),
        lambda u: u + "?utm_source=reddit#top",
        lambda u: u.replace("https://example.org", "HTTPS://WWW.Example.ORG:443"),
        lambda u: u + "/",
        lambda u: u.replace("https://", ""),
    ]
    rows: list = [{"url": forms[i % len(forms)](g[i]), "score": 5} for i in range(12)]  # 12 pages, varied forms
    rows += [{"url": g[i], "score": 1} for i in range(12, 16)]  # below min_score
    rows += [{"url": g[i], "score": 4} for i in range(16, 20)]
    rows += [{"url": forms[2](g[i]), "score": 9} for i in range(16, 20)]  # the same 4 pages again: duplicates
    rows += [
        {"url": "https://iana.org/domains/root/db/", "score": 5},  # the crawl has /db/ (302) and /db (200)
        {"url": "iana.org/dnssec", "score": 3},  # crawl: http:// (302) and https:// (200)
        {"url": "http://www.iana.org/about/#team", "score": 10},
        {"url": "HTTP://WWW.IANA.ORG/numbers?utm_medium=social&fbclid=abc", "score": 4},
        {"url": "https://an.wikipedia.org/wiki/Escopete", "score": 50},  # in the crawl, excluded
        {"url": "https://example.org/goose3/never-crawled.html", "score": 8},  # unmatched
        {"url": "http://iana.org/not/there", "score": 3},  # unmatched
        {"url": "not a url", "score": 5},
        {"url": "ftp://example.org/file", "score": 5},
        {"url": "http://", "score": 5},
        {"url": "javascript:void(0)", "score": 5},  # malformed
        "{broken",
        [1, 2],  # bad_row
        {"link": g[30], "score": 5},  # missing_url
        {"url": g[31]},  # missing_score
        {"url": g[32], "score": "lots"},  # bad_score
    ]
    return rows


def _write_list(path, rows) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def _html_responses(paths: list[str]) -> tuple[int, dict[str, int]]:
    """warcio as the oracle: all records, and HTML 200 responses per URL."""
    total, html = 0, {}
    for p in paths:
        with open(p, "rb") as fh:
            for r in ArchiveIterator(fh):
                total += 1
                if r.rec_type == "response" and r.http_headers.get_statuscode() == "200":
                    ctype = (r.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
                    if ctype in ("text/html", "application/xhtml+xml"):
                        url = r.rec_headers.get_header("WARC-Target-URI")
                        html[url] = html.get(url, 0) + 1
    return total, html


def _cfg(list_path: str, **kw) -> WebTextConfig:
    return WebTextConfig(urls=[list_path], min_score=3, extract=ExtractConfig(extractor="resiliparse"), **kw)


def _docs(out: str) -> list[dict]:
    return sorted(read_documents(out), key=lambda d: d["id"])


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    path = tmp_path_factory.mktemp("list") / "reddit-links.jsonl"
    _write_list(path, _list_rows())
    return str(path)


@pytest.fixture(scope="module")
def side_input_run(crawl, listed, tmp_path_factory):
    from pipeline.runner import RunnerConfig

    out = str(tmp_path_factory.mktemp("side") / "webtext")
    runner = RunnerConfig(runner="local", num_workers=1, running_mode="in_memory")
    return out, run_webtext(crawl, out, _cfg(listed, join="side_input"), runner)


def test_join_matches_the_listed_pages(crawl, side_input_run):
    out, stats = side_input_run
    total, html = _html_responses(crawl)
    g = _goose_urls(40)
    expected_urls = set(g[:12] + g[16:20]) | {
        "http://www.iana.org/domains/root/db",
        "https://www.iana.org/dnssec",
        "http://www.iana.org/about",
        "http://www.iana.org/numbers",
    }
    assert expected_urls <= set(html)
    matched = sum(html[u] for u in expected_urls)

    # every crawl record accounted for; the list's rows too
    assert stats.read == total
    assert stats.read == stats.kept + sum(stats.dropped.values())
    assert stats.dropped["excluded_domain"] == 1  # an.wikipedia.org in the whirlwind crawl
    assert stats.dropped["not_in_url_list"] == sum(html.values()) - matched - 1
    assert stats.extra["extracted"] + stats.dropped.get("empty_text", 0) == matched
    lst = stats.extra["url_list"]
    assert lst["read"] == len(_list_rows())
    assert lst["dropped"] == {
        "below_min_score": 4,
        "duplicate": 4,
        "excluded_domain": 1,
        "malformed": 4,
        "bad_row": 2,
        "missing_url": 1,
        "missing_score": 1,
        "bad_score": 1,
    }
    assert lst["kept"] == 12 + 4 + 4 + 2
    assert (stats.extra["matched_urls"], stats.extra["unmatched_urls"], stats.extra["duplicate_urls"]) == (20, 2, 4)
    assert stats.extra["join"] == "side_input"

    docs = _docs(out)
    assert len(docs) == stats.kept > 10
    assert {d["url"] for d in docs} <= expected_urls
    assert all(d["source"] == "webtext" and d["language"] == "en" for d in docs)
    scores = {d["url"]: json.loads(d["annotations"])["url_score"] for d in docs}
    if g[16] in scores:
        assert scores[g[16]] == 9  # a URL listed twice keeps its highest score
    assert all(s >= 3 for s in scores.values())
    saved = json.load(open(os.path.join(out, "stats.json")))
    assert saved["matched_urls"] == 20 and saved["url_list"]["kept"] == 22
    examples = [json.loads(line) for line in open(committed_file(os.path.join(out, "examples.jsonl")))]
    assert {"url_list:malformed", "url_list:duplicate", "url_list:below_min_score"} <= {e["reason"] for e in examples}
    for side in ("outcomes.jsonl", "url_list/outcomes.jsonl", "counters.jsonl", "failed_files.jsonl"):
        assert os.path.isfile(committed_file(os.path.join(out, side))), side  # written by the pipeline, even when empty


def _comparable(stats) -> dict:
    d = stats.to_dict()
    for k in ("join", "fingerprint", "code_version", "lineage", "attempt"):  # the join is config: in the lineage
        d.pop(k, None)
        d.get("extra", {}).pop(k, None)
    # the committed files by name (the join is a different pipeline: rows may come in another order, and the
    # documents themselves are compared as sets by the tests)
    d["files"] = [untagged(f["path"]) for f in d.get("files", [])]
    return d


def test_cogroup_join_gives_the_same_output(crawl, listed, side_input_run, tmp_path, local_runner):
    out, stats = side_input_run
    cog = run_webtext(crawl, str(tmp_path / "cog"), _cfg(listed, join="cogroup"), local_runner)
    assert cog.extra["join"] == "cogroup"
    assert _comparable(cog) == _comparable(stats)
    assert _docs(str(tmp_path / "cog")) == _docs(out)


def test_crawl_in_groups_counts_each_matched_url_once(crawl, listed, side_input_run, tmp_path, local_runner):
    """The crawl read in input-file groups (``read.group_bytes``; each committed on its own): the list's
    accounting as one read, and a list URL matched in two groups (the news WARC and its copy) is one matched URL."""
    out, stats = side_input_run
    copy = tmp_path / "news-copy.warc.gz"
    copy.write_bytes(open(crawl[0], "rb").read())
    cfg = _cfg(listed, join="side_input")
    cfg.read.group_bytes = 1  # one file a group
    grouped = run_webtext([crawl[0], str(copy)], str(tmp_path / "g"), cfg, local_runner)
    news, _ = _html_responses([crawl[0]])
    g = _goose_urls(40)
    assert grouped.extra["input_groups"] == 2
    assert grouped.extra["matched_urls"] == len(g[:12] + g[16:20])  # the listed news pages, each once
    assert grouped.extra["url_list"] == stats.extra["url_list"]
    from_news = len([d for d in _docs(out) if "goose3" in (d["url"] or "")])
    assert grouped.read == 2 * news and grouped.kept == 2 * from_news > 0


def _table_bytes(out: str) -> dict[str, bytes]:
    """The document files and the prepared list's files of a webtext folder, by untagged name."""
    prepared = os.path.join(out, "groups", "url_list")
    paths = [os.path.join(out, f) for f in os.listdir(out) if f.endswith(".parquet")]
    paths += [os.path.join(prepared, f) for f in os.listdir(prepared) if f.endswith(".parquet")]
    assert len(paths) >= 2
    return {untagged(os.path.relpath(p, out)): open(p, "rb").read() for p in paths}


def test_portable_runner_both_joins(crawl, listed, side_input_run, tmp_path, portable_runner):
    """The portable job API pickles the DoFns, the side input and the CoGroupByKey: Dataflow's path."""
    out, stats = side_input_run
    for join in ("cogroup", "side_input"):
        got = run_webtext(crawl, str(tmp_path / join), _cfg(listed, join=join), portable_runner)
        assert _comparable(got) == _comparable(stats)
        assert _docs(str(tmp_path / join)) == _docs(out)
        # the same bytes on either runner: the document table and the prepared URL list
        assert _table_bytes(str(tmp_path / join)) == _table_bytes(out)


def test_auto_join_by_list_size(crawl, listed, tmp_path, local_runner):
    stats = run_webtext(crawl[1:2], str(tmp_path / "a"), _cfg(listed, side_input_max_urls=10), local_runner)
    assert stats.extra["join"] == "cogroup"  # 22 usable URLs > 10
    assert stats.extra["matched_urls"] == 4  # only the iana pages are in this crawl
    # decided by the prepared list's usable URLs (22), not its 37 rows: the list files are not read to decide
    stats = run_webtext(crawl[1:2], str(tmp_path / "b"), _cfg(listed, side_input_max_urls=22), local_runner)
    assert stats.extra["join"] == "side_input" and stats.extra["matched_urls"] == 4


def test_progress_counts_crawl_records_not_list_rows(crawl, listed, tmp_path, local_runner, capsys):
    stats = run_webtext(crawl[1:2], str(tmp_path / "p"), _cfg(listed), local_runner)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("progress stage=source ")]
    assert lines, "the stage printed no progress line"
    assert f"records={stats.read} " in lines[-1]  # the 37 list rows are accounted apart, not counted here


def test_text_gz_and_tsv_lists(crawl, tmp_path, local_runner):
    with gzip.open(tmp_path / "links.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write(
            "# a plain list: comments and blank lines are not rows\n\nhttp://www.iana.org/\n"
            "https://iana.org/\nhttps://iana.org/domains/\nbad url here\n"
        )
    (tmp_path / "links.tsv").write_bytes(
        b"url\tkarma\nhttp://iana.org/time-zones\t12\nhttps://example.org/elsewhere\t1\n" + b"http://iana.org/\xff\t3\n"
    )
    cfg = WebTextConfig(
        urls=[str(tmp_path / "links.txt.gz"), str(tmp_path / "links.tsv")],
        score_field="karma",
        extract=ExtractConfig(extractor="resiliparse"),
    )
    stats = run_webtext(crawl[1:2], str(tmp_path / "out"), cfg, local_runner)
    lst = stats.extra["url_list"]
    assert (lst["read"], lst["kept"], lst["dropped"]) == (7, 4, {"duplicate": 1, "malformed": 1, "invalid_utf8": 1})
    assert (stats.extra["matched_urls"], stats.extra["unmatched_urls"]) == (3, 1)


def test_no_match_and_bad_lists_fail_clearly(crawl, tmp_path, local_runner):
    _write_list(
        tmp_path / "elsewhere.jsonl",
        [{"url": "https://www.python.org/dev/peps/pep-0008/", "score": 9}, {"url": "https://example.com/", "score": 9}],
    )
    with pytest.raises(SourceError, match=r"none of the 2 list URLs is in the crawl"):
        run_webtext(crawl[1:2], str(tmp_path / "o"), _cfg(str(tmp_path / "elsewhere.jsonl")), local_runner)
    _write_list(tmp_path / "junk.jsonl", [{"url": "not a url", "score": 9}, {"url": "ftp://x.org/", "score": 9}])
    with pytest.raises(SourceError, match=r"no usable URL .*'malformed': 2"):
        run_webtext(crawl[1:2], str(tmp_path / "o"), _cfg(str(tmp_path / "junk.jsonl")), local_runner)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SourceError, match=r"no usable URL .*read 0 rows"):
        run_webtext(crawl[1:2], str(tmp_path / "o"), _cfg(str(tmp_path / "empty.jsonl")), local_runner)
    (tmp_path / "plain.txt").write_text("http://www.iana.org/\n")
    with pytest.raises(SourceError, match="plain-text list"):
        run_webtext(crawl[1:2], str(tmp_path / "o"), _cfg(str(tmp_path / "plain.txt")), local_runner)
    (tmp_path / "cols.csv").write_text("link,score\nhttp://www.iana.org/,5\n")
    with pytest.raises(SourceError, match="no 'url' column"):
        run_webtext(crawl[1:2], str(tmp_path / "o"), _cfg(str(tmp_path / "cols.csv")), local_runner)
    with pytest.raises(SourceError, match="needs a URL list"):
        run_webtext(crawl[1:2], str(tmp_path / "o"), WebTextConfig(), local_runner)
    assert not os.path.exists(tmp_path / "o" / "stats.json")  # never a silent empty source


def test_cli(crawl, tmp_path, capsys, one_process_flags):
    (tmp_path / "l.csv").write_text("url,score\nhttp://www.iana.org/about,7\nhttp://www.iana.org/domains,2\n")
    rc = main(
        [
            "source",
            "webtext",
            "--urls",
            str(tmp_path / "l.csv"),
            "--from",
            crawl[1],
            "--out",
            str(tmp_path / "out"),
            "--min_score",
            "3",
            "--name",
            "links",
            "--extract.extractor",
            "resiliparse",
            *one_process_flags,
        ]
    )
    assert rc == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["matched_urls"] == 1 and stats["url_list"]["dropped"] == {"below_min_score": 1}
    assert [d["source"] for d in read_documents(str(tmp_path / "out"))] == ["links"] * stats["kept"]
    rc = main(
        [
            "source",
            "webtext",
            "--urls",
            str(tmp_path / "nothing.csv"),
            "--from",
            crawl[1],
            "--out",
            str(tmp_path / "o2"),
        ]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["webtext", "wikipedia"])
def test_source_kinds_have_help(kind, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["source", kind, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: ccgpt source {kind}" in out and ("--urls" in out) == (kind == "webtext")


def test_run_config_sources_of_every_kind(crawl, listed, shared_data, tmp_path):
    """A run config's ``sources``: files (the default kind), webtext (crawl and curate sections from the run)
    and wikipedia, each built into ``source-<name>`` by ``Run.sources``."""
    from pipeline.run import Run, RunConfig
    from schemas.config import from_dict

    text = open(os.path.join(shared_data, "reference", "wikitext-2", "valid.txt"), encoding="utf-8").read()
    article = text[text.index(" = Homarus gammarus = ") :][:6000].replace("@-@", "-")
    dump = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en"><siteinfo>'
        "<sitename>Wikipedia</sitename><dbname>enwiki</dbname><base>https://en.wikipedia.org/wiki/Main_Page</base>"
        "<generator>MediaWiki</generator><case>first-letter</case></siteinfo><page><title>Homarus gammarus</title>"
        "<ns>0</ns><id>1</id><revision><id>2</id><timestamp>2024-01-01T00:00:00Z</timestamp>"
        f'<text xml:space="preserve">{article.replace("&", "&amp;").replace("<", "&lt;")}</text></revision></page>'
        "</mediawiki>"
    )
    (tmp_path / "wiki.xml").write_text(dump, encoding="utf-8")
    (tmp_path / "books.txt").write_text(text[:20000], encoding="utf-8")
    cfg = from_dict(
        RunConfig,
        {
            "out_dir": str(tmp_path / "run"),
            "crawl": crawl,
            "sources": {
                "books": {"paths": [str(tmp_path / "books.txt")], "format": "text", "min_chars": 100},
                "links": {"kind": "webtext", "urls": [listed], "min_score": 3},
                "wiki": {"kind": "wikipedia", "paths": [str(tmp_path / "wiki.xml")]},
            },
            "curate": {"extract": {"extractor": "resiliparse"}},
            "runner": {"runner": "local", "num_workers": 1, "running_mode": "in_memory"},
        },
    )
    done = Run(cfg).sources()
    assert sorted(done) == ["books", "links", "wiki"]
    assert done["links"].extra["matched_urls"] == 20 and done["links"].extra["format"] == "webtext"
    assert done["wiki"].kept == 1 and done["books"].kept > 5
    for name in done:
        assert {d["source"] for d in read_documents(str(tmp_path / "run" / f"source-{name}"))} == {name}
    with pytest.raises(SourceError, match="unknown kind"):  # when the config loads, before any stage
        from_dict(RunConfig, {"out_dir": str(tmp_path / "r2"), "sources": {"x": {"kind": "pdf"}}})


def test_list_prepared_once_per_stage_run_and_kept_after_a_kill(
    crawl, listed, side_input_run, tmp_path, local_runner, monkeypatch
):
    """The list is read, normalised and merged once per stage run, by a pipeline before the crawl's groups, into
    hash-split Parquet files every group joins against (here three, by a small ``LIST_FILE_BYTES``), not once a
    group. A run killed after two of four groups committed reruns neither the list nor those groups; one killed
    before the prepared list committed prepares it again and never reads the killed attempt's files."""
    import pyarrow.parquet as pq

    import pipeline.stage
    from pipeline import read
    from pipeline.ledger import plan_groups
    from pipeline.read import expand_inputs
    from pipeline.sources import url_list
    from pipeline.tables import file_of

    out0, stats0 = side_input_run
    lists: list[str] = []
    real_rows = url_list.iter_url_rows
    monkeypatch.setattr(url_list, "iter_url_rows", lambda path, cfg: lists.append(path) or real_rows(path, cfg))
    monkeypatch.setattr(url_list, "LIST_FILE_BYTES", 1000)
    opened: list[str] = []
    real_open = read.open_stream
    monkeypatch.setattr(read, "open_stream", lambda path: opened.append(path) or real_open(path))
    real_commit = pipeline.stage.commit_group
    kill_at: list[str] = []

    class Killed(Exception):
        pass

    def commit_or_die(out_dir, group, *args):
        if group.id == "url_list" and "url_list" in kill_at:  # killed before the prepared list committed
            raise Killed(group.id)
        record = real_commit(out_dir, group, *args)
        if group.id in kill_at:
            raise Killed(group.id)
        return record

    monkeypatch.setattr(pipeline.stage, "commit_group", commit_or_die)
    cfg = _cfg(listed, join="cogroup")
    cfg.read.group_bytes = 1  # one crawl file a group: four groups
    groups = plan_groups(expand_inputs(crawl), 1)
    out = str(tmp_path / "out")

    kill_at[:] = ["g00001"]
    with pytest.raises(Killed):
        run_webtext(crawl, out, cfg, local_runner)
    assert lists == [listed]  # once for the four groups
    assert not os.path.exists(os.path.join(out, "stats.json"))
    prepared = sorted(f for f in os.listdir(os.path.join(out, "groups", "url_list")) if f.startswith("keys-"))
    assert [untagged(f) for f in prepared] == [f"keys-{k:05d}-of-00003.parquet" for k in range(3)]
    keys = {
        k: pq.read_table(os.path.join(out, "groups", "url_list", f)).column("key").to_pylist()
        for k, f in enumerate(prepared)
    }
    assert all(v == sorted(v) and all(file_of(key, 3) == k for key in v) for k, v in keys.items())
    assert sum(len(v) for v in keys.values()) == stats0.extra["url_list"]["kept"]

    kill_at.clear()
    lists.clear()
    opened.clear()
    stats = run_webtext(crawl, out, cfg, local_runner)
    assert lists == []  # the committed prepared list is kept, not read again
    assert sorted(opened) == sorted(f for g in groups[2:] for f in g.files)  # nor the committed groups
    assert stats.extra["input_groups"] == 4
    for key in ("url_list", "matched_urls", "unmatched_urls", "duplicate_urls"):
        assert stats.extra[key] == stats0.extra[key], key
    assert (stats.read, stats.kept, stats.dropped) == (stats0.read, stats0.kept, stats0.dropped)
    assert _docs(out) == _docs(out0)

    small = str(tmp_path / "small")
    kill_at[:] = ["url_list"]
    with pytest.raises(Killed):
        run_webtext(crawl[1:2], small, cfg, local_runner)
    for name in os.listdir(os.path.join(small, "groups", "url_list")):  # the killed attempt's files, half written
        if name.endswith(".parquet"):
            open(os.path.join(small, "groups", "url_list", name), "wb").write(b"partial")
    kill_at.clear()
    lists.clear()
    stats = run_webtext(crawl[1:2], small, cfg, local_runner)
    assert lists == [listed] and stats.extra["url_list"] == stats0.extra["url_list"]
    assert stats.extra["matched_urls"] == 4
