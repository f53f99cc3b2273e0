"""One UTC day of the Order service's orders into the warehouse tables `orders` and `order_items`.

The day's documents are read server-side filtered on createdAt and streamed in batches. Each document
is flattened with its field types coerced; a document that cannot be coerced, or whose rows break a
rule of etl_assets/schemas/orders.py, goes to the quarantine (source "order_db.orders") with the reason
and the raw document. The day and its quarantine rows are replaced in one transaction, so a rerun or a
retry converges.

Documents with no usable createdAt belong to no day; `quarantine_undated_orders` accounts for them.
Documents dated before the first partition are outside the warehouse's range and are not read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import sqlalchemy as sa
from bson import Decimal128, ObjectId
from bson.datetime_ms import DatetimeMS
from pymongo.database import Database
from sqlalchemy.engine import Connection, Engine

from etl_assets.schemas.orders import FlatOrder, OrderItemRow, polars_schema
from etl_assets.schemas.warehouse import OrderItemsTable, OrdersTable
from etl_assets.sync.order_days import EMPTY_DAY, DayFingerprint, day_fingerprints
from etl_assets.sync.pg_copy import CSV_OPTIONS, copy_frame
from etl_assets.sync.quarantine import Quarantine, Rejection
from etl_assets.sync.report import SyncReport
from etl_assets.sync.state import record_day_build
from etl_assets.sync.streams import batched, transform_then_load
from etl_assets.sync.validate import split_valid

SOURCE = "order_db.orders"
# The warehouse columns are integer; a larger quantity could not be stored.
MAX_QUANTITY = 2**31 - 1

FLAT_ORDER_SCHEMA = polars_schema(FlatOrder)
ORDER_ITEM_SCHEMA = polars_schema(OrderItemRow)
ORDER_COLUMNS = list(polars_schema(OrdersTable))
ORDER_ITEM_COLUMNS = list(polars_schema(OrderItemsTable))


class UnreadableFieldError(ValueError):
    """A document field whose value cannot be coerced to the type the warehouse needs."""

    def __init__(self, path: str, value: Any, expected: str):
        shown = repr(value)
        shown = shown if len(shown) <= 80 else f"{shown[:80]}… ({len(shown)} chars)"
        super().__init__(f"{path}: cannot be read as {expected} (value {shown})")


def day_window(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


# The read_* coercers turn a BSON value into the warehouse type, None stays None (a missing field),
# and anything else raises UnreadableFieldError naming the field's path in the document. Each first
# returns the type the Order service writes as it is, the common case a day load pays for per field.


def read_text(value: Any, path: str) -> str | None:
    if type(value) is str and "\x00" not in value:
        return value
    if value is None:
        return None
    if isinstance(value, ObjectId):
        return str(value)
    if not isinstance(value, str):
        raise UnreadableFieldError(path, value, "text")
    if "\x00" in value:
        raise UnreadableFieldError(path, value, "text without NUL characters")
    return value


def read_amount(value: Any, path: str) -> float | None:
    if type(value) is float and math.isfinite(value):
        return value
    if value is None:
        return None
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise UnreadableFieldError(path, value, "a number") from None
    else:
        raise UnreadableFieldError(path, value, "a number")
    if not math.isfinite(number):
        raise UnreadableFieldError(path, value, "a finite number")
    return number


def read_money(value: Any, path: str) -> float | None:
    """An amount rounded to the cent, as the warehouse stores it, so the rules judge what is stored."""
    number = read_amount(value, path)
    return None if number is None else round(number, 2)


def read_whole_number(value: Any, path: str) -> int | None:
    if type(value) is int and abs(value) <= MAX_QUANTITY:
        return value
    number = read_amount(value, path)
    if number is None:
        return None
    if not number.is_integer() or abs(number) > MAX_QUANTITY:
        raise UnreadableFieldError(path, value, f"a whole number within ±{MAX_QUANTITY}")
    return int(number)


def read_timestamp(value: Any, path: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UnreadableFieldError(path, value, "an ISO 8601 timestamp") from None
    if isinstance(value, DatetimeMS):  # a BSON date beyond Python's (see stores.mongo_client)
        raise UnreadableFieldError(path, value, "a timestamp within years 1 to 9999")
    if not isinstance(value, datetime):
        raise UnreadableFieldError(path, value, "a timestamp")
    # BSON dates are UTC; a naive one comes from a client that dropped the zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def flatten_order(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The order's FlatOrder row and its OrderItemRow rows, field types coerced.

    Missing fields become nulls for the model to report; a value of the wrong type that cannot be
    coerced raises UnreadableFieldError.
    """
    order_id = str(doc["_id"])
    created_at = read_timestamp(doc.get("createdAt"), "createdAt")
    order_day = created_at.date() if created_at else None
    raw_items = doc.get("orderItems")
    if not isinstance(raw_items, list):
        raise UnreadableFieldError("orderItems", raw_items, "a list of items")
    items = []
    for index, raw in enumerate(raw_items):
        path = f"orderItems[{index}]"
        if not isinstance(raw, Mapping):
            raise UnreadableFieldError(path, raw, "an item document")
        items.append({
            "order_id": order_id,
            "line_no": index + 1,
            "order_day": order_day,
            "product_id": read_text(raw.get("productId"), f"{path}.productId"),
            "product_title": read_text(raw.get("productTitle"), f"{path}.productTitle"),
            "seller_id": read_text(raw.get("sellerId"), f"{path}.sellerId"),
            "quantity": read_whole_number(raw.get("quantity"), f"{path}.quantity"),
            "unit_price": read_money(raw.get("unitPrice"), f"{path}.unitPrice"),
            "subtotal": read_money(raw.get("subtotal"), f"{path}.subtotal"),
        })
    order = {
        "order_id": order_id,
        "order_day": order_day,
        "user_id": read_text(doc.get("userId"), "userId"),
        "order_status": read_text(doc.get("orderStatus"), "orderStatus"),
        "payment_status": read_text(doc.get("paymentStatus"), "paymentStatus"),
        **{name: read_money(doc.get(name), name) for name in ("subtotal", "tax", "shipping", "discount", "total")},
        "created_at": created_at,
        "paid_at": read_timestamp(doc.get("paidAt"), "paidAt"),
        "item_count": len(items),
        "items_subtotal": sum(item["subtotal"] or 0.0 for item in items),
    }
    return order, items


