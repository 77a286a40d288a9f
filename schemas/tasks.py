"""Evaluation task files: small declarative YAML files that name a benchmark's data and how it is scored.

One file per task (``schemas/task_files/<name>.yaml``, or any path), read by ``ccgpt eval`` (``train/eval/``) to
score a model and by ``ccgpt decontam --tasks`` (``pipeline/decontam.py``) to cut the same text out of the
training data, so what is evaluated is what was removed. It lives in ``schemas/`` because both halves read
it and ``train/`` never imports ``pipeline/``. Parsing and validation only, from text: ``schemas/`` does no
I/O, so each side reads the task files and their data through its own code (:mod:`train.tasks`: local files,
and the one place the shipped task files are found in the installed package; :mod:`pipeline.benchmarks`:
:mod:`pipeline.fs`, so a task file or its data may be a URL), and both hand the bytes here.

Schema, version 1 (unknown keys are errors, so a typo cannot silently change a task)::

    version: 1                      # this schema's version
    name: blimp                     # [A-Za-z0-9_.-]+; results and benchmark names use it
    description: ...                # optional, free text
    format: minimal_pairs           # minimal_pairs | multiple_choice | rolling_perplexity
    data:
      path: eval/blimp.tar.gz       # relative to the data root (or absolute); .gz and .tar(.gz) read in place
      members: [data/*.jsonl]       # archives: member globs; each member is one subtask (<name>_<stem>)
      format: jsonl                 # jsonl | text (default: from the file name)
      split: wikitext_articles      # text files: one document per top-level " = Title = " heading
    fields: {good: sentence_good, bad: sentence_bad}   # record fields, per format (below)
    group_by: field                 # optional: accuracy also per value of this record field
    preprocess: wikitext_detokenize # optional, rolling_perplexity: text transform before scoring
    target_delimiter: " "           # optional, default " ": between context and a choice / before a sentence
    metrics: [acc]                  # optional: a subset of the format's metrics (default: all of them)

Formats and their ``fields``:

* ``minimal_pairs`` (``good``, ``bad``): a pair is right when the good sentence is at least as likely as the
  bad one (lm-eval's BLiMP: both scored as ``target_delimiter + sentence`` after the end-of-text token).
  Metric ``acc``.
* ``multiple_choice`` (``context``, ``choices``: a list field, ``label``: the right choice's index or text):
  each choice is scored as ``target_delimiter + choice`` after the context. Metrics ``acc`` (highest total
  log-probability) and ``acc_norm`` (highest log-probability per character of the choice, what HellaSwag-style
  tasks report), as lm-eval defines them.
* ``rolling_perplexity`` (``text`` for JSONL; a text file is one document, or many with ``split``): the whole
  document's log-likelihood. Metrics ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte``; words
  and bytes are counted on the document *before* ``preprocess`` (lm-eval's WikiText convention, so numbers
  compare with published ones).

Zero-shot only: a task has no few-shot examples.

The data root is, in order: the ``--data-root`` flag, ``$CCGPT_DATA_ROOT``, ``../shared/data`` beside the
repository (:func:`train.tasks.resolve_data_root`).
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

TASK_SCHEMA_VERSION = 1
DATA_ROOT_ENV = "CCGPT_DATA_ROOT"

MINIMAL_PAIRS = "minimal_pairs"
MULTIPLE_CHOICE = "multiple_choice"
ROLLING = "rolling_perplexity"
METRICS = {
    MINIMAL_PAIRS: ("acc",),
    MULTIPLE_CHOICE: ("acc", "acc_norm"),
    ROLLING: ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
FIELDS = {  # required record fields per format (rolling: only for JSONL data)
    MINIMAL_PAIRS: ("good", "bad"),
    MULTIPLE_CHOICE: ("context", "choices", "label"),
    ROLLING: ("text",),
}
SPLITS = ("wikitext_articles",)
PREPROCESS = ("wikitext_detokenize",)
_KEYS = {
    "version",
    "name",
    "description",
    "format",
    "data",
    "fields",
    "group_by",
    "preprocess",
    "target_delimiter",
    "metrics",
}
_DATA_KEYS = {"path", "members", "format", "split"}
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class TaskError(ValueError):
    """A task file that is missing or malformed, data that cannot be read, or a task without examples."""


@dataclass(frozen=True)
class DataSpec:
    path: str
    members: tuple[str, ...] = ()
    format: str = "jsonl"
    split: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A parsed, validated task file; ``source`` is the file it came from."""

    name: str
    format: str
    data: DataSpec
    fields: dict[str, str]
    metrics: tuple[str, ...]
    source: str
    version: int = TASK_SCHEMA_VERSION
    description: str = ""
    group_by: str | None = None
    preprocess: str | None = None
    target_delimiter: str = " "

    def data_path(self, data_root: str) -> str:
        """The data file under a resolved data root (an absolute ``data.path`` stands alone): path strings
        joined, nothing read."""
        return posixpath.join(data_root, self.data.path)

    def to_dict(self) -> dict[str, Any]:
        """The task as written (for results files and fingerprints)."""
        d: dict[str, Any] = {
            "version": self.version,
            "name": self.name,
            "format": self.format,
            "data": {k: v for k, v in vars(self.data).items() if v not in (None, ())},
            "fields": dict(self.fields),
            "metrics": list(self.metrics),
            "target_delimiter": self.target_delimiter,
        }
        if isinstance(d["data"].get("members"), tuple):
            d["data"]["members"] = list(d["data"]["members"])
        for key in ("description", "group_by", "preprocess"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d


# ----------------------------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class MinimalPair:
    good: str
    bad: str
    group: str | None = None


@dataclass(frozen=True)
class MultipleChoice:
    context: str
    choices: tuple[str, ...]
    label: int
    group: str | None = None


@dataclass(frozen=True)
class Document:
    text: str  # what is scored (after ``preprocess``)
    words: int  # counted on the original text, as lm-eval does for WikiText
    bytes: int


Example = MinimalPair | MultipleChoice | Document


@dataclass
class Subtask:
    """The examples of one data file or archive member: ``name`` is the task's, or ``<task>_<member stem>``."""

    name: str
    examples: list[Example] = field(default_factory=list)
    total: int = 0  # examples in the data before ``limit``


# ----------------------------------------------------------------------------------------------- loading
# Each side reads the files (train.tasks, pipeline.benchmarks); the rules and the errors they raise are worded
# once, here, so both readers resolve a task and fail alike.
def is_task_path(spec: str) -> bool:
    """A task file's path (``x.yaml``, ``dir/x``), not a shipped task's name (``blimp``)."""
    return spec.endswith((".yaml", ".yml")) or "/" in spec


def missing_task_file(path: str) -> TaskError:
    return TaskError(f"task file {path!r} does not exist")


def unknown_task(name: str, path: str, shipped: list[str]) -> TaskError:
    return TaskError(
        f"unknown task {name!r}: no {path}; shipped tasks: {', '.join(shipped) or 'none'} (or give a task file's path)"
    )


@dataclass
class EvalConfig:
    """``ccgpt run``'s eval stage: the trained model and its initialisation on a bounded subset of tasks."""

    tasks: list[str] = field(
        default_factory=list,
        metadata={"help": "tasks scored after training (shipped names or task files); none: no eval stage"},
    )
    limit: int = field(
        default=0, metadata={"help": "examples per task or subtask (per BLiMP paradigm, WikiText articles); 0 = all"}
    )
    data_root: str = field(
        default="", metadata={"help": "where task data paths start (default $CCGPT_DATA_ROOT or ../shared/data)"}
    )
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1'"})

    def __post_init__(self) -> None:
        self.tasks = split_task_list(self.tasks)
        if self.limit < 0:
            raise ValueError(f"eval.limit must be >= 0 (0 = all), got {self.limit}")


def split_task_list(specs: list[str] | str) -> list[str]:
    """``["blimp,wikitext2", "x.yaml"]`` -> ``["blimp", "wikitext2", "x.yaml"]``."""
    items = [specs] if isinstance(specs, str) else list(specs)
    return [s.strip() for item in items for s in item.split(",") if s.strip()]


def _require(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise TaskError(f"{path}: {message}")


def parse_task(raw: Any, path: str) -> TaskSpec:
    """Validate a task file's mapping; every problem is a :class:`TaskError` naming the file."""
    _require(isinstance(raw, dict), path, "a task file must be a YAML mapping")
    unknown = sorted(set(raw) - _KEYS)
    _require(not unknown, path, f"unknown key(s) {unknown}; a task file has {sorted(_KEYS)}")
    _require(
        raw.get("version") == TASK_SCHEMA_VERSION,
        path,
        f"version must be {TASK_SCHEMA_VERSION} (this ccgpt reads task schema {TASK_SCHEMA_VERSION}), got "
        f"{raw.get('version')!r}",
    )
    name = raw.get("name")
    _require(isinstance(name, str) and bool(_NAME.fullmatch(name)), path, f"name must match [A-Za-z0-9_.-]+: {name!r}")
    fmt = raw.get("format")
    _require(fmt in METRICS, path, f"format must be one of {sorted(METRICS)}, got {fmt!r}")
    data = raw.get("data")
    _require(isinstance(data, dict) and isinstance(data.get("path"), str), path, "data.path is required")
    unknown = sorted(set(data) - _DATA_KEYS)
    _require(not unknown, path, f"unknown data key(s) {unknown}; data has {sorted(_DATA_KEYS)}")
    members = data.get("members") or ()
    members = (members,) if isinstance(members, str) else tuple(members)
    _require(all(isinstance(m, str) for m in members), path, "data.members must be a glob or a list of globs")
    base = data["path"].removesuffix(".gz")
    default_fmt = "jsonl" if members or base.endswith((".jsonl", ".ndjson", ".tar")) else "text"
    data_fmt = data.get("format", default_fmt)
    _require(data_fmt in ("jsonl", "text"), path, f"data.format must be jsonl or text, got {data_fmt!r}")
    split = data.get("split")
    _require(split is None or split in SPLITS, path, f"data.split must be one of {list(SPLITS)}, got {split!r}")
    _require(split is None or data_fmt == "text", path, "data.split applies to text files only")
    _require(data_fmt == "jsonl" or fmt == ROLLING, path, f"format {fmt} reads JSONL records (data.format: jsonl)")
    fields = raw.get("fields") or {}
    _require(
        isinstance(fields, dict) and all(isinstance(v, str) for v in fields.values()),
        path,
        "fields must map names to record fields",
    )
    needed = FIELDS[fmt] if data_fmt == "jsonl" else ()
    missing = [f for f in needed if f not in fields]
    _require(not missing, path, f"format {fmt} needs fields {list(needed)}; missing {missing}")
    extra = sorted(set(fields) - set(FIELDS[fmt]))
    _require(not extra, path, f"format {fmt} has fields {list(FIELDS[fmt])}; unknown {extra}")
    metrics = raw.get("metrics") or list(METRICS[fmt])
    bad = [m for m in metrics if m not in METRICS[fmt]]
    _require(not bad, path, f"format {fmt} reports {list(METRICS[fmt])}; unknown metric(s) {bad}")
    group_by = raw.get("group_by")
    _require(group_by is None or (isinstance(group_by, str) and fmt != ROLLING), path, "group_by: a record field")
    preprocess = raw.get("preprocess")
    _require(
        preprocess is None or (preprocess in PREPROCESS and fmt == ROLLING),
        path,
        f"preprocess must be one of {list(PREPROCESS)} (rolling_perplexity only), got {preprocess!r}",
    )
    delimiter = raw.get("target_delimiter", " ")
    _require(isinstance(delimiter, str), path, "target_delimiter must be a string")
    description = raw.get("description", "")
    return TaskSpec(
        name=name,
        format=fmt,
        data=DataSpec(path=data["path"], members=members, format=data_fmt, split=split),
        fields=dict(fields),
        metrics=tuple(metrics),
        source=path,
        description=str(description or "").strip(),
        group_by=group_by,
        preprocess=preprocess,
        target_delimiter=delimiter,
    )


def parse_task_text(text: str, path: str) -> TaskSpec:
    """A task file's text (read by the caller, from ``path``) parsed and validated."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TaskError(f"{path}: not valid YAML ({e})") from None
    return parse_task(raw, path)


def check_task_list(tasks: list[TaskSpec]) -> list[TaskSpec]:
    """The tasks of one run: at least one, no name twice."""
    if not tasks:
        raise TaskError("no task given")
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TaskError(f"task name(s) {dupes} given twice")
    return tasks


# ----------------------------------------------------------------------------------------------- examples
def _stem(member: str) -> str:
    name = member.rpartition("/")[2]  # an archive member's name: "/"-separated on every system
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".txt"):
        name = name.removesuffix(suffix)
    return name


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise TaskError(f"limit must be >= 1, got {limit}")


def missing_data(task: TaskSpec, path: str, data_root: str) -> TaskError:
    return TaskError(
        f"{task.source}: data file {path} not found (data root {data_root}; set it with --data-root or "
        f"${DATA_ROOT_ENV})"
    )


def not_an_archive(task: TaskSpec, path: str, error: Exception) -> TaskError:
    return TaskError(f"{task.source}: data.members given but {path} is not a tar archive ({error})")


def data_text(path: str, raw: bytes) -> str:
    """A data file's bytes as text (``.gz`` decompressed)."""
    return (gzip.decompress(raw) if path.endswith(".gz") else raw).decode("utf-8")


def member_wanted(task: TaskSpec, name: str) -> bool:
    """Whether the archive member ``name`` is one of the task's subtasks (``data.members`` globs)."""
    return any(fnmatch.fnmatch(name, p) for p in task.data.members)


def member_texts(task: TaskSpec, path: str, found: dict[str, str]) -> list[tuple[str, str]]:
    """``(subtask name, text)`` per wanted member of the archive at ``path`` (``found``: member name -> text,
    read by the caller in one sequential pass), sorted by member name; every glob must match a member."""
    for pattern in task.data.members:
        if not fnmatch.filter(found, pattern):
            raise TaskError(f"{task.source}: no member of {path} matches {pattern!r}")
    return [(f"{task.name}_{_stem(member)}", found[member]) for member in sorted(found)]


def split_wikitext_articles(text: str) -> list[str]:
    """WikiText's articles: each starts at a top-level heading line `` = Title = `` (not `` = = Section = = ``).

    An article is its heading line and every line up to the next heading, joined with newlines as they were;
    text before the first heading (the file's leading blank line) belongs to no article.
    """
    heading = re.compile(r" = [^=].* = ")
    out: list[list[str]] = []
    for line in text.split("\n"):
        if heading.fullmatch(line):
            out.append([])
        if out:
            out[-1].append(line)
    return ["\n".join(lines) for lines in out]


def wikitext_detokenize(string: str) -> str:
    """Undo WikiText's tokenisation (``@-@``, spaces before punctuation): lm-eval 0.4.13's
    ``wikitext_detokenizer``, step for step, so perplexities compare with lm-eval's."""
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for p in (":", ";", ".", "!", "?", ","):
        string = string.replace(f" {p} ", f"{p} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n").replace("\n ", "\n")
    string = string.replace(" N ", " 1 ").replace(" 's", "'s")
    return string


def _document(task: TaskSpec, original: str) -> Document:
    text = wikitext_detokenize(original) if task.preprocess == "wikitext_detokenize" else original
    return Document(text=text, words=len(re.split(r"\s+", original)), bytes=len(original.encode("utf-8")))


def _field(task: TaskSpec, rec: dict[str, Any], key: str, where: str) -> Any:
    name = task.fields[key]
    if name not in rec:
        raise TaskError(f"{where}: record has no field {name!r} (fields.{key} of {task.source})")
    return rec[name]


def _record_example(task: TaskSpec, rec: Any, where: str) -> Example:
    if not isinstance(rec, dict):
        raise TaskError(f"{where}: a record must be a JSON object")
    group = None
    if task.group_by is not None:
        if task.group_by not in rec:
            raise TaskError(f"{where}: record has no field {task.group_by!r} (group_by of {task.source})")
        group = str(rec[task.group_by])
    if task.format == MINIMAL_PAIRS:
        good, bad = _field(task, rec, "good", where), _field(task, rec, "bad", where)
        if not (isinstance(good, str) and isinstance(bad, str)):
            raise TaskError(f"{where}: the good and bad sentences must be strings")
        return MinimalPair(good, bad, group)
    if task.format == MULTIPLE_CHOICE:
        context, choices = _field(task, rec, "context", where), _field(task, rec, "choices", where)
        label = _field(task, rec, "label", where)
        if not isinstance(context, str) or not isinstance(choices, list) or len(choices) < 2:
            raise TaskError(f"{where}: the context must be a string and choices a list of at least two strings")
        if not all(isinstance(c, str) for c in choices):
            raise TaskError(f"{where}: every choice must be a string")
        if isinstance(label, str) and label in choices:
            label = choices.index(label)
        elif isinstance(label, str) and label.strip().isdigit():
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
            raise TaskError(f"{where}: label {label!r} is neither a choice's index nor one of the choices")
        return MultipleChoice(context, tuple(choices), label, group)
    text = _field(task, rec, "text", where)
    if not isinstance(text, str):
        raise TaskError(f"{where}: the text field must be a string")
    return _document(task, text)


def _examples(task: TaskSpec, name: str, text: str, limit: int | None) -> tuple[list[Example], int]:
    """The first ``limit`` examples (all: ``None``) and how many the data holds (records past the limit are
    counted, not parsed)."""
    if task.data.format == "text":
        docs = split_wikitext_articles(text) if task.data.split == "wikitext_articles" else [text]
        docs = [d for d in docs if d.strip()]
        return [_document(task, d) for d in docs[:limit]], len(docs)
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    out: list[Example] = []
    for i, line in lines[:limit]:
        where = f"{task.data.path} ({name}) line {i}"
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise TaskError(f"{where}: not JSON ({e})") from None
        out.append(_record_example(task, rec, where))
    return out, len(lines)


def subtasks(task: TaskSpec, texts: Iterable[tuple[str, str]], path: str, limit: int | None) -> list[Subtask]:
    """The task's examples per subtask, in file order, from ``(subtask name, text)`` pairs read from the data
    file ``path`` (the whole file, or one per archive member); ``limit``: at most that many per subtask.

    Raises :class:`TaskError` for malformed records and a subtask with no example.
    """
    out = []
    for name, text in texts:
        examples, total = _examples(task, name, text, limit)
        if not examples:
            raise TaskError(f"{task.source}: {name} has no examples in {path}")
        out.append(Subtask(name, examples, total))
    return out


def benchmark_texts(task: TaskSpec, example: Example) -> tuple[str, ...]:
    """The text a training document must not contain, per example (what decontamination cuts).

    Minimal pairs: both sentences. Multiple choice: the context followed by each choice, as scored. Rolling
    perplexity: the scored document.
    """
    if isinstance(example, MinimalPair):
        return (example.good, example.bad)
    if isinstance(example, MultipleChoice):
        return tuple(example.context + task.target_delimiter + c for c in example.choices)
    return (example.text,)
