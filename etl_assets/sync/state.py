"""Sync state that must survive a crash, kept in the warehouse: watermarks, and the source fingerprint each
day of orders was last built from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


def load_watermark(warehouse: Engine, sync_name: str) -> dict[str, Any] | None:
    with warehouse.connect() as conn:
        return conn.execute(
            sa.text("SELECT watermark FROM etl_sync_state WHERE sync_name = :name"), {"name": sync_name}
        ).scalar_one_or_none()


def save_watermark(warehouse: Engine, sync_name: str, watermark: dict[str, Any], run_id: str) -> None:
    with warehouse.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO etl_sync_state (sync_name, watermark, last_run_id, updated_at)
            VALUES (:name, CAST(:watermark AS jsonb), :run_id, now())
            ON CONFLICT (sync_name) DO UPDATE SET
                watermark = excluded.watermark, last_run_id = excluded.last_run_id, updated_at = now()
        """), {"name": sync_name, "watermark": json.dumps(watermark), "run_id": run_id})


@dataclass(frozen=True)
class DayBuild:
    """The last successful build of a day of orders: the source fingerprint it was built from."""

    day: date
    fingerprint: str
    orders: int
    run_id: str
    built_at: datetime


def record_day_build(conn: Connection, day: date, fingerprint: str, orders: int, run_id: str) -> None:
    """Record a day's build inside the transaction that writes its rows: both commit, or neither."""
    conn.execute(sa.text("""
        INSERT INTO etl_order_day_builds (day, fingerprint, orders, run_id, built_at)
        VALUES (:day, :fingerprint, :orders, :run_id, now())
        ON CONFLICT (day) DO UPDATE SET fingerprint = excluded.fingerprint, orders = excluded.orders,
            run_id = excluded.run_id, built_at = excluded.built_at
    """), {"day": day, "fingerprint": fingerprint, "orders": orders, "run_id": run_id})


def load_day_builds(warehouse: Engine, first: date, last: date) -> dict[date, DayBuild]:
    """The recorded builds of the days from `first` to `last` (inclusive)."""
    with warehouse.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT day, fingerprint, orders, run_id, built_at FROM etl_order_day_builds
            WHERE day BETWEEN :first AND :last
        """), {"first": first, "last": last})
        return {row.day: DayBuild(*row) for row in rows}
