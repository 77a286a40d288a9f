"""What the report shows for reading: file names without the attempt tag their writer gave them, and only a
manifest its stage's commit vouches for."""

from __future__ import annotations

import hashlib
import json

from pipeline.report import _mix_section
from pipeline.shards import save_manifest
from schemas.manifest import Manifest, ShardInfo, SourceMix, TokenizerInfo, ValidationSource, ValidationSplit

TAG = "0123456789ab"


def _manifest() -> Manifest:
    def shard(name: str) -> ShardInfo:
        return ShardInfo(file=f"{name}.attempt-{TAG}.arrow", rows=4, tokens=260, sha256="f" * 64)

    crawl = SourceMix(weight=1.0, documents=30, tokens_available=900, tokens_drawn=520, epochs=0.6, realised_share=1.0)
    return Manifest(
        shard_schema_version="1",
        seq_len=64,
        token_dtype="uint16",
        tokenizer=TokenizerInfo(content_hash="ab" * 32, vocab_size=512, eot_id=0),
        seed=0,
        total_tokens=520,
        sources={"crawl": crawl},
        shards=[shard("shard-00000"), shard("shard-00001")],
        validation=ValidationSplit(
            fraction=0.1,
            max_tokens_per_source=0,
            total_tokens=65,
            sources={"crawl": ValidationSource(documents=3, tokens=70, tokens_packed=65)},
            shards=[shard("val-00000")],
        ),
    )


def test_the_mix_tables_show_shard_names_without_their_attempt_tag(tmp_path):
    (tmp_path / "shards").mkdir()
    save_manifest(_manifest(), str(tmp_path / "shards"))
    page = _mix_section(str(tmp_path))
    assert "shard-00000.arrow" in page and "shard-00001.arrow" in page and "val-00000.arrow" in page
    assert "attempt-" not in page and TAG not in page


def test_a_manifest_changed_after_its_commit_is_not_shown(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    path = save_manifest(_manifest(), str(folder))
    data = open(path, "rb").read()
    record = {"path": "manifest.json", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "stats.json").write_text(json.dumps({"stage": "mix", "read": 0, "kept": 0, "files": [record]}))
    assert "shard-00000.arrow" in _mix_section(str(tmp_path))  # the committed manifest
    (folder / "manifest.json").write_bytes(data.replace(b'"total_tokens": 520', b'"total_tokens": 999'))
    page = _mix_section(str(tmp_path))  # a late rewrite of the same size: refused, and the page says why
    assert "shard-00000.arrow" not in page and "changed since its stage" in page
