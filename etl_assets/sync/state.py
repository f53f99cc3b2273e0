"""Sync state that must survive a crash (watermarks), kept in the warehouse."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


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
