"""Whether each day's warehouse rows stand for the source's current orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import ClassVar

from pymongo.collection import Collection
from sqlalchemy.engine import Engine

from etl_assets.sync.order_days import DayToBuild, days_to_build
from etl_assets.sync.reconcile.findings import LENGTH_ONLY, SAMPLE_SIZE, UNREPORTED, Finding


@dataclass
class DayCoverage(Finding):
    """Days of the window whose warehouse rows do not stand for the source's current orders."""

    first: date = field(metadata=UNREPORTED)  # reported as the window
    last: date = field(metadata=UNREPORTED)
    never_built: list[DayToBuild] = field(default_factory=list, metadata=LENGTH_ONLY)
    outdated: list[DayToBuild] = field(default_factory=list, metadata=LENGTH_ONLY)

    reported_properties: ClassVar[tuple[str, ...]] = ("window", "reasons")

    @property
    def window(self) -> str:
        return f"{self.first} to {self.last}"

    @property
    def reasons(self) -> dict[str, str]:
        """Why each day of the sample is to be built again."""
        sample = [*self.never_built, *self.outdated][:SAMPLE_SIZE]
        return {stale.day.isoformat(): stale.reason for stale in sample}

    @property
    def failing(self) -> int:
        return len(self.never_built) + len(self.outdated)

    @property
    def sample_ids(self) -> list[str]:
        return [stale.day.isoformat() for stale in [*self.never_built, *self.outdated]][:SAMPLE_SIZE]

    def lost_days(self) -> list[date]:
        """Never-built days older than the newest: the nightly sweep and the sensor should have built them."""
        return [stale.day for stale in self.never_built if stale.day < self.last]


def order_day_coverage(orders: Collection, warehouse: Engine, first: date, last: date) -> DayCoverage:
    """Each day from `first` to `last`: its orders' fingerprint in the source against the one its last
    build recorded (etl_assets/sync/order_days.py)."""
    result = DayCoverage(first, last)
    for stale in days_to_build(orders, warehouse, first, last):
        (result.never_built if stale.built is None else result.outdated).append(stale)
    return result
