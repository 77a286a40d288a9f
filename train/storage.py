"""Where the trainer's inputs live: a local folder, or a URL on an object store, read through ``pyarrow.fs``.

Why a layer of its own: a cluster's ranks share no disk, so the shards and their manifest sit on an object
store (``s3://``, ``gs://``) or HDFS, and each rank reads what it needs. ``train/`` must not import Beam (whose
``FileSystems`` the curation side uses), and pyarrow, which the loader already needs, has S3, GCS, HDFS and
local filesystems built in. Every read of the shard folder -- the manifest, the shards, the tokenizer beside
them -- goes through :class:`ShardStore`, so a local folder and a bucket take the same path through the loader.

* **Local paths are read in place.** A plain path (or ``file://``) is memory-mapped where it lies, as before:
  no copy, no cache.
* **Remote shards are fetched lazily into a local cache** (:class:`ShardCache`): a shard is downloaded the
  first time a row of it is read, hashed while it streams, and kept only if its sha256 is the manifest's --
  a mismatch is an error naming the shard, never a silent read. Cached copies are named by their checksum and
  memory-mapped like local shards. Beyond a size cap the least recently used copies are evicted, so a
  dataset larger than the local disk still trains (at the price of fetching again what was evicted).
  Ranks and DataLoader workers on one machine share the folder: a per-shard lock makes one of them
  download a shard while the others wait for it, and a folder lock orders commits and evictions.
* **Before any work.** An unknown scheme, or a filesystem this pyarrow was built without, is a
  :class:`StorageError` when the location is opened, and :func:`check_scheme` lets the config reject an
  unknown scheme as soon as it is read.

The loader's index reads only each remote shard's footer and ``source`` column (a projected read of a few
kilobytes); a shard's rows are only ever read from its verified local copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import importlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from schemas.manifest import MANIFEST_NAME

DEFAULT_CACHE_GIB = 20.0
TOKENIZER_FILE = "tokenizer.json"
_BLOCK = 1 << 23  # bytes per read while downloading / hashing (8 MiB): never a whole shard in memory

# scheme -> (pyarrow module that implements it, what to install when it is missing)
_REMOTE = {
    "s3": ("pyarrow._s3fs", "S3"),
    "gs": ("pyarrow._gcsfs", "GCS"),
    "gcs": ("pyarrow._gcsfs", "GCS"),
    "hdfs": ("pyarrow._hdfs", "HDFS"),
    "viewfs": ("pyarrow._hdfs", "HDFS"),
}
_SCHEMES = "local paths, file://, s3://, gs:// (gcs://) and hdfs:// (viewfs://)"


class StorageError(ValueError):
    """A location cannot be read: unknown scheme, missing filesystem support, missing or corrupt file."""


def scheme_of(url: str) -> str:
    """``'s3'`` for ``s3://b/k``; ``''`` for a plain local path."""
    return urlsplit(url).scheme.lower() if "://" in url else ""


def check_scheme(url: str) -> None:
    """Raise :class:`StorageError` when ``url`` names a scheme this layer cannot read (no I/O, no imports)."""
    scheme = scheme_of(url)
    if scheme not in ("", "file", *_REMOTE):
        raise StorageError(f"{url}: unknown storage scheme {scheme!r}; the trainer reads {_SCHEMES}")


def _require(url: str, scheme: str) -> None:
    """Import the pyarrow filesystem a scheme needs, or say what is missing before anything is read."""
    module, name = _REMOTE[scheme]
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise StorageError(
            f"{url}: this pyarrow ({pa.__version__}) has no {name} filesystem ({module} cannot be imported: {e}); "
            f"install a pyarrow built with {name} support (the PyPI and conda-forge wheels are)"
        ) from None


