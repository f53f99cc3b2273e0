"""Product sync: Product MongoDB `products` → Cart PostgreSQL `product`.

Streams the source in batches of raw documents (full mode: one server cursor over the collection;
incremental mode: two cursors over the (updatedAt, _id) index, one from the watermark's updatedAt, one
for documents without updatedAt whose _id was created since its created_at), with the next batch
read ahead while this one is transformed (product_transform) and loaded. Each document is flattened
and validated; valid rows are bulk loaded (COPY into a session-private staging table, then INSERT …
ON CONFLICT; into an empty copy, COPY straight in) and the rest are quarantined. Unchanged rows are
not rewritten (content hash). Stale beats missing: a product still in the source that now fails the
contract keeps its last good row, active (counted as stale_invalid). After a complete full pass,
active rows of products absent from the source are deactivated, never deleted, unless they exceed
the mass-deactivation guard (sync/guard.py): then the sync fails before deactivating anything. Each
batch commits on its own and the watermark (the newest updatedAt read, never past the sync's own
start, and the sync's start for documents without updatedAt) and the quarantine's resolution are
saved only at the end, so a killed or refused run is simply run again and converges. Edits of a
document without updatedAt move no date: they wait for the full sync (or a change stream)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import polars as pl
import psycopg2.errors
from bson import ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.sync.guard import DEFAULT_GUARD, DeactivationGuard, MassDeactivationRefused
from etl_assets.sync.modes import Mode, check_run_arguments
from etl_assets.sync.pg_copy import CSV_OPTIONS, copy_frame, copy_rows, csv_rows
from etl_assets.sync.product_transform import TransformedBatch, transform_batch
from etl_assets.sync.quarantine import Quarantine
from etl_assets.sync.raw_cursor import find_documents
from etl_assets.sync.report import SyncReport
from etl_assets.sync.state import load_watermark, save_watermark
from etl_assets.sync.stores import PRODUCT_DB
from etl_assets.sync.streams import transform_then_load

SOURCE = "product_db.products"
SYNC_NAME = "product_sync"
# Re-read this much before the watermark: writers' clocks and in-flight writes may lag a little.
WATERMARK_LOOKBACK = timedelta(seconds=60)


@dataclass(frozen=True)
class CopyColumn:
    """A column of the cart database's `product` table: its name, SQL type and what it holds."""

    name: str
    sql_type: str
    description: str | None = None


# The copy's columns in the table's order, as the cart service's schema and the ETL's migration
# (migrations/cart_db) make them; a test holds this list to the migrated table. The staging table, the
# upsert and the asset's column schema are built from it.
PRODUCT_TABLE_COLUMNS = (
    CopyColumn("id", "varchar(24)", "hex of the Product MongoDB _id"),
    CopyColumn("title", "text"),
    CopyColumn("price", "numeric(12,2)"),
    CopyColumn("image", "text"),
    CopyColumn("seller_id", "text"),
    CopyColumn("quantity", "integer"),
    CopyColumn("category", "text"),
    CopyColumn("description", "text"),
    CopyColumn("rating", "numeric(3,2)"),
    CopyColumn("tags", "jsonb"),
    CopyColumn("source_updated_at", "timestamptz"),
    CopyColumn("content_hash", "char(32)", "MD5 of the synced fields"),
    CopyColumn("is_active", "boolean", "false once the product left the source"),
    CopyColumn("synced_at", "timestamptz", "last time the ETL wrote the row"),
)
# What the sync copies from a source product; is_active and synced_at are the ETL's bookkeeping.
BOOKKEEPING_COLUMNS = ("is_active", "synced_at")
COPY_COLUMNS = tuple(c.name for c in PRODUCT_TABLE_COLUMNS if c.name not in BOOKKEEPING_COLUMNS)
# Validation has a fixed cost per batch; 10,000 documents amortise it and keep memory well bounded.
BATCH_SIZE = 10_000


# ---------- extract ----------

def iter_full(products: Collection, batch_size: int, query: Mapping[str, Any] | None = None) -> Iterator[list[bytes]]:
    """The whole collection (or the part `query` selects) in one server cursor, in natural order: the
    cheapest full scan a server offers. Raw documents: the transform decodes them column by column.
    Deactivation does not depend on the order (ids seen are collected server-side)."""
    return find_documents(products, query or {}, store=PRODUCT_DB, batch_size=batch_size)


