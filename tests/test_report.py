"""What the report shows for reading: file names without the attempt tag their writer gave them."""

from __future__ import annotations

import json

from pipeline.report import _mix_section

TAG = "0123456789ab"


def _manifest() -> dict:
    shard = {"rows": 4, "tokens": 260, "sha256": "f" * 64}
    return {
        "seq_len": 64,
        "token_dtype": "uint16",
        "tokenizer": {"vocab_size": 512},
        "total_tokens": 520,
        "sources": {
            "crawl": {"tokens_available": 900, "weight": 1.0, "realised_share": 1.0, "epochs": 0.6, "documents": 30}
        },
        "shards": [{**shard, "file": f"shard-{k:05d}.attempt-{TAG}.arrow"} for k in range(2)],
        "validation": {
            "total_tokens": 65,
            "fraction": 0.1,
            "sources": {"crawl": {"documents": 3, "tokens_packed": 65}},
            "shards": [{**shard, "file": f"val-00000.attempt-{TAG}.arrow"}],
        },
    }


def test_the_mix_tables_show_shard_names_without_their_attempt_tag(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.json").write_text(json.dumps(_manifest()))
    page = _mix_section(str(tmp_path))
    assert "shard-00000.arrow" in page and "shard-00001.arrow" in page and "val-00000.arrow" in page
    assert "attempt-" not in page and TAG not in page