def _s3_endpoint() -> pafs.S3FileSystem | None:
    """An S3 filesystem for ``AWS_ENDPOINT_URL(_S3)`` (MinIO, moto, ...), which boto3 reads too; None when unset."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return pafs.S3FileSystem(endpoint_override=parts.netloc, scheme=parts.scheme, region=region)


@dataclass(frozen=True)
class Location:
    """One file or folder: the filesystem that holds it and its path there; ``url`` is what messages show."""

    url: str
    fs: pafs.FileSystem
    path: str

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, name: str) -> Location:
        if self.local and scheme_of(self.url) == "":
            return Location(os.path.join(self.url, name), self.fs, os.path.join(self.path, name))
        return Location(f"{self.url.rstrip('/')}/{name}", self.fs, posixpath.join(self.path, name))

    def parent(self) -> Location:
        if self.local and scheme_of(self.url) == "":
            return Location(os.path.dirname(self.url), self.fs, os.path.dirname(self.path))
        return Location(self.url.rstrip("/").rsplit("/", 1)[0], self.fs, posixpath.dirname(self.path))

    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as e:
            raise StorageError(f"{self.url}: cannot be read ({e})") from e

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as fh:
                return fh.read()
        except FileNotFoundError:
            raise StorageError(f"{self.url}: not found") from None
        except OSError as e:
            raise StorageError(f"{self.url}: cannot be read ({e})") from e

    def open_random(self) -> pa.NativeFile:
        """Random access: a memory map for a local file, ranged reads on an object store."""
        try:
            if self.local:
                return pa.memory_map(self.path, "r")
            return self.fs.open_input_file(self.path)
        except FileNotFoundError:
            raise StorageError(f"{self.url}: not found") from None
        except OSError as e:
            raise StorageError(f"{self.url}: cannot be read ({e})") from e

    def sha256(self) -> str:
        """The checksum a manifest records, streamed in blocks."""
        h = hashlib.sha256()
        try:
            with self.fs.open_input_stream(self.path) as fh:
                while block := fh.read(_BLOCK):
                    h.update(block)
        except OSError as e:
            raise StorageError(f"{self.url}: cannot be read ({e})") from e
        return h.hexdigest()


def locate(url: str) -> Location:
    """The filesystem and path for a local path or a URL; :class:`StorageError` before any read when it cannot be."""
    check_scheme(url)
    scheme = scheme_of(url)
    if scheme == "":
        return Location(url, pafs.LocalFileSystem(), os.path.abspath(url))
    if scheme in _REMOTE:
        _require(url, scheme)
    if scheme == "s3" and (fs := _s3_endpoint()) is not None:
        return Location(url, fs, url[len("s3://") :].rstrip("/"))
    try:
        fs, path = pafs.FileSystem.from_uri(url)
    except (OSError, ValueError, pa.ArrowException) as e:
        hint = " (HDFS needs a Hadoop client: libhdfs, JAVA_HOME, HADOOP_HOME)" if scheme in ("hdfs", "viewfs") else ""
        raise StorageError(f"{url}: cannot open its filesystem ({e}){hint}") from e
    return Location(url, fs, path.rstrip("/") or path)


def default_cache_dir(manifest_bytes: bytes) -> str:
    """``<system temp>/ccgpt-shards/<manifest hash>``: one folder per dataset, reused by later runs on it."""
    return os.path.join(tempfile.gettempdir(), "ccgpt-shards", hashlib.sha256(manifest_bytes).hexdigest()[:16])


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    with open(path, "a") as fh:  # never truncated: another process may hold it
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class ShardCache:
    """Verified local copies of remote shards, named ``<sha256>.arrow``, evicted least recently used beyond a cap.

    Recency is the copy's modification time (touched on every open and, throttled, while it is read), so the
    processes sharing the folder agree on it. A copy evicted while another process has it memory-mapped stays
    readable there; its space returns when that map is closed. Downloads go to ``<sha>.arrow.partial-<pid>-*``
    and are renamed into place once verified; partials of dead processes are removed at the next eviction.
    """

    def __init__(self, folder: str, max_bytes: int):
        if max_bytes <= 0:
            raise StorageError(f"the shard cache needs a positive size cap, got {max_bytes} bytes")
        self.folder = folder
        self.max_bytes = max_bytes
        self.on_evict: list[Callable[[str], None]] = []  # called with the sha256 of each copy this process evicts
        self._locks = os.path.join(folder, ".locks")  # one empty file per shard, never removed
        self._lock = os.path.join(self._locks, "folder")

    def _copy(self, sha256: str) -> str:
        return os.path.join(self.folder, f"{sha256}.arrow")

    def check_size(self, loc: Location, size: int) -> None:
        if size > self.max_bytes:
            raise StorageError(
                f"{loc.url}: {size:,} bytes, larger than the shard cache's cap of {self.max_bytes:,} bytes "
                f"({self.folder}); raise shard_cache_gib"
            )

    def fetch(self, loc: Location, sha256: str) -> None:
        """Make sure the verified copy of ``loc`` is in the cache (downloading it if no process has yet)."""
        self._with_copy(loc, sha256, lambda path: None)

    def open(self, loc: Location, sha256: str) -> pa.MemoryMappedFile:
        """A memory map of the verified copy of ``loc``, downloaded first if no process has yet."""
        return self._with_copy(loc, sha256, lambda path: pa.memory_map(path, "r"))

    def _with_copy(self, loc: Location, sha256: str, use: Callable[[str], Any]) -> Any:
        """``use(path of the copy)``, called under the folder lock, so no eviction removes the copy first."""
        copy = self._copy(sha256)
        os.makedirs(self._locks, exist_ok=True)  # made on first use: opening a loader writes nothing
        with _flock(os.path.join(self._locks, sha256)):  # one download per shard; the others wait
            with _flock(self._lock):
                if os.path.exists(copy):
                    os.utime(copy)
                    return use(copy)
            partial = self._download(loc, sha256)
            with _flock(self._lock):
                self._evict(os.path.getsize(partial))
                os.replace(partial, copy)
                return use(copy)

    def touch(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._copy(sha256))

    def _download(self, loc: Location, sha256: str) -> str:
        size = loc.info().size
        if size is not None:
            self.check_size(loc, size)
        partial = f"{self._copy(sha256)}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            h = hashlib.sha256()
            with loc.fs.open_input_stream(loc.path) as src, open(partial, "wb") as dst:
                while block := src.read(_BLOCK):
                    h.update(block)
                    dst.write(block)
            if h.hexdigest() != sha256:
                raise StorageError(
                    f"{loc.url}: sha256 {h.hexdigest()[:16]}... does not match the manifest's {sha256[:16]}...; "
                    "the shard was changed or is corrupt"
                )
            self.check_size(loc, os.path.getsize(partial))
        except BaseException as e:  # nothing unverified stays in the cache
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
            if isinstance(e, OSError):
                raise StorageError(f"{loc.url}: cannot be fetched ({e})") from e
            raise
        return partial

    def _evict(self, incoming: int) -> None:
        """Remove least recently used copies until ``incoming`` more bytes fit under the cap (folder lock held)."""
        copies, used = [], 0
        for entry in os.scandir(self.folder):
            name = entry.name
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            if ".partial-" in name:
                pid = name.rsplit(".partial-", 1)[1].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):  # left by a killed download
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(entry.path)
                elif pid != str(os.getpid()):  # another live download: its bytes are on disk too
                    used += st.st_size
            elif name.endswith(".arrow"):
                copies.append((st.st_mtime_ns, name, st.st_size))
                used += st.st_size
        for _, name, size in sorted(copies):
            if used + incoming <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.folder, name))
            used -= size
            for fn in self.on_evict:
                fn(name[: -len(".arrow")])


class ShardStore:
    """The shard folder a loader reads: its manifest, and each shard opened for indexing and for reading rows.

    ``shards`` is the folder or its ``manifest.json``, as a local path or a URL. Local shards are mapped in
    place; remote ones through a :class:`ShardCache` in ``cache_dir`` (default :func:`default_cache_dir`).
    """

    def __init__(self, shards: str, cache_dir: str = "", cache_bytes: int = int(DEFAULT_CACHE_GIB * 2**30)):
        loc = locate(shards)
        kind = loc.info().type
        if kind == pafs.FileType.Directory:
            self.root, manifest = loc, loc.join(MANIFEST_NAME)
        else:
            self.root, manifest = loc.parent(), loc
        if kind == pafs.FileType.NotFound or manifest.info().type != pafs.FileType.File:
            raise StorageError(f"{manifest.url}: manifest not found")
        self.manifest_url = manifest.url
        self.manifest_bytes = manifest.read_bytes()
        self.cache: ShardCache | None = None
        if not self.root.local:
            self.cache = ShardCache(cache_dir or default_cache_dir(self.manifest_bytes), cache_bytes)

    def where(self, file: str) -> str:
        """The shard's path or URL, for messages."""
        return self.root.join(file).url

    def missing(self, files: list[str]) -> list[str]:
        """The files (as :meth:`where` names them) that do not exist; remote sizes are checked against the cap."""
        locs = [self.root.join(f) for f in files]
        try:
            infos = self.root.fs.get_file_info([loc.path for loc in locs])
        except OSError as e:
            raise StorageError(f"{self.root.url}: cannot list the shards ({e})") from e
        gone = [loc.url for loc, info in zip(locs, infos) if info.type != pafs.FileType.File]
        if self.cache is not None and not gone:
            for loc, info in zip(locs, infos):
                self.cache.check_size(loc, info.size)
        return gone

    def open_index(self, file: str) -> pa.NativeFile:
        """The shard for reading its footer and a projected column: in place, never through the cache."""
        return self.root.join(file).open_random()

    def open_map(self, file: str, sha256: str) -> pa.MemoryMappedFile:
        """A memory map of the shard's rows: the local file, or the verified cached copy of a remote one."""
        loc = self.root.join(file)
        if self.cache is None:
            return loc.open_random()
        return self.cache.open(loc, sha256)

    def verify(self, file: str, sha256: str) -> None:
        """Check the shard against the manifest's sha256 now (a remote one is fetched, which verifies it)."""
        loc = self.root.join(file)
        if self.cache is not None:
            self.cache.fetch(loc, sha256)
            return
        got = loc.sha256()
        if got != sha256:
            raise StorageError(
                f"{loc.url}: sha256 {got[:16]}... does not match the manifest's {sha256[:16]}...; "
                "the shard was changed or is corrupt"
            )

    def touch(self, sha256: str) -> None:
        """Mark a cached copy as recently used (no-op for local shards)."""
        if self.cache is not None:
            self.cache.touch(sha256)


