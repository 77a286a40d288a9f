"""Training from shards on an object store (moto's S3 server): the local run's losses, verified, cached, resumable."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_data import make_shards, take  # noqa: E402  (shared shard-writing helpers)
from test_trainer import losses, records, tiny  # noqa: E402  (the trainer tests' tiny run)

from train.config import TrainConfig  # noqa: E402
from train.data import DataError, ShardLoader  # noqa: E402
from train.generate import find_tokenizer  # noqa: E402
from train.storage import ShardStore, StorageError, locate  # noqa: E402
from train.trainer import train  # noqa: E402

# the runs below: eval on the validation split (read from s3 too) every 4 of 8 steps
RUN = dict(max_steps=8, decay_steps=8, eval_every=4, eval_rows=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


def s3fs(endpoint: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=endpoint.split("://", 1)[1], scheme="http", region="us-east-1", allow_bucket_creation=True
    )


def upload(endpoint: str, local_dir: str, url: str) -> str:
    """Copy a local folder to ``url`` (``s3://bucket/prefix``) with pyarrow.fs; returns ``url``."""
    fs = s3fs(endpoint)
    fs.create_dir(url[len("s3://") :].split("/", 1)[0])
    pafs.copy_files(local_dir, url[len("s3://") :], destination_filesystem=fs)
    return url


@pytest.fixture(scope="module")
def data(s3_server, tmp_path_factory):
    """Local shards (with a validation split and a tokenizer.json beside them) and their copy on s3."""
    local = make_shards(str(tmp_path_factory.mktemp("data") / "shards"), rows_per_shard=(96, 96), val_rows=4)
    with open(os.path.join(local, "tokenizer.json"), "w", encoding="utf-8") as fh:
        fh.write('{"model": "stand-in"}\n')
    return local, upload(s3_server, local, "s3://ccgpt-train/run/shards")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> list[float]:
    """The losses of the run on local shards."""
    out = str(tmp_path_factory.mktemp("local") / "train")
    train(tiny(data[0], out, **RUN))
    return losses(out) + [r["eval_loss"] for r in records(out, "eval")]


def test_training_from_s3_matches_local_shards_step_for_step(data, reference, tmp_path):
    out = str(tmp_path / "train")
    train(tiny(data[1], out, shard_cache=str(tmp_path / "cache"), **RUN))
    assert losses(out) + [r["eval_loss"] for r in records(out, "eval")] == reference
    assert len(losses(out)) == 8
    cached = sorted(os.listdir(tmp_path / "cache"))
    assert sum(n.endswith(".arrow") for n in cached) == 3  # two training shards + the validation shard
    assert not [n for n in cached if ".partial-" in n]


def test_cache_evicts_under_a_small_cap_and_resume_is_exact(data, reference, tmp_path):
    """A cap that holds one shard: rows still read right, and a stopped + resumed run gives the same losses."""
    sizes = [os.path.getsize(os.path.join(data[0], f)) for f in os.listdir(data[0]) if f.endswith(".arrow")]
    cap = int(max(sizes) * 1.5)
    out, cache = str(tmp_path / "train"), str(tmp_path / "cache")
    opts = dict(shard_cache=cache, shard_cache_gib=cap / 2**30)
    first = train(tiny(data[1], out, **{**RUN, "max_steps": 4}, num_workers=2, **opts))
    assert first["steps"] == 4
    second = train(tiny(data[1], out, **RUN, resume=True, num_workers=1, **opts))
    assert second["start_step"] == 4 and second["steps"] == 8
    assert losses(out) + [r["eval_loss"] for r in records(out, "eval")] == reference
    copies = [os.path.join(cache, n) for n in os.listdir(cache) if n.endswith(".arrow")]
    # what the cap holds: one training shard, or one with the smaller validation shard, by which came last
    assert copies and sum(os.path.getsize(c) for c in copies) <= cap

    # the loader itself: the same rows as from local shards, while copies are evicted and fetched again
    remote = ShardLoader(data[1], 4, seed=5, cache_dir=str(tmp_path / "c2"), cache_bytes=cap)
    evicted: list[str] = []
    remote.store.cache.on_evict.append(evicted.append)
    local = ShardLoader(data[0], 4, seed=5)
    for a, b in zip(take(remote, 12), take(local, 12)):
        assert torch.equal(a.x, b.x) and torch.equal(a.doc_ids, b.doc_ids) and a.sources == b.sources
    assert evicted
    assert remote.state_dict() == local.state_dict()  # the state does not depend on where the shards live


def test_a_corrupt_shard_on_s3_is_a_clear_error(data, s3_server, tmp_path):
    local, _ = data
    bad = str(tmp_path / "bad")
    shutil.copytree(local, bad)
    path = os.path.join(bad, "shard-00001.arrow")
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0xFF  # one byte of token data: the footer and the index still read
    open(path, "wb").write(bytes(blob))
    url = upload(s3_server, bad, "s3://ccgpt-train/bad/shards")

    loader = ShardLoader(url, 4, seed=0, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"s3://ccgpt-train/bad/shards/shard-00001\.arrow: sha256 .* does not match"):
        take(loader, 8)
    assert not [n for n in os.listdir(tmp_path / "cache") if n.startswith(loader.manifest.shards[1].sha256)]
    # the check before the first step is for local shards: remote ones are verified as fetched, never all up front
    ShardLoader(url, 4, verify_sha256=True, cache_dir=str(tmp_path / "cache2"))
    assert not list((tmp_path / "cache2").rglob("*.arrow"))


def test_a_shard_larger_than_the_cap_fails_before_training(data, tmp_path):
    with pytest.raises(DataError, match=r"shard-00000\.arrow: .* larger than the shard cache's cap of 1,000 bytes"):
        ShardLoader(data[1], 4, cache_dir=str(tmp_path / "cache"), cache_bytes=1000)


def test_the_tokenizer_beside_remote_shards_is_found(data, tmp_path):
    meta = {"train_config": {"shards": data[1], "shard_cache": str(tmp_path / "cache")}}
    path = find_tokenizer(str(tmp_path / "run" / "checkpoint.pt"), meta)
    assert path == str(tmp_path / "cache" / "tokenizer.json")
    assert open(path, encoding="utf-8").read() == open(os.path.join(data[0], "tokenizer.json")).read()


def test_manifest_and_folder_read_alike(data):
    by_folder, by_manifest = ShardStore(data[1]), ShardStore(data[1] + "/manifest.json")
    assert by_folder.manifest_bytes == by_manifest.manifest_bytes
    assert by_folder.where("shard-00000.arrow") == by_manifest.where("shard-00000.arrow")
    with pytest.raises(StorageError, match="manifest not found"):
        ShardStore("s3://ccgpt-train/nothing/here")


def test_unknown_scheme_and_missing_gcs_support_fail_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"foo://x: unknown storage scheme 'foo'"):
        TrainConfig(shards="foo://x", out=str(tmp_path / "out"))
    with pytest.raises(DataError, match="unknown storage scheme"):
        ShardLoader("foo://x", 4)

    monkeypatch.setitem(sys.modules, "pyarrow._gcsfs", None)  # as in a pyarrow built without GCS
    with pytest.raises(StorageError, match=r"gs://bucket/shards: this pyarrow .* has no GCS filesystem"):
        locate("gs://bucket/shards")
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="has no GCS filesystem"):
        train(tiny("gs://bucket/shards", out))
    assert not os.path.exists(os.path.join(out, "log.jsonl"))
    assert not os.path.exists(os.path.join(out, "checkpoints"))


def test_local_paths_are_read_in_place(data):
    store = ShardStore(data[0])
    assert store.cache is None and store.root.local
    loader = ShardLoader(data[0], 4)
    assert np.array_equal(loader.eval_index, ShardLoader(os.path.join(data[0], "manifest.json"), 4).eval_index)
