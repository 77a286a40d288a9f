"""The demo sample: real web pages and real reference text, rebuilt on the user's machine from package registries.

``make demo`` must exercise the whole pipeline on data nobody on this project wrote, yet the repository must
not carry third-party text. Package registries are the one outside source every developer machine and CI
reaches, and several packages ship exactly what a crawl pipeline needs:

* Debian ``python3.11-doc``, ``debian-handbook``, ``debian-faq``, ``developers-reference``: real HTML pages
  whose public URLs are known (docs.python.org, debian-handbook.info, www.debian.org), the handbook in 26
  languages (language ID, and partly untranslated chapters are real cross-language near-duplicates), the
  developers reference both per chapter and as one page (a real containment near-duplicate);
* PyPI ``pywb`` sdist: real web-archive captures, including revisit records (exact duplicates);
* npm ``warc``: a real Common Crawl CC-MAIN-2014-35 WARC excerpt with its WET and WAT;
* Debian ``jargon-text``, ``debian-reference-en``, ``debian-faq``, ``developers-reference`` and the reST
  sources of the Python docs: long-form prose for the reference corpus and the non-crawl mix sources.

Every artefact is pinned (version and sha256) where the registry keeps old versions; Debian replaces a
package when a security update lands, so for Debian a missing pinned version falls back to the current one,
with a warning, and the sha256 actually obtained is recorded. Downloads live in ``cfg.cache_dir`` and are
reused; the same cache gives byte-identical output (dates come from archive member times, record ids from
content hashes, members are processed in sorted order, gzip headers carry no time).

Output layout (``out_dir``)::

    crawl/*.warc.gz            WARC files: rebuilt HTML captures + real pywb / Common Crawl archives
    crawl-derived/*.warc.w?t   Common Crawl's own WET/WAT for its excerpt (for comparison, not pipeline input)
    reference/*.jsonl          {"text", "origin"}: high-quality text (the quality classifier's positives)
    sources/<name>/*.jsonl     {"text", "origin"}: other mix sources ("books", "docs")
    urls/doc-links.jsonl       {"url", "score"}: the links the documentation pages cite, scored by how many
                               pages cite each (the demo's WebText-style URL list; see ``_Output.url_list``)
    provenance.json            every output file -> package, version, registry, sha256, members; counts
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.stage import stage_output
from schemas.atomic import atomic_write_text
from schemas.manifest import file_sha256

log = logging.getLogger("ccgpt.sample")

# Well-translated languages for language ID, plus el-GR and pl-PL, whose translations are largely unfinished:
# most of their pages are the English text in another language's page frame (real near-duplicates of en-US).
DEFAULT_HANDBOOK_LANGUAGES = [
    "en-US",
    "de-DE",
    "fr-FR",
    "es-ES",
    "it-IT",
    "pt-BR",
    "ru-RU",
    "ja-JP",
    "zh-CN",
    "ar-MA",
    "el-GR",
    "pl-PL",
]


DOC_LINKS = "urls/doc-links.jsonl"


@dataclass
class SampleConfig:
    cache_dir: str = field(default="data/cache", metadata={"help": "where downloaded packages are kept and reused"})
    handbook_languages: list[str] = field(
        default_factory=lambda: list(DEFAULT_HANDBOOK_LANGUAGES),
        metadata={"help": "debian-handbook languages to crawl (127 pages each; 26 exist)"},
    )
    pages_per_file: int = field(default=500, metadata={"help": "rebuilt captures per WARC file"})
    min_pages: int = field(default=1000, metadata={"help": "fail unless at least this many HTML pages are built"})
    min_reference_docs: int = field(default=200, metadata={"help": "fail unless the reference has this many docs"})
    offline: bool = field(default=False, metadata={"help": "use only what is already in the cache"})


class SampleError(RuntimeError):
    """The sample could not be built (too little could be fetched, or a download did not verify)."""


# --------------------------------------------------------------------------------------------------------------
# Artefacts: what is downloaded, from where, pinned how


@dataclass(frozen=True)
class Artefact:
    registry: str  # "pypi" | "npm" | "debian"
    package: str
    version: str
    sha256: str | None  # the pinned digest; None: record what we get

    @property
    def key(self) -> str:
        return f"{self.registry}:{self.package}=={self.version}"


PYWB = Artefact("pypi", "pywb", "2.10.0", "5ae43c9b2a5321e39b9c8e16538bfbc0146eeb6fe26713232e45378b774a1a96")
NPM_WARC = Artefact("npm", "warc", "1.0.1", "30581310d525b655cdcd962b5afdf92d9eef03b91151b720ad3d8ea5f36f8df4")
PYDOC = Artefact(
    "debian", "python3.11-doc", "3.11.2-6+deb12u9", "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be"
)
HANDBOOK = Artefact(
    "debian", "debian-handbook", "11.20220922", "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa"
)
JARGON = Artefact(
    "debian", "jargon-text", "4.4.7-4.1", "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb"
)
DEBFAQ = Artefact("debian", "debian-faq", "11.1", "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0")
DEBREF = Artefact(
    "debian", "debian-reference-en", "2.100", "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f"
)
DEVREF = Artefact(
    "debian", "developers-reference", "12.18", "0dba82f6fa16e373f2a84ad07e7971aa9264ad2e7d2ae46b37edbc9c5fd57e2e"
)
ARTEFACTS = [PYWB, NPM_WARC, PYDOC, HANDBOOK, JARGON, DEBFAQ, DEBREF, DEVREF]


@dataclass
class Fetched:
    """An artefact as it lies in the cache: the version and digest actually obtained."""

    artefact: Artefact
    path: str
    version: str
    sha256: str

    def provenance(self) -> dict[str, Any]:
        return {
            "registry": self.artefact.registry,
            "package": self.artefact.package,
            "version": self.version,
            "pinned_version": self.artefact.version,
            "artefact": os.path.basename(self.path),
            "sha256": self.sha256,
        }


def _download_pypi(a: Artefact, dest: str) -> str:
    """``pip download`` the sdist: pip honours the user's index configuration (mirrors, proxies, certs)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{a.package}=={a.version}",
            "-d",
            dest,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    hits = [f for f in os.listdir(dest) if f.startswith(f"{a.package}-{a.version}") and f.endswith(".tar.gz")]
    if not hits:
        raise SampleError(f"pip download {a.package}=={a.version} produced no sdist in {dest}")
    return os.path.join(dest, hits[0])


