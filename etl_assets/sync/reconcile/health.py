"""Whether a store answers: one round trip, its latency and the server's version."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pymongo.database import Database
from pymongo.errors import PyMongoError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.sync.reconcile.findings import Finding
from etl_assets.sync.stores import unavailable


@dataclass
class StoreHealth(Finding):
    """A store that answered. One that does not raises StoreUnavailableError instead."""

    store: str
    latency_ms: float
    server_version: str

    @property
    def failing(self) -> int:
        return 0

    @property
    def sample_ids(self) -> list[str]:
        return []

    def details(self) -> dict[str, Any]:
        return {"store": self.store, "latency_ms": self.latency_ms, "server_version": self.server_version}


def ping_mongo(db: Database, store: str) -> StoreHealth:
    """One round trip, bounded by the client's server selection timeout."""
    started = time.monotonic()
    try:
        version = db.command("buildInfo")["version"]
    except PyMongoError as err:
        raise unavailable(store, err) from None
    return StoreHealth(store, round((time.monotonic() - started) * 1000, 1), version)


def ping_postgres(engine: Engine, store: str) -> StoreHealth:
    """One round trip, bounded by the engine's connect timeout."""
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
    except SQLAlchemyError as err:
        raise unavailable(store, err) from None
    return StoreHealth(store, round((time.monotonic() - started) * 1000, 1), version)
