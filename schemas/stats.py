"""``stats.json``: every stage's accounting, ``read == kept + sum(dropped.values())``.

Written last by a stage's commit (``pipeline.commit``), which adds ``attempt`` (the attempt that wrote the
output) and ``files`` (every output file: ``path`` relative to the stage folder, ``size``, ``sha256`` or
null above 64 MiB); readers take a stage's files from that list. Both land in :attr:`StageStats.extra` on
load. No I/O here (``schemas/`` validates and serialises): the commit writes ``to_dict()`` through
``pipeline.fs``, and ``pipeline.stage.load_stats`` reads a stage folder's record back with ``from_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class AccountingError(AssertionError):
    """A stage lost or invented records: its counts do not add up."""


@dataclass
class StageStats:
    stage: str
    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # created/repeated records, timings, per-source counts

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def check(self) -> StageStats:
        total = self.kept + sum(self.dropped.values())
        if total != self.read:
            raise AccountingError(
                f"stage {self.stage}: read {self.read} != kept {self.kept} + dropped {sum(self.dropped.values())}"
                f" {self.dropped}"
            )
        if any(v < 0 for v in self.dropped.values()) or self.kept < 0:
            raise AccountingError(f"stage {self.stage}: negative count in {self.to_dict()}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropped"] = dict(sorted(d["dropped"].items()))
        extra = d.pop("extra")
        d.update(extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStats:
        d = dict(d)
        base = {k: d.pop(k) for k in ("stage", "read", "kept", "dropped") if k in d}
        return cls(**base, extra=d)