def _download_npm(a: Artefact, dest: str) -> str:
    """Fetch the tarball ``npm pack`` would fetch, straight from the registry: no Node.js needed."""
    registry = (
        os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org/"
    )
    url = f"{registry.rstrip('/')}/{a.package}/-/{a.package}-{a.version}.tgz"
    path = os.path.join(dest, f"{a.package}-{a.version}.tgz")
    with urllib.request.urlopen(url, timeout=60) as resp, open(path + ".part", "wb") as fh:
        shutil.copyfileobj(resp, fh)
    os.replace(path + ".part", path)
    return path


def _download_debian(a: Artefact, dest: str) -> str:
    """``apt-get download`` the pinned version, or the current one when the archive has moved on.

    apt verifies what it downloads against the signed archive index, so a version we did not pin is still
    authenticated; we record its sha256.
    """
    if shutil.which("apt-get") is None:
        raise SampleError("apt-get not found (Debian packages need a Debian/Ubuntu machine)")

    def attempt(spec: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["apt-get", "download", "-q", spec], cwd=dest, capture_output=True, text=True, timeout=300
        )

    before = set(os.listdir(dest))
    res = attempt(f"{a.package}={a.version}")
    if res.returncode != 0:
        log.warning(
            "sample: %s=%s not in the archive (%s); taking the current version",
            a.package,
            a.version,
            res.stderr.strip().splitlines()[-1:] or "",
        )
        res = attempt(a.package)
        if res.returncode != 0:
            hint = " (run 'apt-get update' first?)" if "Unable to locate" in res.stderr else ""
            raise SampleError(f"apt-get download {a.package} failed{hint}: {res.stderr.strip()[-300:]}")
    new = sorted(f for f in set(os.listdir(dest)) - before if f.endswith(".deb"))
    if not new:  # already there under the same name (a rerun that lost its record)
        new = sorted(f for f in os.listdir(dest) if f.startswith(a.package + "_") and f.endswith(".deb"))
    if not new:
        raise SampleError(f"apt-get download {a.package} left no .deb in {dest}")
    return os.path.join(dest, new[-1])


_DOWNLOADERS: dict[str, Callable[[Artefact, str], str]] = {
    "pypi": _download_pypi,
    "npm": _download_npm,
    "debian": _download_debian,
}


def _version_of(a: Artefact, path: str) -> str:
    if a.registry == "debian":  # file name: package_version_arch.deb, version with ':' escaped as %3a
        return os.path.basename(path).split("_")[1].replace("%3a", ":")
    return a.version


