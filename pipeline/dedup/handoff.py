"""Hand-off files: how per-document data crosses a Beam shuffle in the dedup stage without riding in it.

Beam's local runner holds every shuffle in memory: the driver keeps each grouped PCollection, and an SDK
worker keeps what it received for a stage for as long as it caches that stage's bundle processor (measured:
about 11 MB per connected-components step at 300k documents, every step adding to the last). So data that
grows with the documents crosses from one step to the next as files in the stage's work folder, the way a
distributed runner's shuffle spills to disk, and only references to them (short strings) are shuffled; the
GroupByKey on the references is the barrier.

:func:`hand_off` writes **one Arrow IPC file per producer** with one record batch per target partition and
yields ``(partition, "path#batch")``; :func:`handed` reads the batches a consumer was sent. A file's name is
fixed by kind and producer, so a retried bundle rewrites the same file (temp name, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from schemas.atomic import atomic_path


def pack_strings(strings: list[str]) -> tuple[bytes, bytes]:
    """Strings -> ``(uint32 lengths, UTF-8 bytes)``: one pair of bytes objects per batch instead of a
    string object per document (lone surrogates survive the round trip)."""
    data = [s.encode("utf-8", "surrogatepass") for s in strings]
    return np.array([len(d) for d in data], dtype=np.uint32).tobytes(), b"".join(data)


def unpack_strings(packed: tuple[bytes, bytes]) -> list[str]:
    lengths = np.frombuffer(packed[0], dtype=np.uint32)
    ends = np.cumsum(lengths, dtype=np.int64).tolist()
    data = packed[1]
    out, start = [], 0
    for end in ends:
        out.append(data[start:end].decode("utf-8", "surrogatepass"))
        start = end
    return out


def hand_off(work: str, kind: str, producer: str, batches: dict[int, list[tuple]]) -> Iterator[tuple[int, str]]:
    """Write ``batches`` (target partition -> rows, each row a tuple of bytes) to one file and yield
    ``(partition, reference)`` per target that gets any rows."""
    targets = sorted(p for p, rows in batches.items() if rows)
    if not targets:
        return
    path = os.path.join(work, f"{kind}-{producer}.arrow")
    width = len(batches[targets[0]][0])
    schema = pa.schema([(f"f{i}", pa.large_binary()) for i in range(width)])
    with atomic_path(path) as tmp, pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for p in targets:
            rows = batches[p]
            writer.write_batch(
                pa.record_batch(
                    [pa.array([r[i] for r in rows], type=pa.large_binary()) for i in range(width)], schema=schema
                )
            )
    for i, p in enumerate(targets):
        yield p, f"{path}#{i}"


def handed(refs: Iterable[str]) -> Iterator[tuple[bytes, ...]]:
    """The rows :func:`hand_off` sent to one consumer (``refs`` in any order; read in sorted order)."""
    by_path: dict[str, list[int]] = {}
    for ref in refs:
        path, _, index = ref.rpartition("#")
        by_path.setdefault(path, []).append(int(index))
    for path in sorted(by_path):
        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            for i in sorted(by_path[path]):
                batch = reader.get_batch(i)
                yield from zip(*(batch.column(c).to_pylist() for c in range(batch.num_columns)))
