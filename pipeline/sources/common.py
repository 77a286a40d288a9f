"""What every kind of source shares: its error, its name rule, input resolution, the files -> documents
transform, and the helpers that parse a run config's ``sources`` entry into a kind's spec.

The kinds (:mod:`.files`, :mod:`.webtext`, :mod:`.wikipedia`) import from here and never from each other,
so no kind's module depends on another's and none imports back from a module that imports it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import apache_beam as beam

from pipeline import fs
from pipeline.accounting import OUTCOMES, WriteOutcomes
from pipeline.ledger import Group
from pipeline.tables import WriteDocuments, WriteJsonLines, group_output_files
from schemas.config import from_dict

STAGE = "source"  # every kind writes the same stage: a named document table

T = TypeVar("T")


class SourceError(ValueError):
    """The source's inputs or configuration cannot give a sensible source (nothing matched, nothing kept)."""


def check_source_name(name: Any) -> None:
    """A source's name becomes a folder name and the ``source`` column: letters, digits, ``_ - .`` only."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SourceError(f"a source needs a name of letters, digits, '_', '-' or '.', got {name!r}")


def resolve_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """Inputs (files, folders, globs) -> sorted ``(path, key)`` pairs; ``key`` is the id-stable relative name.

    Inputs may be local or object-store URLs (``s3://bucket/texts/*.jsonl``, a prefix): they are expanded
    through :mod:`pipeline.fs` (:func:`pipeline.fs.expand`), as the workers read them. A folder (or prefix)
    contributes every file below it, hidden ones skipped; a glob's key is relative to its non-magic prefix. An
    input that matches nothing is an error: a typo must not become a silently empty source.
    """
    return [(path, key) for path, key, _ in resolve_sized_inputs(inputs)]


def resolve_sized_inputs(inputs: list[str]) -> list[tuple[str, str, int]]:
    """:func:`resolve_inputs` with each file's size from the same listing: ``(path, key, bytes)``, what the
    input-file groups of :mod:`pipeline.ledger` are cut by."""
    out: dict[str, tuple[str, int]] = {}
    for spec in inputs:
        if any(c in spec for c in "*?["):
            prefix = re.split(r"[*?\[]", spec, maxsplit=1)[0]
            base = prefix if prefix.endswith(("/", os.sep)) else os.path.dirname(prefix)
        elif fs.is_dir(spec):
            base = spec
        elif fs.is_file(spec):
            base = os.path.dirname(spec)
        else:
            raise SourceError(f"input {spec!r} does not exist")
        found = fs.expand(spec)
        if not found:
            raise SourceError(f"input {spec!r} matched no files")
        for f in found:
            out.setdefault(f.path, (_relative(f.path, base), f.size))
    return sorted((path, key, size) for path, (key, size) in out.items())


def _relative(path: str, base: str) -> str:
    """``path`` relative to the folder (or URL prefix) ``base`` it was found under."""
    if fs.is_url(path):
        return path[len(base.rstrip("/")) + 1 :]
    return os.path.relpath(path, base or ".")


class ReadToDocuments(beam.PTransform):
    """One input-file group's items (its files, or what ``reader`` takes for each) -> ``reader`` (a DoFn emitting
    document rows, and outcomes tagged ``OUTCOMES``) -> the group's document files in ``out_dir`` (named
    ``group.prefix``, one per :data:`pipeline.tables.DOCUMENT_FILE_BYTES` of its input) and its
    ``outcomes.jsonl`` in ``group.folder(out_dir)`` (:mod:`pipeline.ledger`); the items are spread over the
    workers first. ``extra_files`` maps more of the reader's tags to JSON-lines files written beside the
    outcomes (a failed-files list)."""

    def __init__(
        self, items: list, reader: beam.DoFn, out_dir: str, group: Group, extra_files: dict[str, str] | None = None
    ):
        super().__init__()
        self.items, self.reader, self.out_dir, self.group = items, reader, out_dir, group
        self.extra_files = dict(extra_files or {})

    def expand(self, pbegin):
        g = self.group
        results = (
            pbegin
            | "Files" >> beam.Create(self.items)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(self.reader).with_outputs(OUTCOMES, *self.extra_files, main="documents")
        )
        n_files = group_output_files(g.bytes)
        _ = results.documents | "WriteDocuments" >> WriteDocuments(self.out_dir, n_files, g.prefix)
        _ = results[OUTCOMES] | "WriteOutcomes" >> WriteOutcomes(g.folder(self.out_dir))
        for tag, name in sorted(self.extra_files.items()):
            _ = results[tag] | f"Write {tag}" >> WriteJsonLines(fs.join(g.folder(self.out_dir), name))
        return results.documents


# --------------------------------------------------------------------------------------------------------------
# Parsing a run config's ``sources`` entry (``name -> {kind: K, ...options}``), when the config loads


def take_paths(name: str, kind: str, options: dict[str, Any], key: str, required: bool = True) -> list[str]:
    """Remove ``options[key]``, a list of files / folders / globs, and return it (``[]`` when absent and not
    ``required``). A single string is refused rather than read as a list of its characters."""
    value = options.pop(key, None)
    if value is None or value == []:
        if required:
            raise SourceError(f"source {name!r}: a {kind} source needs {key!r} (a list of files, folders or globs)")
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise SourceError(f"source {name!r}: {key!r} must be a list of files, folders or globs, got {value!r}")
    return list(value)


def source_config(name: str, kind: str, cls: type[T], options: dict[str, Any], own: Sequence[str] = ()) -> T:
    """The kind's config dataclass from a spec's remaining ``options``, named by the spec's key.

    ``own`` are the keys the spec itself took (``paths``, ``from``); they are named in the message for an
    unknown key with ``kind`` and the config's fields. ``name`` is not an option: the key is the name. Bad
    values (a format that does not exist, a check of the config's ``__post_init__``) raise here too.
    """
    fields = [f.name for f in dataclasses.fields(cls) if f.name != "name"]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        known = sorted(["kind", *own, *fields])
        raise SourceError(f"source {name!r}: unknown option(s) {unknown} for kind {kind}; known: {known}")
    try:
        return from_dict(cls, {**options, "name": name})
    except (TypeError, ValueError) as e:
        raise SourceError(f"source {name!r}: {e}") from e


@dataclasses.dataclass(frozen=True)
class PathsSpec:
    """A run config's source that reads only its own ``paths`` (files, dumps); subclasses name the kind and
    its config class. ``resolve`` gives the ``(inputs, config)`` of the kind's run function: the paths
    expanded by the run (the crawl and curate settings are not read)."""

    KIND: ClassVar[str]
    CONFIG: ClassVar[type]

    paths: list[str]
    config: Any

    @classmethod
    def parse(cls, name: str, options: dict[str, Any]) -> PathsSpec:
        paths = take_paths(name, cls.KIND, options, "paths")
        return cls(paths, source_config(name, cls.KIND, cls.CONFIG, options, own=("paths",)))

    def resolve(self, expand: Callable[[list[str]], list[str]], crawl: list[str], curate: Any) -> tuple:
        return expand(self.paths), self.config
