"""What a sync did, as plain counts a Dagster asset turns into metadata."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SyncReport:
    mode: str
    dry_run: bool
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    quarantined: int = 0
    resolved: int = 0
    stale_skipped: int = 0
    # Product sync only (None elsewhere): rows kept, active, whose product is still in the source but
    # fails the contract; and a full sync's mass-deactivation guard: the active rows before, how many
    # may go, whether `deactivated` would be refused (a dry run reports it) or the override allowed it.
    stale_invalid: int | None = None
    active_before: int | None = None
    deactivation_limit: int | None = None
    deactivation_refused: bool | None = None
    mass_deactivation_allowed: bool | None = None
    batches: int = 0
    watermark_before: Any = None
    watermark_after: Any = None
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0

    def finish(self) -> SyncReport:
        self.duration_s = round(time.monotonic() - self.started, 3)
        return self

    @property
    def written(self) -> int:
        """Records the sync wrote: inserted, updated, or deactivated."""
        return self.inserted + self.updated + self.deactivated

    @property
    def rows_per_s(self) -> float:
        return round(self.read / self.duration_s, 1) if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("started")
        data["rows_per_s"] = self.rows_per_s
        return data
