"""Where data paths are checked: every path a stage reads or writes is a local path or a URL.

Beam's ``FileSystems`` is the one filesystem layer of ``pipeline/`` (Beam's own IOs use it, and runners hand
its options and credentials to every worker). This module answers, before any work starts, whether a path's
scheme can be used at all: an unknown scheme, or a known one whose extra is not installed, is a clear error
naming what to install — never a local folder named after a URL (``gs:/bucket/...``).

Reading WARC files over ``https://`` (Common Crawl's public endpoint) goes through fsspec's HTTP filesystem
instead (``pipeline.read``), since Beam has none.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from typing import NamedTuple

# scheme -> (the module its Beam filesystem needs, the extra that installs it)
OBJECT_STORES = {
    "s3": ("boto3", "apache-beam[aws]"),
    "gs": ("google.cloud.storage", "apache-beam[gcp]"),
    "hdfs": ("hdfs", "apache-beam[hadoopfs]"),
}
READ_ONLY = ("http", "https")  # fsspec's HTTP filesystem, for WARC inputs only
_UNCOMPRESSED = "uncompressed"  # Beam's CompressionTypes.UNCOMPRESSED: bytes as stored, whatever the suffix


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


def check_local_output(path: str, what: str) -> None:
    """Stage outputs are written on a local (or shared, mounted) disk for now: refuse a URL clearly.

    Reading inputs from object stores works (``check_path``); writing a stage's output folder to one needs a
    commit protocol without rename, which docs/CLUSTER.md describes as the next step."""
    check_path(path, what, write=True)
    if is_url(path):
        raise StorageError(
            f"{what} {path!r}: stage outputs cannot be written to {scheme(path)}:// yet; use a local or mounted "
            "shared path (see docs/CLUSTER.md)"
        )


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


def _allow_empty_s3_uploads() -> None:
    """Let Beam's S3 filesystem write an empty file.

    Beam 2.77's ``S3Uploader`` completes a multipart upload with no part when nothing was written, which S3
    (and moto) reject with ``MalformedXML``: every empty side file (no failed input, no example) would fail its
    stage on S3. As other S3 clients do for this case, an empty first part is uploaded before completing.
    Applied when this module is imported, which every ccgpt stage module does, on the driver and on workers.
    """
    try:
        from apache_beam.io.aws import s3io
    except ImportError:  # apache-beam[aws] not installed: no S3 at all
        return
    uploader = s3io.S3Uploader
    if getattr(uploader, "_ccgpt_empty_upload", False):
        return
    finish = uploader.finish

    def finish_with_a_part(self):
        if not self.parts and not self.buffer:
            self._write_to_s3(b"")
        return finish(self)

    uploader.finish = finish_with_a_part
    uploader._ccgpt_empty_upload = True


_allow_empty_s3_uploads()