@dataclass
class OrderBatch:
    """A batch of documents split into loadable rows and rejections."""

    orders: pl.DataFrame
    items: pl.DataFrame
    rejections: list[Rejection]


def split_orders(docs: Iterable[Mapping[str, Any]]) -> OrderBatch:
    """Flatten and validate documents. An order is rejected whole when it or any of its items fails."""
    by_id: dict[str, Mapping[str, Any]] = {}
    order_rows: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    reasons: dict[str, list[str]] = {}
    for doc in docs:
        order_id = str(doc["_id"])
        by_id[order_id] = doc
        try:
            order, items = flatten_order(doc)
        except UnreadableFieldError as err:
            reasons[order_id] = [str(err)]
            continue
        order_rows.append(order)
        item_rows.extend(items)
    orders = pl.DataFrame(order_rows, schema=FLAT_ORDER_SCHEMA)
    items = pl.DataFrame(item_rows, schema=ORDER_ITEM_SCHEMA)
    _, order_failures = split_valid(orders, FlatOrder)
    for row, reason in order_failures.items():
        reasons.setdefault(orders["order_id"][row], []).append(reason)
    _, item_failures = split_valid(items, OrderItemRow)
    for row, reason in item_failures.items():
        path = f"orderItems[{items['line_no'][row] - 1}]."
        reasons.setdefault(items["order_id"][row], []).append(path + reason.replace("; ", f"; {path}"))
    rejected = list(reasons)
    return OrderBatch(
        orders=orders.filter(~pl.col("order_id").is_in(rejected)).select(ORDER_COLUMNS),
        items=items.filter(~pl.col("order_id").is_in(rejected)).select(ORDER_ITEM_COLUMNS),
        rejections=[Rejection(order_id, "; ".join(texts), by_id[order_id]) for order_id, texts in reasons.items()],
    )


_COPY_ORDERS = f"COPY orders ({', '.join(ORDER_COLUMNS)}) FROM STDIN WITH {CSV_OPTIONS}"
_COPY_ORDER_ITEMS = f"COPY order_items ({', '.join(ORDER_ITEM_COLUMNS)}) FROM STDIN WITH {CSV_OPTIONS}"


def _insert(conn: Connection, batch: OrderBatch) -> None:
    if batch.orders.is_empty():
        return
    ids = batch.orders["order_id"].to_list()
    # An order whose createdAt moved to this day still has its rows under the old day.
    conn.execute(sa.text("DELETE FROM order_items WHERE order_id = ANY(:ids)"), {"ids": ids})
    conn.execute(sa.text("DELETE FROM orders WHERE order_id = ANY(:ids)"), {"ids": ids})
    with conn.connection.cursor() as cursor:  # the same session, so the same transaction
        copy_frame(cursor, _COPY_ORDERS, batch.orders)
        copy_frame(cursor, _COPY_ORDER_ITEMS, batch.items)


# Open rows whose document (as last rejected) was created in the window and that this pass did not
# reject again: the order became valid, moved to another day, or was deleted.
_RESOLVE_DAY = sa.text("""
    UPDATE etl_quarantine SET resolved_at = now()
    WHERE source = :source AND resolved_at IS NULL AND last_seen < :started_at
      AND CASE WHEN jsonb_typeof(payload->'createdAt'->'$date') = 'string'
               THEN (payload->'createdAt'->>'$date')::timestamptz END >= :start
      AND CASE WHEN jsonb_typeof(payload->'createdAt'->'$date') = 'string'
               THEN (payload->'createdAt'->>'$date')::timestamptz END < :end
""")

