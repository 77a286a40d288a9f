"""Typed configuration shared by every CLI: dataclasses, parsed from YAML text, every field also a flag.

A stage declares a ``@dataclass`` of its options (with defaults and a ``help`` in field metadata); the CLI
turns it into ``--flag`` arguments with :func:`add_dataclass_args` and back with :func:`dataclass_from_args`.
Nested dataclasses become dotted flags (``--filters.min_words``). Lives in ``schemas/`` because ``train/``
uses it too and must not import ``pipeline/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _base_type(tp: Any) -> Any:
    """Strip Optional[...] / X | None to X."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _parse_bool(s: str) -> bool:
    v = s.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one ``--prefix.field`` flag per (nested) dataclass field; defaults stay None (= keep config)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        name = f"{prefix}{f.name}"
        if _is_dataclass_type(tp):
            add_dataclass_args(parser, tp, prefix=f"{name}.")
            continue
        helptext = f.metadata.get("help", "")
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            )
        )
        helptext = f"{helptext} (default: {default!r})" if helptext else f"(default: {default!r})"
        origin = typing.get_origin(tp)
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": helptext}
        if origin in (list, tuple):
            (inner,) = typing.get_args(tp)[:1] or (str,)
            kwargs.update(nargs="*", type=_base_type(inner))
        elif origin is dict:
            kwargs.update(type=yaml.safe_load, metavar="YAML")
        elif tp is bool:
            kwargs.update(type=_parse_bool, metavar="BOOL")
        elif origin is typing.Literal:
            kwargs.update(choices=list(typing.get_args(tp)))
        elif tp in (int, float, str):
            kwargs.update(type=tp)
        else:
            kwargs.update(type=str)
        parser.add_argument(f"--{name}", **kwargs)


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build a (nested) dataclass from a plain dict, rejecting unknown keys with a clear message."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        tp = _base_type(hints[f.name])
        value = data[f.name]
        if _is_dataclass_type(tp) and isinstance(value, dict):
            value = from_dict(tp, value)
        else:
            _check_literal(cls, f.name, hints[f.name], value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_literal(cls: type, name: str, hint: Any, value: Any) -> None:
    """A ``Literal[...]`` field (or ``Literal[...] | None``, which also takes None) must hold one of its values."""
    tp = _base_type(hint)
    if typing.get_origin(tp) is not typing.Literal or value in typing.get_args(tp):
        return
    if value is None and tp is not hint:
        return
    raise ValueError(f"{cls.__name__}.{name}: {value!r} is not one of {list(typing.get_args(tp))}")


def validate_config(config: Any) -> None:
    """Re-check a (nested) config dataclass: its ``Literal`` fields, then its ``__post_init__`` checks.

    The one way configs are validated: each dataclass checks its own values in ``__post_init__`` (run when it
    is built, by YAML, flags or code) and ``Literal`` fields are checked here and in :func:`from_dict`; a
    stage calls this before it fingerprints, so a config changed by ``dataclasses.replace`` or attribute
    assignment is checked too. Dicts (a config plus other fingerprinted values) are searched for dataclasses.
    """
    if isinstance(config, dict):
        for value in config.values():
            validate_config(value)
        return
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        _check_literal(type(config), f.name, hints[f.name], value)
        if dataclasses.is_dataclass(value):
            validate_config(value)
    post_init = getattr(config, "__post_init__", None)
    if post_init is not None:
        post_init()


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def apply_overrides(obj: T, args: argparse.Namespace, prefix: str = "") -> T:
    """Return a copy of ``obj`` with every flag the user gave (non-None) applied."""
    changes = {}
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        name = f"{prefix}{f.name}"
        tp = _base_type(hints[f.name])
        if _is_dataclass_type(tp):
            changes[f.name] = apply_overrides(getattr(obj, f.name), args, prefix=f"{name}.")
        else:
            value = getattr(args, name, None)
            if value is not None:
                changes[f.name] = value
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def parse_yaml(text: str, path: str) -> dict[str, Any]:
    """A config file's text as a mapping (an empty file: ``{}``); ``path`` names it in errors. The caller reads
    the file through its own side's layer (``pipeline.fs``, so a config may be a URL; ``train/`` reads a local
    file): ``schemas/`` does no I/O."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    return data


def dataclass_from_args(cls: type[T], args: argparse.Namespace, config_section: dict[str, Any] | None = None) -> T:
    """Defaults <- YAML section <- flags."""
    return apply_overrides(from_dict(cls, config_section), args)