def iter_changed_since(products: Collection, since: datetime, batch_size: int) -> Iterator[list[bytes]]:
    """Documents changed since `since`, in (updatedAt, _id) order, in one cursor over the product
    service's {updatedAt: 1, _id: 1} index. One cursor, not a query per page: a keyset `$or` page
    query defeats the index on some servers, and a killed run restarts from the saved watermark."""
    return find_documents(products, {"updatedAt": {"$gte": since}}, store=PRODUCT_DB, batch_size=batch_size,
                          sort=[("updatedAt", 1), ("_id", 1)])


def iter_created_without_updated_at(products: Collection, since: datetime,
                                    batch_size: int) -> Iterator[list[bytes]]:
    """Documents without updatedAt (missing or null; a bulk import, say) whose _id was created since
    `since`: the ObjectId's embedded creation time stands in for the date. The same index, bounded on
    both fields (a missing field is indexed as null), so only those documents are read. (An `_id` range
    alone is a collection scan on some servers.)"""
    return find_documents(products, {"updatedAt": None, "_id": {"$gte": ObjectId.from_datetime(since)}},
                          store=PRODUCT_DB, batch_size=batch_size, sort=[("updatedAt", 1), ("_id", 1)])


def _stream_start(watermark: dict[str, str], component: str) -> datetime:
    """Where an incremental stream starts: its watermark component minus the look-back. A watermark
    saved before the component existed falls back on the other one."""
    other = "created_at" if component == "updated_at" else "updated_at"
    return datetime.fromisoformat(watermark.get(component) or watermark[other]) - WATERMARK_LOOKBACK


def iter_incremental(products: Collection, watermark: dict[str, str], batch_size: int) -> Iterator[list[bytes]]:
    """Both incremental streams, one after the other, disjoint: documents whose updatedAt is past the
    watermark's `updated_at`, then documents without updatedAt created past its `created_at`."""
    yield from iter_changed_since(products, _stream_start(watermark, "updated_at"), batch_size)
    yield from iter_created_without_updated_at(products, _stream_start(watermark, "created_at"), batch_size)


# ---------- load ----------

_STAGE = f"""
    CREATE TEMP TABLE IF NOT EXISTS product_stage (
        {", ".join(f"{c.name} {c.sql_type}" for c in PRODUCT_TABLE_COLUMNS if c.name in COPY_COLUMNS)}
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS product_seen (id varchar(24))
"""
# A row changes when the source content changed (hash) or when the copy itself was edited: comparing
# the columns too repairs a price someone changed in the cart database behind the ETL's back.
SYNCED_COLUMNS = ("content_hash",
                  *(c for c in COPY_COLUMNS if c not in ("id", "source_updated_at", "content_hash")))


def _differs_from_copy(new: str) -> str:
    """SQL: the incoming row `new` differs from the copy row `p` in a synced column."""
    return (f"({', '.join(f'p.{c}' for c in SYNCED_COLUMNS)}) "
            f"IS DISTINCT FROM ({', '.join(f'{new}.{c}' for c in SYNCED_COLUMNS)})")


_UPSERT = f"""
    WITH written AS (
        INSERT INTO product AS p ({", ".join(COPY_COLUMNS)}, is_active, synced_at)
        SELECT {", ".join(COPY_COLUMNS)}, true, now()
        FROM product_stage s
        -- Only rows the copy lacks or holds otherwise. ON CONFLICT DO UPDATE locks every row it meets,
        -- even one its WHERE then leaves alone, and a lock is a write: WAL and a dirtied page per row.
        WHERE NOT EXISTS (SELECT FROM product p WHERE p.id = s.id AND p.is_active
                          AND NOT {_differs_from_copy("s")})
        ON CONFLICT (id) DO UPDATE SET
            {", ".join(f"{c} = excluded.{c}" for c in COPY_COLUMNS if c != "id")},
            is_active = true, synced_at = excluded.synced_at
        WHERE NOT p.is_active OR {_differs_from_copy("excluded")}
        RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""  # noqa: S608 - built from constant column names
_COPY_IS_EMPTY = "SELECT NOT EXISTS (SELECT 1 FROM product)"
_PLAN = f"""
    SELECT count(*) FILTER (WHERE p.id IS NULL) AS inserted,
           count(*) FILTER (WHERE p.id IS NOT NULL
                            AND (NOT p.is_active OR {_differs_from_copy("s")})) AS updated
    FROM product_stage s LEFT JOIN product p ON p.id = s.id
