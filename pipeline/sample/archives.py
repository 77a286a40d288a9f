"""Archive members: .deb (ar + data.tar.*), sdists and npm tarballs (tar.gz), read without unpacking to disk.

The packages' files are read straight from the downloaded archives, in sorted order and with the archive's
member times, so the sample does not depend on the archive's member order or on the extraction time.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.sample.pins import SampleError


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
