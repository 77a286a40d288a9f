"""The contracts: document/shard schemas, manifest and stats validate what they should and reject the rest."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.tables import read_documents, write_documents
from schemas import DOCUMENT_SCHEMA, Manifest, SchemaError, StageStats, document_row
from schemas.manifest import ShardInfo, SourceMix, TokenizerInfo
from schemas.shards import shard_schema, token_dtype_for, validate_shard_schema
from schemas.stats import AccountingError


def test_document_roundtrip(tmp_path):
    rows = [document_row(id=f"d{i}", source="crawl", text=f"text {i}", annotations={"k": i}) for i in range(3)]
    write_documents(rows, str(tmp_path / "a.parquet"))
    back = list(read_documents(str(tmp_path)))
    assert [r["id"] for r in back] == ["d0", "d1", "d2"]
    assert json.loads(back[2]["annotations"]) == {"k": 2}
    assert back[0]["source_offset"] == -1 and back[0]["quality_score"] is None


def test_document_row_rejects_unknown_and_missing():
    with pytest.raises(SchemaError, match="unknown"):
        document_row(id="a", source="s", text="t", colour="red")
    with pytest.raises(SchemaError, match="text"):
        document_row(id="a", source="s")


def test_wrong_schema_and_version_fail_clearly(tmp_path):
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "plain.parquet")
    with pytest.raises(SchemaError, match="not a ccgpt document table"):
        list(read_documents(str(tmp_path / "plain.parquet")))
    old = DOCUMENT_SCHEMA.with_metadata({b"ccgpt.schema": b"documents", b"ccgpt.schema_version": b"0"})
    pq.write_table(
        pa.Table.from_pylist([document_row(id="a", source="s", text="t")], schema=old), tmp_path / "old.parquet"
    )
    with pytest.raises(SchemaError, match="version '0'"):
        list(read_documents(str(tmp_path / "old.parquet")))


def test_empty_stage_output_is_an_empty_table(tmp_path):
    with pytest.raises(SchemaError, match="no document table"):
        list(read_documents(str(tmp_path)))
    (tmp_path / "stats.json").write_text("{}")
    assert list(read_documents(str(tmp_path))) == []


def test_shard_schema():
    assert token_dtype_for(50257) == "uint16" and token_dtype_for(100_000) == "uint32"
    s = shard_schema("uint16")
    assert validate_shard_schema(s) == "uint16"
    with pytest.raises(SchemaError):
        validate_shard_schema(pa.schema([("tokens", pa.list_(pa.int64()))]))
    wrong = pa.schema([pa.field("tokens", pa.list_(pa.uint32()), nullable=False)] + list(s)[1:], metadata=s.metadata)
    with pytest.raises(SchemaError, match="differ"):
        validate_shard_schema(wrong)


def test_manifest_roundtrip_and_version():
    m = Manifest(
        shard_schema_version="1",
        seq_len=8,
        token_dtype="uint16",
        seed=1,
        total_tokens=9,
        tokenizer=TokenizerInfo(content_hash="h", vocab_size=10, eot_id=0),
        sources={
            "crawl": SourceMix(
                weight=1.0, documents=1, tokens_available=9, tokens_drawn=9, epochs=1.0, realised_share=1.0
            )
        },
        shards=[ShardInfo(file="shard-00000.arrow", rows=1, tokens=9, sha256="x")],
    )
    assert Manifest.from_json(m.to_json()) == m
    data = json.loads(m.to_json())
    data["schema_version"] = "99"
    with pytest.raises(SchemaError, match="manifest version"):
        Manifest.from_json(json.dumps(data))


def test_stats_accounting(tmp_path):
    s = StageStats(stage="x", read=5, kept=3)
    s.drop("a", 2)
    s.extra["created"] = 1
    back = StageStats.from_dict(json.loads(json.dumps(s.to_dict())))  # what stats.json holds, read back
    assert back.to_dict() == s.to_dict() and back.extra["created"] == 1
    s.drop("b")
    with pytest.raises(AccountingError):
        s.check()


def test_literal_config_fields_are_checked_by_from_dict_and_validate_config():
    import dataclasses
    from typing import Literal

    from schemas.config import from_dict, validate_config

    @dataclasses.dataclass
    class Inner:
        mode: Literal["a", "b"] = "a"
        maybe: Literal["x"] | None = None

        def __post_init__(self):
            if self.mode == "b" and self.maybe is None:
                raise ValueError("mode b needs maybe")

    @dataclasses.dataclass
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)

    assert from_dict(Outer, {"inner": {"mode": "b", "maybe": "x"}}).inner.mode == "b"
    with pytest.raises(ValueError, match=r"Inner.mode: 'c' is not one of \['a', 'b'\]"):
        from_dict(Outer, {"inner": {"mode": "c"}})
    cfg = Outer()
    validate_config({"config": cfg, "other": 1})  # None is allowed where the Literal is optional
    cfg.inner.maybe = "y"
    with pytest.raises(ValueError, match="Inner.maybe"):
        validate_config(cfg)
    cfg.inner.maybe, cfg.inner.mode = None, "b"
    with pytest.raises(ValueError, match="mode b needs maybe"):  # __post_init__ runs again
        validate_config(cfg)