"""  # noqa: S608 - built from constant column names
_CSV = f"({', '.join(COPY_COLUMNS)}) FROM STDIN WITH {CSV_OPTIONS}"
_COPY_TO_STAGE = f"COPY product_stage {_CSV}"
# is_active and synced_at take the columns' defaults: true, now().
_COPY_TO_PRODUCT = f"COPY product {_CSV}"
# No key: appending is cheaper than keeping an index, and the anti-join at the end hashes the ids anyway.
_REMEMBER_STAGED = "INSERT INTO product_seen SELECT id FROM product_stage"
_COPY_TO_SEEN = f"COPY product_seen (id) FROM STDIN WITH {CSV_OPTIONS}"
# Products present in the source but failing the contract: their active rows stay as they are.
_STALE = "SELECT id FROM product WHERE id = ANY(%s) AND is_active"
_COUNT_STALE = f"SELECT count(*) FROM ({_STALE}) stale"  # noqa: S608 - constant
_REMEMBER_STALE = f"WITH stale AS ({_STALE}), seen AS (INSERT INTO product_seen SELECT id FROM stale) " \
                  "SELECT count(*) FROM stale"  # noqa: S608 - constant
_COUNT_COPY = "SELECT count(*) FROM product"
_ANALYZE_SEEN = "ANALYZE product_seen"  # temp tables get no autovacuum: give the planner the row count
_UNSEEN = "is_active AND NOT EXISTS (SELECT 1 FROM product_seen s WHERE s.id = product.id)"
_DEACTIVATE_UNSEEN = f"UPDATE product SET is_active = false, synced_at = now() WHERE {_UNSEEN}"  # noqa: S608
# Two counts, each with its condition in WHERE: NOT EXISTS inside an aggregate's FILTER would run once
# per row over the unindexed temp table; in WHERE it is a hash anti-join.
_COUNT_ACTIVE_AND_UNSEEN = f"""
    SELECT (SELECT count(*) FROM product WHERE is_active), (SELECT count(*) FROM product WHERE {_UNSEEN})
