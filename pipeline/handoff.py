"""Hand-off files: data crossing a Beam shuffle as files, with only their paths shuffled.

Why: Beam's local runner (FnApiRunner) is also its own shuffle. The driver process decodes and keeps every
GroupByKey's input until the grouped step runs, then encodes it again and streams it to a worker through
gRPC; measured on the scale bench (``bench/scale.py``), the driver's resident memory grew by three to five
times the bytes a stage shuffled (the quality filter's 36 MiB of compressed document batches at 100,000
documents: +180 MB). And the runner sends a worker its whole share of a GroupByKey's keys in one bundle, so
a mix worker was handed every packing bucket of its share at once, not the one bucket it packs (its peak grew
1.58x from 10,000 to 100,000 documents with buckets of 10,000 documents; 1.17x once only paths crossed,
``docs/SCALE.md``). A producer here
writes its data to a file and emits ``(key, path)``; the GroupByKey moves paths (tens of bytes), and the
consumer reads the files of one key inside ``process``, one key at a time. This is what a distributed
runner's shuffle does on its own disks, and what the dedup stage's work files do (:mod:`pipeline.dedup.work`).

Files live in ``<folder>/_handoff-<name>/`` inside the stage's output folder, written and read through
:mod:`pipeline.fs`, so workers that share no disk meet there (an object store). Each producer bundle writes
files of its own (a random id per file, tagged by the stage's attempt: :func:`pipeline.commit.attempt_name`),
so a retried bundle never overwrites a file another bundle's reference names; a failed bundle's references
are never emitted, and its files go with the folder. :class:`RemoveWhenDone` deletes the folder once every
consumer has finished (a GroupByKey barrier on the consumers' outputs), inside the pipeline, so a stage
commits (:mod:`pipeline.commit`) with no hand-off file left; a killed run's leftovers are cleared by the next
attempt as any file of the folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from pipeline import fs
from pipeline.commit import attempt_name

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def handoff_folder(folder: str, name: str) -> str:
    """Where the hand-off files of the step ``name`` writing into ``folder`` live."""
    return fs.join(folder, f"_handoff-{name}")


def file_pattern() -> str:
    """The name pattern of hand-off files (``{uid}`` filled in per file on the workers), tagged by the active
    attempt: call it on the driver, where the transform is built."""
    return attempt_name("{uid}.arrow")


def encode_table(table: pa.Table) -> bytes:
    """A table as one zstd-compressed Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_table(data: bytes) -> pa.Table:
    """The table :func:`encode_table` encoded."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def put(folder: str, pattern: str, table: pa.Table) -> str:
    """Write ``table`` to a new hand-off file in ``folder`` (:func:`handoff_folder`) named by ``pattern``
    (:func:`file_pattern`); its path, the reference to shuffle."""
    return fs.write_bytes(fs.join(folder, pattern.format(uid=uuid.uuid4().hex)), encode_table(table))


def take(paths: Iterable[str]) -> pa.Table:
    """The tables of the hand-off files ``paths`` (a key's references, as the shuffle grouped them), as one
    table, in the order of their paths: a consumer orders the rows by content where order matters."""
    return pa.concat_tables([decode_table(fs.read_bytes(p)) for p in sorted(paths)])


BATCH_BYTES = 8 << 20  # what a producer buffers (over all keys) before it writes its files


class HandOff(beam.DoFn):
    """``(key, value)`` -> ``(key, path)``: a bundle's values of each key gathered into a table
    (``to_table(values)``) and written to a hand-off file of ``folder`` once the bundle's values weigh
    :data:`BATCH_BYTES` (``weight(value)`` each) and when the bundle ends. Which values share a file depends
    on bundles: a consumer must order what it reads by content. ``to_table`` and ``weight`` are module-level
    functions (the DoFn is pickled to the workers)."""

    def __init__(
        self,
        folder: str,
        pattern: str,
        to_table: Callable[[list[Any]], pa.Table],
        weight: Callable[[Any], int],
    ):
        self.folder, self.pattern, self.to_table, self.weight = folder, pattern, to_table, weight

    def start_bundle(self):
        self._values: dict[Any, list[Any]] = {}
        self._bytes = 0

    def process(self, element: tuple[Any, Any]) -> Iterator[tuple[Any, str]]:
        key, value = element
        self._values.setdefault(key, []).append(value)
        self._bytes += self.weight(value)
        if self._bytes >= BATCH_BYTES:
            yield from self._flush()

    def _flush(self) -> Iterator[tuple[Any, str]]:
        values, self._values, self._bytes = self._values, {}, 0
        for key in sorted(values):
            yield key, put(self.folder, self.pattern, self.to_table(values[key]))

    def finish_bundle(self):
        for kv in self._flush():
            yield GlobalWindows.windowed_value(kv)


class _RemoveFolder(beam.DoFn):
    def __init__(self, folder: str):
        self.folder = folder

    def process(self, _count: Any) -> Iterator[Any]:
        fs.delete_folder(self.folder)
        return iter(())


class RemoveWhenDone(beam.PTransform):
    """``consumed`` (any PCollection the consumers of a hand-off emit) -> nothing; once all of it exists,
    the hand-off folder is deleted. The global count is the barrier: it runs after every consumer bundle has
    finished, so no consumer can be retried after its files are gone."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def expand(self, consumed):
        return consumed | "Done" >> beam.combiners.Count.Globally() | "Remove" >> beam.ParDo(_RemoveFolder(self.folder))
