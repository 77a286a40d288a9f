"""Streaming, resumable batches from the shard manifest.

What the loader promises, and why:

* **Checked before the first step.** The manifest is version-checked (``Manifest.from_json``), every shard must
  exist, carry the shard schema, the manifest's token dtype and its row count, and the manifest's sha256 (local
  shards are hashed before the first step, each rank a disjoint share, unless ``verify_sha256=False``; remote
  ones as each is fetched).
  :func:`check_compatibility` compares the tokenizer with the model (vocab size, end-of-text id, context
  length, an expected tokenizer hash). Finding a wrong file after an hour of training wastes the hour.
* **Memory-mapped, local or remote.** Shards are opened with ``pa.memory_map`` + ``pa.ipc.open_file`` and rows
  are read zero-copy as numpy views; only the per-row ``source`` column is read up front (to stratify the
  held-out set and count samples per source). Nothing loads a whole shard into memory. ``shards`` may be a
  URL (``s3://``, ``gs://``, ``hdfs://``): :mod:`train.storage` then fetches each shard into a local cache the
  first time a row of it is read, verified against the manifest's sha256, and evicts least recently used
  copies beyond a size cap. Where the shards live changes neither the order nor the loader's state.
* **One global order.** Every training row has a global index; each epoch is a seeded permutation of
  them, the same on every process. The order defines a single stream of samples. Micro-batch ``k`` is
  the stream's next ``world * batch_size`` samples, and rank ``r`` takes every ``world``-th of them
  starting at ``r``. So the ranks' micro-batches are disjoint, together they are exactly the
  single-process micro-batch of size ``world * batch_size``, and DataLoader worker ``w`` builds the
  micro-batches ``k`` with ``k % num_workers == w`` (the DataLoader returns workers' batches round-robin,
  which restores the order ``k = 0, 1, 2, ...``).
* **Exact resume.** The state is ``(epoch, samples consumed in the epoch)`` counted in *global* samples,
  so a resumed run continues the same stream even with a different number of ranks or workers. The state
  is advanced when a batch is handed to the trainer, not when a worker prefetches it.
* **Held-out rows.** :meth:`ShardLoader.eval_batches` serves ``eval_rows`` rows picked round-robin across
  sources, so that every source gets an eval loss. When the manifest lists a validation split (the mix stage
  writes ``val-*.arrow``: whole documents per source that no training shard contains) they come from it and
  every training row trains. A manifest from before the split existed still loads: then the rows are held
  out of the training rows, as before (at most 10 %), and :attr:`ShardLoader.eval_split` says ``"train"``.

The tail of an epoch that does not fill a whole global micro-batch is skipped (like ``drop_last``), so
every rank always runs the same number of steps.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from schemas.documents import SchemaError
from schemas.manifest import Manifest, ShardInfo
from schemas.shards import SHARD_SCHEMA_VERSION, validate_shard_schema
from train.config import ModelConfig
from train.storage import DEFAULT_CACHE_GIB, ShardStore, StorageError

LOADER_STATE_VERSION = 1
MAX_EVAL_FRACTION = 0.1  # never hold out more than this share of the rows, whatever eval_rows says
_OPEN_SHARDS = 64  # memory maps kept open per process (each holds a file descriptor)
_TOUCH_EVERY_S = 1.0  # how often a cached shard read through an open map is marked as recently used


class DataError(ValueError):
    """The shards cannot be used as configured: missing, corrupt, or incompatible with the model."""


@contextlib.contextmanager
def _data_errors():
    """The storage layer's and the schemas' errors, as the loader's :class:`DataError`."""
    try:
        yield
    except (SchemaError, StorageError) as e:
        raise DataError(str(e)) from e


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def resolve_model_config(base: ModelConfig, manifest: Manifest, tokenizer_hash: str = "") -> ModelConfig:
    """Fill ``vocab_size`` / ``n_ctx`` left at 0 from the manifest, then :func:`check_compatibility`."""
    changes: dict[str, int] = {}
    if base.vocab_size == 0:
        changes["vocab_size"] = manifest.tokenizer.vocab_size
    if base.n_ctx == 0:
        changes["n_ctx"] = manifest.seq_len
    cfg = dataclasses.replace(base, **changes)
    check_compatibility(manifest, cfg, tokenizer_hash)
    return cfg


