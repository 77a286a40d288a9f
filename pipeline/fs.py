"""Where data paths are checked: every path a stage reads or writes is a local path or a URL.

Beam's ``FileSystems`` is the one filesystem layer of ``pipeline/`` (Beam's own IOs use it, and runners hand
its options and credentials to every worker). This module answers, before any work starts, whether a path's
scheme can be used at all: an unknown scheme, or a known one whose extra is not installed, is a clear error
naming what to install — never a local folder named after a URL (``gs:/bucket/...``).

Reading WARC files over ``https://`` (Common Crawl's public endpoint) goes through fsspec's HTTP filesystem
instead (``pipeline.read``), since Beam has none.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

# scheme -> (the module its Beam filesystem needs, the extra that installs it)
OBJECT_STORES = {
    "s3": ("boto3", "apache-beam[aws]"),
    "gs": ("google.cloud.storage", "apache-beam[gcp]"),
    "hdfs": ("hdfs", "apache-beam[hadoopfs]"),
}
READ_ONLY = ("http", "https")  # fsspec's HTTP filesystem, for WARC inputs only
_UNCOMPRESSED = "uncompressed"  # Beam's CompressionTypes.UNCOMPRESSED: bytes as stored, whatever the suffix
_BUFFER = 1 << 20
WHOLE_READ_BYTES = 64 << 20  # an object-store file up to this size is fetched in one request when read as Arrow


class StorageError(ValueError):
    """A path whose scheme ccgpt cannot use here: unknown, or its extra is not installed."""


class FileInfo(NamedTuple):
    """What a listing says of one file: enough to notice an added, changed or removed input."""

    path: str
    size: int
    mtime: float


def scheme(path: str) -> str:
    """``"s3"`` for ``s3://b/k``; ``""`` for a local path (``file://`` included)."""
    head, sep, _ = path.partition("://")
    if not sep or head == "file" or "/" in head:
        return ""
    return head.lower()


def is_url(path: str) -> bool:
    return scheme(path) != ""


def check_path(path: str, what: str, write: bool = False) -> None:
    """Raise :class:`StorageError` unless ``path`` can be used: local, or a scheme whose extra is installed.

    ``what`` names the path in the message (``"--out"``, ``"curate input"``); ``write`` refuses the
    read-only schemes."""
    sch = scheme(path)
    if not sch:
        return
    if sch in READ_ONLY:
        if write:
            raise StorageError(
                f"{what} {path!r}: {sch}:// is read-only; write to a local path, s3://, gs:// or hdfs://"
            )
        return
    if sch not in OBJECT_STORES:
        known = ", ".join(f"{s}://" for s in OBJECT_STORES)
        raise StorageError(f"{what} {path!r}: unknown scheme {sch}://; ccgpt reads and writes local paths, {known}")
    module, extra = OBJECT_STORES[sch]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (google.cloud) is missing
        found = False
    if not found:
        raise StorageError(f"{what} {path!r}: {sch}:// needs the {extra} extra (pip install '{extra}')")


_configured = False


def use_options(options) -> None:
    """Give the driver's ``FileSystems`` the run's pipeline options (``--s3_endpoint_url``, the GCS project,
    ``hdfs_*``), as the runner gives its workers. Without it they come from the environment (boto3 reads
    ``AWS_ENDPOINT_URL`` and the usual credential chain)."""
    global _configured
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(options)
    _configured = True


def match(pattern: str) -> list[FileInfo]:
    """The files a path or glob names, through Beam's ``FileSystems`` (any installed scheme), sorted."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    check_path(pattern, "input")
    if not _configured:
        use_options(PipelineOptions([]))
    result = FileSystems.match([pattern])[0]
    return sorted(FileInfo(m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in result.metadata_list)


# -- reading and writing through Beam's FileSystems: one code path for local paths and object stores ----------


def _filesystems():
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if not _configured:
        use_options(PipelineOptions([]))
    return FileSystems


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URL (``os.path.join`` would not do for ``s3://``)."""
    return _filesystems().join(base, *parts) if parts else base


def exists(path: str) -> bool:
    return _filesystems().exists(path)


def list_files(folder: str) -> list[FileInfo]:
    """Every file under ``folder``, recursively, sorted by path (none when it does not exist)."""
    if not is_url(folder) and not os.path.isdir(folder):
        return []
    return match(join(folder, "**"))


def read_bytes(path: str) -> bytes:
    with _filesystems().open(path, compression_type=_UNCOMPRESSED) as fh:
        return fh.read()


def write_bytes(path: str, data: bytes) -> str:
    """Write one file in one piece. An object store makes it visible whole when the upload completes; on local
    disk a reader that must not see a partial file relies on the stage's commit (``stats.json``), not on this."""
    with _filesystems().create(path, compression_type=_UNCOMPRESSED) as fh:
        fh.write(data)
    return path


