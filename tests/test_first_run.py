"""A new user's first run, through the ``ccgpt`` command as they would type it: ``ccgpt run`` on the tiny config.

One run (module fixture) is checked for what the user sees: only ccgpt's own lines on the terminal, a report
that opens in a real browser (headless Chromium) with no console error and every image loaded, and a report
that reads well (the funnel overview, languages, rounded numbers, one line for what is missing). Then
``ccgpt run --force`` must recompute every stage: each stage's ``stats.json`` is written again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from conftest import TINY_STAGE_FOLDERS, _tiny_config, make_tiny_inputs, run_ccgpt, third_party_info

from pipeline.report import fmt

STAGE_FOLDERS = TINY_STAGE_FOLDERS
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Injected at the top of a copy of the report: collects uncaught errors, failed loads (an <img> that fails fires
# an error event, seen in the capture phase) and console.error / console.warn calls; after the load event it
# writes them, with every image that did not decode, into the DOM that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => __errors.push(
  e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?').slice(0, 80))), true);
window.addEventListener('unhandledrejection', e => __errors.push('unhandled rejection: ' + e.reason));
for (const level of ['error', 'warn']) {
  const orig = console[level];
  console[level] = (...a) => { __errors.push(level + ': ' + a.join(' ')); orig.apply(console, a); };
}
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60));
  const out = document.createElement('pre');
  out.id = '__check';
  out.textContent = JSON.stringify({errors: __errors, images: images.length, broken: broken});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def first_run(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("first-run")
    config = d / "tiny.yaml"
    config.write_text(yaml.safe_dump(_tiny_config(make_tiny_inputs(shared_data, d / "inputs"), str(d / "run"))))
    res = run_ccgpt("run", str(config))
    assert res.returncode == 0, res.stderr[-3000:]
    return {"config": str(config), "out": str(d / "run"), "result": res}


def browser_check(html_path: str, tmp_path) -> dict:
    """Open a copy of ``html_path`` with the probe in headless Chromium; the probe's findings."""
    chromium = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    assert chromium, "no Chromium"
    with open(html_path, encoding="utf-8") as fh:
        page = fh.read()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="__check">(.*?)</pre>', res.stdout, re.S)
    assert found, f"Chromium printed no check (exit {res.returncode}): {res.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture
def chromium(unavailable):
    if not any(shutil.which(n) for n in CHROMIUM_NAMES):
        unavailable("Chromium not found (`make test` installs Debian's `chromium` when run as root with apt-get)")


@pytest.mark.slow
def test_run_prints_only_ccgpt_lines(first_run):
    res = first_run["result"]
    assert third_party_info(res.stdout + res.stderr) == []
    assert "=== ccgpt run summary ===" in res.stdout and "report:" in res.stdout


def test_the_browser_check_sees_broken_images_and_errors(chromium, tmp_path):
    """The check itself: a page with a broken image and a script error fails it."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'></head><body>"
        '<img alt="broken" src="data:image/png;base64,AAAA"><script>no_such_function()</script></body></html>',
        encoding="utf-8",
    )
    found = browser_check(str(page), tmp_path)
    assert found["broken"] == ["broken"] and any("no_such_function" in e for e in found["errors"]), found


@pytest.mark.slow
def test_report_renders_in_chromium(first_run, chromium, tmp_path):
    found = browser_check(os.path.join(first_run["out"], "report.html"), tmp_path)
    assert found["errors"] == [] and found["broken"] == [], found
    assert found["images"] >= 5, found


@pytest.mark.slow
def test_report_reads_well(first_run):
    out = first_run["out"]
    html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    curate = json.load(open(os.path.join(out, "curate", "stats.json")))
    manifest = json.load(open(os.path.join(out, "shards", "manifest.json")))
    # the overview funnel comes first, from crawl records to training tokens
    assert html.index("Overview: from crawl records to training tokens") < html.index("<h2>Stages</h2>")
    assert f"<td>WARC/WET records read</td><td>{curate['read']:,}</td>" in html
    assert f"<td>tokens drawn by weight into shards</td><td>{manifest['total_tokens']:,}</td>" in html
    # languages of the extracted pages, not "?" (curate/raw is written before language ID)
    languages = re.search(r"<h2>Languages</h2>(.*?)</table>", html, re.S).group(1)
    assert "<td>?</td>" not in languages
    top, n = next(iter(curate["languages"].items()))
    assert f"<tr><td>{top}</td><td>{fmt(n)}</td>" in languages
    # numbers rounded for people: no decimal in a table cell has more than 3 significant digits
    decimals = re.findall(r"<td>-?([\d,]*\.\d+)%?</td>", html)
    assert decimals and [d for d in decimals if len(d.replace(",", "").replace(".", "").lstrip("0")) > 3] == []
    # what has no data says why in one line: MFU on CPU, a small validation split
    assert "<b>MFU:</b> needs a GPU" in html
    assert "Few validation documents:" in html and "mix.val_fraction" in html


@pytest.mark.slow
def test_force_recomputes_every_stage(first_run):
    """``ccgpt run --force`` after a complete run: every stage runs again and writes its stats.json anew."""
    out = first_run["out"]
    paths = [os.path.join(out, name, "stats.json") for name in STAGE_FOLDERS] + [os.path.join(out, "report.html")]
    before = {p: os.stat(p).st_mtime_ns for p in paths}
    again = run_ccgpt("run", first_run["config"])  # without --force: every stage is current and skips
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p for p in paths[:-1] if os.stat(p).st_mtime_ns != before[p]] == []
    forced = run_ccgpt("run", first_run["config"], "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    stale = [os.path.relpath(p, out) for p in paths if os.stat(p).st_mtime_ns == before[p]]
    assert stale == [], f"not recomputed under --force: {stale}"
