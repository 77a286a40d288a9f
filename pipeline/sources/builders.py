"""A run config's ``sources`` section: ``name -> {kind: K, ...options}`` -> typed specs -> the kind's stage.

The table :data:`BUILDERS` maps each kind to its spec dataclass (which parses the YAML options and resolves
them against the run) and its ``run_*`` stage. :func:`parse_sources` runs when the run config loads
(``RunConfig.__post_init__``), so an unknown kind, an unknown option, missing paths or a bad value is an error
that names the source before any stage runs; :func:`run_source_spec` builds one parsed source later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from pipeline.runner import RunnerConfig
from pipeline.sources.common import SourceError, check_source_name
from pipeline.sources.files import FilesSpec, run_source
from pipeline.sources.webtext import WebTextSpec, run_webtext
from pipeline.sources.wikipedia import WikipediaSpec, run_wikipedia
from schemas.stats import StageStats


class SourceKind(NamedTuple):
    spec: type  # ``spec.parse(name, options)`` -> a spec; ``spec.resolve(expand, crawl, curate)`` -> (inputs, cfg)
    run: Callable[..., StageStats]  # ``run(inputs, out_dir, cfg, runner, force=...)``


BUILDERS: dict[str, SourceKind] = {
    "files": SourceKind(FilesSpec, run_source),
    "webtext": SourceKind(WebTextSpec, run_webtext),
    "wikipedia": SourceKind(WikipediaSpec, run_wikipedia),
}
DEFAULT_KIND = "files"  # a source without ``kind`` is local files, as before there were other kinds

SourceSpec = FilesSpec | WebTextSpec | WikipediaSpec
_RUN = {kind.spec: kind.run for kind in BUILDERS.values()}
_SPECS = tuple(_RUN)


def parse_source(name: str, options: dict[str, Any] | None) -> SourceSpec:
    """One ``sources`` entry -> its kind's spec; :class:`SourceError` naming the source when it is malformed."""
    check_source_name(name)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise SourceError(f"source {name!r}: expected a mapping of options, got {options!r}")
    options = dict(options)
    kind = options.pop("kind", DEFAULT_KIND)
    if kind not in BUILDERS:
        raise SourceError(f"source {name!r}: unknown kind {kind!r} ({' | '.join(BUILDERS)})")
    return BUILDERS[kind].spec.parse(name, options)


def parse_sources(sources: dict[str, Any] | None) -> dict[str, SourceSpec]:
    """A run config's ``sources`` (as YAML gives it) -> ``name -> spec``; entries already parsed pass through,
    so parsing again (``dataclasses.replace``, config validation) changes nothing."""
    if sources is None:
        return {}
    if not isinstance(sources, dict):
        raise SourceError(f"sources: expected a mapping of source name -> options, got {sources!r}")
    return {name: spec if isinstance(spec, _SPECS) else parse_source(name, spec) for name, spec in sources.items()}


def run_source_spec(
    spec: SourceSpec,
    out_dir: str,
    runner: RunnerConfig,
    expand: Callable[[list[str]], list[str]],
    crawl: list[str],
    curate: Any,
    force: bool = False,
) -> StageStats:
    """Build one parsed source into ``out_dir`` with its kind's stage. ``expand`` resolves the run's path
    patterns; ``crawl`` and ``curate`` (the run's :class:`pipeline.curate.CurateConfig`) are what a webtext
    source selects from and extracts and filters with."""
    inputs, config = spec.resolve(expand, crawl, curate)
    return _RUN[type(spec)](inputs, out_dir, config, runner, force=force)
