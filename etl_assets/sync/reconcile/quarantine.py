"""What a sync has put in quarantine (etl_assets/sync/quarantine.py): open now, and new since a previous
look."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl_assets.sync.reconcile.findings import SAMPLE_SIZE, Finding, Sample, reported
from etl_assets.sync.reconcile.tables import table_exists

# The detail of a QuarantineStatus that the next status takes as its `since`: the field's name.
AS_OF = "as_of"


@dataclass
class QuarantineStatus(Finding):
    """A source's open quarantine, and what is new in it since `since` (a previous status's `as_of`)."""

    source: str
    as_of: datetime
    since: datetime | None = None
    open: int = 0
    new: Sample = field(default_factory=Sample, metadata=reported("new"))
    reasons: list[str] = field(default_factory=list, metadata=reported("sample_reasons"))

    @property
    def failing(self) -> int:
        return self.new.count

    @property
    def sample_ids(self) -> list[str]:
        return self.new.ids


_QUARANTINE_COUNTS = sa.text("""
    SELECT count(*) AS open,
           count(*) FILTER (WHERE CAST(:since AS timestamptz) IS NULL OR first_seen > :since) AS new
    FROM etl_quarantine WHERE source = :source AND resolved_at IS NULL
""")
_QUARANTINE_NEW = sa.text("""
    SELECT record_id, reason FROM etl_quarantine
    WHERE source = :source AND resolved_at IS NULL
      AND (CAST(:since AS timestamptz) IS NULL OR first_seen > :since)
    ORDER BY first_seen DESC, record_id LIMIT :limit
""")


def quarantine_status(warehouse: Engine, source: str, since: datetime | None) -> QuarantineStatus:
    """`as_of` is the warehouse's clock, which also stamps first_seen, so no two clocks are compared.
    A record quarantined again after it was resolved counts as new."""
    with warehouse.connect() as conn:
        status = QuarantineStatus(source, conn.execute(sa.text("SELECT now()")).scalar_one(), since)
        if not table_exists(conn, "etl_quarantine"):
            return status
        params = {"source": source, "since": since}
        counts = conn.execute(_QUARANTINE_COUNTS, params).one()
        new = conn.execute(_QUARANTINE_NEW, {**params, "limit": SAMPLE_SIZE}).all()
    status.open = counts.open
    status.new = Sample(counts.new, [r.record_id for r in new])
    status.reasons = [f"{r.record_id}: {r.reason}" for r in new]
    return status