def fetch(a: Artefact, cache_dir: str, offline: bool = False) -> Fetched:
    """The artefact from the cache, downloading it first if needed; a pinned digest must match.

    ``cache_dir/fetched.json`` remembers which file each artefact resolved to, so a rerun reuses it without
    asking the registry (and keeps using the same Debian version even after the archive moves on).
    """
    dest = os.path.join(cache_dir, a.registry)
    os.makedirs(dest, exist_ok=True)
    index_path = os.path.join(cache_dir, "fetched.json")
    index: dict[str, Any] = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
    known = index.get(a.key)
    if known and os.path.exists(os.path.join(dest, known["file"])):
        path = os.path.join(dest, known["file"])
        digest = file_sha256(path)
        if digest != known["sha256"]:
            raise SampleError(f"{path}: cached file changed (sha256 {digest}, recorded {known['sha256']}); delete it")
        return Fetched(a, path, known["version"], digest)
    if offline:
        raise SampleError(f"not in the cache {cache_dir} (offline)")
    path = _DOWNLOADERS[a.registry](a, dest)
    digest = file_sha256(path)
    version = _version_of(a, path)
    if a.sha256 and version == a.version and digest != a.sha256:
        os.remove(path)
        raise SampleError(f"{a.key}: downloaded sha256 {digest} does not match the pinned {a.sha256}")
    index[a.key] = {"file": os.path.basename(path), "version": version, "sha256": digest}
    atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True))
    return Fetched(a, path, version, digest)


# --------------------------------------------------------------------------------------------------------------
# Archive members: .deb (ar + data.tar.*), sdists and npm tarballs (tar.gz)


@dataclass(frozen=True)
class Member:
    name: str  # path inside the package, without a leading "./"
    data: bytes
    mtime: int  # seconds since the epoch, as the archive records it


