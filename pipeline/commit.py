"""Committing a stage's output without renaming anything: ``stats.json``, written last, is the commit.

Object stores have no rename, so a stage cannot write a temporary folder and move it into place. Instead one
:class:`Attempt` owns the output folder from :meth:`~Attempt.begin` to :meth:`~Attempt.commit`:

1. ``begin`` makes the old output incomplete first (deletes its ``stats.json``), then deletes everything
   else in the folder (the old output, or a killed attempt's leftovers), then writes ``_attempt.json``
   naming this attempt. A folder holding ``_attempt.json`` and no ``stats.json`` is an unfinished output,
   and readers refuse it (:func:`committed_files`).
2. The stage writes its files in place, through Beam's IOs and ``pipeline.fs``. Every file its workers write
   carries the attempt's tag, ``<name>.attempt-<tag>.<ext>`` (:func:`attempt_name`): the names they choose
   (document tables, dedup's cluster and index files) and the fixed ones alike (the side files of
   ``pipeline.tables``' writers: outcomes, counters, drop examples, failed files and other JSON lines; the
   mix's shards). The tag is random per attempt, set while the attempt is :meth:`~Attempt.active`, and taken
   by the writers when the pipeline is built on the driver.
3. ``commit`` checks that no other attempt took the folder over (``_attempt.json`` still names this one and
   no ``stats.json`` appeared), lists the folder's files but those tagged by another attempt (and not kept
   from an earlier one, :mod:`pipeline.ledger`), with size and, up to :data:`CHECKSUM_MAX_BYTES`, sha256,
   writes ``stats.json`` with that list, deletes ``_attempt.json``, and then deletes the other attempts'
   tagged files.

Why a random tag per attempt and not one derived from the stage's fingerprint (which would keep names the same
from run to run): the case the commit must survive is an Airflow retry beside a zombie of the same task, and
those two have the same fingerprint. With a fingerprint tag the zombie's workers would write the very names
this attempt lists, its half-written file could be what this commit hashes, and a rewrite in place after the
commit truncates a committed local file while readers may read it. With the attempt's own tag, a straggler
of any other attempt, same inputs or not, writes names this commit never lists and never overwrites a file
it listed. Names then differ from run to run (``<tag>``); the bytes do not, and tests that compare two runs
compare files by :func:`untagged` name.

Readers take a stage's files from the ``files`` list in its ``stats.json``, never from a listing, so a file
nobody committed is never read, and check each file's size there (:func:`committed_files`; its sha256 too,
when asked; the readers of one small file, a model or a tokenizer, always: :func:`verified`). A file with a
fixed name is found by that name without its tag, and without a listing (:func:`committed_file`): within the
attempt (the driver reading the outcomes its workers just wrote, before the commit) by the attempt's own tag,
or a kept input-file group's recorded name; after the commit through the ``files`` list. The shards are named
in the manifest, which the trainer and ``ccgpt shards verify`` read them by. Two attempts on the same folder:
the later one's ``begin`` takes the folder over, and the earlier one then stops at ``commit`` with a clear
error instead of committing. The same code runs on local disk and object stores (``pipeline.fs`` is Beam's
``FileSystems``).

What keeps a fixed name: the single files the driver writes itself once its pipelines have ended and before
it commits (``manifest.json``, ``mix_table.md``, the tokenizer's ``tokenizer.json``, the quality model's
``model.bin`` and its config and eval files, ``stats.json`` and ``_attempt.json``), because readers open them
by name, and the trainer, which imports no ccgpt pipeline code, reads the manifest so. The driver writes them
after checking it still owns the folder (:func:`check_active_owner`: once a Beam stage's pipeline has ended,
before the quality model and the tokenizer are written), so a driver another attempt took over stops before it
writes one. One that passed that check just before the takeover, and writes late, is caught by the readers'
checks against ``stats.json``: :func:`committed_files` compares every listed file's size in one listing, and
the readers of a model or a tokenizer check the one file they load against its sha256 (:func:`verified`); the
trainer checks each shard it fetches from an object store against the manifest's sha256.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from pipeline import fs
from schemas.documents import SchemaError

STATS_FILE = "stats.json"
ATTEMPT_FILE = "_attempt.json"
# files up to this size get a sha256 in stats.json (models, configs, manifests, small tables); larger ones are
# listed with their size only, since hashing a crawl's document tables would read them all again on one machine
CHECKSUM_MAX_BYTES = 64 << 20
_TAG = re.compile(r"\.attempt-([0-9a-f]{12})(?=\.[^/]*$|$)")  # in a file name, before its extension


class CommitError(RuntimeError):
    """Another attempt took the output folder over, or committed it, while this one ran."""


class UnfinishedOutput(SchemaError):
    """A stage folder an attempt began and never committed (killed, failed, or still running)."""


class AlteredOutput(SchemaError):
    """A committed stage folder whose files no longer match its commit record."""


def relative_path(folder: str, path: str) -> str:
    """``path`` (as a listing of ``folder`` gives it) relative to ``folder``, with ``/`` separators."""
    base = folder.rstrip("/") + "/"
    if fs.is_url(folder):
        return path[len(base) :]
    return os.path.relpath(path, folder).replace(os.sep, "/")


def tag_of(path: str) -> str | None:
    """The attempt tag a file's name carries, or else the nearest folder it lies in (a work folder an attempt
    tagged as a whole, dedup's: every file in it is that attempt's); None for a path without one."""
    for part in reversed(path.split("/")):
        found = _TAG.search(part)
        if found:
            return found.group(1)
    return None


def untagged(path: str) -> str:
    """``path`` without its attempt tags (the file's name, and any tagged folder's): what two runs' files are
    compared by."""
    return "/".join(_TAG.sub("", part) for part in path.split("/"))


_active: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("ccgpt_attempt", default=None)


def _tagged(path: str, tag: str) -> str:
    """``path`` with its file name (the part after the last ``/``) tagged ``tag``, before its extension."""
    head, slash, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    return head + slash + (f"{stem}.attempt-{tag}.{ext}" if dot and stem else f"{name}.attempt-{tag}")


def attempt_name(name: str) -> str:
    """``name`` (``documents-00000-of-00001.parquet``, or a path ending in it) tagged by the active attempt
    (``documents-00000-of-00001.attempt-<tag>.parquet``); unchanged outside any attempt, and when it carries
    the tag already. Called where a writer is built, on the driver: the workers get the name with the writer."""
    attempt = _active.get()
    return name if attempt is None or tag_of(name) == attempt.tag else _tagged(name, attempt.tag)


def active() -> Attempt | None:
    """The attempt whose stage is running in this context (None outside any)."""
    return _active.get()


def _under(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` when it lies inside it (None otherwise)."""
    if fs.is_url(path) != fs.is_url(folder):
        return None
    if fs.is_url(path):
        base = folder.rstrip("/") + "/"
        return path[len(base) :] if path.startswith(base) else None
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return None if rel == os.curdir or rel.startswith(os.pardir) else rel.replace(os.sep, "/")


