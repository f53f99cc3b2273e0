"""Connections to the three shop stores and the warehouse, failing fast with the store's name, a round
trip to each (its health, as the store_reachable checks report it), and the data version of a source
collection."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pymongo
import sqlalchemy as sa
from bson.codec_options import DatetimeConversion
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.sync.reconcile.findings import Finding

# The stores' names, as errors, checks and alerts show them.
PRODUCT_DB = "Product MongoDB"
ORDER_DB = "Order MongoDB"
CART_DB = "Cart PostgreSQL"
WAREHOUSE = "Warehouse PostgreSQL"


class StoreUnavailableError(RuntimeError):
    """A store could not be reached. The message names the store and never carries credentials."""

    def __init__(self, store: str, reason: str):
        super().__init__(f"{store} is unavailable: {reason}")
        self.store = store
        self.reason = reason


def unavailable(store: str, err: Exception) -> StoreUnavailableError:
    """The error for a store a driver could not reach: the first line of the driver's own message
    (SQLAlchemy's wrapped original where there is one), which names hosts but never credentials."""
    cause = getattr(err, "orig", None) or err
    text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return StoreUnavailableError(store, text[:300])


def redacted_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and metadata."""
    if url.startswith("mongodb"):
        scheme, _, rest = url.partition("://")
        creds, at, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if at else url
    return make_url(url).render_as_string(hide_password=True)


def mongo_client(uri: str, *, store: str, timeout_s: float) -> pymongo.MongoClient:
    """A client that gives up within `timeout_s` when the server is down, checked with a ping.

    A timeout the URI sets (connectTimeoutMS, serverSelectionTimeoutMS) wins: pymongo's monitor waits
    connectTimeoutMS for a heartbeat and cancels the reads in flight when it goes unanswered, so a
    server that can stall longer is given more time in its URI."""
    timeout_ms = int(timeout_s * 1000)
    in_uri = {name.lower() for name in parse_qs(urlsplit(uri).query)}
    timeouts = {name: timeout_ms for name in ("serverSelectionTimeoutMS", "connectTimeoutMS")
                if name.lower() not in in_uri}
    client: pymongo.MongoClient = pymongo.MongoClient(
        uri,
        **timeouts,
        appname="shop-sync",
        tz_aware=True,
        # A date outside Python's years 1..9999 decodes as a DatetimeMS, for the sync to quarantine,
        # instead of failing the read of its whole batch.
        datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    )
    try:
        client.admin.command("ping")
    except PyMongoError as err:
        client.close()
        raise unavailable(store, err) from None
    return client


def mongo_database(uri: str, database: str, *, store: str, timeout_s: float) -> Database:
    return mongo_client(uri, store=store, timeout_s=timeout_s)[database]


def postgres_engine(url: str, *, store: str, timeout_s: float, statement_timeout_s: float = 0) -> Engine:
    """An engine whose first connection is checked, so a dead server fails within `timeout_s`."""
    options = f"-c statement_timeout={int(statement_timeout_s * 1000)}" if statement_timeout_s else ""
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(timeout_s)), "options": options},
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as err:
        engine.dispose()
        raise unavailable(store, err) from None
    return engine


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


def _milliseconds_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def ping_mongo(db: Database, store: str) -> StoreHealth:
    """One round trip, bounded by the client's server selection timeout."""
    started = time.monotonic()
    try:
        version = db.command("buildInfo")["version"]
    except PyMongoError as err:
        raise unavailable(store, err) from None
    return StoreHealth(store, _milliseconds_since(started), version)


def ping_postgres(engine: Engine, store: str) -> StoreHealth:
    """One round trip, bounded by the engine's connect timeout."""
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
    except SQLAlchemyError as err:
        raise unavailable(store, err) from None
    return StoreHealth(store, _milliseconds_since(started), version)


def collection_fingerprint(collection: Collection, date_field: str) -> tuple[int, datetime | None]:
    """(documents, newest `date_field`), computed by the server: a source collection's data version.
    The newest is None when no document holds a date there that Python can represent."""
    summary = next(collection.aggregate([
        {"$group": {"_id": None, "count": {"$sum": 1}, "newest": {"$max": f"${date_field}"}}},
    ]), None)
    if summary is None:
        return 0, None
    newest = summary["newest"]
    return summary["count"], newest if isinstance(newest, datetime) else None