def delete(paths: list[str]) -> None:
    """Delete files or folders (a local folder with everything in it); paths that are already gone are fine."""
    present = [p for p in paths if exists(p)]
    if present:
        _filesystems().delete(present)


def delete_folder(folder: str) -> None:
    """Everything under ``folder``: every object under an object-store prefix; a local folder whole, so a
    killed writer's empty folders (Beam's temporary ones) go too. (Writing a file makes its folders again.)"""
    if is_url(folder):
        delete([info.path for info in list_files(folder)])
    else:
        delete([folder])


def delete_except(folder: str, keep: set[str]) -> None:
    """Everything under ``folder`` but the files ``keep`` names (paths relative to ``folder``, ``/``-separated):
    every other object under an object-store prefix; on local disk every other file, and every folder that
    holds no kept file, so a killed writer's empty folders (Beam's temporary ones) go too."""
    if not keep:
        delete_folder(folder)
    elif is_url(folder):
        base = folder.rstrip("/") + "/"
        # a folder marker (a key ending in "/") is never deleted: Beam deletes a path ending in "/" as a whole tree
        stale = [f.path for f in list_files(folder) if not f.path.endswith("/") and f.path[len(base) :] not in keep]
        delete(stale)
    elif os.path.isdir(folder):
        parents = set()  # every folder that holds a kept file, at any depth
        for k in keep:
            d = posixpath.dirname(k)
            while d:
                parents.add(d)
                d = posixpath.dirname(d)
        stale = []
        for root, dirs, files in os.walk(folder):
            rel = os.path.relpath(root, folder).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            stale += [os.path.join(root, f) for f in files if rel + f not in keep]
            stale += [os.path.join(root, d) for d in dirs if rel + d not in parents]
            dirs[:] = [d for d in dirs if rel + d in parents]
        delete(stale)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with _filesystems().open(path, compression_type=_UNCOMPRESSED) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_lines(path: str):
    """The lines of a UTF-8 text file, streamed (never the whole file in memory), without line ends."""
    import io

    with _filesystems().open(path, compression_type=_UNCOMPRESSED) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            yield line.rstrip("\n")


def open_read(path: str) -> BinaryIO:
    """A binary reader for a local path (a plain buffered file: the fastest) or a URL (Beam's, seekable)."""
    if not is_url(path):
        return open(local_path(path), "rb", buffering=_BUFFER)  # noqa: SIM115 - the caller closes it
    return _filesystems().open(path, compression_type=_UNCOMPRESSED)


@contextlib.contextmanager
def open_decompressed(path: str) -> Iterator[BinaryIO]:
    """A binary stream of a file's content, local or on an object store: ``.gz`` and ``.bz2`` (by suffix, any
    case) decompressed as they are read, never whole."""
    import bz2
    import gzip

    with open_read(path) as raw:
        suffix = path.lower().rsplit(".", 1)[-1]
        if suffix == "gz":
            with gzip.GzipFile(fileobj=raw) as fh:
                yield fh
        elif suffix == "bz2":
            with bz2.BZ2File(raw) as fh:
                yield fh
        else:
            yield raw


def open_write(path: str) -> BinaryIO:
    """A binary writer (a local file's folders are made). Nothing renames it afterwards: the stage's commit
    (``stats.json``, :mod:`pipeline.commit`) is what makes it visible to readers."""
    return _filesystems().create(path, compression_type=_UNCOMPRESSED)


def local_path(path: str) -> str:
    """``/a/b`` for ``file:///a/b``; any other local path unchanged."""
    return path[len("file://") :] if path.startswith("file://") else path


def write_text(path: str, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path))