def _is_root(folder: str) -> bool:
    """A filesystem's root (``/``) or a bucket's (``s3://bucket``): nothing above it to look in."""
    if fs.is_url(folder):
        return "/" not in folder.split("://", 1)[1].strip("/")
    return folder == os.path.dirname(folder)


def _parent(path: str) -> str:
    return path.rstrip("/").rpartition("/")[0] if fs.is_url(path) else os.path.dirname(path.rstrip(os.sep))


STAGE_DEPTH = 3  # side files lie in a stage folder or up to two folders below it (OUT/groups/<gid>/...)


def committed_file(path: str) -> str:
    """Where the file a stage wrote as ``path`` (its untagged name: ``OUT/outcomes.jsonl``,
    ``OUT/groups/<gid>/counters.jsonl``) lies, found by name, never by a listing (after the commit the folder's
    sizes are still checked against its list in one listing, as every reader of :func:`committed_files` does).

    Inside the active attempt's folder (the driver reading what its workers just wrote, before the commit):
    this attempt's tagged name, or the name a kept input-file group's file carries (tagged by the earlier
    attempt that committed the group, :mod:`pipeline.ledger`). Elsewhere: the file the ``files`` list of the
    nearest committed stage folder holding it (the file's folder or up to :data:`STAGE_DEPTH` - 1 above) names
    under that untagged name, so another attempt's file (a zombie's, written after the commit) is never read;
    an unfinished stage folder raises :class:`UnfinishedOutput`. A path in no stage folder, or a name the list
    does not hold, is returned as it is (a user's file; a file the reader then finds missing)."""
    if tag_of(path):  # found already
        return path
    attempt = _active.get()
    rel = _under(path, attempt.out_dir) if attempt is not None else None
    if attempt is not None and rel is not None:
        kept = attempt.kept_names.get(rel)
        return _tagged(path, attempt.tag) if kept is None else fs.join(attempt.out_dir, *kept.split("/"))
    folder = _parent(path)
    for _ in range(STAGE_DEPTH):
        if not folder:
            break
        if fs.exists(fs.join(folder, STATS_FILE)) or fs.exists(fs.join(folder, ATTEMPT_FILE)):
            files = committed_files(folder)
            rel = _under(path, folder)
            if files is None or rel is None:
                return path
            top = len(folder.rstrip("/")) + 1
            found = [f for f in files if untagged(f[top:].replace(os.sep, "/")) == rel]
            return found[0] if found else path
        if _is_root(folder):
            break
        folder = _parent(folder)
    return path