"""  # noqa: S608 - constant
_COUNT_ACTIVE = "SELECT count(*) FROM product WHERE is_active"


@dataclass
class BatchResult:
    inserted: int
    updated: int
    stale_invalid: int = 0  # active rows kept as they were: their product now fails the contract


@dataclass
class Deactivation:
    """What deactivating the unseen rows of a full pass means: how many go, of how many active."""

    unseen: int
    active: int


class ProductLoader:
    """Loads batches over one cart-database session. The session's temp tables stage each batch and
    remember the ids seen valid, so a full pass can deactivate the rest at the end. A dry run only
    counts what the writes would change; it touches nothing but its own temp tables.

    Into a copy that was empty when the session began (a first load, a rebuilt database), batches are
    copied straight into `product`: no staging, no conflict handling, a third less work for
    PostgreSQL. The first conflict (a row that appeared meanwhile) rolls that batch back to a
    savepoint, upserts it instead, and ends straight copies for the session."""

    def __init__(self, cart_db: Engine, *, dry_run: bool):
        self.dry_run = dry_run
        self.conn = cart_db.raw_connection()
        self.conn.detach()  # its own session: the temp tables end with it, never reused from the pool
        self.straight_copies = False
        self.copied_straight = 0  # rows copied straight in

    def __enter__(self) -> ProductLoader:
        with self.conn.cursor() as cur:
            cur.execute(_STAGE)
            cur.execute(_COPY_IS_EMPTY)
            self.straight_copies = not self.dry_run and cur.fetchone()[0]
        self.conn.commit()
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def load(self, valid: pl.DataFrame, *, invalid_ids: Sequence[str] = (), remember_seen: bool) -> BatchResult:
        """Load the valid rows; the products of `invalid_ids` (present in the source, failing the contract)
        keep their rows as they are, and a full pass remembers them as seen so it does not deactivate them."""
        rows = csv_rows(valid.select(*(("tags_json" if c == "tags" else c) for c in COPY_COLUMNS)))
        with self.conn.cursor() as cur:
            if self.straight_copies and self._copy_straight(cur, rows):
                result = BatchResult(valid.height, 0)
                self.copied_straight += valid.height
                if remember_seen:
                    copy_frame(cur, _COPY_TO_SEEN, valid.select("id"))
            else:
                copy_rows(cur, _COPY_TO_STAGE, rows)
                cur.execute(_PLAN if self.dry_run else _UPSERT)
                result = BatchResult(*cur.fetchone())
                if remember_seen:
                    cur.execute(_REMEMBER_STAGED)
            if invalid_ids:
                cur.execute(_REMEMBER_STALE if remember_seen else _COUNT_STALE, (list(invalid_ids),))
                result.stale_invalid = cur.fetchone()[0]
        self.conn.commit()
        return result

    def _copy_straight(self, cur: Any, rows: io.BytesIO) -> bool:
        """COPY the batch into `product`; False, with nothing written, if one of its rows already exists."""
        cur.execute("SAVEPOINT straight_copy")
        try:
            copy_rows(cur, _COPY_TO_PRODUCT, rows)
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT straight_copy")
            self.straight_copies = False
            return False
        cur.execute("RELEASE SAVEPOINT straight_copy")
        return True

    def plan_deactivation(self) -> Deactivation:
        """After a full pass: the active rows, and those of them the pass did not see."""
        with self.conn.cursor() as cur:
            if self.straight_copies and self._holds_only_copied(cur):
                plan = Deactivation(unseen=0, active=self.copied_straight)
            else:
                cur.execute(_ANALYZE_SEEN)
                cur.execute(_COUNT_ACTIVE_AND_UNSEEN)
                active, unseen = cur.fetchone()
                plan = Deactivation(unseen, active)
        self.conn.commit()
        return plan

    def deactivate_unseen(self) -> int:
        """Deactivate the active rows the full pass did not see; how many it deactivated."""
        with self.conn.cursor() as cur:
            cur.execute(_DEACTIVATE_UNSEEN)
            deactivated = cur.rowcount
        self.conn.commit()
        return deactivated

    def _holds_only_copied(self, cur: Any) -> bool:
        """Whether the copy, which started empty and took every batch straight in, holds exactly the
        rows copied: unless another writer added rows meanwhile, they are the rows seen. (Nothing
        deletes from the copy.)"""
        cur.execute(_COUNT_COPY)
        return cur.fetchone()[0] == self.copied_straight


def _guard_and_deactivate(loader: ProductLoader, report: SyncReport, guard: DeactivationGuard, *,
                          dry_run: bool) -> int:
    """After a complete pass: deactivate the active rows it did not see, unless the guard refuses (a dry
    run only reports it). Records the guard's numbers in `report`; returns how many were deactivated
    (in a dry run, would be)."""
    plan = loader.plan_deactivation()
    apply_guard(report, guard, deactivating=plan.unseen, active=plan.active, dry_run=dry_run)
    return loader.deactivate_unseen() if plan.unseen and not dry_run else plan.unseen


def apply_guard(report: SyncReport, guard: DeactivationGuard, *, deactivating: int, active: int,
                dry_run: bool = False) -> None:
    """Record the guard's verdict on deactivating `deactivating` of `active` rows in `report`, and raise
    MassDeactivationRefused if it refuses, unless this is a dry run. Upserted batches stay (they are
    right); the caller deactivates, resolves and moves nothing after a refusal."""
    report.active_before = active
    report.deactivation_limit = guard.limit(active)
    report.deactivation_refused = guard.refuses(deactivating=deactivating, active=active, read=report.read)
    report.mass_deactivation_allowed = guard.allow_mass_deactivation
    if report.deactivation_refused and not dry_run:
        raise MassDeactivationRefused(guard, source=SOURCE, deactivating=deactivating, active=active,
                                      read=report.read)


def rejected_copy_ids(batch: TransformedBatch) -> list[str]:
    """The ids of the batch's rejected documents that can name a copy row: only an ObjectId _id can."""
    return [r.record_id for r in batch.rejections if ObjectId.is_valid(r.record_id)]


