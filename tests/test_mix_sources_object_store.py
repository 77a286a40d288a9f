"""Mix, decontam and the source stages with their inputs and output folders on an object store (moto_server).

On a cluster the driver and the workers share no disk, so every file these stages read (text files, URL lists,
crawl files, dumps, benchmarks, document tables) and write (tables, shards, manifest) goes through
``pipeline.fs``. The same inputs must give the same committed bytes on ``s3://`` as on local disk; inputs read
from ``s3://`` give the same documents (only ``source_file``, where a document came from, differs); nothing the
commit did not list may be left under an output folder; and ``ccgpt shards verify`` checks an ``s3://`` folder.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import json
import os
import random
import tarfile

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import s3_runs
from conftest import run_ccgpt

from pipeline.commit import untagged

# what decides the stats but not the output: when and where it ran, and the inputs' paths (they differ by scheme)
_VOLATILE = ("seconds", "attempt", "files", "fingerprint", "lineage", "failed_files")


def _upload(store: pafs.S3FileSystem, data: bytes, url: str) -> str:
    with store.open_output_stream(url[len("s3://") :], compression=None) as fh:  # bytes as given, .gz too
        fh.write(data)
    return url


def _committed(store, remote, url: str) -> dict[str, bytes]:
    """The objects of a committed ``s3://`` stage folder, checked to be exactly those its commit listed."""
    objects = s3_runs.objects(store, url)
    listed = {f["path"] for f in remote.extra["files"]}
    assert set(objects) == listed | {"stats.json"}  # no side file, marker or Beam temp file left over
    for f in remote.extra["files"]:
        assert len(objects[f["path"]]) == f["size"], f["path"]
    return objects


