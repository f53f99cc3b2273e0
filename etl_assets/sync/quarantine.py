"""The warehouse quarantine: every record a sync cannot load, with the reason and the raw payload.

A record stays open until a later sync sees it valid (or gone); then it is marked resolved.
Valid rows plus open quarantine rows always account for the whole source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from bson import json_util
from sqlalchemy.engine import Connection, Engine


@dataclass(frozen=True)
class Rejection:
    """One record that failed to sync: which one, why, and exactly what it held."""

    record_id: str
    reason: str
    payload: Any


# A NUL escape in JSON text: \u0000 after an even number of backslashes (none included). After an odd
# number, the backslash before "u0000" is itself escaped and the six characters \u0000 are plain text.
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def payload_json(payload: Any) -> str:
    """JSON for any BSON/Python value. NUL characters, which jsonb refuses, are kept as visible text."""
    text = json_util.dumps(payload, json_options=json_util.RELAXED_JSON_OPTIONS)
    return _NUL_ESCAPE.sub(r"\1\\\\u0000", text)


_UPSERT = sa.text("""
    INSERT INTO etl_quarantine AS q (source, record_id, reason, payload, run_id, first_seen, last_seen)
    VALUES (:source, :record_id, :reason, CAST(:payload AS jsonb), :run_id, now(), now())
    ON CONFLICT (source, record_id) DO UPDATE SET
        reason = excluded.reason,
        payload = excluded.payload,
        run_id = excluded.run_id,
        last_seen = excluded.last_seen,
        first_seen = CASE WHEN q.resolved_at IS NULL THEN q.first_seen ELSE excluded.first_seen END,
        resolved_at = NULL
""")


class Quarantine:
    """The quarantine rows of one source (e.g. 'product_db.products'), written by one run."""

    def __init__(self, warehouse: Engine, source: str, run_id: str):
        self.warehouse = warehouse
        self.source = source
        self.run_id = run_id

    def put(self, rejections: Sequence[Rejection], conn: Connection | None = None) -> None:
        """Upsert the rejections, in their own transaction or, given `conn`, in the caller's."""
        if not rejections:
            return
        rows = [{"source": self.source, "record_id": r.record_id, "reason": r.reason,
                 "payload": payload_json(r.payload), "run_id": self.run_id} for r in rejections]
        if conn is not None:
            conn.execute(_UPSERT, rows)
            return
        with self.warehouse.begin() as own:
            own.execute(_UPSERT, rows)

    def resolve(self, record_ids: Iterable[str]) -> int:
        """Close the open rows of records that have just synced cleanly."""
        ids = list(record_ids)
        if not ids:
            return 0
        with self.warehouse.begin() as conn:
            return conn.execute(sa.text("""
                UPDATE etl_quarantine SET resolved_at = now()
                WHERE source = :source AND resolved_at IS NULL AND record_id = ANY(:ids)
            """), {"source": self.source, "ids": ids}).rowcount

    def resolve_unseen_since(self, started_at: datetime) -> int:
        """After a full pass: close the open rows this pass did not reject again."""
        with self.warehouse.begin() as conn:
            return conn.execute(sa.text("""
                UPDATE etl_quarantine SET resolved_at = now()
                WHERE source = :source AND resolved_at IS NULL AND last_seen < :started_at
            """), {"source": self.source, "started_at": started_at}).rowcount


def open_count(warehouse: Engine, source: str) -> int:
    """How many records of a source wait in quarantine."""
    with warehouse.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM etl_quarantine WHERE source = :source AND resolved_at IS NULL"
        ), {"source": source}).scalar_one()


def open_rejections(warehouse: Engine, source: str, limit: int = 20) -> list[dict]:
    """A sample of the open quarantine rows of a source, newest first."""
    with warehouse.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT record_id, reason FROM etl_quarantine
            WHERE source = :source AND resolved_at IS NULL
            ORDER BY last_seen DESC, record_id LIMIT :limit
        """), {"source": source, "limit": limit})
        return [dict(r._mapping) for r in rows]