_RESOLVE_UNDATED = sa.text("""
    UPDATE etl_quarantine SET resolved_at = now()
    WHERE source = :source AND resolved_at IS NULL AND last_seen < :started_at
      AND payload->'createdAt'->'$date' IS NULL
""")


def _warehouse_now(warehouse: Engine) -> datetime:
    """The warehouse clock, which also stamps quarantine rows, so comparisons need no clock sync."""
    with warehouse.connect() as conn:
        return conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()


@dataclass
class OrderDayReport(SyncReport):
    """A SyncReport for one day: `inserted` counts orders, `replaced` the orders the day held before."""

    day: str = ""
    items_inserted: int = 0
    replaced: int = 0
    fingerprint: str = ""  # the source's, taken before the read (etl_assets/sync/order_days.py)
    fingerprint_given: bool = False  # taken by whoever requested the build, not by this load

    @property
    def quarantine_rate(self) -> float:
        return round(self.quarantined / self.read, 4) if self.read else 0.0


def sync_order_day(
    order_db: Database, warehouse: Engine, day: date, *, run_id: str, batch_size: int = 5000,
    fingerprint: DayFingerprint | None = None,
) -> OrderDayReport:
    """Replace the day's rows in `orders` and `order_items` with the day's valid documents, and record the
    source fingerprint they were built from in the same transaction.

    The fingerprint must be taken before the read, so that a change landing during the read leaves the
    recorded fingerprint behind the source's and the day is built again. `fingerprint` is the one whoever
    requested the build took to decide it (the order_changes sensor's, before the run started); without
    it the load takes the day's fingerprint itself first, an aggregation over the day's orders."""
    start, end = day_window(day)
    report = OrderDayReport(mode="day", dry_run=False, day=day.isoformat())
    quarantine = Quarantine(warehouse, SOURCE, run_id)
    started_at = _warehouse_now(warehouse)
    report.fingerprint_given = fingerprint is not None
    if fingerprint is None:
        fingerprint = day_fingerprints(order_db.orders, day, day).get(day, EMPTY_DAY)
    report.fingerprint = fingerprint.digest
    docs = order_db.orders.find({"createdAt": {"$gte": start, "$lt": end}}, batch_size=batch_size)
    # One connection and one transaction for the whole day, quarantine rows included: every lock the
    # load waits for is one PostgreSQL sees, so a conflict is a deadlock it detects, never a wait between
    # two connections of this process, and the day and its quarantine commit or roll back together.
    with warehouse.begin() as conn:
        replaced: list[int] = []

        def clear_day() -> None:
            """Delete the day's rows, once: on the writer thread before its first batch, so the source is
            read while PostgreSQL deletes, or after the read for a day with no documents left."""
            if not replaced:
                conn.execute(sa.text("DELETE FROM order_items WHERE order_day = :day"), {"day": day})
                replaced.append(conn.execute(sa.text("DELETE FROM orders WHERE order_day = :day"),
                                             {"day": day}).rowcount)

        def load(counted: tuple[int, OrderBatch]) -> None:
            _, batch = counted
            clear_day()
            quarantine.put(batch.rejections, conn)
            _insert(conn, batch)

        # The writer thread holds the connection until the loads end; this thread only reads and splits.
        loads = transform_then_load(batched(docs, batch_size),
                                    lambda batch_docs: (len(batch_docs), split_orders(batch_docs)),
                                    load, thread_name="order-day-writer")
        for (read, batch), _ in loads:
            report.batches += 1
            report.read += read
            report.quarantined += len(batch.rejections)
            report.inserted += batch.orders.height
            report.items_inserted += batch.items.height
        clear_day()
        report.replaced = replaced[0]
        report.resolved = conn.execute(_RESOLVE_DAY, {
            "source": SOURCE, "started_at": started_at, "start": start, "end": end,
        }).rowcount
        record_day_build(conn, day, fingerprint.digest, fingerprint.orders, run_id)
    return report.finish()


def _undated_reason(doc: Mapping[str, Any]) -> str:
    if doc.get("createdAt") is None:
        return "createdAt: missing, so the order belongs to no day"
    return f"createdAt: not a date, so the order belongs to no day (value {doc['createdAt']!r:.80})"


def quarantine_undated_orders(order_db: Database, warehouse: Engine, *, run_id: str, batch_size: int = 5000) -> int:
    """Quarantine the orders no day reads (createdAt missing or not a BSON date); returns how many."""
    quarantine = Quarantine(warehouse, SOURCE, run_id)
    started_at = _warehouse_now(warehouse)
    undated = 0
    docs = order_db.orders.find({"createdAt": {"$not": {"$type": "date"}}}, batch_size=batch_size)
    for batch in batched(docs, batch_size):
        quarantine.put([Rejection(str(doc["_id"]), _undated_reason(doc), doc) for doc in batch])
        undated += len(batch)
    with warehouse.begin() as conn:
        conn.execute(_RESOLVE_UNDATED, {"source": SOURCE, "started_at": started_at})
    return undated
