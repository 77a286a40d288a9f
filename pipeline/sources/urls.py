"""URL normalisation: the join key that makes a URL list and a crawl meet on a page rather than on a string.

Scheme folded (http = https), ``www.`` stripped, host lowercased (IDN as punycode), default port, userinfo,
fragment and trailing slash dropped, tracking parameters (``utm_*``, ``fbclid``, ``gclid``, ...) removed,
the remaining query parameters sorted, percent-escapes of unreserved characters decoded. Used by
:mod:`pipeline.sources.webtext` on both sides of its join, and for its ``exclude_domains``.
"""

from __future__ import annotations

import re
import urllib.parse

# Click identifiers and campaign tags that analytics tools append to shared links: they never change the page.
DEFAULT_TRACKING_PARAMS = [
    "utm_*",
    "fbclid",
    "gclid",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "yclid",
    "twclid",
    "ttclid",
    "igshid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "_gl",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "vero_id",
    "oly_anon_id",
    "oly_enc_id",
    "wickedid",
    "rb_clickid",
    "s_cid",
    "__s",
]


_HOST_OK = re.compile(r"^[a-z0-9._-]+$")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMELESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}(?::\d+)?(?:[/?#]|$)")


def _fix_escapes(s: str) -> str:
    """Decode escapes of unreserved characters (``%7E`` -> ``~``), uppercase the rest, escape raw non-ASCII."""
    s = _PCT.sub(
        lambda m: chr(int(m.group(1), 16)) if chr(int(m.group(1), 16)) in _UNRESERVED else "%" + m.group(1).upper(), s
    )
    return urllib.parse.quote(s, safe=_PATH_SAFE)


def _is_tracking(param: str, tracking: tuple[str, ...]) -> bool:
    p = param.lower()
    return any(p.startswith(t[:-1]) if t.endswith("*") else p == t for t in tracking)


def normalize_url(
    url: str, tracking_params: list[str] | tuple[str, ...] = tuple(DEFAULT_TRACKING_PARAMS)
) -> str | None:
    """The join key of a URL (``host[:port]/path[?sorted query]``, no scheme), or None when it is malformed.

    Malformed: empty, containing whitespace, a scheme other than http/https, no host, a host with characters a
    host cannot have, or a port that is not a number. A scheme-less ``example.org/page`` is read as http.
    """
    if not isinstance(url, str):
        return None
    url = url.strip()
    if not url or any(c.isspace() for c in url):
        return None
    if "://" not in url:
        if url.startswith("//"):
            url = "http:" + url
        elif _SCHEMELESS.match(url):
            url = "http://" + url
        else:
            return None
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:  # bad port, bad IPv6 literal
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    host = host.rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    host = host.lower()
    if host.startswith("[") or ":" in host:  # IPv6 literal
        host_part = f"[{host.strip('[]')}]"
    elif not _HOST_OK.match(host) or ".." in host or host.startswith((".", "-")):
        return None
    else:
        host_part = host[4:] if host.startswith("www.") and host.count(".") >= 2 else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host_part += f":{port}"
    path = _fix_escapes(parts.path or "/")
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    tracking = tuple(t.lower() for t in tracking_params)
    query = ""
    if parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        kept = sorted((k, v) for k, v in pairs if not _is_tracking(k, tracking))
        query = urllib.parse.urlencode(kept, quote_via=urllib.parse.quote)
    return host_part + path + (f"?{query}" if query else "")


def url_host(key: str) -> str:
    """The host of a normalised key (``www.`` already stripped, port removed)."""
    host = key.split("/", 1)[0]
    return host.rsplit(":", 1)[0] if not host.startswith("[") else host


def excluded(key: str, domains: list[str] | tuple[str, ...]) -> bool:
    """Whether a normalised key's host is one of ``domains`` or below one (``en.wikipedia.org``)."""
    host = url_host(key)
    for d in domains:
        d = d.lower().strip(".")
        if d.startswith("www."):
            d = d[4:]
        if host == d or host.endswith("." + d):
            return True
    return False