def read_ar(data: bytes) -> dict[str, bytes]:
    """The members of a Unix ``ar`` archive (a .deb is one): name -> bytes.

    Done by hand because Python has no ar module and ``dpkg-deb``/``ar`` are not on every machine.
    """
    if not data.startswith(b"!<arch>\n"):
        raise SampleError("not an ar archive (missing !<arch> magic)")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise SampleError(f"corrupt ar header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        out[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are 2-byte aligned
    return out


def _deb_data_tar(path: str) -> tarfile.TarFile:
    with open(path, "rb") as fh:
        members = read_ar(fh.read())
    for name, blob in members.items():
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise SampleError(f"{path}: zstd-compressed data.tar is not supported")
            return tarfile.open(fileobj=io.BytesIO(blob), mode="r:*")
    raise SampleError(f"{path}: no data.tar member (not a .deb?)")


def iter_members(path: str, wanted: Callable[[str], bool]) -> list[Member]:
    """Regular-file members of a .deb, .tar.gz or .tgz whose name ``wanted`` accepts, sorted by name.

    Links and directories are skipped (a symlink's target is another member or lies outside the package);
    sorting makes output independent of archive order.
    """
    tf = _deb_data_tar(path) if path.endswith(".deb") else tarfile.open(path, mode="r:*")
    out = []
    with tf:
        for info in tf:
            name = info.name[2:] if info.name.startswith("./") else info.name
            if not info.isreg() or not wanted(name):
                continue
            fh = tf.extractfile(info)
            assert fh is not None
            out.append(Member(name, fh.read(), int(info.mtime)))
    out.sort(key=lambda m: m.name)
    return out


# --------------------------------------------------------------------------------------------------------------
# WARC writing


@dataclass(frozen=True)
class Page:
    """One capture to write: the response body as served, where it was served from, and where it came from."""

    url: str
    body: bytes
    content_type: str
    mtime: int
    origin: str  # "package:member", for provenance


def record_id(*parts: str) -> str:
    """A WARC-Record-ID derived from content, so rebuilding gives the same ids (warcio's are random)."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest[:16], version=5)}>"


def warc_date(mtime: int) -> str:
    return datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(mtime: int) -> str:
    return datetime.fromtimestamp(mtime, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def write_warc(path: str, pages: Iterable[Page], info: dict[str, str]) -> int:
    """Write ``pages`` as a gzip-per-record WARC 1.0 file: warcinfo, then request + response per page.

    Records carry ids and dates derived from the pages, so the file is byte-identical on every rebuild.
    The warcinfo's date is the newest page time. Returns the number of response records.
    """
    pages = list(pages)
    filename = os.path.basename(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    n = 0
    with open(tmp, "wb") as fh:
        writer = WARCWriter(fh, gzip=True, warc_version="1.0")
        newest = max((p.mtime for p in pages), default=0)
        fields = "".join(f"{k}: {v}\r\n" for k, v in info.items()).encode("utf-8")
        writer.write_record(
            writer.create_warc_record(
                "",
                "warcinfo",
                payload=io.BytesIO(fields),
                length=len(fields),
                warc_content_type="application/warc-fields",
                warc_headers_dict={
                    "WARC-Record-ID": record_id("warcinfo", filename, json.dumps(info, sort_keys=True)),
                    "WARC-Date": warc_date(newest),
                    "WARC-Filename": filename,
                },
            )
        )
        for page in pages:
            date = warc_date(page.mtime)
            body_digest = hashlib.sha256(page.body).hexdigest()
            resp_id = record_id("response", page.url, body_digest)
            req_id = record_id("request", page.url, body_digest)
            split = urllib.parse.urlsplit(page.url)
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
            req_headers = StatusAndHeaders(
                f"GET {target} HTTP/1.1",
                [
                    ("Host", split.netloc),
                    ("User-Agent", "ccgpt-sample (rebuilt from a package; see warcinfo)"),
                    ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
                ],
                is_http_request=True,
            )
            writer.write_record(
                writer.create_warc_record(
                    page.url,
                    "request",
                    payload=io.BytesIO(b""),
                    length=0,
                    http_headers=req_headers,
                    warc_headers_dict={"WARC-Record-ID": req_id, "WARC-Date": date, "WARC-Concurrent-To": resp_id},
                )
            )
            resp_headers = StatusAndHeaders(
                "200 OK",
                [
                    ("Content-Type", page.content_type),
                    ("Content-Length", str(len(page.body))),
                    ("Last-Modified", http_date(page.mtime)),
                ],
                protocol="HTTP/1.1",
            )
            writer.write_record(
                writer.create_warc_record(
                    page.url,
                    "response",
                    payload=io.BytesIO(page.body),
                    length=len(page.body),
                    http_headers=resp_headers,
                    warc_headers_dict={"WARC-Record-ID": resp_id, "WARC-Date": date},
                )
            )
            n += 1
    os.replace(tmp, path)
    return n


def regzip_per_record(raw: bytes) -> tuple[bytes, int]:
    """An uncompressed WARC as gzip-per-record (Common Crawl's layout), each record's bytes kept exactly.

    Record boundaries come from warcio's offsets; every member is a fresh gzip stream with no timestamp.
    Returns the new file's bytes and the number of records.
    """
    offsets = []
    it = ArchiveIterator(io.BytesIO(raw), check_digests=False)
    for record in it:
        record.content_stream().read()
        offsets.append(it.get_record_offset())
    offsets.append(len(raw))
    out = io.BytesIO()
    for start, end in zip(offsets, offsets[1:]):
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container, mtime 0
        out.write(comp.compress(raw[start:end]) + comp.flush())
    return out.getvalue(), len(offsets) - 1


def count_warc_records(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(path, "rb") as fh:
        for record in ArchiveIterator(fh, check_digests=False):
            counts[record.rec_type] = counts.get(record.rec_type, 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------------------------------
# Splitting prose into sensible documents


_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.<>_])\1{2,}\s*$")


def split_rst_sections(text: str, min_chars: int = 400) -> list[str]:
    """reST split at section titles (a title line underlined with a repeated punctuation character).

    Sections shorter than ``min_chars`` are merged into the next, so a bare chapter title does not become
    a document of its own; a document is a section of readable length, not a line.
    """
    lines = text.splitlines()
    starts = [0]
    for i in range(1, len(lines)):
        title = lines[i - 1].strip()
        if (
            title
            and _RST_UNDERLINE.match(lines[i])
            and len(lines[i].strip()) >= len(title)
            and not _RST_UNDERLINE.match(lines[i - 1])
        ):
            start = i - 1
            if start >= 1 and _RST_UNDERLINE.match(lines[start - 1]):  # overlined title
                start -= 1
            if start > starts[-1]:
                starts.append(start)
    starts.append(len(lines))
    return _merge_short(["\n".join(lines[a:b]).strip() for a, b in zip(starts, starts[1:])], min_chars)


_RST_ROLE = re.compile(r":[\w:+.-]+:`(?:[^`<]*<)?([^`>]+)>?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*(?:<[^>]*>)?`_{1,2}")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_ADMONITION = re.compile(r"\.\. (note|warning|seealso|versionadded|versionchanged|deprecated|important|tip)::")


def rst_to_text(text: str) -> str:
    """reST source as the plain prose a reader sees: markup removed, directive blocks (code, index, toctree,
    targets) dropped, admonition text kept.

    The reference corpus is the quality classifier's positive class; left as raw reST it would teach the
    classifier to spot markup (``:func:``, ``.. note::``) instead of well-written prose, and every crawl
    page would score as "not reference" for a reason that has nothing to do with quality.
    """
    out: list[str] = []
    skip_indent: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        if stripped.startswith(".. "):
            if _RST_ADMONITION.match(stripped):
                rest = stripped.split("::", 1)[1].strip()
                if rest:
                    out.append(rest)
            else:
                skip_indent = indent
            continue
        if _RST_UNDERLINE.match(stripped):
            continue
        line = _RST_LITERAL.sub(r"\1", _RST_LINK.sub(r"\1", _RST_ROLE.sub(r"\1", line)))
        out.append(line.replace("**", "").replace("::", ":"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


_NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\.\s+\S")


def split_numbered_sections(text: str, min_chars: int = 400) -> list[str]:
    """Plain-text manuals (``1.2. Title`` headings at column 0) split at headings, table of contents skipped.

    The body starts where the first chapter heading appears a second time: the first time is the contents.
    """
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if _NUMBERED.match(line)]
    if not heads:
        return _merge_short([text.strip()], min_chars)
    first = lines[heads[0]].strip()
    body = next((i for i in heads[1:] if lines[i].strip() == first), heads[0])
    heads = [i for i in heads if i >= body] + [len(lines)]
    return _merge_short(["\n".join(lines[a:b]).strip() for a, b in zip(heads, heads[1:])], min_chars)


_JARGON_ENTRY = re.compile(r"^   :[^:\n]+:")


def split_jargon_entries(text: str) -> list[str]:
    """The Jargon File's lexicon, one entry (``:headword: ...`` and its senses) per document.

    The front matter before the first entry (contents, introduction) is one more document.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _JARGON_ENTRY.match(line)]
    if not starts:
        return [text.strip()] if text.strip() else []
    bounds = [0] + starts + [len(lines)] if starts[0] > 0 else starts + [len(lines)]
    docs = [
        "\n".join(
            line.strip() if j == 0 else line[3:] if line.startswith("   ") else line
            for j, line in enumerate(lines[a:b])
        ).strip()
        for a, b in zip(bounds, bounds[1:])
    ]
    return [d for d in docs if d]


def _merge_short(parts: list[str], min_chars: int) -> list[str]:
    out: list[str] = []
    carry = ""
    for part in parts:
        if not part:
            continue
        carry = f"{carry}\n\n{part}" if carry else part
        if len(carry) >= min_chars:
            out.append(carry)
            carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]}\n\n{carry}"
        else:
            out.append(carry)
    return out