def check_compatibility(manifest: Manifest, cfg: ModelConfig, tokenizer_hash: str = "") -> None:
    """Raise :class:`DataError` if the model cannot train on these shards."""
    tok = manifest.tokenizer
    if tokenizer_hash and tokenizer_hash != tok.content_hash:
        raise DataError(
            f"the shards were tokenized with tokenizer {tok.content_hash[:16]}..., but this run expects "
            f"{tokenizer_hash[:16]}...; re-tokenize or point --shards at the matching manifest"
        )
    if cfg.vocab_size < tok.vocab_size:
        raise DataError(
            f"model vocab_size={cfg.vocab_size} is smaller than the tokenizer's vocab_size={tok.vocab_size}; "
            "token ids past the embedding table would crash training (use --model.vocab_size 0 to take it "
            "from the manifest)"
        )
    if not 0 <= tok.eot_id < cfg.vocab_size:
        raise DataError(f"end-of-text id {tok.eot_id} is outside the model's vocab_size={cfg.vocab_size}")
    if cfg.n_ctx < manifest.seq_len:
        raise DataError(
            f"model n_ctx={cfg.n_ctx} is shorter than the shards' seq_len={manifest.seq_len} "
            "(use --model.n_ctx 0 to take it from the manifest)"
        )


@dataclass
class Batch:
    """One micro-batch: inputs, next-token targets, per-token document ids and the rows' sources."""

    x: torch.Tensor  # [B, T] int64 token ids
    y: torch.Tensor  # [B, T] int64, x shifted by one
    doc_ids: torch.Tensor  # [B, T] int32, equal ids = same document (see attention.doc_ids_from_offsets)
    source_ids: torch.Tensor  # [B] int64 index into ShardLoader.sources
    sources: list[str]
    index: torch.Tensor  # [B] int64 global row ids (shard order, then row), to trace what a step trained on

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Token tensors to ``device``; the bookkeeping fields stay on the host."""
        return dataclasses.replace(
            self,
            x=self.x.to(device, non_blocking=non_blocking),
            y=self.y.to(device, non_blocking=non_blocking),
            doc_ids=self.doc_ids.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) so host-to-GPU copies can overlap compute."""
        return dataclasses.replace(
            self, x=self.x.pin_memory(), y=self.y.pin_memory(), doc_ids=self.doc_ids.pin_memory()
        )


