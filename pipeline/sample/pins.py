"""What the sample is built from: each package, its registry, the version pinned and the sha256 it must have.

The pins are what make the sample reproducible: the same pinned artefacts give a byte-identical sample, and a
download that does not match its pin is refused (see ``fetch``). Debian replaces a package in its archive when
an update lands (the security suite and each point release keep one version), so a Debian pin may carry a
second pinned version, with its own sha256, to use when the first is gone. Nothing else is ever taken: when
no pinned version is left the build stops and names the pins (``PinMissing``), and someone adds the version
the archive now has, with its sha256 (``apt-cache show PACKAGE=VERSION`` prints it), here.
"""

from __future__ import annotations

from dataclasses import dataclass


class SampleError(RuntimeError):
    """The sample could not be built (too little could be fetched, or a download did not verify)."""


class PinMissing(SampleError):
    """The registry answered, but none of an artefact's pinned versions is there any more: the build stops."""


@dataclass(frozen=True)
class Artefact:
    registry: str  # "pypi" | "npm" | "debian"
    package: str
    version: str
    sha256: str  # the pinned digest: a download that differs is refused
    fallback: Artefact | None = None  # a second pinned version of the same package, used when this one is gone

    @property
    def key(self) -> str:
        return f"{self.registry}:{self.package}=={self.version}"

    def candidates(self) -> list[Artefact]:
        """This pin, then its fallback's, in the order they are tried."""
        return [self] + (self.fallback.candidates() if self.fallback else [])


PYWB = Artefact("pypi", "pywb", "2.10.0", "5ae43c9b2a5321e39b9c8e16538bfbc0146eeb6fe26713232e45378b774a1a96")
NPM_WARC = Artefact("npm", "warc", "1.0.1", "30581310d525b655cdcd962b5afdf92d9eef03b91151b720ad3d8ea5f36f8df4")
# bookworm-security's version first, then the bookworm point release's (both in the archive on 2026-12-03)
PYDOC = Artefact(
    "debian",
    "python3.11-doc",
    "3.11.2-6+deb12u9",
    "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
    fallback=Artefact(
        "debian",
        "python3.11-doc",
        "3.11.2-6+deb12u8",
        "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b",
    ),
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