# --------------------------------------------------------------------------------------------------------------
# The build


_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".js": "application/javascript",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".jpg": "image/jpeg",
    ".txt": "text/plain; charset=utf-8",
    ".py": "text/x-python",
    ".pdf": "application/pdf",
}


def content_type(name: str, body: bytes) -> str:
    ext = posixpath.splitext(name)[1].lower()
    ctype = _CONTENT_TYPES.get(ext, "application/octet-stream")
    if "charset=utf-8" in ctype:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            ctype = ctype.split(";")[0]
    return ctype


def page_links(url: str, body: bytes) -> set[str]:
    """The absolute http(s) URLs a page's ``<a href>`` cite, fragments dropped, the page itself left out.

    lxml (libxml2's HTML parser, which trafilatura already brings) because the documentation indexes are
    megabytes of links: Python's ``html.parser`` takes 5x longer on them and Resiliparse's selector engine
    goes quadratic.
    """
    import lxml.etree
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(body)
    except (ValueError, lxml.etree.ParserError):
        return set()
    out = set()
    for href in {str(h).strip().split("#", 1)[0] for h in doc.xpath("//a/@href")}:
        try:
            target = urllib.parse.urljoin(url, href)
        except ValueError:  # e.g. a malformed IPv6 host
            continue
        if target.startswith(("http://", "https://")) and target != url:
            out.add(target)
    return out