class _RowReader:
    """Random access to rows of memory-mapped shards; one per process (maps are not shared across forks).

    Remote shards are mapped from their verified cached copies; when this process's cache evicts a copy, its
    map is closed too, so the disk space returns.
    """

    def __init__(self, store: ShardStore, shards: list[ShardInfo], seq_len: int, vocab_size: int | None):
        self.store = store
        self.shards = shards
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self._open: OrderedDict[int, tuple[Any, list[int], list[tuple[np.ndarray, ...]]]] = OrderedDict()
        self._touched: dict[int, float] = {}
        self._pid = os.getpid()
        if store.cache is not None:
            store.cache.on_evict.append(self._forget)

    def _forget(self, sha256: str) -> None:
        for shard in [s for s in self._open if self.shards[s].sha256 == sha256]:
            source, _, _ = self._open.pop(shard)
            source.close()

    def _shard(self, shard: int) -> tuple[list[int], list[tuple[np.ndarray, ...]]]:
        if self._pid != os.getpid():  # forked into a DataLoader worker: reopen our own maps
            self._open.clear()
            self._pid = os.getpid()
        if shard in self._open:
            self._open.move_to_end(shard)
            if self.store.cache is not None and time.monotonic() - self._touched.get(shard, 0.0) > _TOUCH_EVERY_S:
                self.store.touch(self.shards[shard].sha256)
                self._touched[shard] = time.monotonic()
            _, starts, cols = self._open[shard]
            return starts, cols
        with _data_errors():
            source = self.store.open_map(self.shards[shard].file, self.shards[shard].sha256)
        self._touched[shard] = time.monotonic()
        reader = pa.ipc.open_file(source)
        starts, cols, n = [], [], 0
        for i in range(reader.num_record_batches):
            rb = reader.get_batch(i)
            tokens, docs = rb.column(0), rb.column(1)
            cols.append(
                (
                    tokens.values.to_numpy(zero_copy_only=True),
                    tokens.offsets.to_numpy(zero_copy_only=True),
                    docs.values.to_numpy(zero_copy_only=True),
                    docs.offsets.to_numpy(zero_copy_only=True),
                )
            )
            starts.append(n)
            n += rb.num_rows
        self._open[shard] = (source, starts, cols)
        if len(self._open) > _OPEN_SHARDS:
            _, (old, _, _) = self._open.popitem(last=False)
            old.close()
        return starts, cols

    def row(self, shard: int, local: int) -> tuple[np.ndarray, np.ndarray]:
        starts, cols = self._shard(shard)
        b = bisect.bisect_right(starts, local) - 1
        tv, to, dv, do = cols[b]
        r = local - starts[b]
        tokens = tv[to[r] : to[r + 1]]
        offsets = dv[do[r] : do[r + 1]]
        where = f"{os.path.basename(self.shards[shard].file)} row {local}"
        if len(tokens) != self.seq_len + 1:
            raise DataError(f"{where}: {len(tokens)} tokens, the manifest promises seq_len+1={self.seq_len + 1}")
        if self.vocab_size is not None and len(tokens) and int(tokens.max()) >= self.vocab_size:
            raise DataError(f"{where}: token id {int(tokens.max())} >= vocab_size {self.vocab_size}")
        if len(offsets) and (offsets[0] < 0 or offsets[-1] > self.seq_len or np.any(np.diff(offsets) <= 0)):
            raise DataError(f"{where}: doc_offsets {offsets.tolist()} are not increasing positions in the row")
        return tokens, offsets

    def close(self) -> None:
        for source, _, _ in self._open.values():
            source.close()
        self._open.clear()


@dataclass
class _Split:
    """The shards of one split, indexed: where each shard starts (global row ids) and each row's source id."""

    reader: _RowReader
    shard_starts: np.ndarray
    row_source: np.ndarray
    total_rows: int


def _make_batch(loader: ShardLoader, rows: np.ndarray, split: _Split | None = None) -> Batch:
    split = split or loader._train
    reader = split.reader
    T = reader.seq_len
    rows = np.asarray(rows, dtype=np.int64)
    shards = np.searchsorted(split.shard_starts, rows, side="right") - 1
    tokens = np.empty((len(rows), T + 1), dtype=np.int64)
    doc_ids = np.empty((len(rows), T), dtype=np.int32)
    positions = np.arange(T)
    for i in np.argsort(shards, kind="stable").tolist():  # shard by shard: each (cached) shard opened once
        g, shard = int(rows[i]), int(shards[i])
        toks, offsets = reader.row(shard, g - int(split.shard_starts[shard]))
        tokens[i] = toks
        doc_ids[i] = np.searchsorted(offsets, positions, side="right")
    t = torch.from_numpy(tokens)
    src = split.row_source[rows].astype(np.int64)
    return Batch(
        x=t[:, :-1].contiguous(),
        y=t[:, 1:].contiguous(),
        doc_ids=torch.from_numpy(doc_ids),
        source_ids=torch.from_numpy(src),
        sources=[loader.sources[s] for s in src],
        index=torch.from_numpy(rows),
    )