def _same_bytes(store, local, local_dir: str, remote, url: str, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    """A stage committed on ``s3://`` like on local disk: the same files, the same bytes for ``suffixes``, the
    same stats."""
    objects, on_disk = _committed(store, remote, url), s3_runs.local_files(local_dir)
    assert list(s3_runs.untagged_files(remote)) == list(s3_runs.untagged_files(local))
    objects, on_disk = s3_runs.by_name(objects), s3_runs.by_name(on_disk)
    compared = [p for p in objects if p.endswith(suffixes)]
    assert compared
    for path in compared:
        assert objects[path] == on_disk[path], path
    assert s3_runs.figures(remote, *_VOLATILE) == s3_runs.figures(local, *_VOLATILE)
    return objects


def _documents(files: dict[str, bytes]) -> list[dict]:
    """The documents of a table's Parquet files (given as bytes; the top-level ones, as
    ``pipeline.tables.document_files`` takes a stage folder's: webtext's prepared URL list lies below), sorted by
    id, without ``source_file``."""
    rows = [
        row
        for path, data in files.items()
        if path.endswith(".parquet") and "/" not in path
        for row in pq.read_table(pa.BufferReader(data)).to_pylist()
    ]
    return sorted(({k: v for k, v in r.items() if k != "source_file"} for r in rows), key=lambda r: r["id"])


def test_files_source_reads_globs_and_prefixes_and_writes_to_s3(s3_server, s3_bucket, local_runner, tmp_path):
    from pipeline.sources.common import resolve_inputs
    from pipeline.sources.files import SourceConfig, run_source

    store = s3_runs.store(s3_server)
    texts = {
        "a.jsonl": [f"Note {i} on the object store, read through the filesystem layer." for i in range(3)],
        "more/b.jsonl.gz": [f"A compressed note {i}, decompressed as it is read." for i in range(2)],
        ".hidden.jsonl": ["An editor's backup: never a document."],
    }
    for name, lines in texts.items():
        data = "".join(json.dumps({"text": t}) + "\n" for t in lines).encode()
        data = gzip.compress(data, mtime=0) if name.endswith(".gz") else data
        os.makedirs(os.path.dirname(tmp_path / "texts" / name), exist_ok=True)
        (tmp_path / "texts" / name).write_bytes(data)
        _upload(store, data, f"{s3_bucket}/texts/{name}")
    a, b = f"{s3_bucket}/texts/a.jsonl", f"{s3_bucket}/texts/more/b.jsonl.gz"
    assert resolve_inputs([f"{s3_bucket}/texts/*.jsonl"]) == [(a, "a.jsonl")]  # a glob: one level, hidden skipped
    assert resolve_inputs([f"{s3_bucket}/texts"]) == [(a, "a.jsonl"), (b, "more/b.jsonl.gz")]  # a prefix: all below
    assert resolve_inputs([str(tmp_path / "texts")]) == [
        (str(tmp_path / "texts" / "a.jsonl"), "a.jsonl"),
        (str(tmp_path / "texts" / "more" / "b.jsonl.gz"), os.path.join("more", "b.jsonl.gz")),
    ]

    cfg = SourceConfig(name="notes", format="jsonl")
    local_dir = str(tmp_path / "local")
    local = run_source([str(tmp_path / "texts")], local_dir, cfg, local_runner)
    remote = run_source([str(tmp_path / "texts")], f"{s3_bucket}/runs/notes", cfg, local_runner)
    assert (local.read, local.kept) == (5, 5)
    _same_bytes(store, local, local_dir, remote, f"{s3_bucket}/runs/notes", (".parquet",))

    # inputs on s3 too: the same documents (ids come from the keys, not the location)
    from_s3 = run_source([f"{s3_bucket}/texts"], f"{s3_bucket}/runs/notes-s3", cfg, local_runner)
    assert s3_runs.figures(from_s3, *_VOLATILE) == s3_runs.figures(local, *_VOLATILE)
    objects = _committed(store, from_s3, f"{s3_bucket}/runs/notes-s3")
    assert _documents(objects) == _documents(s3_runs.local_files(local_dir))


def _wiki_page(pid: int, title: str, text: str) -> str:
    return (
        f"  <page>\n    <title>{title}</title>\n    <ns>0</ns>\n    <id>{pid}</id>\n    <revision>\n"
        f"      <id>{pid * 10}</id>\n      <timestamp>2024-05-01T12:00:00Z</timestamp>\n"
        f'      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>\n'
    )


def test_wikipedia_dump_on_s3(s3_server, s3_bucket, local_runner, tmp_path):
    from pipeline.sources.wikipedia import WikipediaConfig, run_wikipedia

    store = s3_runs.store(s3_server)
    prose = "The river runs past the old mill and through the valley towns. " * 5
    pages = [_wiki_page(1, "River", f"'''River''' {prose} [[Category:Rivers]]"), _wiki_page(2, "Stub", "Short.")]
    head = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">\n'
    site = "  <siteinfo>\n    <dbname>enwiki</dbname>\n    <base>https://en.wikipedia.org/wiki/Main</base>\n"
    data = bz2.compress((head + site + "  </siteinfo>\n" + "".join(pages) + "</mediawiki>\n").encode())
    (tmp_path / "enwiki-pages-articles.xml.bz2").write_bytes(data)
    url = _upload(store, data, f"{s3_bucket}/dumps/enwiki-pages-articles.xml.bz2")

    cfg = WikipediaConfig()
    local_dir = str(tmp_path / "local")
    local = run_wikipedia([str(tmp_path / "enwiki-pages-articles.xml.bz2")], local_dir, cfg, local_runner)
    remote = run_wikipedia([f"{s3_bucket}/dumps"], f"{s3_bucket}/runs/wiki", cfg, local_runner)
    assert (local.read, local.kept, local.dropped) == (2, 1, {"too_short": 1})
    assert (
        s3_runs.figures(remote, *_VOLATILE) == s3_runs.figures(local, *_VOLATILE)
        and remote.extra["failed_files"] == local.extra["failed_files"] == []
    )
    objects = _committed(store, remote, f"{s3_bucket}/runs/wiki")
    assert _documents(objects) == _documents(s3_runs.local_files(local_dir))
    (table,) = [p for p in objects if p.endswith(".parquet")]
    assert pq.read_table(pa.BufferReader(objects[table])).column("source_file").to_pylist() == [url]


def test_webtext_list_and_crawl_on_s3(s3_server, s3_bucket, shared_data, local_runner, tmp_path):
    from pipeline.extract import ExtractConfig
    from pipeline.sample import Page, write_warc
    from pipeline.sources.webtext import WebTextConfig, run_webtext

    store = s3_runs.store(s3_server)
    with tarfile.open(os.path.join(shared_data, "html", "goose3.tar.gz")) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".html")), key=lambda m: m.name)
        bodies = [tar.extractfile(m).read() for m in members[:8]]
    urls = [f"https://example.org/news/{i}.html" for i in range(len(bodies))]
    pages = [
        Page(u, b, "text/html; charset=utf-8", 1700000000, f"goose3:{i}") for i, (u, b) in enumerate(zip(urls, bodies))
    ]
    write_warc(str(tmp_path / "news.warc.gz"), pages, {"software": "tests"})
    listed = [{"url": u, "score": 5} for u in urls[:6]] + [{"url": urls[0] + "?utm_source=x", "score": 9}]
    list_data = gzip.compress("".join(json.dumps(r) + "\n" for r in listed).encode(), mtime=0)
    (tmp_path / "links.jsonl.gz").write_bytes(list_data)
    _upload(store, list_data, f"{s3_bucket}/lists/links.jsonl.gz")
    _upload(store, (tmp_path / "news.warc.gz").read_bytes(), f"{s3_bucket}/crawl/news.warc.gz")

    def cfg(lists: str) -> WebTextConfig:
        return WebTextConfig(urls=[lists], min_score=3, extract=ExtractConfig(extractor="resiliparse"))

    local_dir = str(tmp_path / "local")
    local = run_webtext(
        [str(tmp_path / "news.warc.gz")], local_dir, cfg(str(tmp_path / "links.jsonl.gz")), local_runner
    )
    remote = run_webtext(
        [f"{s3_bucket}/crawl/*.warc.gz"], f"{s3_bucket}/runs/webtext", cfg(f"{s3_bucket}/lists"), local_runner
    )
    assert local.extra["matched_urls"] == 6 and local.extra["duplicate_urls"] == 1 and local.kept > 0
    assert s3_runs.figures(remote, *_VOLATILE) == s3_runs.figures(local, *_VOLATILE)
    objects = _committed(store, remote, f"{s3_bucket}/runs/webtext")
    assert "url_list/outcomes.jsonl" in s3_runs.by_name(objects)
    assert _documents(objects) == _documents(s3_runs.local_files(local_dir))
    remote_files, local_files = s3_runs.by_name(objects), s3_runs.by_name(s3_runs.local_files(local_dir))
    prepared = [p for p in remote_files if p.startswith("groups/url_list/keys-")]  # the list, prepared once
    assert prepared == ["groups/url_list/keys-00000-of-00001.parquet"]
    assert all(remote_files[p] == local_files[p] for p in prepared)


