"""What the asset checks measure: schema, reconciliation, integrity, uniqueness, quarantine, store health.

No Dagster here. Every function streams a store (one server-side cursor, read in batches) or lets the
server aggregate, so memory follows the batch size, never the size of a table or collection. Each returns
a small result: how many records fail, the ids of the first SAMPLE_SIZE of them, and the counts the
verdict rests on. etl_assets/checks/ turns a result into an AssetCheckResult.

The rules themselves live elsewhere and are reused, never restated: the pandera models of
etl_assets/schemas/, and the syncs' own flattening, hashing and validation (transform_batch for products,
check_batch for carts), so a check expects exactly what the sync would have written.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import pandera.polars as pa
import polars as pl
import sqlalchemy as sa
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.schemas.carts import TOTAL_TOLERANCE, CartRow, CartSnapshot
from etl_assets.schemas.orders import polars_schema
from etl_assets.schemas.products import CartDbProduct
from etl_assets.schemas.warehouse import OrderItemsTable, OrdersTable
from etl_assets.sync import carts as cart_sync
from etl_assets.sync import products as product_sync
from etl_assets.sync.guard import DEFAULT_GUARD, DeactivationGuard
from etl_assets.sync.order_days import DayToBuild, days_to_build
from etl_assets.sync.pg_copy import CSV_OPTIONS, copy_frame
from etl_assets.sync.product_transform import TransformedBatch, transform_batch
from etl_assets.sync.stores import unavailable
from etl_assets.sync.streams import batched, transform_then_load
from etl_assets.sync.validate import split_valid

SAMPLE_SIZE = 20
BATCH_SIZE = 5000
# The product fields whose drift is reported one by one; any other difference counts as "other".
DRIFT_FIELDS = ("price", "title", "quantity", "image")
DayRange = tuple[date, date]
# The detail of a QuarantineStatus that the next status takes as its `since`.
AS_OF = "as_of"
# The details of an ActiveRowsDrop that the next one takes its baseline from (passed, failed).
ACTIVE_ROWS, BASELINE_ACTIVE_ROWS = "active_rows", "baseline_active_rows"


# ---------- results ----------

@dataclass
class Sample:
    """How many records share a fault, and the ids of the first SAMPLE_SIZE of them."""

    count: int = 0
    ids: list[str] = field(default_factory=list)

    def add(self, ids: Sequence[str]) -> None:
        self.count += len(ids)
        self.ids.extend(ids[: SAMPLE_SIZE - len(self.ids)])


class Finding:
    """A check's measurement: the failing records and the counts behind the verdict."""

    @property
    def failing(self) -> int:
        raise NotImplementedError

    @property
    def sample_ids(self) -> list[str]:
        raise NotImplementedError

    @property
    def passed(self) -> bool:
        return self.failing == 0

    def details(self) -> dict[str, Any]:
        """Further counts and samples, as plain values (numbers, text, lists, dicts, datetimes)."""
        return {}


def _first(*samples: Sample) -> list[str]:
    return [record_id for sample in samples for record_id in sample.ids][:SAMPLE_SIZE]


# ---------- streaming ----------

def _select_column(name: str, dtype: pl.DataType) -> str:
    """A select-list entry that arrives as the polars type the model declares.

    psycopg2 cannot turn a timestamp outside Python's years 1..9999 (or ±infinity) into a datetime, and
    one such value would fail the whole read: it arrives as NULL instead, which the model reports as a
    failure of that one row."""
    if dtype == pl.Float64:
        return f"CAST({name} AS float8) AS {name}"
    if dtype == pl.Int64:
        return f"CAST({name} AS bigint) AS {name}"
    if dtype == pl.String:
        return f"CAST({name} AS text) AS {name}"
    if isinstance(dtype, pl.Datetime):
        in_range = f"CASE WHEN {name} BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00' THEN {name} END"
        return f"{in_range} AT TIME ZONE 'UTC' AS {name}" if dtype.time_zone is None else f"{in_range} AS {name}"
    return name