class _Output:
    """Writes output files under ``out_dir`` and keeps their provenance."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.files: dict[str, dict[str, Any]] = {}
        self.cited_by: dict[str, set[str]] = {}  # URL -> the rebuilt pages whose links cite it
        self.citing: dict[str, tuple[Fetched, list[str]]] = {}  # package -> (artefact, citing members)

    def record(self, rel: str, fetched: list[Fetched], members: list[str], records: Any) -> None:
        path = os.path.join(self.out_dir, rel)
        self.files[rel] = {
            "bytes": os.path.getsize(path),
            "sha256": file_sha256(path),
            "records": records,
            "from": [f.provenance() for f in fetched],
            "members": members,
        }

    def jsonl(self, rel: str, fetched: Fetched, docs: list[tuple[str, str, str]]) -> None:
        """``docs``: (text, origin, member) triples -> ``rel`` as JSON lines."""
        path = os.path.join(self.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for text, origin, _ in docs:
                fh.write(json.dumps({"text": text, "origin": origin}, ensure_ascii=False, sort_keys=True) + "\n")
        self.record(rel, [fetched], sorted({m for _, _, m in docs}), len(docs))

    def warcs(self, stem: str, fetched: Fetched, pages: list[Page], per_file: int, info: dict[str, str]) -> int:
        total = 0
        for k in range(0, len(pages), per_file):
            chunk = pages[k : k + per_file]
            rel = f"crawl/{stem}-{k // per_file:05d}.warc.gz"
            path = os.path.join(self.out_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            total += write_warc(path, chunk, {**info, "isPartOf": f"ccgpt-sample/{stem}"})
            self.record(rel, [fetched], [p.origin.split(":", 1)[1] for p in chunk], count_warc_records(path))
        for page in pages:
            if page.content_type.startswith("text/html"):
                for link in page_links(page.url, page.body):
                    self.cited_by.setdefault(link, set()).add(page.url)
                self.citing.setdefault(fetched.artefact.package, (fetched, []))[1].append(page.origin.split(":", 1)[1])
        return total

    def url_list(self, rel: str) -> int:
        """The links the rebuilt documentation pages cite, as a scored URL list for ``ccgpt source webtext``.

        ``{"url", "score"}`` per cited URL, the score being how many distinct pages cite it: the analogue of
        the Reddit karma GPT-2's WebText list was filtered by (a link many pages point at is one many authors
        judged worth pointing at). URLs are absolute but not normalised, as a real list is; sorted by score.
        """
        if not self.cited_by:
            return 0
        rows = sorted(((-len(pages), url) for url, pages in self.cited_by.items()))
        path = os.path.join(self.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for neg, url in rows:
                fh.write(json.dumps({"score": -neg, "url": url}, ensure_ascii=False, sort_keys=True) + "\n")
        fetched = [f for _, (f, _) in sorted(self.citing.items())]
        members = sorted(m for _, (_, ms) in self.citing.items() for m in ms)
        self.record(rel, fetched, members, len(rows))
        return len(rows)


def _info(f: Fetched, what: str) -> dict[str, str]:
    return {
        "software": "ccgpt sample builder",
        "format": "WARC File Format 1.0",
        "description": f"{what}; rebuilt from {f.artefact.registry} package {f.artefact.package} {f.version}"
        f" (sha256 {f.sha256}); HTTP headers are reconstructed, bodies are the package's files",
    }


def _pages(f: Fetched, members: list[Member], url_of: Callable[[str], str]) -> list[Page]:
    return [
        Page(url_of(m.name), m.data, content_type(m.name, m.data), m.mtime, f"{f.artefact.package}:{m.name}")
        for m in members
    ]


def _origin(f: Fetched, member: str, part: str | None = None) -> str:
    base = f"{f.artefact.registry}:{f.artefact.package}={f.version}:{member}"
    return f"{base}#{part}" if part is not None else base


def _build_pydoc(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/doc/python3.11/html/"
    members = iter_members(f.path, lambda n: n.startswith(root))
    html = [m for m in members if m.name.endswith(".html")]
    assets = [m for m in members if m.name.startswith((root + "_static/", root + "_images/"))]
    pages = _pages(f, html + assets, lambda n: "https://docs.python.org/3.11/" + n[len(root) :])
    n = out.warcs("python3.11-doc", f, pages, cfg.pages_per_file, _info(f, "docs.python.org/3.11 pages"))
    sources = [m for m in members if m.name.startswith(root + "_sources/") and m.name.endswith(".rst.txt")]
    docs = [doc for m in sources for doc in _rst_documents(f, m)]
    out.jsonl("reference/python-docs.jsonl", f, docs)
    return {"html_pages": len(html), "other_responses": len(assets), "responses": n, "reference_docs": len(docs)}


def _build_handbook(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/doc/debian-handbook/html/"
    langs = set(cfg.handbook_languages)
    members = iter_members(
        f.path, lambda n: n.startswith(root) and n.endswith(".html") and n[len(root) :].split("/")[0] in langs
    )
    found = sorted({m.name[len(root) :].split("/")[0] for m in members})
    missing = sorted(langs - set(found))
    if missing:
        log.warning("sample: debian-handbook has no pages for %s", missing)
    pages = _pages(
        f, members, lambda n: "https://debian-handbook.info/browse/" + n[len(root) :].replace("/", "/stable/", 1)
    )
    n = 0
    for lang in found:
        chunk = [p for p in pages if p.url.startswith(f"https://debian-handbook.info/browse/{lang}/")]
        n += out.warcs(
            f"debian-handbook-{lang}",
            f,
            chunk,
            cfg.pages_per_file,
            _info(f, f"The Debian Administrator's Handbook ({lang})"),
        )
    return {"html_pages": len(members), "responses": n, "languages": len(found)}


def _build_debfaq(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/doc/debian/FAQ/"
    members = iter_members(f.path, lambda n: n.startswith(root) and n.endswith((".en.html", ".en.txt.gz")))
    html = [m for m in members if m.name.endswith(".html")]
    pages = _pages(f, html, lambda n: "https://www.debian.org/doc/manuals/debian-faq/" + n[len(root) :])
    n = out.warcs("debian-faq", f, pages, cfg.pages_per_file, _info(f, "The Debian GNU/Linux FAQ"))
    docs = []
    for m in members:
        if m.name.endswith(".txt.gz"):
            for i, s in enumerate(split_numbered_sections(gzip.decompress(m.data).decode("utf-8"))):
                docs.append((s, _origin(f, m.name, f"section={i}"), m.name))
    out.jsonl("sources/docs/debian-faq.jsonl", f, docs)
    return {"html_pages": len(html), "responses": n, "docs": len(docs)}


def _rst_documents(f: Fetched, m: Member) -> list[tuple[str, str, str]]:
    """A reST member's sections as plain-prose documents ``(text, origin, member)``."""
    docs = []
    for i, section in enumerate(split_rst_sections(m.data.decode("utf-8", errors="strict"))):
        prose = rst_to_text(section)
        if prose:
            docs.append((prose, _origin(f, m.name, f"section={i}"), m.name))
    return docs