def check_active_owner() -> None:
    """:meth:`Attempt.check_owner` for the active attempt (none active: nothing to check). A driver calls it
    before it writes a file with a fixed name (a manifest, a model, a tokenizer), so the driver of an attempt
    another one took over stops there instead of writing over that one's file."""
    attempt = _active.get()
    if attempt is not None:
        attempt.check_owner()


def file_records(
    folder: str, select: Callable[[str], bool] | None = None, known: Mapping[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """``[{"path", "size", "sha256"}]`` for every file under ``folder`` but the commit files (only those whose
    relative path ``select`` accepts, when given), sorted by path; ``sha256`` is None above
    :data:`CHECKSUM_MAX_BYTES`. ``known``: records by path made earlier (the input-file groups' ledger
    records, :mod:`pipeline.ledger`), whose checksum is taken as it is while the size still matches, so a
    stage committed by group does not read every file of a crawl back once more at its final commit."""
    out = []
    for info in fs.list_files(folder):
        rel = relative_path(folder, info.path)
        if rel in (STATS_FILE, ATTEMPT_FILE) or rel.endswith("/") or rel == "" or (select and not select(rel)):
            continue  # the commit files, an object store's folder markers (keys ending in "/"), unselected ones
        earlier = (known or {}).get(rel)
        if earlier is not None and earlier["size"] == info.size:
            digest = earlier["sha256"]
        else:
            digest = fs.sha256(info.path) if info.size <= CHECKSUM_MAX_BYTES else None
        out.append({"path": rel, "size": int(info.size), "sha256": digest})
    return sorted(out, key=lambda r: r["path"])


class Attempt:
    """One attempt at writing one stage's output folder (see the module docstring)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.tag = uuid.uuid4().hex[:12]
        self.id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{self.tag}"
        self.keep: frozenset[str] = frozenset()
        self.kept_names: dict[str, str] = {}  # a kept file's untagged relative path -> its tagged one

    def _path(self, name: str) -> str:
        return fs.join(self.out_dir, name)

    def begin(self, keep: Collection[str] = ()) -> None:
        """Take the folder over: the old output stops being complete, its files go (but ``keep``: the files of
        the input groups an earlier attempt committed, :mod:`pipeline.ledger`), the marker names us."""
        self.keep = frozenset(keep)
        self.kept_names = {untagged(rel): rel for rel in self.keep if tag_of(rel)}
        fs.delete([self._path(STATS_FILE)])
        fs.delete_except(self.out_dir, set(keep))
        marker = {"attempt": self.id, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        fs.write_bytes(self._path(ATTEMPT_FILE), json.dumps(marker).encode())

    @contextlib.contextmanager
    def active(self) -> Iterator[Attempt]:
        """While the stage's pipelines are built and run: the writers built meanwhile tag their files with
        this attempt's tag (:func:`attempt_name`)."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    def owns(self, rel: str) -> bool:
        """Whether this attempt's commit lists the file at ``rel`` (relative to the folder): untagged, tagged
        by this attempt, or kept from an earlier one (a committed input-file group's)."""
        tag = tag_of(rel)
        return tag is None or tag == self.tag or rel in self.keep

    def owner(self) -> str | None:
        """The attempt ``_attempt.json`` names now (None when it is gone)."""
        try:
            return json.loads(fs.read_bytes(self._path(ATTEMPT_FILE))).get("attempt")
        except (OSError, ValueError):
            return None

    def check_owner(self) -> None:
        """Raise :class:`CommitError` when another attempt took the folder over, or committed it, since
        :meth:`begin`: checked before this attempt commits anything (a group, the stage)."""
        owner = self.owner()
        if owner != self.id:
            raise CommitError(
                f"{self.out_dir}: another attempt ({owner or 'unknown'}) took this output over while attempt "
                f"{self.id} ran; this one stops without committing, the other one's output stands"
            )
        if fs.exists(self._path(STATS_FILE)):
            raise CommitError(f"{self.out_dir}: committed by another attempt while attempt {self.id} ran")

    def commit(self, stats: dict[str, Any], known: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Write ``stats.json`` (``stats`` plus the attempt and the file list) if this attempt still owns the
        folder; then drop the marker. Returns what was written. ``known``: file records made earlier
        (:func:`file_records`)."""
        self.check_owner()
        record = {**stats, "attempt": self.id, "files": file_records(self.out_dir, self.owns, known)}
        fs.write_bytes(self._path(STATS_FILE), (json.dumps(record, indent=2) + "\n").encode())
        fs.delete([self._path(ATTEMPT_FILE)])
        self._delete_others()
        return record

    def _delete_others(self) -> None:
        """After the commit: the files other attempts tagged (a straggler's, a killed attempt's), which no
        reader takes, go, and on local disk the folders they leave empty (a tagged work folder). One a zombie writes
        later stays until the next attempt begins, unread."""
        files = [relative_path(self.out_dir, f.path) for f in fs.list_files(self.out_dir)]
        mine = {rel for rel in files if self.owns(rel)}
        if len(mine) < len(files):
            fs.delete_except(self.out_dir, mine)


def _check_unchanged(folder: str, files: list[dict[str, Any]], verify: bool = False) -> None:
    """Every committed file is still there with its committed size (one listing of the folder), so a late
    writer that rewrote a file after the commit (a zombie attempt that outlived its successor) is caught
    before anything reads it. ``verify``: and every file with a sha256 in the commit (those up to
    :data:`CHECKSUM_MAX_BYTES`) still has it, for readers of small files (a model, a config, an index) that
    a same-size rewrite must not pass either; off by default, since it reads every such file once more."""
    listed = {relative_path(folder, info.path): info.size for info in fs.list_files(folder)}
    changed = [f["path"] for f in files if listed.get(f["path"]) != f["size"]]
    if verify and not changed:
        changed = [
            f["path"]
            for f in files
            if f.get("sha256") and fs.sha256(fs.join(folder, *f["path"].split("/"))) != f["sha256"]
        ]
    if changed:
        raise AlteredOutput(
            f"{folder}: {len(changed)} committed file(s) missing or changed since the commit "
            f"({', '.join(changed[:3])}): a late writer (an attempt that outlived the one that committed) or a "
            "hand edit; rerun the stage that writes it with --force"
        )


def committed_files(folder: str, verify: bool = False) -> list[str] | None:
    """The files a committed stage folder holds, as paths (from its ``stats.json``), or None for a folder that
    is not a stage output (no ``stats.json``, no marker: a user's folder, listed as it is). An unfinished
    stage folder raises :class:`UnfinishedOutput`, one whose files changed since the commit (sizes; with
    ``verify``, checksums too) :class:`AlteredOutput`; a stage output written before file lists existed gives
    None too."""
    stats = fs.join(folder, STATS_FILE)
    if fs.exists(stats):
        try:
            files = json.loads(fs.read_bytes(stats)).get("files")
        except ValueError as e:
            raise UnfinishedOutput(f"{folder}: its {STATS_FILE} is not valid JSON ({e}); rerun the stage") from e
        if files is None:
            return None
        _check_unchanged(folder, files, verify)
        return [fs.join(folder, *f["path"].split("/")) for f in files]
    if fs.exists(fs.join(folder, ATTEMPT_FILE)):
        raise UnfinishedOutput(
            f"{folder}: an unfinished stage output (an attempt began writing it and never committed: killed, "
            "failed or still running); rerun the stage that writes it"
        )
    return None


def verified(path: str) -> str:
    """``path``, a file directly in a committed stage folder (a model, a tokenizer), checked against that
    folder's commit record, size and sha256, before a reader uses it: a same-size rewrite by a late writer, which
    the size check of :func:`committed_files` passes, is refused too, and so is a file the commit never listed.
    Reading one small file once more costs little beside loading it. A file of a folder that is not a
    committed stage output, a missing one, or one listed without a checksum (over :data:`CHECKSUM_MAX_BYTES`)
    is returned as it is."""
    folder, _, name = path.rpartition("/") if fs.is_url(path) else path.replace(os.sep, "/").rpartition("/")
    stats = fs.join(folder or ".", STATS_FILE)
    try:
        files = json.loads(fs.read_bytes(stats)).get("files") if fs.exists(stats) else None
    except (OSError, ValueError):
        files = None
    if files is None or not fs.exists(path):  # not a stage output; a missing file: the reader says so
        return path
    record = next((f for f in files if f["path"] == name), None)
    if record is None or (record.get("sha256") and fs.sha256(path) != record["sha256"]):
        raise AlteredOutput(
            f"{path}: {'not listed in' if record is None else 'changed since'} its stage's commit "
            f"({STATS_FILE}): a late writer or a hand edit; rerun the stage that writes it with --force"
        )
    return path
