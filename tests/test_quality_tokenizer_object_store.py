"""The quality classifier (train, filter) and the tokenizer stage with inputs and outputs on an object store.

A real S3 API (moto_server): reference text (plain and gzipped) and a crawl document table are read from
``s3://``, and each stage writes its folder there, committed by ``stats.json`` with nothing renamed. The same
inputs give the same model bytes, scores and ``tokenizer.json`` bytes as on local disk, the same stats, and
no object under an output that the commit did not list (no sample, no training file, no marker).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import zipfile

import pyarrow.fs as pafs
import s3_runs

from pipeline.filters import UrlBlocklist, UrlBlocklistConfig
from pipeline.quality import QualityFilterConfig, QualityTrainConfig, run_quality_filter, train_quality
from pipeline.stage import load_stats
from pipeline.tables import write_documents
from pipeline.tokenizer import (
    TokenizerConfig,
    copy_tokenizer,
    load_tokenizer,
    tokenizer_content_hash,
    train_tokenizer,
)
from schemas.stats import StageStats

TINY = dict(dim=8, epoch=3, bucket=2000, min_count=1, min_words=5, lr=0.3, baseline_features=2**12)
# stats.json entries that name the run or its inputs' paths; everything else must be equal
_RUN_KEYS = ("fingerprint", "lineage", "attempt", "files")


def _committed_alike(local: StageStats, remote: StageStats, store, url: str, path_dependent: tuple = ()) -> None:
    """Both commits list the same files with the same sizes and checksums (but for files that record the
    inputs' paths), and the bucket holds nothing under ``url`` beyond them and ``stats.json``."""
    files, remote_files = s3_runs.untagged_files(local), s3_runs.untagged_files(remote)
    assert remote_files.keys() == files.keys()
    for name, record in files.items():
        if name not in path_dependent:
            assert {**remote_files[name], "path": name} == {**record, "path": name}, name
    key = url[len("s3://") :]
    stored = store.get_file_info(pafs.FileSelector(key, recursive=True))
    stored_names = {i.path[len(key) + 1 :] for i in stored if i.type == pafs.FileType.File}
    assert stored_names == {f["path"] for f in remote_files.values()} | {"stats.json"}


def _inputs(shared_data: str, folder) -> dict[str, str]:
    """Reference text as plain text (WikiText paragraphs) and gzipped (Shakespeare's speeches), blank lines
    between documents; crawl-like text (Firefox bug titles, 20 a document) as a document table folder."""
    ref = os.path.join(shared_data, "reference")
    with open(os.path.join(ref, "wikitext-2", "valid.txt"), encoding="utf-8") as fh:
        wiki = folder / "wiki.txt"
        wiki.write_text(fh.read(40_000), encoding="utf-8")
    with open(os.path.join(ref, "tinyshakespeare.txt"), encoding="utf-8") as fh:
        plays = folder / "plays.txt.gz"
        plays.write_bytes(gzip.compress(fh.read(30_000).encode("utf-8"), mtime=0))
    with zipfile.ZipFile(os.path.join(ref, "nltk", "webtext.zip")) as z:
        titles = z.read("webtext/firefox.txt").decode("latin-1").splitlines()[:1600]
    rows = [
        {"id": f"cc-{i}", "source": "crawl", "text": "\n".join(titles[j : j + 20])}
        for i, j in enumerate(range(0, len(titles), 20))
    ]
    table = folder / "crawl"
    table.mkdir()
    write_documents(rows[::2], str(table / "part-0.parquet"))
    write_documents(rows[1::2], str(table / "part-1.parquet"))
    return {"wiki": str(wiki), "plays": str(plays), "crawl": str(table)}


def test_quality_train_and_filter_on_s3_like_on_local_disk(shared_data, s3_bucket, s3_server, local_runner, tmp_path):
    store = s3_runs.store(s3_server)
    local_in = _inputs(shared_data, tmp_path)
    remote_in = {k: s3_runs.upload(store, p, f"{s3_bucket}/in/{os.path.basename(p)}") for k, p in local_in.items()}

    # train, with cross-fitting: three fastText models, each trained in the temp folder and copied to s3
    cfg = QualityTrainConfig(**TINY, folds=2)
    local_model, remote_model = str(tmp_path / "quality_model"), f"{s3_bucket}/runs/quality_model"

    def train(given: dict[str, str], out: str) -> dict:
        return train_quality([given["wiki"], given["plays"]], [given["crawl"]], out, cfg, runner=local_runner)

    local, remote = train(local_in, local_model), train(remote_in, remote_model)
    assert remote == local and local["roc_auc"] > 0.5  # eval.json: the same held-out scores and cross-fit figures
    for name in ("model.bin", "model-fold0.bin", "model-fold1.bin", "score_hist.png"):
        with open(os.path.join(local_model, name), "rb") as fh:
            assert s3_runs.read(store, f"{remote_model}/{name}") == fh.read(), name
    positives = json.loads(s3_runs.read(store, f"{remote_model}/config.json"))["positives"]
    assert positives == [remote_in["wiki"], remote_in["plays"]]
    local_stats, remote_stats = load_stats(local_model), load_stats(remote_model)
    assert s3_runs.figures(remote_stats, *_RUN_KEYS) == s3_runs.figures(local_stats, *_RUN_KEYS)
    _committed_alike(local_stats, remote_stats, store, remote_model, path_dependent=("config.json",))
    assert train(remote_in, remote_model) == local  # up to date: skipped, not retrained
    assert load_stats(remote_model).extra["attempt"] == remote_stats.extra["attempt"]

    # filter: the workers load the fold models from s3 and score every crawl document as on local disk
    fcfg = QualityFilterConfig(model=local_model, rule="top_fraction", top_fraction=0.5)
    local_out, remote_out = str(tmp_path / "quality"), f"{s3_bucket}/runs/quality"
    local_f = run_quality_filter([local_in["crawl"]], local_out, fcfg, local_runner)
    remote_f = run_quality_filter(
        [remote_in["crawl"]], remote_out, dataclasses.replace(fcfg, model=remote_model), local_runner
    )
    assert local_f.kept > 0 and remote_f.extra["cross_fit_folds"] == 2
    assert s3_runs.figures(remote_f, *_RUN_KEYS, "model", "fold_models") == s3_runs.figures(
        local_f, *_RUN_KEYS, "model", "fold_models"
    )
    _committed_alike(local_f, remote_f, store, remote_out)  # the kept documents and their scores, byte for byte


def test_tokenizer_on_s3_like_on_local_disk(shared_data, s3_bucket, s3_server, tmp_path):
    store = s3_runs.store(s3_server)
    table = _inputs(shared_data, tmp_path)["crawl"]
    remote_table = s3_runs.upload(store, table, f"{s3_bucket}/in/crawl")
    cfg = TokenizerConfig(vocab_size=300, seed=1)
    local_out, remote_out = str(tmp_path / "tokenizer"), f"{s3_bucket}/runs/tokenizer"
    local = train_tokenizer([table], local_out, cfg)
    remote = train_tokenizer([remote_table], remote_out, cfg)
    assert remote == local
    with open(os.path.join(local_out, "tokenizer.json"), "rb") as fh:
        tokenizer_json = fh.read()
    assert s3_runs.read(store, f"{remote_out}/tokenizer.json") == tokenizer_json
    local_stats, remote_stats = load_stats(local_out), load_stats(remote_out)
    assert s3_runs.figures(remote_stats, *_RUN_KEYS) == s3_runs.figures(local_stats, *_RUN_KEYS)
    _committed_alike(local_stats, remote_stats, store, remote_out)

    # the loader reads a folder URL (mix, `ccgpt` commands) and copy_tokenizer writes to one (a shard folder)
    tok = load_tokenizer(remote_out)
    assert tokenizer_content_hash(tok) == local["content_hash"]
    copy_tokenizer(tok, f"{s3_bucket}/shards")
    assert s3_runs.read(store, f"{s3_bucket}/shards/tokenizer.json") == tokenizer_json
    # GPT-2's vocabulary file, its merges file found beside it: a pair tokenizers reads from local paths only
    gpt2 = os.path.join(shared_data, "tokenizer", "gpt2")
    for name in ("encoder.json", "vocab.bpe"):
        s3_runs.upload(store, os.path.join(gpt2, name), f"{s3_bucket}/gpt2/{name}")
    from_s3 = load_tokenizer(f"{s3_bucket}/gpt2/encoder.json")
    assert tokenizer_content_hash(from_s3) == tokenizer_content_hash(load_tokenizer(os.path.join(gpt2, "encoder.json")))


def test_url_blocklist_reads_its_domains_file_from_s3(s3_bucket, s3_server):
    with s3_runs.store(s3_server).open_output_stream(f"{s3_bucket[len('s3://') :]}/lists/domains.txt") as fh:
        fh.write(b"# blocked\nspam.example\r\n.Ads.Example\n\n")
    block = UrlBlocklist(UrlBlocklistConfig(domains_file=f"{s3_bucket}/lists/domains.txt"))
    assert block.domains == {"spam.example", "ads.example"}
    assert block.blocked("https://www.spam.example/page") and not block.blocked("https://example.org/")