def stream_table(
    engine: Engine,
    table: str,
    schema: pl.Schema,
    *,
    where: str = "",
    params: Mapping[str, Any] | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[pl.DataFrame]:
    """The table's rows as frames of `schema`, `batch_size` at a time, through a server-side cursor."""
    columns = ", ".join(_select_column(name, dtype) for name, dtype in schema.items())
    query = sa.text(f"SELECT {columns} FROM {table} {where}")  # noqa: S608 - names come from the models
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=batch_size).execute(query, dict(params or {}))
        for rows in result.partitions():
            yield pl.DataFrame(rows, schema=schema, orient="row")


def _table_exists(conn: Connection, table: str) -> bool:
    return conn.execute(sa.text("SELECT to_regclass(:table) IS NOT NULL"), {"table": table}).scalar_one()


def _day_condition(column: str, days: DayRange | None) -> tuple[str, dict[str, Any]]:
    """A WHERE condition selecting `days` (every day when None), and its parameters."""
    if days is None:
        return "true", {}
    return f"{column} BETWEEN :first_day AND :last_day", {"first_day": days[0], "last_day": days[1]}


# ---------- schema ----------

@dataclass
class SchemaReport(Finding):
    """Stored rows checked against their pandera model(s)."""

    checked: dict[str, int] = field(default_factory=dict)
    invalid: Sample = field(default_factory=Sample)
    reasons: list[str] = field(default_factory=list)
    scope: str = "all rows"

    @property
    def failing(self) -> int:
        return self.invalid.count

    @property
    def sample_ids(self) -> list[str]:
        return self.invalid.ids

    def reject(self, record_ids: Sequence[str], reasons: Sequence[str]) -> None:
        room = SAMPLE_SIZE - len(self.reasons)
        self.reasons.extend(f"{i}: {r}" for i, r in zip(record_ids[:room], reasons[:room], strict=True))
        self.invalid.add(record_ids)

    def validate(self, name: str, frames: Iterable[pl.DataFrame], model: type[pa.DataFrameModel],
                 key: pl.Expr) -> SchemaReport:
        """Validate each frame with `model`; `key` names a row in the sample (e.g. the id column)."""
        for frame in frames:
            self.checked[name] = self.checked.get(name, 0) + frame.height
            _, reasons = split_valid(frame, model)
            if reasons:
                keys = frame.select(key.cast(pl.String)).to_series()
                positions = sorted(reasons)
                self.reject([keys[p] for p in positions], [reasons[p] for p in positions])
        self.checked.setdefault(name, 0)
        return self

    def details(self) -> dict[str, Any]:
        return {"checked": self.checked, "sample_reasons": self.reasons, "scope": self.scope}