def find_tokenizer_beside(folder: str, cache_dir: str = "") -> str | None:
    """A local ``tokenizer.json`` for a shard (or checkpoint) folder: where its ``manifest.json`` says, else
    ``tokenizer.json`` in the folder; a remote one is copied into the shard cache folder. None when absent."""
    try:
        root = locate(folder)
        if root.info().type == pafs.FileType.File:
            root = root.parent()
        manifest = root.join(MANIFEST_NAME)
        manifest_bytes = manifest.read_bytes() if manifest.info().type == pafs.FileType.File else b""
    except StorageError:
        return None
    candidates = []
    if manifest_bytes:
        rel = (json.loads(manifest_bytes).get("tokenizer") or {}).get("path")
        if rel:
            candidates.append(Location(rel, root.fs, rel) if root.local and os.path.isabs(rel) else root.join(rel))
    candidates.append(root.join(TOKENIZER_FILE))
    for c in candidates:
        kind = c.info().type
        if kind == pafs.FileType.Directory:
            c, kind = c.join(TOKENIZER_FILE), c.join(TOKENIZER_FILE).info().type
        if kind != pafs.FileType.File:
            continue
        if root.local:
            return c.url
        local_dir = cache_dir or default_cache_dir(manifest_bytes or root.url.encode())
        os.makedirs(local_dir, exist_ok=True)
        local = os.path.join(local_dir, TOKENIZER_FILE)
        tmp = f"{local}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as fh:
            fh.write(c.read_bytes())
        os.replace(tmp, local)
        return local
    return None


# -- local files only, written atomically (temp name beside, then rename) --------------------------------------
# For the few files that live on the local disk by design and are no committed stage output: the trainer's summary
# and trimmed log, ``ccgpt eval``'s results, ``ccgpt export``'s folder. A reader sees the old version or the
# complete new one, never a partial file. Temporary names carry the writer's pid, so two processes never write the
# same temporary file. Stage outputs never rely on this: they are committed by ``stats.json``
# (``pipeline.commit``), which works on object stores too, where nothing can be renamed. ``schemas/`` does no I/O,
# so each side keeps its own copy (``train/`` imports no Beam).


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary name beside the local ``path``; when the block succeeds it is renamed to ``path``,
    when it fails it is removed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to the local ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


@contextlib.contextmanager
def atomic_folder(out_dir: str) -> Iterator[str]:
    """Yield a temporary local folder to write into; on success it replaces ``out_dir`` (an existing one is
    moved aside only once the new one is complete), on failure it is removed. Leftover temporary folders of
    killed writers are removed first."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    for stale in glob.glob(f"{glob.escape(out_dir)}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = f"{out_dir}.partial-{os.getpid()}"
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out_dir):
        old = f"{out_dir}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