class _EpochStream(IterableDataset):
    """The micro-batches of one rank for the rest of one epoch, split across DataLoader workers."""

    def __init__(self, loader: ShardLoader, order: np.ndarray, start: int, n_micro: int):
        self.loader = loader
        self.order = order
        self.start = start
        self.n_micro = n_micro

    def __iter__(self) -> Iterator[Batch]:
        ld = self.loader
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        G = ld.world_size * ld.batch_size
        for k in range(worker, self.n_micro, n_workers):
            base = self.start + k * G + ld.rank
            rows = self.order[base : base + ld.world_size * ld.batch_size : ld.world_size]
            yield _make_batch(ld, rows)


class ShardLoader:
    """Infinite, deterministic, resumable stream of :class:`Batch` for this rank; see the module docstring."""

    def __init__(
        self,
        shards: str,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        eval_rows: int = 0,
        verify_sha256: bool = True,
        vocab_size: int | None = None,
        pin_memory: bool = False,
        cache_dir: str = "",
        cache_bytes: int = int(DEFAULT_CACHE_GIB * 2**30),
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        d_rank, d_world = _dist_rank_world()
        self.rank = d_rank if rank is None else rank
        self.world_size = d_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        with _data_errors():
            self.store = ShardStore(shards, cache_dir, cache_bytes)
            self.manifest = Manifest.from_json(self.store.manifest_bytes, where=self.store.manifest_url)
        self.root = self.store.root.url
        if self.manifest.shard_schema_version != SHARD_SCHEMA_VERSION:
            raise DataError(
                f"{self.root}: the manifest describes shard schema {self.manifest.shard_schema_version!r}, "
                f"this loader reads {SHARD_SCHEMA_VERSION!r}"
            )
        self.seq_len = self.manifest.seq_len
        self.vocab_size = vocab_size if vocab_size is not None else self.manifest.tokenizer.vocab_size
        if not self.manifest.shards:
            raise DataError(f"{self.root}: the manifest lists no shards")
        val = self.manifest.validation
        # "val": evaluation reads the validation split; "train": a manifest without one, rows held out of training
        self.eval_split = "val" if val is not None and val.shards else "train"
        infos = list(self.manifest.shards) + (list(val.shards) if self.eval_split == "val" else [])
        with _data_errors():
            missing = self.store.missing([s.file for s in infos])
            if missing:
                raise DataError(f"{len(missing)} shard(s) listed in the manifest are missing, first: {missing[0]}")
            if verify_sha256 and self.store.cache is None:
                # Local shards: each rank hashes a disjoint share, so the job reads the data set once in all; a
                # mismatch anywhere stops the job. Remote ones are verified as each is fetched into the cache
                # (hashed while it streams), so checking them here would download the whole set up front.
                for info in infos[self.rank :: self.world_size]:
                    self.store.verify(info.file, info.sha256)
        self.sources: list[str] = list(self.manifest.sources)
        self._train = self._index_shards(self.manifest.shards)
        self._val = self._index_shards(val.shards) if self.eval_split == "val" else None
        if len(self.sources) >= 2**15:
            raise DataError(f"{len(self.sources)} distinct sources; the loader keeps source ids as int16")
        self.total_rows = self._train.total_rows
        self._index_dtype = np.uint32 if self.total_rows < 2**32 else np.int64
        self._select_eval_rows(eval_rows)
        self.fingerprint = self._fingerprint()
        self.epoch = 0
        self.consumed = 0  # global samples consumed in the current epoch
        self._source_samples = np.zeros(len(self.sources), dtype=np.int64)

    # ----------------------------------------------------------------------------------------- setup
    def _index_shards(self, infos: list[Any]) -> _Split:
        """Check each shard's schema and row count; record where each shard starts and each row's source.

        Global row ``g`` lives in the shard whose start is the last one <= g. Per-row state is kept to
        the source id (int16) and the index arrays (uint32 below 2**32 rows), ~10 bytes per row of
        ``seq_len + 1`` tokens, so a 300B-token corpus of 2049-token rows indexes in ~1.5 GB. Source ids
        are shared by the splits (``self.sources``, extended by any source the mix table does not list).
        """
        names = self.sources
        ids = {n: i for i, n in enumerate(names)}
        row_source, starts, n = [], [], 0
        for info in infos:
            path = self.store.where(info.file)
            with _data_errors():
                source = self.store.open_index(info.file)
            with source:
                try:
                    reader = pa.ipc.open_file(source)
                except pa.ArrowInvalid as e:
                    raise DataError(f"{path}: not a readable Arrow IPC file ({e})") from e
                try:
                    dtype = validate_shard_schema(reader.schema, where=path)
                except SchemaError as e:
                    raise DataError(str(e)) from e
                if dtype != self.manifest.token_dtype:
                    raise DataError(f"{path}: token dtype {dtype}, the manifest says {self.manifest.token_dtype}")
                # only 'source' is read: zero-copy views of a local map, a few kilobytes of a remote shard
                only_source = pa.ipc.IpcReadOptions(included_fields=[reader.schema.get_field_index("source")])
                table = pa.ipc.open_file(source, options=only_source).read_all()
                if table.num_rows != info.rows:
                    raise DataError(f"{path}: {table.num_rows} rows, the manifest says {info.rows}")
                enc = pc.dictionary_encode(table.column("source")).combine_chunks()
                local_ids = []
                for name in enc.dictionary.to_pylist():
                    if name not in ids:  # tolerated: a source the mix table does not list still trains
                        ids[name] = len(names)
                        names.append(name)
                    local_ids.append(ids[name])
                row_source.append(
                    np.asarray(local_ids, dtype=np.int16)[enc.indices.to_numpy()]
                    if table.num_rows
                    else np.zeros(0, np.int16)
                )
                starts.append(n)
                n += table.num_rows
        return _Split(
            reader=_RowReader(self.store, list(infos), self.seq_len, self.vocab_size),
            shard_starts=np.asarray(starts, dtype=np.int64),
            row_source=np.concatenate(row_source) if row_source else np.zeros(0, np.int16),
            total_rows=n,
        )

    @property
    def _reader(self) -> _RowReader:
        return self._train.reader

    @property
    def _row_source(self) -> np.ndarray:
        return self._train.row_source

    def _round_robin(self, row_source: np.ndarray, n: int) -> np.ndarray:
        """``n`` rows picked round-robin across sources (each source's rows in a seeded order), sorted."""
        rng = np.random.default_rng([self.seed, 0xE7A1])  # a stream of its own, independent of epoch orders
        keys, rows = [], []
        for s in range(len(self.sources)):
            members = rng.permutation(np.flatnonzero(row_source == s))
            keys.append(np.arange(len(members), dtype=np.int64) * len(self.sources) + s)
            rows.append(members)
        key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        allrows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return np.sort(allrows[np.argsort(key, kind="stable")[:n]]).astype(np.int64)

    def _select_eval_rows(self, eval_rows: int) -> None:
        """Evaluation rows: from the validation split when there is one, else held out of the training rows."""
        if self._val is not None:
            self.eval_index = self._round_robin(self._val.row_source, min(eval_rows, self._val.total_rows))
            self.train_index = np.arange(self.total_rows, dtype=self._index_dtype)
        else:
            n = min(eval_rows, int(self.total_rows * MAX_EVAL_FRACTION))
            self.eval_index = self._round_robin(self._train.row_source, n)
            mask = np.ones(self.total_rows, dtype=bool)
            mask[self.eval_index] = False
            self.train_index = np.flatnonzero(mask).astype(self._index_dtype)
        self.eval_rows = len(self.eval_index)

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        m = self.manifest
        # what fixes the training order: the rows, and how many of them were held out of training
        held = "val" if self.eval_split == "val" else str(self.eval_rows)
        h.update(f"{m.seq_len}|{m.token_dtype}|{m.tokenizer.content_hash}|{held}|".encode())
        for s in m.shards:
            h.update(f"{s.file}|{s.rows}|{s.sha256};".encode())
        return h.hexdigest()

    # ------------------------------------------------------------------------------------- iteration
    @property
    def global_batch(self) -> int:
        """Samples consumed from the stream per micro-batch, across all ranks."""
        return self.world_size * self.batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global row indices of the training rows in ``epoch``'s order (identical on every process)."""
        rng = np.random.default_rng([self.seed, epoch])
        return self.train_index[rng.permutation(len(self.train_index))]

    def __iter__(self) -> Iterator[Batch]:
        G = self.global_batch
        if len(self.train_index) < G:
            raise DataError(
                f"{len(self.train_index)} training rows cannot fill one global micro-batch of {G} "
                f"(world {self.world_size} x batch_size {self.batch_size})"
            )
        while True:
            order = self.epoch_order(self.epoch)
            n_micro = (len(order) - self.consumed) // G
            if n_micro <= 0:
                self.epoch += 1
                self.consumed = 0
                continue
            stream = _EpochStream(self, order, self.consumed, n_micro)
            if self.num_workers > 0:
                # A private generator: DataLoader otherwise draws its worker seed from the global torch
                # RNG, which would shift dropout masks whenever a loader is (re)created, e.g. on resume.
                batches: Any = DataLoader(
                    stream,
                    batch_size=None,
                    num_workers=self.num_workers,
                    pin_memory=self.pin_memory,
                    prefetch_factor=2,
                    generator=torch.Generator().manual_seed(self.seed),
                )
            else:
                batches = stream
            for batch in batches:
                taken = order[self.consumed : self.consumed + G]
                self._source_samples += np.bincount(self._row_source[taken], minlength=len(self.sources))
                self.consumed += G
                yield batch

    def eval_batches(self, batch_size: int | None = None) -> Iterator[Batch]:
        """This rank's share (every world-th row) of the evaluation rows, in fixed order.

        ``Batch.index`` holds row ids of the split they come from (:attr:`eval_split`).
        """
        bs = batch_size or self.batch_size
        mine = self.eval_index[self.rank :: self.world_size]
        for i in range(0, len(mine), bs):
            yield _make_batch(self, mine[i : i + bs], self._val)

    # ----------------------------------------------------------------------------------------- state
    def source_samples(self) -> dict[str, int]:
        """Training samples drawn per source so far, over all ranks and epochs."""
        return {name: int(n) for name, n in zip(self.sources, self._source_samples)}

    def state_dict(self) -> dict[str, Any]:
        """Plain types only, so it survives ``torch.load(weights_only=True)``."""
        return {
            "version": LOADER_STATE_VERSION,
            "epoch": int(self.epoch),
            "consumed_samples": int(self.consumed),
            "seed": int(self.seed),
            "fingerprint": self.fingerprint,
            "source_samples": self.source_samples(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream where ``state`` left it; call before iterating."""
        if state.get("version") != LOADER_STATE_VERSION:
            raise DataError(f"loader state version {state.get('version')!r}, this loader reads {LOADER_STATE_VERSION}")
        if state["fingerprint"] != self.fingerprint:
            raise DataError(
                "the checkpoint was trained on different shards (or a different held-out size); "
                "resuming would not continue the same data order"
            )
        if state["seed"] != self.seed:
            raise DataError(f"the checkpoint's data seed is {state['seed']}, this run's is {self.seed}")
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed_samples"])
        counts = state.get("source_samples", {})
        self._source_samples = np.array([int(counts.get(s, 0)) for s in self.sources], dtype=np.int64)

    def close(self) -> None:
        self._train.reader.close()
        if self._val is not None:
            self._val.reader.close()
