"""The product copy (Cart PostgreSQL `product`) against the catalog (Product MongoDB `products`), and a
sharp drop of the copy's active rows."""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import sqlalchemy as sa
from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.sync import products as product_sync
from etl_assets.sync.guard import DEFAULT_GUARD, DeactivationGuard
from etl_assets.sync.pg_copy import CSV_OPTIONS, copy_frame
from etl_assets.sync.product_transform import TransformedBatch, transform_batch
from etl_assets.sync.reconcile.findings import SAMPLE_SIZE, UNREPORTED, Finding, Sample, first_ids, reported
from etl_assets.sync.reconcile.quarantine import quarantine_status
from etl_assets.sync.streams import transform_then_load

# The product fields whose drift is reported one by one; any other difference counts as "other".
DRIFT_FIELDS = ("price", "title", "quantity", "image")
# The details of an ActiveRowsDrop that the next one takes its baseline from (passed, failed): field names.
ACTIVE_ROWS, BASELINE_ACTIVE_ROWS = "active_rows", "baseline_active_rows"


@dataclass
class ProductReconciliation(Finding):
    """The catalog against its copy. The copy is right when every valid catalog product is active in it
    with the same content hash, and nothing else is active but the last good rows of products that now
    fail the contract (stale, as the sync keeps them): source documents − open quarantine + stale =
    active copy rows. A few stale rows are the sync's choice; more than the mass-deactivation guard's
    limit mean the catalog drifted, and fail. A source that reads empty while the copy holds rows fails."""

    source_documents: int = 0
    source_rejected: int = 0
    quarantined_open: int = 0
    active_copy_rows: int = 0
    copy_rows: int = 0
    stale_limit: int = 0
    missing: Sample = field(default_factory=Sample)
    extra: Sample = field(default_factory=Sample)
    drifted: Sample = field(default_factory=Sample)
    stale: Sample = field(default_factory=Sample, metadata=reported("stale_invalid", ids="stale_invalid_ids"))
    drifted_fields: Counter[str] = field(default_factory=Counter)

    reported_properties: ClassVar[tuple[str, ...]] = ("source_empty", "expected_active_rows", "counts_match")

    @property
    def expected_active_rows(self) -> int:
        return self.source_documents - self.quarantined_open + self.stale.count

    @property
    def counts_match(self) -> bool:
        return self.expected_active_rows == self.active_copy_rows

    @property
    def source_empty(self) -> bool:
        """The source read empty while the copy holds rows: a wrong database or collection, not a catalog."""
        return self.source_documents == 0 and self.copy_rows > 0

    @property
    def catalog_drifted(self) -> bool:
        return self.stale.count > self.stale_limit

    @property
    def failing(self) -> int:
        stale = self.stale.count if self.catalog_drifted else 0
        return self.missing.count + self.extra.count + self.drifted.count + stale

    @property
    def sample_ids(self) -> list[str]:
        stale = self.stale if self.catalog_drifted else Sample()
        return first_ids(self.missing, self.extra, self.drifted, stale)

    @property
    def passed(self) -> bool:
        return self.failing == 0 and self.counts_match and not self.source_empty


# Session-private: each batch as staged by COPY (emptied at each commit), and the ids of the valid
# catalog products seen so far (unindexed: appending is cheap, and the anti-join at the end hashes them).
_STAGE = """
    CREATE TEMP TABLE catalog_batch (id text, content_hash text, price numeric, title text, quantity integer,
                                     image text) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE catalog_seen (id text)
"""
_STAGED_COLUMNS = ("id", "content_hash", *DRIFT_FIELDS)
_COPY_BATCH = f"COPY catalog_batch ({', '.join(_STAGED_COLUMNS)}) FROM STDIN WITH {CSV_OPTIONS}"
# One statement per batch: remember the staged batch's ids, and return only the products that are not right
# in the copy. The content hash finds any change made in the catalog; the named fields are compared one by
# one too, because a write to the copy's own columns (the cart service's, say) leaves the copy's hash as it
# was. LIMIT keeps the lookup a per-id index probe: as a plain join, the planner, knowing nothing of the
# batch, merge-joins it with the whole index, and each batch would cost more than the one before.
_COMPARE_BATCH = """
    WITH seen AS (
        INSERT INTO catalog_seen SELECT id FROM catalog_batch
    )
    SELECT c.id, p.id IS NULL OR NOT p.is_active AS missing,
           p.price <> c.price, p.title <> c.title, p.quantity <> c.quantity, p.image <> c.image
    FROM catalog_batch c
    LEFT JOIN LATERAL (SELECT * FROM product WHERE product.id = c.id LIMIT 1) p ON true
    WHERE p.id IS NULL OR NOT p.is_active OR p.content_hash <> c.content_hash
       OR p.price <> c.price OR p.title <> c.title OR p.quantity <> c.quantity OR p.image <> c.image
"""
_ANALYZE_SEEN = "ANALYZE catalog_seen"  # temp tables get no autovacuum: give the planner the row count
_UNSEEN_ACTIVE = "FROM product p WHERE p.is_active AND NOT EXISTS (SELECT 1 FROM catalog_seen s WHERE s.id = p.id)"
_COUNT_COPY = f"""
    SELECT (SELECT count(*) FROM product WHERE is_active), (SELECT count(*) {_UNSEEN_ACTIVE}),
           (SELECT count(*) FROM product)
"""  # noqa: S608 - constant
# Catalog products that fail the contract and whose last good row is active: the sync keeps those rows.
_STALE_ROWS = """
    WITH stale AS (SELECT id FROM product WHERE id = ANY(%s) AND is_active),
         seen AS (INSERT INTO catalog_seen SELECT id FROM stale)
    SELECT id FROM stale ORDER BY id
"""
_SAMPLE_EXTRA = f"SELECT p.id {_UNSEEN_ACTIVE} ORDER BY p.id LIMIT %s"  # noqa: S608 - constant