def product_copy_schema(cart_db: Engine, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """Every row of Cart PostgreSQL `product` against CartDbProduct."""
    frames = stream_table(cart_db, "product", polars_schema(CartDbProduct), batch_size=batch_size)
    return SchemaReport().validate("product", frames, CartDbProduct, pl.col("id"))


def cart_rows_schema(cart_db: Engine, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """Every row of Cart PostgreSQL `cart` against CartRow (the rows the cart sync would quarantine)."""
    frames = stream_table(cart_db, "cart", polars_schema(CartRow), batch_size=batch_size)
    return SchemaReport().validate("cart", frames, CartRow, pl.col("id"))


def _python_value(value: Any, dtype: pl.DataType) -> Any:
    """A BSON value as the polars type wants it, or TypeError when it is of another type."""
    if value is None:
        return None
    if isinstance(dtype, pl.Datetime):
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
    elif dtype == pl.String:
        if isinstance(value, str):
            return value
    elif not isinstance(value, bool):
        if dtype == pl.Int64 and isinstance(value, int):
            return value
        if dtype == pl.Float64 and isinstance(value, int | float):
            return float(value)
    raise TypeError(f"expected {dtype}, got {type(value).__name__} {value!r:.60}")


def _snapshot_frames(docs: Iterable[list[dict]], report: SchemaReport) -> Iterator[pl.DataFrame]:
    """Snapshot documents as CartSnapshot frames. A document with a field of the wrong type cannot be
    a row; it is rejected here with the field's name."""
    schema = polars_schema(CartSnapshot)
    for batch in docs:
        rows = []
        for doc in batch:
            row, problems = {}, []
            for name, dtype in schema.items():
                try:
                    row[name] = _python_value(doc.get(name), dtype)
                except TypeError as err:
                    problems.append(f"{name}: {err}")
            if problems:
                report.checked["carts"] = report.checked.get("carts", 0) + 1
                report.reject([str(doc.get("cartId", doc.get("_id")))], ["; ".join(problems)])
            else:
                rows.append(row)
        yield pl.DataFrame(rows, schema=schema, orient="row")


def cart_snapshot_schema(order_db: Database, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """Every live Order MongoDB `carts` document (not marked deleted) against CartSnapshot, total = price ×
    quantity included."""
    report = SchemaReport()
    docs = batched(order_db[cart_sync.COLLECTION].find(cart_sync.LIVE, batch_size=batch_size), batch_size)
    return report.validate("carts", _snapshot_frames(docs, report), CartSnapshot, pl.col("cartId"))


def _validate_days(report: SchemaReport, warehouse: Engine, table: str, model: type[pa.DataFrameModel],
                   key: pl.Expr, day_column: str, days: DayRange | None, batch_size: int) -> SchemaReport:
    """A warehouse table's rows of `days` (or all) into `report`; a table no sync has created yet is empty."""
    with warehouse.connect() as conn:
        if not _table_exists(conn, table):
            return report
    condition, params = _day_condition(day_column, days)
    frames = stream_table(warehouse, table, polars_schema(model), where=f"WHERE {condition}", params=params,
                          batch_size=batch_size)
    return report.validate(table, frames, model, key)


def order_tables_schema(warehouse: Engine, days: DayRange | None = None, *,
                        batch_size: int = BATCH_SIZE) -> SchemaReport:
    """The warehouse's `orders` and `order_items` rows (of `days`, or all) against their models."""
    report = SchemaReport(scope=_scope(days))
    _validate_days(report, warehouse, "orders", OrdersTable, pl.col("order_id"), "order_day", days, batch_size)
    item_key = pl.concat_str([pl.col("order_id"), pl.col("line_no").cast(pl.String)], separator="#")
    return _validate_days(report, warehouse, "order_items", OrderItemsTable, item_key, "order_day", days, batch_size)


def warehouse_table_schema(warehouse: Engine, table: str, model: type[pa.DataFrameModel], key: Sequence[str],
                           days: DayRange | None = None, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """A daily analytics table's rows (of `days`, or all) against its model; `key` names a row ("a/b")."""
    key_expr = pl.concat_str([pl.col(column).cast(pl.String) for column in key], separator="/")
    return _validate_days(SchemaReport(scope=_scope(days)), warehouse, table, model, key_expr, "day", days,
                          batch_size)


def _scope(days: DayRange | None) -> str:
    if days is None:
        return "all days"
    first, last = days
    return first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"


# ---------- Product MongoDB ↔ Cart PostgreSQL product ----------

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
    stale: Sample = field(default_factory=Sample)
    drifted_fields: Counter[str] = field(default_factory=Counter)

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
        return _first(self.missing, self.extra, self.drifted, self.stale if self.catalog_drifted else Sample())

    @property
    def passed(self) -> bool:
        return self.failing == 0 and self.counts_match and not self.source_empty

    def details(self) -> dict[str, Any]:
        return {
            "source_documents": self.source_documents,
            "source_rejected": self.source_rejected,
            "source_empty": self.source_empty,
            "quarantined_open": self.quarantined_open,
            "stale_invalid": self.stale.count,
            "stale_invalid_ids": self.stale.ids,
            "stale_limit": self.stale_limit,
            "expected_active_rows": self.expected_active_rows,
            "active_copy_rows": self.active_copy_rows,
            "copy_rows": self.copy_rows,
            "counts_match": self.counts_match,
            "missing": self.missing.count,
            "missing_ids": self.missing.ids,
            "extra": self.extra.count,
            "extra_ids": self.extra.ids,
            "drifted": self.drifted.count,
            "drifted_ids": self.drifted.ids,
            "drifted_fields": dict(self.drifted_fields),
        }


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


# ---------- a sharp drop of the copy's active rows ----------

@dataclass
class ActiveRowsDrop(Finding):
    """The copy's active rows against a baseline (the last passing evaluation's): more gone than the
    mass-deactivation guard allows at once means the copy was wiped, by whatever means."""

    active_rows: int
    copy_rows: int
    baseline_active_rows: int | None
    limit: int | None
    recently_deactivated: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return max(0, self.baseline_active_rows - self.active_rows) if self.baseline_active_rows is not None else 0

    @property
    def failing(self) -> int:
        return self.dropped if self.limit is not None and self.dropped > self.limit else 0

    @property
    def sample_ids(self) -> list[str]:
        return self.recently_deactivated if self.failing else []

    def details(self) -> dict[str, Any]:
        return {
            ACTIVE_ROWS: self.active_rows,
            "copy_rows": self.copy_rows,
            "active_share": round(self.active_rows / self.copy_rows, 4) if self.copy_rows else 0.0,
            BASELINE_ACTIVE_ROWS: self.baseline_active_rows,
            "dropped": self.dropped,
            "dropped_share": round(self.dropped / self.baseline_active_rows, 4) if self.baseline_active_rows else 0.0,
            "limit": self.limit,
        }


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


# ---------- Cart PostgreSQL cart ↔ Order MongoDB carts ----------

@dataclass
class CartReconciliation(Finding):
    """The carts against their snapshots. Every cart the sync would snapshot (valid, with an active
    product) must have a live (unmarked) one, of the cart's version, whose total is the copy's price × the
    cart's quantity; and every live snapshot must have its cart (the sync marks the rest deletedAt)."""

    carts: int = 0
    expected_snapshots: int = 0
    missing: Sample = field(default_factory=Sample)
    stale: Sample = field(default_factory=Sample)
    wrong_total: Sample = field(default_factory=Sample)
    without_cart: Sample = field(default_factory=Sample)
    marked_deleted: int = 0

    @property
    def failing(self) -> int:
        return self.missing.count + self.stale.count + self.wrong_total.count + self.without_cart.count

    @property
    def sample_ids(self) -> list[str]:
        return _first(self.missing, self.stale, self.wrong_total, self.without_cart)

    def details(self) -> dict[str, Any]:
        return {
            "carts": self.carts,
            "expected_snapshots": self.expected_snapshots,
            "missing": self.missing.count,
            "missing_ids": self.missing.ids,
            "stale_versions": self.stale.count,
            "stale_ids": self.stale.ids,
            "wrong_totals": self.wrong_total.count,
            "wrong_total_ids": self.wrong_total.ids,
            "without_cart": self.without_cart.count,
            "without_cart_ids": self.without_cart.ids,
            "marked_deleted": self.marked_deleted,
        }


def _total_matches(stored: Any, expected: float) -> bool:
    return isinstance(stored, int | float) and not isinstance(stored, bool) and abs(stored - expected) < TOTAL_TOLERANCE


def reconcile_carts(cart_db: Engine, order_db: Database, *, batch_size: int = BATCH_SIZE) -> CartReconciliation:
    """Page through the carts (joined with their products) as the cart sync does, build the snapshots it
    would write, and read the stored ones of each page as one range of the unique cartId index, as a
    full cart sync does (a `$in` of a whole page is a scan per page on some servers). A snapshot
    marked deleted counts as none. Then compare the snapshots' keys with the carts as the sync
    does: a live snapshot without a cart is one the sync has not marked yet."""
    result = CartReconciliation()
    snapshots = order_db[cart_sync.COLLECTION]
    for rows in cart_sync.iter_cart_pages(cart_db, None, batch_size):
        expected = cart_sync.check_batch(rows).snapshots
        result.carts += len(rows)
        result.expected_snapshots += len(expected)
        stored = {cart_id: doc for cart_id, doc in cart_sync.stored_snapshots(
            snapshots, [s["cartId"] for s in expected], contiguous=True).items()
            if doc.get(cart_sync.DELETED_AT) is None}
        missing, stale, wrong_total = [], [], []
        for snapshot in expected:
            doc = stored.get(snapshot["cartId"])
            if doc is None:
                missing.append(snapshot["cartId"])
            elif doc.get("version") != snapshot["version"]:
                stale.append(snapshot["cartId"])
            elif not _total_matches(doc.get("total"), snapshot["total"]):
                wrong_total.append(snapshot["cartId"])
        result.missing.add(missing)
        result.stale.add(stale)
        result.wrong_total.add(wrong_total)
    for diff in cart_sync.diff_keys(cart_db, snapshots, batch_size):
        result.without_cart.add(diff.gone)
    result.marked_deleted = snapshots.count_documents({cart_sync.DELETED_AT: {"$ne": None}})
    return result


# ---------- referential integrity ----------

@dataclass
class CartProductReferences(Finding):
    """Carts whose product the copy does not hold, or holds as inactive: the cart sync cannot snapshot them."""

    carts: int = 0
    missing_product: Sample = field(default_factory=Sample)
    inactive_product: Sample = field(default_factory=Sample)
    product_ids: list[str] = field(default_factory=list)

    @property
    def failing(self) -> int:
        return self.missing_product.count + self.inactive_product.count

    @property
    def sample_ids(self) -> list[str]:
        return _first(self.missing_product, self.inactive_product)

    def details(self) -> dict[str, Any]:
        return {
            "carts": self.carts,
            "missing_product": self.missing_product.count,
            "missing_product_cart_ids": self.missing_product.ids,
            "inactive_product": self.inactive_product.count,
            "inactive_product_cart_ids": self.inactive_product.ids,
            "sample_product_ids": self.product_ids,
        }


_CART_REFERENCE_COUNTS = sa.text("""
    SELECT count(*) AS carts,
           count(*) FILTER (WHERE p.id IS NULL) AS missing,
           count(*) FILTER (WHERE NOT p.is_active) AS inactive
    FROM cart c LEFT JOIN product p ON p.id = c.product_id
""")
_CART_REFERENCE_SAMPLE = sa.text("""
    (SELECT c.id::text AS cart_id, c.product_id, true AS missing
     FROM cart c LEFT JOIN product p ON p.id = c.product_id
     WHERE p.id IS NULL ORDER BY c.id LIMIT :limit)
    UNION ALL
    (SELECT c.id::text, c.product_id, false
     FROM cart c JOIN product p ON p.id = c.product_id
     WHERE NOT p.is_active ORDER BY c.id LIMIT :limit)
""")


def cart_product_references(cart_db: Engine) -> CartProductReferences:
    """Counted by the server with one join; only the samples come back."""
    with cart_db.connect() as conn:
        counts = conn.execute(_CART_REFERENCE_COUNTS).one()
        sample = conn.execute(_CART_REFERENCE_SAMPLE, {"limit": SAMPLE_SIZE}).all()
    result = CartProductReferences(carts=counts.carts)
    result.missing_product = Sample(counts.missing, [r.cart_id for r in sample if r.missing])
    result.inactive_product = Sample(counts.inactive, [r.cart_id for r in sample if not r.missing])
    result.product_ids = list(dict.fromkeys(r.product_id for r in sample))[:SAMPLE_SIZE]
    return result


@dataclass
class OrphanOrderItems(Finding):
    """Order items whose product id the cart database's copy has never held (active or not)."""

    items: int = 0
    products: int = 0
    orphans: Sample = field(default_factory=Sample)
    unknown_products: Sample = field(default_factory=Sample)
    scope: str = "all days"

    @property
    def failing(self) -> int:
        return self.orphans.count

    @property
    def sample_ids(self) -> list[str]:
        return self.orphans.ids

    def details(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "products": self.products,
            "unknown_products": self.unknown_products.count,
            "unknown_product_ids": self.unknown_products.ids,
            "scope": self.scope,
        }


def orphan_order_items(warehouse: Engine, cart_db: Engine, days: DayRange | None = None, *,
                       batch_size: int = BATCH_SIZE) -> OrphanOrderItems:
    """The warehouse groups its order items by product id; each batch of distinct ids is looked up in the
    copy with one query. The two databases may live on different servers, so no cross-database join."""
    condition, params = _day_condition("order_day", days)
    per_product = sa.text(f"SELECT product_id, count(*) AS items FROM order_items WHERE {condition} "  # noqa: S608
                          "GROUP BY product_id")
    sample = sa.text(f"""
        SELECT order_id || '#' || line_no FROM order_items
        WHERE {condition} AND product_id = ANY(:unknown) ORDER BY order_id, line_no LIMIT :limit
    """)  # noqa: S608 - constant condition
    result = OrphanOrderItems(scope=_scope(days))
    orphan_items = 0
    with warehouse.connect() as conn:
        if not _table_exists(conn, "order_items"):
            return result
        with cart_db.connect() as copy:
            for rows in conn.execution_options(yield_per=batch_size).execute(per_product, params).partitions():
                known = set(copy.execute(sa.text("SELECT id FROM product WHERE id = ANY(:ids)"),
                                         {"ids": [r.product_id for r in rows]}).scalars())
                unknown = [r for r in rows if r.product_id not in known]
                result.items += sum(r.items for r in rows)
                result.products += len(rows)
                result.unknown_products.add(sorted(r.product_id for r in unknown))
                orphan_items += sum(r.items for r in unknown)
        if orphan_items:
            result.orphans = Sample(orphan_items, list(conn.execute(sample, {
                **params, "unknown": result.unknown_products.ids, "limit": SAMPLE_SIZE}).scalars()))
    return result


# ---------- coverage ----------

@dataclass
class DayCoverage(Finding):
    """Days of the window whose warehouse rows do not stand for the source's current orders."""

    first: date
    last: date
    never_built: list[DayToBuild] = field(default_factory=list)
    outdated: list[DayToBuild] = field(default_factory=list)

    @property
    def failing(self) -> int:
        return len(self.never_built) + len(self.outdated)

    @property
    def sample_ids(self) -> list[str]:
        return [stale.day.isoformat() for stale in [*self.never_built, *self.outdated]][:SAMPLE_SIZE]

    def lost_days(self) -> list[date]:
        """Never-built days older than the newest: the nightly sweep and the sensor should have built them."""
        return [stale.day for stale in self.never_built if stale.day < self.last]

    def details(self) -> dict[str, Any]:
        return {
            "window": f"{self.first} to {self.last}",
            "never_built": len(self.never_built),
            "outdated": len(self.outdated),
            "reasons": {stale.day.isoformat(): stale.reason for stale in [*self.never_built, *self.outdated][:SAMPLE_SIZE]},
        }


def order_day_coverage(orders: Collection, warehouse: Engine, first: date, last: date) -> DayCoverage:
    """Each day from `first` to `last`: its orders' fingerprint in the source against the one its last
    build recorded (etl_assets/sync/order_days.py)."""
    result = DayCoverage(first, last)
    for stale in days_to_build(orders, warehouse, first, last):
        (result.never_built if stale.built is None else result.outdated).append(stale)
    return result


# ---------- uniqueness ----------

@dataclass
class DuplicateKeys(Finding):
    """Records that share their key with another record."""

    keys: Sample = field(default_factory=Sample)
    records: int = 0

    @property
    def failing(self) -> int:
        return self.records

    @property
    def sample_ids(self) -> list[str]:
        return self.keys.ids

    def details(self) -> dict[str, Any]:
        return {"duplicated_keys": self.keys.count}


def duplicate_rows(engine: Engine, table: str, column: str) -> DuplicateKeys:
    """Duplicated values of a column, grouped by the server."""
    duplicated = f"SELECT {column} AS key, count(*) AS n FROM {table} GROUP BY {column} HAVING count(*) > 1"  # noqa: S608
    with engine.connect() as conn:
        summary = conn.execute(sa.text(f"SELECT count(*), coalesce(sum(n), 0) FROM ({duplicated}) d")).one()  # noqa: S608
        sample = conn.execute(sa.text(f"SELECT CAST(key AS text) FROM ({duplicated}) d ORDER BY key LIMIT :limit"),  # noqa: S608
                              {"limit": SAMPLE_SIZE}).scalars().all()
    return DuplicateKeys(Sample(summary[0], list(sample)), int(summary[1]))


def duplicate_documents(collection: Collection, key: str | dict[str, Any],
                        match: dict[str, Any] | None = None) -> DuplicateKeys:
    """Duplicated values of a key expression (e.g. "$cartId", or {"$toString": "$_id"}) among the documents
    `match` selects (all by default), grouped by the server."""
    summary = next(collection.aggregate([
        {"$match": match or {}},
        {"$group": {"_id": key, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}},
        {"$sort": {"_id": 1}},
        {"$group": {"_id": None, "keys": {"$sum": 1}, "records": {"$sum": "$n"},
                    "sample": {"$firstN": {"input": "$_id", "n": SAMPLE_SIZE}}}},
    ], allowDiskUse=True), None)
    if summary is None:
        return DuplicateKeys()
    return DuplicateKeys(Sample(summary["keys"], [str(k) for k in summary["sample"]]), summary["records"])


@dataclass
class UniqueKey(Finding):
    """Whether a store enforces a key's uniqueness with a usable unique index on exactly that key. Without
    one, duplicates can appear at any moment (and upserts by the key fail); those already there are counted."""

    key: str
    index: str | None = None  # the enforcing index
    problem: str | None = None  # why none enforces it
    empty: bool = False  # nothing to keep unique yet (a collection the sync has not written)
    duplicates: DuplicateKeys = field(default_factory=DuplicateKeys)

    @property
    def failing(self) -> int:
        return self.duplicates.records

    @property
    def sample_ids(self) -> list[str]:
        return self.duplicates.sample_ids

    @property
    def passed(self) -> bool:
        return (self.index is not None or self.empty) and self.failing == 0

    def details(self) -> dict[str, Any]:
        return {"key": self.key, "index": self.index, "problem": self.problem, "empty": self.empty,
                "duplicated_keys": self.duplicates.keys.count}


_UNIQUE_INDEXES = sa.text("""
    SELECT CAST(i.indexrelid AS regclass)::text AS name, i.indisvalid AND i.indisready AS usable
    FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = to_regclass(:table) AND a.attname = :column
      AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
    ORDER BY usable DESC, i.indisprimary DESC, name
""")


def unique_key(engine: Engine, table: str, column: str) -> UniqueKey:
    """A PostgreSQL table's key: a valid unique index (the primary key, say) on the column alone. An index
    left invalid by a failed CREATE INDEX CONCURRENTLY enforces nothing."""
    result = UniqueKey(f"{table}({column})")
    with engine.connect() as conn:
        indexes = conn.execute(_UNIQUE_INDEXES, {"table": table, "column": column}).all()
    usable = [index.name for index in indexes if index.usable]
    if usable:
        result.index = usable[0]
        return result
    result.problem = (f"unique index {', '.join(index.name for index in indexes)} is not valid" if indexes
                      else f"no unique index on {result.key}")
    result.duplicates = duplicate_rows(engine, table, column)
    return result


def unique_field_index(collection: Collection, name: str) -> UniqueKey:
    """A MongoDB collection's key: a unique index on the field alone, not partial, so every document counts.
    A collection without documents (before the first sync creates it and its index) has nothing to keep
    unique yet."""
    result = UniqueKey(f"{collection.name}.{name}")
    for index in collection.list_indexes():
        if list(index["key"]) == [name] and index.get("unique") and "partialFilterExpression" not in index:
            result.index = index["name"]
            return result
    result.problem = f"no unique index on {result.key}"
    result.empty = collection.find_one({}, {"_id": 1}) is None
    result.duplicates = duplicate_documents(collection, f"${name}")
    return result


# ---------- quarantine ----------

@dataclass
class QuarantineStatus(Finding):
    """A source's open quarantine, and what is new in it since `since` (a previous status's `as_of`)."""

    source: str
    as_of: datetime
    since: datetime | None = None
    open: int = 0
    new: Sample = field(default_factory=Sample)
    reasons: list[str] = field(default_factory=list)

    @property
    def failing(self) -> int:
        return self.new.count

    @property
    def sample_ids(self) -> list[str]:
        return self.new.ids

    def details(self) -> dict[str, Any]:
        return {"source": self.source, "open": self.open, "new": self.new.count, "sample_reasons": self.reasons,
                AS_OF: self.as_of, "since": self.since}


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
        if not _table_exists(conn, "etl_quarantine"):
            return status
        params = {"source": source, "since": since}
        counts = conn.execute(_QUARANTINE_COUNTS, params).one()
        new = conn.execute(_QUARANTINE_NEW, {**params, "limit": SAMPLE_SIZE}).all()
    status.open = counts.open
    status.new = Sample(counts.new, [r.record_id for r in new])
    status.reasons = [f"{r.record_id}: {r.reason}" for r in new]
    return status


# ---------- store health ----------

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
