"""Resume by work unit: a stage that reads many files commits its output one input-file group at a time.

Why: a stage is otherwise one unit of commit, so a curate killed at 99 % of a crawl would redo 100 %. Curate
and every kind of source (files, wikipedia, webtext) split their expanded input files into groups and commit
each group on its own, in a progress ledger; a rerun after a kill reads none of the committed groups again.

**Groups** (:func:`plan_groups`): the expanded input files, sorted by path, cut greedily: a group takes the next
file while its bytes stay within the budget (``group_bytes`` in the stage's config; a file larger than the
budget is a group of its own). The plan depends only on the input files and the budget, so an uninterrupted
run and a resumed one, on any runner and any number of workers, make the same groups, and so the same files.
Group ids are ``g00000``, ``g00001``, ... in plan order.

**A prepared unit** (webtext's URL list, ``url_list``: :mod:`pipeline.sources.url_list`): an input every group
reads, prepared once per stage run by a pipeline of its own before the groups, is a :class:`Group` too (its
``(path, bytes)`` input files, its side-file folder, its record), committed in the ledger as a group is, so a
rerun keeps it and does not prepare it again; the groups read its files by their untagged names
(``pipeline.commit.committed_file``).

**Layout** in the stage's folder ``OUT``::

    OUT/documents-<gid>-<k>-of-<n>.attempt-<tag>.parquet
                                             the group's document files (k of n: pipeline.tables.WriteDocuments;
                                             tagged by the attempt that wrote them: pipeline.commit)
    OUT/raw/documents-<gid>-...parquet       curate: the group's share of the raw crawl sample
    OUT/groups/<gid>/outcomes.attempt-<tag>.jsonl, ...
                                             the group's side files: what the stage writes for all its input
                                             (outcomes, counters, examples, failed files), for this group only,
                                             tagged by the attempt that wrote them, as every side file is
    OUT/groups/<gid>.json                    the group's commit record: its ledger entry, written last
    OUT/groups/url_list/..., url_list.json   webtext's prepared unit: its files and its record

**The ledger** is the set of ``OUT/groups/<gid>.json`` records. A record is one JSON object::

    {"group": "g00003", "fingerprint": "<the stage's fingerprint>", "attempt": "<the attempt that wrote it>",
     "inputs": [["<path>", <bytes>], ...], "bytes": <their sum>,
     "outcomes": {"kept": <n>, "dropped:<reason>": <n>, ...},
     "files": [{"path": "<relative to OUT>", "size": <bytes>, "sha256": "<hex>" | null}, ...]}

``files`` lists every file the group wrote, with sizes and (up to ``pipeline.commit.CHECKSUM_MAX_BYTES``)
checksums, as ``stats.json`` does for a stage. A group counts as committed when its record exists, names the
stage's current fingerprint (inputs + config + code: a change of any invalidates every record) and the group's
planned inputs, and every file it lists is still there with its size. ``force`` ignores the ledger.

**The run** (:meth:`pipeline.stage.Stage.run_groups`): the attempt takes ``OUT`` over keeping the committed
groups' files and records only (a killed attempt's leftovers of an uncommitted group go); the prepared unit,
if any and not committed, runs and commits first; the pending groups run, ``runner.groups_per_wave`` per Beam
pipeline (a batch pipeline's shuffles are barriers, so a group inside one pipeline could not commit before the
pipeline ends), and each group's record is written once its pipeline has ended. After the last group, the
groups' (and the prepared unit's) side files are merged into the stage's own (:func:`merge_side_files`:
outcomes and counters summed, failed files and other lines concatenated in group order, per reason the first
examples of all groups' firsts; each group's files found by their untagged names,
``pipeline.commit.committed_file``, the merged ones tagged by this attempt), and ``stats.json`` is written last,
listing every group's files: a reader never sees a partial group, and sees all of them. A rerun after a kill
costs the groups of the wave that was running.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pipeline import fs
from pipeline.commit import Attempt, attempt_name, committed_file, file_records, relative_path

GROUPS = "groups"
OUTCOMES_FILE = "outcomes.jsonl"
DEFAULT_GROUP_BYTES = 8 << 30  # eight Common Crawl WARC files: a kill costs at most about that much reading


@dataclass(frozen=True)
class Group:
    """One input-file group: its id and its ``(path, bytes)`` inputs, in path order."""

    id: str
    inputs: tuple[tuple[str, int], ...]

    @property
    def files(self) -> list[str]:
        return [path for path, _ in self.inputs]

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.inputs)

    @property
    def prefix(self) -> str:
        """The name its document files start with (``WriteDocuments``' ``prefix``)."""
        return f"documents-{self.id}"

    def folder(self, out_dir: str) -> str:
        """Where its side files go: ``OUT/groups/<gid>``."""
        return fs.join(out_dir, GROUPS, self.id)

    def record_path(self, out_dir: str) -> str:
        return fs.join(out_dir, GROUPS, f"{self.id}.json")


def plan_groups(inputs: Iterable[tuple[str, int]], budget: int) -> list[Group]:
    """``(path, bytes)`` input files -> groups of consecutive files (by path) of at most ``budget`` bytes each."""
    if budget <= 0:
        raise ValueError(f"group_bytes must be positive, got {budget}")
    groups: list[list[tuple[str, int]]] = []
    size = 0
    for path, n in sorted(dict(inputs).items()):
        if not groups or size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append((path, int(n)))
        size += n
    return [Group(f"g{i:05d}", tuple(files)) for i, files in enumerate(groups)]


def _read_record(path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.read_bytes(path)) if fs.exists(path) else None
    except (OSError, ValueError):
        return None


def committed_groups(out_dir: str, groups: list[Group], fingerprint: str) -> dict[str, dict[str, Any]]:
    """The records of the ``groups`` an earlier attempt committed for this ``fingerprint`` whose files are all
    still there with their sizes (one listing of ``out_dir``), by group id."""
    listed = {relative_path(out_dir, info.path): info.size for info in fs.list_files(out_dir)}  # none: no folder
    done = {}
    for g in groups:
        if f"{GROUPS}/{g.id}.json" not in listed:
            continue
        record = _read_record(g.record_path(out_dir))
        if (
            record is not None
            and record.get("fingerprint") == fingerprint
            and record.get("group") == g.id
            and [tuple(i) for i in record.get("inputs", [])] == list(g.inputs)
            and all(listed.get(f["path"]) == f["size"] for f in record.get("files", []))
        ):
            done[g.id] = record
    return done


def kept_paths(records: Iterable[dict[str, Any]]) -> set[str]:
    """What a new attempt keeps of ``OUT``: the committed groups' files and records (relative paths)."""
    keep = set()
    for record in records:
        keep.add(f"{GROUPS}/{record['group']}.json")
        keep.update(f["path"] for f in record["files"])
    return keep


def _sums(path: str, key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    path = committed_file(path)  # this attempt's file, or the one a kept group's committed attempt tagged
    if fs.exists(path):
        for line in fs.read_lines(path):
            if line.strip():
                row = json.loads(line)
                out[row[key]] = out.get(row[key], 0) + int(row["n"])
    return out


def commit_group(out_dir: str, group: Group, fingerprint: str, attempt: Attempt, tables: Iterable[str]) -> dict:
    """Write ``group``'s ledger record, last: its outcomes and every file it wrote (its document files in each
    of the stage's ``tables`` folders, relative to ``OUT``, tagged by ``attempt``, and its side-file folder),
    with sizes and checksums. Another attempt's file of the same group (a straggler's) is not listed."""
    mine = {posixpath.join(t, group.prefix + "-") if t else group.prefix + "-" for t in tables}
    side = f"{GROUPS}/{group.id}/"

    def listed(rel: str) -> bool:
        return (rel.startswith(side) or any(rel.startswith(m) for m in mine)) and attempt.owns(rel)

    files = file_records(out_dir, listed)
    record = {
        "group": group.id,
        "fingerprint": fingerprint,
        "attempt": attempt.id,
        "inputs": [list(i) for i in group.inputs],
        "bytes": group.bytes,
        "outcomes": dict(sorted(_sums(fs.join(group.folder(out_dir), OUTCOMES_FILE), "outcome").items())),
        "files": files,
    }
    fs.write_bytes(group.record_path(out_dir), (json.dumps(record, indent=1) + "\n").encode())
    return record


def example_order(example: dict[str, Any]) -> tuple[str, str]:
    """The order examples are chosen in (``pipeline.tables.WriteExamples``), per group and over all groups."""
    return example.get("url") or "", example.get("text") or ""


@dataclass(frozen=True)
class SideFile:
    """A side file every group writes (path relative to its group folder) and how the stage's one file is made:

    ``sum``: JSON lines ``{key: name, "n": count}`` summed by ``key`` (outcomes, counters); ``lines``: every
    group's lines, in group order, sorted within a group (failed files); ``unique``: the distinct lines, sorted
    (webtext's matched URL keys); ``examples``: ``{"reason", "url", "text"}`` lines, per reason the first
    ``per_reason`` by url and text (each group wrote its first that many, :func:`example_order`). A file only
    the prepared unit writes (webtext's URL-list outcomes) is merged from it alone: the groups have none.
    """

    name: str
    merge: Literal["sum", "lines", "unique", "examples"]
    key: str = ""
    per_reason: int = 0


def _lines(path: str) -> list[str]:
    path = committed_file(path)
    return [line for line in fs.read_lines(path) if line.strip()] if fs.exists(path) else []


def merge_side_files(out_dir: str, groups: list[Group], side_files: Iterable[SideFile]) -> None:
    """Each of ``side_files`` (and ``outcomes.jsonl``) of every group -> one file in ``out_dir`` (see
    :class:`SideFile`), as an uninterrupted run would write it whichever groups ran in which attempt."""
    for side in (SideFile(OUTCOMES_FILE, "sum", "outcome"), *side_files):
        parts = [fs.join(g.folder(out_dir), *side.name.split("/")) for g in groups]
        if side.merge == "sum":
            totals: dict[str, int] = {}
            for part in parts:
                for k, n in _sums(part, side.key).items():
                    totals[k] = totals.get(k, 0) + n
            lines = [json.dumps({side.key: k, "n": n}, sort_keys=True) for k, n in sorted(totals.items())]
        elif side.merge == "lines":  # sorted within a group: a group's file is in its workers' arrival order
            lines = [line for part in parts for line in sorted(_lines(part))]
        elif side.merge == "unique":
            lines = sorted({line for part in parts for line in _lines(part)})
        else:  # examples
            by_reason: dict[str, list[dict[str, Any]]] = {}
            for line in sorted({line for part in parts for line in _lines(part)}):
                ex = json.loads(line)
                by_reason.setdefault(ex.get("reason") or "", []).append(ex)
            lines = [
                json.dumps(ex, ensure_ascii=False, sort_keys=True)
                for reason in sorted(by_reason)
                for ex in sorted(by_reason[reason], key=example_order)[: side.per_reason]
            ]
        merged = attempt_name(fs.join(out_dir, *side.name.split("/")))
        fs.write_bytes(merged, "".join(line + "\n" for line in lines).encode())
