"""Hand-off files: data crossing a Beam shuffle as files, with only references to them shuffled.

Why: Beam's local runner (FnApiRunner) is also its own shuffle. The driver process decodes and keeps every
GroupByKey's input until the grouped step runs, then encodes it again and streams it to a worker through
gRPC; measured on the scale bench (``bench/scale.py``), the driver's resident memory grew by three to five
times the bytes a stage shuffled (the quality filter's 36 MiB of compressed document batches at 100,000
documents: +180 MB). And the runner sends a worker its whole share of a GroupByKey's keys in one bundle, so
a mix worker was handed every packing bucket of its share at once, not the one bucket it packs (its peak grew
1.58x from 10,000 to 100,000 documents with buckets of 10,000 documents; 1.17x once only paths crossed,
``docs/SCALE.md``); an SDK worker also keeps what it received for a stage for as long as it caches that stage's
bundle processor (dedup: about 11 MB per connected-components step at 300k documents, every step adding to the
last). A producer here writes its data to a file and emits ``(key, reference)``; the GroupByKey moves
references (tens of bytes), and the consumer reads the data of one key inside ``process``, one key at a time.
This is what a distributed runner's shuffle does on its own disks.

Layout: :func:`write` puts a producer's data for many keys in **one** zstd-compressed Arrow IPC file (the
random-access format), one record batch per key, and yields ``(key, "path#i")``: one object-store request per
producer flush, not one per key. :func:`read` takes a consumer's references in any order and reads them in
sorted order (path, then batch), so what it returns does not depend on the order they arrived in.
:class:`HandOff` is the DoFn for values of any kind; the dedup stage writes its own producers' files
(:mod:`pipeline.dedup.work`).

Files live in the stage's output folder (``<folder>/_handoff-<name>/``, or dedup's work folder), written and
read through :mod:`pipeline.fs`, so workers that share no disk meet there (an object store). Every file name is
tagged by the stage's attempt (:func:`pipeline.commit.attempt_name`, on the driver) and names its producer: a
:class:`HandOff` bundle names each file by a random id, so a retried bundle never overwrites a file another
bundle's reference names; a failed bundle's references are never emitted, and its files go with the folder.
:class:`RemoveWhenDone` deletes the folder once every consumer has finished (a GroupByKey barrier on the
consumers' outputs), inside the pipeline, so a stage commits (:mod:`pipeline.commit`) with no hand-off file
left; a killed run's leftovers are cleared by the next attempt as any file of the folder.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from pipeline import fs
from pipeline.commit import attempt_name

K = TypeVar("K")

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def handoff_folder(folder: str, name: str) -> str:
    """Where the hand-off files of the step ``name`` writing into ``folder`` live."""
    return fs.join(folder, f"_handoff-{name}")


def file_pattern() -> str:
    """The name pattern of hand-off files (``{uid}`` filled in per file on the workers), tagged by the active
    attempt: call it on the driver, where the transform is built."""
    return attempt_name("{uid}.arrow")


def _batch(data: pa.Table | pa.RecordBatch) -> pa.RecordBatch:
    """A key's table as the one record batch it is written as."""
    if isinstance(data, pa.RecordBatch):
        return data
    return pa.RecordBatch.from_arrays([column.combine_chunks() for column in data.columns], schema=data.schema)


def write(path: str, tables: Iterable[tuple[K, pa.Table | pa.RecordBatch]]) -> list[tuple[K, str]]:
    """Write one producer's ``(key, table)`` pairs (one schema) to the hand-off file ``path``, each key's table
    as one record batch, in the order given; returns ``(key, "path#i")`` per key, the references to shuffle.
    Writes nothing when there is no table. ``tables`` is consumed as it is written: one key's table at a time
    need exist."""
    tables = iter(tables)
    first = next(tables, None)
    if first is None:
        return []
    refs: list[tuple[K, str]] = []
    with fs.arrow_sink(path) as sink, pa.ipc.new_file(sink, first[1].schema, options=_IPC_OPTIONS) as writer:
        for key, table in itertools.chain([first], tables):
            writer.write_batch(_batch(table))
            refs.append((key, f"{path}#{len(refs)}"))
    return refs


def read(refs: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """The record batches the references ``refs`` (:func:`write`'s, in any order) name, read in sorted order
    (path, then batch index) whatever order they arrived in; one file open at a time (a local file
    memory-mapped)."""
    by_path: dict[str, list[int]] = {}
    for ref in refs:
        path, _, index = ref.rpartition("#")
        by_path.setdefault(path, []).append(int(index))
    for path in sorted(by_path):
        with fs.open_arrow(path) as source:
            reader = pa.ipc.open_file(source)
            for i in sorted(by_path[path]):
                yield reader.get_batch(i)


def take(refs: Iterable[str]) -> pa.Table:
    """The tables of the references ``refs`` (a key's, as the shuffle grouped them), as one table in the order
    of :func:`read`: a consumer orders the rows by content where order matters."""
    return pa.Table.from_batches(list(read(refs)))


def put(folder: str, pattern: str, table: pa.Table) -> str:
    """Write ``table`` alone to a new hand-off file in ``folder`` (:func:`handoff_folder`) named by ``pattern``
    (:func:`file_pattern`); its reference, for :func:`take`."""
    [(_, ref)] = write(fs.join(folder, pattern.format(uid=uuid.uuid4().hex)), [(None, table)])
    return ref


BATCH_BYTES = 8 << 20  # what a producer buffers (over all keys) before it writes its file


class HandOff(beam.DoFn):
    """``(key, value)`` -> ``(key, reference)``: a bundle's values of each key gathered into a table
    (``to_table(values)``) and written, one batch per key, to one hand-off file of ``folder`` (:func:`write`)
    once the bundle's values weigh :data:`BATCH_BYTES` (``weight(value)`` each) and when the bundle ends.
    Which values share a file depends on bundles: a consumer must order what it reads by content. ``to_table``
    and ``weight`` are module-level functions (the DoFn is pickled to the workers)."""

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
        path = fs.join(self.folder, self.pattern.format(uid=uuid.uuid4().hex))
        yield from write(path, ((key, self.to_table(values[key])) for key in sorted(values)))

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