def write_json(path: str, value: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    return write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


def is_dir(path: str) -> bool:
    """A local folder, or an object-store prefix with at least one object below it."""
    if not is_url(path):
        return os.path.isdir(local_path(path))
    return bool(match(path.rstrip("/") + "/**"))


def is_file(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(local_path(path))
    return not any(c in path for c in "*?[") and exists(path) and not path.endswith("/")


def expand(spec: str) -> list[FileInfo]:
    """The files a spec names, sorted: a file itself, a folder's (or prefix's) every file below it (hidden ones
    skipped), or a glob's matches. Nothing for a spec that names nothing."""
    if any(c in spec for c in "*?["):
        found = match(spec)
        root = spec[: min(spec.index(c) for c in "*?[" if c in spec)]
    elif is_dir(spec):
        found, root = list_files(spec), spec.rstrip("/") + "/"
    else:
        return match(spec) if exists(spec) else []
    # Beam lists dot-files too (glob does not): skip them below the root, as a shell glob would
    return [f for f in found if not any(part.startswith(".") for part in f.path[len(root) :].split("/"))]


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding ``path``'s bytes, for a library that only takes a path (fastText's model loader):
    the path itself when local, else a download into the system temp folder, deleted on exit."""
    if not is_url(path):
        yield local_path(path)
        return
    with tempfile.TemporaryDirectory(prefix="ccgpt-") as tmp:
        local = os.path.join(tmp, posixpath.basename(path.rstrip("/")) or "file")
        with open_read(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, _BUFFER)
        yield local


def put_file(local: str, path: str) -> str:
    """Copy a local file (written by a library that only writes to a path, in the system temp folder) to
    ``path``, local or URL, streamed."""
    with open(local, "rb") as src, open_write(path) as dst:
        shutil.copyfileobj(src, dst, _BUFFER)
    return path


def open_arrow(path: str):
    """An Arrow random-access file: memory-mapped when local (zero-copy reads); over a URL, the whole file in
    memory when small, else Beam's seekable reader."""
    import pyarrow as pa

    if not is_url(path):
        return pa.memory_map(local_path(path), "r")
    # Beam's S3 reader starts a new ranged GET at every seek, and an Arrow or Parquet reader seeks to the
    # footer and then to each batch: a whole small file in one GET is many times faster (measured on dedup's
    # hand-off files); a large one is read by range, as needed
    reader = open_read(path)
    if reader.seek(0, os.SEEK_END) <= WHOLE_READ_BYTES:  # the size, known from opening: no request
        reader.seek(0)
        with reader:
            return pa.BufferReader(reader.read())
    reader.seek(0)
    return pa.PythonFile(reader, mode="r")


@contextlib.contextmanager
def arrow_sink(path: str) -> Iterator[Any]:
    """An Arrow output stream onto :func:`open_write` (IPC files, Parquet written by hand)."""
    import pyarrow as pa

    with open_write(path) as raw:
        sink = pa.PythonFile(raw, mode="w")
        yield sink
        sink.flush()


_S3_OPTIONS = (
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_session_token",
    "s3_endpoint_url",
    "s3_region_name",
    "s3_api_version",
    "s3_verify",
    "s3_disable_ssl",
)


# -- local files only, written atomically (temp name beside, then rename) --------------------------------------
# For the few files that live on the local disk by design and are no committed stage output: the report page,
# ``ccgpt sample``'s download folder and its cache index, the local train and eval stages' small files. A reader
# sees the old version or the complete new one, never a partial file. Temporary names carry the writer's pid, so
# two processes never write the same temporary file. Stage outputs never rely on this: they are committed by
# ``stats.json`` (:mod:`pipeline.commit`), which works on object stores too, where nothing can be renamed.
# ``schemas/`` does no I/O, so each side keeps its own copy: ``train/`` imports no Beam, and importing
# ``train.storage`` here would put the trainer's layer into curation's code version (``pipeline.stage``), so a
# trainer change would rerun curation.


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


def _patch_beam_s3() -> None:
    """Two fixes to Beam 2.77's S3 filesystem, applied once per process when this module is imported (which
    every ccgpt stage module does, on the driver and on the workers).

    - **Empty files.** ``S3Uploader`` completes a multipart upload with no part when nothing was written,
      which S3 (and moto) reject with ``MalformedXML``: every empty side file (no failed input, no example)
      would fail its stage. As other S3 clients do, an empty first part is uploaded before completing.
    - **One client per process.** Every open, exists, create or delete builds a new ``S3IO``, and so a new
      boto3 session and client (about 0.2 s): dedup's hand-off files alone made a small test take 90 s instead
      of 15. The boto3 client is thread-safe and is built once per process and set of S3 options; Beam's
      wrapper keeps per-download state, so each wrapper stays its own object, built from the fresh state the
      first one started with.
    """
    try:
        from apache_beam.io.aws import s3io
        from apache_beam.io.aws.clients.s3 import boto3_client
        from apache_beam.options.pipeline_options import PipelineOptions, S3Options
    except ImportError:  # apache-beam[aws] not installed: no S3 at all
        return
    uploader, client = s3io.S3Uploader, boto3_client.Client
    if getattr(uploader, "_ccgpt_patched", False):
        return
    finish, build = uploader.finish, client.__init__

    def finish_with_a_part(self):
        if not self.parts and not self.buffer:
            self._write_to_s3(b"")
        return finish(self)

    fresh: dict[tuple, dict[str, Any]] = {}

    def init(self, options):
        view = options.view_as(S3Options) if isinstance(options, PipelineOptions) else None
        values = tuple(getattr(view, k) if view is not None else options.get(k) for k in _S3_OPTIONS)
        key = (os.getpid(), repr(values))
        if key not in fresh:
            build(self, options)
            fresh[key] = dict(vars(self))
        vars(self).update(fresh[key])

    uploader.finish = finish_with_a_part
    client.__init__ = init
    uploader._ccgpt_patched = True


_patch_beam_s3()
