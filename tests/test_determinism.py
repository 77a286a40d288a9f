"""The same input gives the same bytes on any runner and any number of workers.

The curation stages of the tiny run, from curate to the shards, run on Beam's local runner with 1 worker
(in process), 2 and 4 worker processes, and on the portable runner; every output that a later stage or a
trainer reads must be byte for byte the same: document tables, dedup clusters and index, the quality model,
the tokenizer, the shards and the manifest. Which worker saw which record, and in what order, must never
show (``pipeline.tables.WriteDocuments`` files rows by a hash of their id, sorted; dedup writes its chunks in
input order; the mix orders rows by seeded hashes).
"""

from __future__ import annotations

import dataclasses
import glob
import os

import pytest
from conftest import without_tags

from pipeline.commit import untagged
from pipeline.run import Run, RunConfig
from pipeline.runner import RunnerConfig
from pipeline.stages import STAGE_NAMES
from schemas.config import from_dict

CURATION = STAGE_NAMES[STAGE_NAMES.index("curate") : STAGE_NAMES.index("verify") + 1]
OUTPUTS = (
    "*/documents-*.parquet",
    "curate/raw/documents-*.parquet",
    "dedup/clusters-*.jsonl",
    "dedup/index/*.parquet",
    "quality_model/*.bin",
    "tokenizer/tokenizer.json",
    "shards/*.arrow",
    "shards/manifest.json",
    "shards/mix_table.md",
)


def run_curation(config: dict, runner: RunnerConfig) -> dict[str, bytes]:
    """Run the curation stages of ``config`` on ``runner``; every output file's bytes, by relative path without
    the attempt tag."""
    run = Run(dataclasses.replace(from_dict(RunConfig, config), runner=runner))
    for stage in CURATION:
        if not run.skips(stage):
            getattr(run, stage)()
    files = {}
    for pattern in OUTPUTS:
        for path in sorted(glob.glob(os.path.join(run.out, pattern))):
            with open(path, "rb") as fh:
                data = fh.read()  # each run tags its files anew: by untagged names, the manifest's shards too
            files[untagged(os.path.relpath(path, run.out))] = (
                without_tags(data) if path.endswith("manifest.json") else data
            )
    return files


@pytest.mark.slow
def test_the_same_bytes_on_1_2_and_4_workers_and_the_portable_runner(tiny_run_config, tmp_path):
    runners = {
        "1 worker": RunnerConfig(runner="local", num_workers=1, running_mode="in_memory"),
        "2 workers": RunnerConfig(runner="local", num_workers=2),
        "4 workers": RunnerConfig(runner="local", num_workers=4),
        "portable": RunnerConfig(runner="portable"),
    }
    outputs = {}
    for name, runner in runners.items():  # each in the same folder, moved aside after: the lineage is the same
        outputs[name] = run_curation(tiny_run_config(str(tmp_path / "run")), runner)
        os.rename(tmp_path / "run", tmp_path / name.replace(" ", "-"))
    reference = outputs.pop("1 worker")
    assert any(p.startswith("shards/shard-") for p in reference) and any(
        p.startswith("dedup/clusters-") for p in reference
    )
    for name, files in outputs.items():
        assert sorted(files) == sorted(reference), name
        differ = [p for p in reference if files[p] != reference[p]]
        assert not differ, f"{name}: {differ}"


def test_document_files_do_not_depend_on_arrival_order(tmp_path):
    """The writer every document-table stage shares: rows arriving in another order, split otherwise between
    bundles, give the same files byte for byte (Beam's own WriteToParquet writes them in arrival order)."""
    import apache_beam as beam

    from pipeline.runner import make_pipeline
    from pipeline.tables import WriteDocuments
    from schemas.documents import document_row

    rows = [document_row(id=f"d{i * 7919 % 1000:04d}", source="s", text=f"text {i} " * (i % 13)) for i in range(1000)]
    written = {}
    for name, ordered in (("forward", rows), ("reversed", rows[::-1])):
        folder = str(tmp_path / name)
        with make_pipeline(RunnerConfig(runner="local", num_workers=2), name) as p:
            _ = p | beam.Create(ordered) | beam.Reshuffle() | WriteDocuments(folder, files=3)
        written[name] = {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}
    assert list(written["forward"]) == [f"documents-{k:05d}-of-00003.parquet" for k in range(3)]
    assert written["forward"] == written["reversed"]