def _compare_batch(session: Any, result: ProductReconciliation, batch: TransformedBatch) -> None:
    """COPY the batch's compared columns, then compare them with the copy."""
    invalid_ids = product_sync.rejected_copy_ids(batch)
    with session.cursor() as cursor:
        copy_frame(cursor, _COPY_BATCH, batch.valid.select(_STAGED_COLUMNS))
        cursor.execute(_COMPARE_BATCH)
        rows = cursor.fetchall()
        if invalid_ids:
            cursor.execute(_STALE_ROWS, (invalid_ids,))
            result.stale.add([row[0] for row in cursor.fetchall()])
    session.commit()
    for record_id, missing, *differs in rows:
        if missing:
            result.missing.add([record_id])
        else:
            result.drifted.add([record_id])
            result.drifted_fields.update([f for f, d in zip(DRIFT_FIELDS, differs, strict=True) if d] or ["other"])


def reconcile_products(product_db: Database, cart_db: Engine, warehouse: Engine, *,
                       guard: DeactivationGuard = DEFAULT_GUARD,
                       batch_size: int = product_sync.BATCH_SIZE) -> ProductReconciliation:
    """Scan the catalog like a full product sync does, flatten, validate and hash each batch with the
    sync's own transform, and compare it with the copy in one statement per batch.

    As in the sync, three stages overlap (transform_then_load): the source streams the next batches,
    this thread transforms, and one thread stages each batch with COPY and compares it with the copy. The
    server keeps the ids seen, so the active copy rows never seen are counted and sampled there at the
    end, and no id set is held in memory. It runs in a session of its own, whose temporary tables end
    with it; it writes nothing else.
    """
    result = ProductReconciliation(quarantined_open=quarantine_status(warehouse, product_sync.SOURCE, None).open)
    session = cart_db.raw_connection()
    session.detach()  # the temp tables must not outlive the check in a pooled connection
    with closing(session):
        with session.cursor() as cursor:
            cursor.execute(_STAGE)
        session.commit()
        for batch, _ in transform_then_load(product_sync.iter_full(product_db["products"], batch_size),
                                            transform_batch, partial(_compare_batch, session, result),
                                            thread_name="product-compare"):
            result.source_documents += batch.read
            result.source_rejected += len(batch.rejections)
        with session.cursor() as cursor:
            cursor.execute(_ANALYZE_SEEN)
            cursor.execute(_COUNT_COPY)
            result.active_copy_rows, extra, result.copy_rows = cursor.fetchone()
            result.stale_limit = guard.limit(result.active_copy_rows)
            cursor.execute(_SAMPLE_EXTRA, (SAMPLE_SIZE,))
            result.extra = Sample(extra, [row[0] for row in cursor.fetchall()])
        session.commit()
    return result


@dataclass
class ActiveRowsDrop(Finding):
    """The copy's active rows against a baseline (the last passing evaluation's): more gone than the
    mass-deactivation guard allows at once means the copy was wiped, by whatever means."""

    active_rows: int
    copy_rows: int
    baseline_active_rows: int | None
    limit: int | None
    recently_deactivated: list[str] = field(default_factory=list, metadata=UNREPORTED)

    reported_properties: ClassVar[tuple[str, ...]] = ("active_share", "dropped", "dropped_share")

    @property
    def active_share(self) -> float:
        return round(self.active_rows / self.copy_rows, 4) if self.copy_rows else 0.0

    @property
    def dropped(self) -> int:
        return max(0, self.baseline_active_rows - self.active_rows) if self.baseline_active_rows is not None else 0

    @property
    def dropped_share(self) -> float:
        return round(self.dropped / self.baseline_active_rows, 4) if self.baseline_active_rows else 0.0

    @property
    def failing(self) -> int:
        return self.dropped if self.limit is not None and self.dropped > self.limit else 0

    @property
    def sample_ids(self) -> list[str]:
        return self.recently_deactivated if self.failing else []


_ACTIVE_ROWS = sa.text("SELECT count(*) FILTER (WHERE is_active) AS active, count(*) AS rows FROM product")
_RECENTLY_DEACTIVATED = sa.text(
    "SELECT id FROM product WHERE NOT is_active ORDER BY synced_at DESC NULLS LAST, id LIMIT :limit")


def active_rows_drop(cart_db: Engine, baseline_active_rows: int | None, *,
                     guard: DeactivationGuard = DEFAULT_GUARD) -> ActiveRowsDrop:
    """The active rows now; with no baseline (a first evaluation) nothing can have dropped."""
    with cart_db.connect() as conn:
        counts = conn.execute(_ACTIVE_ROWS).one()
        sample = conn.execute(_RECENTLY_DEACTIVATED, {"limit": SAMPLE_SIZE}).scalars().all()
    limit = guard.limit(baseline_active_rows) if baseline_active_rows is not None else None
    return ActiveRowsDrop(counts.active, counts.rows, baseline_active_rows, limit, list(sample))