def active_rows(cart_db: Engine) -> int:
    """The active rows of the copy: the products the carts can use."""
    with cart_db.connect() as conn:
        return conn.exec_driver_sql(_COUNT_ACTIVE).scalar_one()


# ---------- the sync ----------

def sync_products(
    product_db: Database,
    cart_db: Engine,
    warehouse: Engine,
    *,
    mode: Mode = "incremental",
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    run_id: str,
    progress: Callable[[str], None] | None = None,
    part: Mapping[str, Any] | None = None,
    end_of_full_pass: Callable[[ProductLoader], int] | None = None,
    guard: DeactivationGuard = DEFAULT_GUARD,
) -> SyncReport:
    """Bring the cart database's product copy in line with the catalog. Returns what changed.

    Raises MassDeactivationRefused, after the pass and before deactivating anything, when a full sync
    would deactivate more than `guard` allows; a dry run reports the same numbers instead.

    `part` makes it a full pass over only the documents that filter selects (one range of a fanned-out
    sync, sync/product_ranges.py): the watermark and the quarantine of records gone from the source
    are then the caller's, once every part is done. `end_of_full_pass` replaces what a complete pass
    does at its end, guarding and deactivating the active rows it did not see; it returns how many it
    deactivated."""
    check_run_arguments(mode, batch_size)
    if part is not None and mode != "full":
        raise ValueError("a part of the catalog is synced in full mode only")
    started_at = datetime.now(UTC)
    watermark = load_watermark(warehouse, SYNC_NAME)
    full = mode == "full" or watermark is None
    report = SyncReport(mode="full" if full else "incremental", dry_run=dry_run, watermark_before=watermark,
                        stale_invalid=0)
    quarantine = Quarantine(warehouse, SOURCE, run_id)
    products = product_db["products"]
    batches = iter_full(products, batch_size, part) if full else iter_incremental(products, watermark, batch_size)

    previous_updated = (watermark or {}).get("updated_at")
    max_updated = datetime.fromisoformat(previous_updated) if previous_updated else None

    def store(loader: ProductLoader, batch: TransformedBatch) -> tuple[BatchResult, int]:
        result = loader.load(batch.valid, invalid_ids=rejected_copy_ids(batch), remember_seen=full)
        resolved = 0
        if not dry_run:
            quarantine.put(batch.rejections)
            if not full:
                resolved = quarantine.resolve(batch.valid["id"])
        return result, resolved

    with ProductLoader(cart_db, dry_run=dry_run) as loader:
        for batch, (result, resolved) in transform_then_load(
                batches, transform_batch, partial(store, loader), thread_name="product-load"):
            report.batches += 1
            report.read += batch.read
            report.quarantined += len(batch.rejections)
            if batch.max_updated_at and (max_updated is None or batch.max_updated_at > max_updated):
                max_updated = batch.max_updated_at
            report.inserted += result.inserted
            report.updated += result.updated
            report.unchanged += batch.valid.height - result.inserted - result.updated
            report.stale_invalid += result.stale_invalid
            report.resolved += resolved
            if progress:
                progress(f"product sync batch {report.batches}: read {report.read}, inserted {report.inserted}, "
                         f"updated {report.updated}, quarantined {report.quarantined}")
        if full:
            # Only after a complete pass: active rows the pass did not see left the source.
            if end_of_full_pass is not None:
                report.deactivated = end_of_full_pass(loader)
            else:
                report.deactivated = _guard_and_deactivate(loader, report, guard, dry_run=dry_run)

    if max_updated and max_updated > started_at:
        # A product dated in the future must not carry the watermark past changes still to come.
        max_updated = started_at
    # Both components move only after a complete pass. created_at is the sync's start: every document
    # without updatedAt created before it has been read (by the full scan, or the second stream).
    report.watermark_after = {"created_at": started_at.isoformat()}
    if max_updated:
        report.watermark_after["updated_at"] = max_updated.isoformat()
    if not dry_run and part is None:
        if full:
            report.resolved += quarantine.resolve_unseen_since(started_at)
        save_watermark(warehouse, SYNC_NAME, report.watermark_after, run_id)
    return report.finish()