def _build_devref(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    root = "usr/share/developers-reference/"
    members = iter_members(f.path, lambda n: n.startswith(root) and n.endswith((".html", ".rst.txt")))
    html = [m for m in members if m.name.endswith(".html") and "/" not in m.name[len(root) :]]
    pages = _pages(f, html, lambda n: "https://www.debian.org/doc/manuals/developers-reference/" + n[len(root) :])
    n = out.warcs("developers-reference", f, pages, cfg.pages_per_file, _info(f, "Debian Developer's Reference"))
    docs = [doc for m in members if m.name.endswith(".rst.txt") for doc in _rst_documents(f, m)]
    out.jsonl("sources/docs/developers-reference.jsonl", f, docs)
    return {"html_pages": len(html), "responses": n, "docs": len(docs)}


def _build_debref(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    name = "usr/share/debian-reference/debian-reference.en.txt.gz"
    (m,) = iter_members(f.path, lambda n: n == name)
    sections = split_numbered_sections(gzip.decompress(m.data).decode("utf-8"))
    out.jsonl(
        "sources/books/debian-reference.jsonl",
        f,
        [(s, _origin(f, name, f"section={i}"), name) for i, s in enumerate(sections)],
    )
    return {"docs": len(sections)}


def _build_jargon(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    members = iter_members(f.path, lambda n: n.startswith("usr/share/doc/jargon-text/jargon."))
    docs = []
    for m in members:
        if m.name.endswith(".txt.gz"):
            for i, e in enumerate(split_jargon_entries(gzip.decompress(m.data).decode("utf-8"))):
                docs.append((e, _origin(f, m.name, f"entry={i}"), m.name))
    out.jsonl("sources/books/jargon-file.jsonl", f, docs)
    return {"docs": len(docs)}


def _build_pywb(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    """pywb's sample archives as they are (its deliberately broken files, ``*.bad`` and ARCs, left out)."""
    members = iter_members(f.path, lambda n: "/sample_archive/warcs/" in n and n.endswith(".warc.gz"))
    totals: dict[str, int] = {}
    for m in members:
        rel = f"crawl/pywb-{posixpath.basename(m.name)}"
        path = os.path.join(out.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(m.data)
        counts = count_warc_records(path)
        out.record(rel, [f], [m.name], counts)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    return {"files": len(members), **totals}


def _build_cc(out: _Output, f: Fetched, cfg: SampleConfig) -> dict[str, int]:
    """Common Crawl's CC-MAIN-2014-35 excerpt; the WARC re-gzipped per record (records byte-identical)."""
    members = iter_members(f.path, lambda n: n.startswith("package/test/fixtures/") and ".warc" in n)
    totals: dict[str, int] = {}
    for m in members:
        base = posixpath.basename(m.name)
        if base.endswith(".warc"):
            rel = f"crawl/{base}.gz"
            data, _ = regzip_per_record(m.data)
        else:  # WET / WAT: Common Crawl's own derivatives, kept for comparison, not crawl input
            rel = f"crawl-derived/{base}"
            data = m.data
        path = os.path.join(out.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        counts = count_warc_records(path)
        out.record(rel, [f], [m.name], counts)
        if rel.startswith("crawl/"):
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
    return {"files": len(members), **totals}


_BUILDERS: list[tuple[Artefact, Callable[[_Output, Fetched, SampleConfig], dict[str, int]]]] = [
    (PYDOC, _build_pydoc),
    (HANDBOOK, _build_handbook),
    (DEBFAQ, _build_debfaq),
    (DEVREF, _build_devref),
    (DEBREF, _build_debref),
    (JARGON, _build_jargon),
    (PYWB, _build_pywb),
    (NPM_WARC, _build_cc),
]


def build_sample(out_dir: str, cfg: SampleConfig) -> dict[str, Any]:
    """Download (or reuse) the pinned packages and build the sample into ``out_dir``; return the manifest.

    A package that cannot be fetched (no apt on this machine, registry unreachable) is skipped with a
    warning and listed under ``skipped``; the build fails if what remains is below ``cfg.min_pages`` HTML
    pages, ``cfg.min_reference_docs`` reference documents, or fewer than two non-crawl sources. The folder
    is replaced in one rename, so a failed build never leaves a half-written sample. The manifest adds the
    build time to what ``provenance.json`` holds (kept out of the file so rebuilds are byte-identical).
    """
    t0 = time.monotonic()
    out_dir = os.path.abspath(out_dir)
    cfg = dataclasses.replace(cfg, cache_dir=os.path.abspath(cfg.cache_dir))
    with stage_output(out_dir) as tmp:  # replaced in one rename: a failed build leaves no half-written sample
        out = _Output(tmp)
        built: dict[str, dict[str, int]] = {}
        skipped: dict[str, str] = {}
        timings: dict[str, float] = {}
        for artefact, builder in _BUILDERS:
            t = time.monotonic()
            try:
                fetched = fetch(artefact, cfg.cache_dir, offline=cfg.offline)
            except (SampleError, OSError, subprocess.SubprocessError) as exc:
                msg = str(exc).strip() or type(exc).__name__
                log.warning("sample: skipping %s: %s", artefact.key, msg)
                skipped[artefact.key] = msg
                continue
            built[artefact.package] = builder(out, fetched, cfg)
            timings[artefact.package] = round(time.monotonic() - t, 2)
            log.info("sample: %s -> %s (%.1fs)", artefact.key, built[artefact.package], timings[artefact.package])
        out.url_list(DOC_LINKS)
        summary = _summarise(out.files)
        provenance = {
            "summary": summary,
            "packages": built,
            "skipped": skipped,
            "files": dict(sorted(out.files.items())),
        }
        _check_enough(summary, cfg, skipped)
        with open(os.path.join(tmp, "provenance.json"), "w", encoding="utf-8") as fh:
            json.dump(provenance, fh, indent=1, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
    return {**provenance, "out_dir": out_dir, "seconds": round(time.monotonic() - t0, 1), "timings": timings}


def _summarise(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-file record counts and per-area totals (crawl responses, HTML pages, documents per source)."""
    crawl = {"files": 0, "bytes": 0, "records": {}}
    html = 0
    sources: dict[str, dict[str, int]] = {}
    url_lists: dict[str, int] = {}
    for rel, meta in files.items():
        if rel.startswith("crawl/"):
            crawl["files"] += 1
            crawl["bytes"] += meta["bytes"]
            for k, v in meta["records"].items():
                crawl["records"][k] = crawl["records"].get(k, 0) + v
        elif rel.startswith("urls/"):
            url_lists[rel] = meta["records"]
        elif rel.endswith(".jsonl"):
            area = "reference" if rel.startswith("reference/") else rel.split("/")[1]
            s = sources.setdefault(area, {"files": 0, "documents": 0, "bytes": 0})
            s["files"] += 1
            s["documents"] += meta["records"]
            s["bytes"] += meta["bytes"]
    crawl["records"] = dict(sorted(crawl["records"].items()))
    for rel, meta in files.items():  # rebuilt captures: members ending in .html
        if rel.startswith("crawl/") and not rel.startswith("crawl/pywb-") and not rel.startswith("crawl/CC-"):
            html += sum(1 for m in meta["members"] if m.endswith(".html"))
    return {
        "crawl": crawl,
        "html_pages_rebuilt": html,
        "sources": dict(sorted(sources.items())),
        "url_lists": dict(sorted(url_lists.items())),
        "records_per_file": {rel: meta["records"] for rel, meta in sorted(files.items())},
    }


def _check_enough(summary: dict[str, Any], cfg: SampleConfig, skipped: dict[str, str]) -> None:
    problems = []
    if summary["html_pages_rebuilt"] < cfg.min_pages:
        problems.append(f"{summary['html_pages_rebuilt']} HTML pages (need {cfg.min_pages})")
    ref = summary["sources"].get("reference", {}).get("documents", 0)
    if ref < cfg.min_reference_docs:
        problems.append(f"{ref} reference documents (need {cfg.min_reference_docs})")
    others = [k for k in summary["sources"] if k != "reference"]
    if len(others) < 2:
        problems.append(f"non-crawl sources {others} (need at least 2)")
    if problems:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "nothing was skipped"
        raise SampleError(f"sample too small: {', '.join(problems)}. Skipped packages: {why}")


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.sample --out data/sample``: the same as ``ccgpt sample``."""
    import argparse

    from schemas.config import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser(prog="ccgpt sample", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/sample")
    add_dataclass_args(parser, SampleConfig)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = build_sample(args.out, dataclass_from_args(SampleConfig, args))
    s = manifest["summary"]
    print(
        json.dumps(
            {
                "out_dir": manifest["out_dir"],
                "seconds": manifest["seconds"],
                "crawl": s["crawl"],
                "html_pages_rebuilt": s["html_pages_rebuilt"],
                "sources": s["sources"],
                "skipped": manifest["skipped"],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