def _corpus(rng: random.Random) -> list[dict]:
    """Documents of two sources, random words, long enough for a few rows each."""
    return [
        {"id": f"{src}-{i}", "source": src, "text": " ".join(f"w{rng.randrange(400)}" for _ in range(60))}
        for src, n in (("web", 40), ("wiki", 10))
        for i in range(n)
    ]


def test_decontam_and_mix_on_s3_commit_the_bytes_they_commit_locally(s3_server, s3_bucket, local_runner, tmp_path):
    """Documents and a benchmark on s3 -> decontam on s3 -> mix on s3: the same tables, shards and manifest
    (its input paths aside) as on local disk; the shard folder verifies and decodes where it lies."""
    from pipeline.decontam import DecontamConfig, run_decontam
    from pipeline.mix import MixConfig, run_mix
    from pipeline.shards import ShardError, inspect_shards, verify_shards
    from pipeline.tables import write_documents
    from pipeline.tokenizer import TokenizerConfig, train_tokenizer

    store = s3_runs.store(s3_server)
    rows = _corpus(random.Random(3))
    os.makedirs(tmp_path / "docs")
    write_documents(rows, str(tmp_path / "docs" / "part-0.parquet"))
    _upload(store, (tmp_path / "docs" / "part-0.parquet").read_bytes(), f"{s3_bucket}/docs/part-0.parquet")
    bench = json.dumps({"text": " ".join(rows[7]["text"].split()[20:40])}) + "\n"  # inside one web document
    (tmp_path / "bench.jsonl").write_text(bench)
    _upload(store, bench.encode(), f"{s3_bucket}/benchmarks/bench.jsonl")
    train_tokenizer([str(tmp_path / "docs")], str(tmp_path / "tok"), TokenizerConfig(vocab_size=300))
    _upload(store, (tmp_path / "tok" / "tokenizer.json").read_bytes(), f"{s3_bucket}/tok/tokenizer.json")

    cuts = {"margin_chars": 20, "min_fragment_chars": 20}  # short documents: keep the fragments
    decontam_cfg = {"local": DecontamConfig(benchmarks=[str(tmp_path / "bench.jsonl")], **cuts)}
    decontam_cfg["s3"] = DecontamConfig(benchmarks=[f"{s3_bucket}/benchmarks/*.jsonl"], **cuts)
    mix_cfg = MixConfig(weights={"web": 3, "wiki": 1}, total_tokens=3000, seq_len=16, rows_per_shard=40)
    runs = {}
    for where, base in (("local", str(tmp_path)), ("s3", s3_bucket)):
        decontam = run_decontam([f"{base}/docs"], f"{base}/decontam", decontam_cfg[where], local_runner)
        cfg = dataclasses.replace(mix_cfg, tokenizer=f"{base}/tok")
        runs[where] = (decontam, run_mix([f"{base}/decontam"], f"{base}/mix", cfg, local_runner))
    (local_decontam, local_mix), (remote_decontam, remote_mix) = runs["local"], runs["s3"]

    assert local_decontam.dropped == {"split_into_fragments": 1} and local_decontam.extra["fragments_created"] == 2
    assert local_decontam.extra["benchmarks"]["bench"].pop("path") == str(tmp_path / "bench.jsonl")
    assert remote_decontam.extra["benchmarks"]["bench"].pop("path") == f"{s3_bucket}/benchmarks/bench.jsonl"
    _same_bytes(
        store, local_decontam, str(tmp_path / "decontam"), remote_decontam, f"{s3_bucket}/decontam", (".parquet",)
    )

    assert local_mix.extra["shards"] >= 2 and local_mix.extra["validation_shards"] == 1
    same = (".arrow", "tokenizer.json", "mix_table.md", "outcomes.jsonl")
    objects = _same_bytes(store, local_mix, str(tmp_path / "mix"), remote_mix, f"{s3_bucket}/mix", same)
    manifests = [json.loads(m) for m in (objects["manifest.json"], (tmp_path / "mix" / "manifest.json").read_bytes())]
    assert [m.pop("lineage")["input.0"] for m in manifests] == [f"{s3_bucket}/decontam", str(tmp_path / "decontam")]
    assert s3_runs.untagged_shards(manifests[0]) == s3_runs.untagged_shards(manifests[1])

    # the shard folder is checked and decoded where it lies, also by the command line
    local_summary, remote_summary = verify_shards(str(tmp_path / "mix")), verify_shards(f"{s3_bucket}/mix")
    assert (remote_summary.pop("folder"), local_summary.pop("folder")) == (f"{s3_bucket}/mix", str(tmp_path / "mix"))
    assert remote_summary == local_summary
    done = run_ccgpt("shards", "verify", f"{s3_bucket}/mix", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["rows"] == local_summary["rows"]
    for split in ("train", "val"):  # decoded with the tokenizer.json beside the shards
        remote_rows, local_rows = (
            inspect_shards(f, rows=3, split=split) for f in (f"{s3_bucket}/mix", str(tmp_path / "mix"))
        )
        assert [{**r, "file": untagged(r["file"])} for r in remote_rows] == [
            {**r, "file": untagged(r["file"])} for r in local_rows
        ]
    _upload(store, objects["shard-00000.arrow"], f"{s3_bucket}/mix/shard-00099.arrow")  # a stray beside them
    with pytest.raises(ShardError, match=r"not in the manifest: \['shard-00099.arrow'\]"):
        verify_shards(f"{s3_bucket}/mix")
