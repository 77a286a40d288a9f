"""Dedup removal rates on the demo's real crawl: the earlier plain settings vs the boilerplate-aware defaults.

Run from the repository root (``bench.run_all`` runs it as ``dedup-crawl``)::

    .venv/bin/python -m bench.dedup_crawl
    .venv/bin/python -m bench.dedup_crawl --config configs/demo.yaml --top 8 --set sample_dir=data/sample

The crawl is the demo's (``configs/demo.yaml``): the WARC files of the sample ``ccgpt sample`` builds from
pinned registry packages (pywb's archives, a CC-MAIN-2014-35 excerpt, pages rebuilt from the Debian and
Python documentation packages). The sample is built into the config's ``sample_dir`` (``data/sample``) from
the download cache ``data/cache`` when it is not there yet (the first build downloads the packages). The
crawl goes through the demo's curate stage (its extractor, language ID and filters; no raw copy) once, then
through the dedup stage twice on Beam's local runner, on the curated crawl alone (before the quality filter
and without the curated sources the demo mixes in, so the figures are the crawl's own):

- ``plain``: the earlier settings (:func:`pipeline.dedup.evaluate.plain_near_config`: full texts, Jaccard
  verification, no boilerplate pass);
- ``default``: the stage's defaults (boilerplate lines counted per URL host, MinHash on each document's core,
  containment verification).

Both at the demo's ``dedup.threshold``. Prints, per setting, the documents read, exact duplicates removed,
near duplicates removed, the share of documents removed, the boilerplate lines found and the share of the
documents' lines they take out of the comparison (each line counted once per document), then the most
frequent boilerplate lines the defaults found (the report's table) and the ratio of near-duplicates removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def curated_crawl(config: str, overrides: list[str], work: str) -> tuple[str, int, float]:
    """The demo's crawl curated into ``work``: (folder, documents kept, seconds)."""
    from pipeline.curate import run_curate
    from pipeline.run import expand_paths, load_run_config
    from pipeline.sample import build_sample

    cfg = load_run_config(config, overrides)
    if not os.path.isdir(cfg.sample_dir):
        build_sample(cfg.sample_dir, cfg.sample)
    out = os.path.join(work, "curate")
    curate = dataclasses.replace(cfg.curate, write_raw=False)
    t = time.perf_counter()
    stats = run_curate(expand_paths(cfg.crawl, cfg), out, curate, cfg.runner, force=True)
    return out, stats.kept, time.perf_counter() - t


def dedup_row(settings: str, folder: str, work: str, config: str, overrides: list[str]) -> dict:
    """One dedup run of the curated crawl with ``settings`` ("plain" or "default"), summarised."""
    from pipeline.dedup import run_dedup
    from pipeline.dedup.evaluate import plain_near_config
    from pipeline.run import load_run_config

    cfg = load_run_config(config, overrides)
    dedup = cfg.dedup
    if settings == "plain":
        dedup = dataclasses.replace(dedup, near=plain_near_config())
    t = time.perf_counter()
    stats = run_dedup([folder], os.path.join(work, f"dedup-{settings}"), dedup, cfg.runner, force=True)
    bp = stats.extra["boilerplate"]
    return {
        "settings": settings,
        "read": stats.read,
        "exact": stats.dropped.get("exact_duplicate", 0),
        "near": stats.dropped.get("near_duplicate", 0),
        "removed_share": (stats.read - stats.kept) / stats.read if stats.read else 0.0,
        "boilerplate_lines": bp["lines"],
        "template_share": bp["removed_share"],
        "top_lines": bp["top_lines"],
        "seconds": time.perf_counter() - t,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run-config override")
    ap.add_argument("--top", type=int, default=10, help="most frequent boilerplate lines to print")
    args = ap.parse_args(argv)
    os.chdir(REPO)  # the config's paths are relative to the repository root
    with tempfile.TemporaryDirectory(prefix="ccgpt-bench-dedup-crawl-") as work:
        folder, kept, seconds = curated_crawl(args.config, args.set, work)
        print(f"# the demo crawl ({os.path.relpath(args.config, REPO)}), curated: {kept} documents in {seconds:.1f} s")
        rows = [dedup_row(s, folder, work, args.config, args.set) for s in ("plain", "default")]
    print()
    print(
        "| settings | documents | exact removed | near removed | removed share | boilerplate lines "
        "| template-line share | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['settings']} | {r['read']} | {r['exact']} | {r['near']} | {r['removed_share']:.2%} "
            f"| {r['boilerplate_lines']} | {r['template_share']:.2%} | {r['seconds']:.1f} |"
        )
    top = rows[1]["top_lines"][: args.top]
    if top:
        print()
        print("Most frequent boilerplate lines (default settings): documents holding the line (its host), the line")
        print()
        for item in top:
            text = item["text"] if len(item["text"]) <= 100 else item["text"][:100] + "…"
            print(f"- {item['docs']} ({item['group'] or '-'}): {text!r}")
    plain, default = rows[0]["near"], rows[1]["near"]
    if plain:
        print(f"\nnear duplicates removed, default / plain: {default / plain:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
