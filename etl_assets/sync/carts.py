"""Cart snapshot sync: Cart PostgreSQL `cart` JOIN `product` → Order MongoDB `carts`.

One document per cart, keyed by `cartId` (unique index). What a snapshot holds:
- money (`productPrice`, `total`) as BSON doubles rounded to 2 dp; `total` = price × quantity in Decimal;
- `createdAt` / `updatedAt` are the cart's own `created_at` / `updated_at` (BSON keeps milliseconds), so a
  product price change rewrites the price and total but not the cart's timestamps, and a rerun is a no-op.
  `createdAt` is written once, on insert.

Carts are read in keyset pages on the cart id; each page is validated (CartRow, then the product must
exist and be active, then CartSnapshot), compared with the stored snapshots, and only new or changed
snapshots are written, in one unordered bulk of version-guarded upserts. An older version never
replaces a newer one: the guarded filter misses, the upsert collides with the unique index (E11000)
and the cart is counted as stale_skipped. Any other write error fails the run. Rejected carts go to
quarantine. The watermark is saved only after the whole run succeeded, so a killed run is run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import polars as pl
import sqlalchemy as sa
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError
from sqlalchemy.engine import Engine

from etl_assets.schemas.carts import CartRow, CartSnapshot
from etl_assets.sync.quarantine import Quarantine, Rejection
from etl_assets.sync.report import SyncReport
from etl_assets.sync.state import load_watermark, save_watermark
from etl_assets.sync.validate import split_valid

SOURCE = "cart_db.cart"
SYNC_NAME = "cart_snapshots"
COLLECTION = "carts"
CART_ID_INDEX = "cartId_unique"
DUPLICATE_KEY = 11000
# Re-read this much before the watermark: a cart or product transaction that started (and took its
# now() timestamp) before this run but committed after its pages were read must not be missed.
WATERMARK_LOOKBACK = timedelta(minutes=5)

CART_FRAME_SCHEMA = {
    "id": pl.String, "user_id": pl.String, "product_id": pl.String, "quantity": pl.Int64,
    "version": pl.Int64, "created_at": pl.Datetime("us", "UTC"), "updated_at": pl.Datetime("us", "UTC"),
}
SNAPSHOT_FRAME_SCHEMA = {
    "cartId": pl.String, "userId": pl.String, "productId": pl.String, "productTitle": pl.String,
    "productPrice": pl.Float64, "productImage": pl.String, "sellerId": pl.String,
    "productQuantity": pl.Int64, "cartQuantity": pl.Int64, "total": pl.Float64, "version": pl.Int64,
    "createdAt": pl.Datetime("us", "UTC"), "updatedAt": pl.Datetime("us", "UTC"),
}
SNAPSHOT_FIELDS = tuple(SNAPSHOT_FRAME_SCHEMA)
# Compared to decide whether a stored snapshot needs a write; createdAt is only ever set on insert.
COMPARED_FIELDS = tuple(f for f in SNAPSHOT_FIELDS if f != "createdAt")

Change = Literal["insert", "update", "unchanged", "stale"]


class CartWriteError(RuntimeError):
    """Writing a batch of snapshots failed for a reason other than the version guard."""


# ---------- transform (pure) ----------

def cart_total(price: Decimal, quantity: int) -> float:
    """price × quantity, computed exactly and rounded half-up to cents."""
    return float((price * quantity).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def bson_time(value: datetime) -> datetime:
    """A timestamp as BSON stores it: UTC, milliseconds. Naive values are taken as UTC."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def build_snapshot(row: dict[str, Any]) -> dict[str, Any]:
    """The Order MongoDB document of one joined cart/product row."""
    return {
        "cartId": row["cart_id"],
        "userId": row["user_id"],
        "productId": row["product_id"],
        "productTitle": row["product_title"],
        "productPrice": float(row["product_price"]),
        "productImage": row["product_image"],
        "sellerId": row["seller_id"],
        "productQuantity": row["product_quantity"],
        "cartQuantity": row["quantity"],
        "total": cart_total(row["product_price"], row["quantity"]),
        "version": row["version"],
        "createdAt": bson_time(row["created_at"]),
        "updatedAt": bson_time(row["updated_at"]),
    }


def snapshot_frame(snapshots: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """Snapshots as a frame for CartSnapshot. Values must already have the snapshot's types; timestamps
    may be naive UTC (as a MongoClient without tz_aware returns them)."""
    rows = [{field: _plain(doc.get(field)) for field in SNAPSHOT_FIELDS} for doc in snapshots]
    return pl.DataFrame(rows, schema=SNAPSHOT_FRAME_SCHEMA, orient="row")


def _plain(value: Any) -> Any:
    return bson_time(value) if isinstance(value, datetime) else value


def cart_frame(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """Cart table columns of joined rows as a frame for CartRow."""
    data = [{"id": row["cart_id"], **{c: row[c] for c in CART_FRAME_SCHEMA if c != "id"}} for row in rows]
    return pl.DataFrame(data, schema=CART_FRAME_SCHEMA, orient="row")


def product_problem(row: dict[str, Any]) -> str | None:
    """Why the cart's product cannot go into a snapshot, or None."""
    if not row["product_found"]:
        return f"product {row['product_id']} does not exist in cart_db.product"
    if not row["product_active"]:
        return f"product {row['product_id']} is inactive in cart_db.product"
    return None


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """The joined row as quarantine keeps it (JSON-safe: the price as text, exactly)."""
    price = row.get("product_price")
    return {**row, "product_price": None if price is None else str(price)}


@dataclass
class CheckedBatch:
    snapshots: list[dict[str, Any]]
    rejections: list[Rejection]


def check_batch(rows: list[dict[str, Any]]) -> CheckedBatch:
    """Every joined row becomes a snapshot or a rejection that names the cart and every cause."""
    _, cart_reasons = split_valid(cart_frame(rows), CartRow)
    causes: dict[int, list[str]] = {}
    candidates: list[tuple[int, dict[str, Any]]] = []
    for position, row in enumerate(rows):
        row_causes = [cart_reasons[position]] if position in cart_reasons else []
        if problem := product_problem(row):
            row_causes.append(problem)
        if row_causes:
            causes[position] = row_causes
        else:
            candidates.append((position, build_snapshot(row)))
    _, snapshot_reasons = split_valid(snapshot_frame(s for _, s in candidates), CartSnapshot)
    snapshots = []
    for candidate, (position, snapshot) in enumerate(candidates):
        if candidate in snapshot_reasons:
            causes[position] = [snapshot_reasons[candidate]]
        else:
            snapshots.append(snapshot)
    rejections = [
        Rejection(rows[p]["cart_id"], f"cart {rows[p]['cart_id']}: {'; '.join(c)}", payload(rows[p]))
        for p, c in sorted(causes.items())
    ]
    return CheckedBatch(snapshots, rejections)


def classify(snapshot: dict[str, Any], stored: dict[str, Any] | None) -> Change:
    """What writing `snapshot` over the stored document would do."""
    if stored is None:
        return "insert"
    stored_version = stored.get("version")
    if isinstance(stored_version, int) and stored_version > snapshot["version"]:
        return "stale"
    same = all(_same(snapshot[f], stored.get(f)) for f in COMPARED_FIELDS)
    return "unchanged" if same else "update"


def _same(new: Any, stored: Any) -> bool:
    if isinstance(stored, datetime):
        stored = bson_time(stored)
    # Types must match too, so a price stored as an int or a Decimal128 is rewritten as a double.
    return type(new) is type(stored) and new == stored


# ---------- extract ----------

# psycopg2 cannot turn a timestamp outside Python's years 1..9999 (or ±infinity) into a datetime, and one
# such cart would fail every page read: it is read as NULL instead, which CartRow quarantines.
_PAGE = sa.text("""
    SELECT c.id::text AS cart_id, c.user_id, c.product_id, c.quantity, c.version,
           CASE WHEN c.created_at BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
                THEN c.created_at END AS created_at,
           CASE WHEN c.updated_at BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
                THEN c.updated_at END AS updated_at,
           p.id IS NOT NULL AS product_found, p.is_active AS product_active, p.title AS product_title,
           p.price AS product_price, p.image AS product_image, p.seller_id,
           p.quantity AS product_quantity
    FROM cart c LEFT JOIN product p ON p.id = c.product_id
    WHERE (CAST(:after AS uuid) IS NULL OR c.id > CAST(:after AS uuid))
      AND (CAST(:since AS timestamptz) IS NULL OR greatest(c.updated_at, p.synced_at) >= :since)
    ORDER BY c.id
    LIMIT :limit
""")


def iter_cart_pages(cart_db: Engine, since: datetime | None, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Keyset pages of joined cart rows in cart id order; only carts changed since `since` when given."""
    after: str | None = None
    while True:
        with cart_db.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                _PAGE, {"after": after, "since": since, "limit": batch_size})]
        if not rows:
            return
        after = rows[-1]["cart_id"]
        yield rows


# ---------- load ----------

def ensure_indexes(order_db: Database) -> None:
    """The unique cartId index the version guard relies on. Idempotent."""
    order_db[COLLECTION].create_index([("cartId", ASCENDING)], unique=True, name=CART_ID_INDEX)


def stored_snapshots(carts: Collection, cart_ids: list[str], *, contiguous: bool) -> dict[str, dict[str, Any]]:
    """The stored snapshots of these carts. A contiguous keyset page (a full pass) is read as one index
    range, since MongoDB orders canonical uuid text as PostgreSQL orders uuids; scattered ids (an
    incremental page) are looked up with $in."""
    if not cart_ids:
        return {}
    wanted = set(cart_ids)
    if contiguous:
        query = {"cartId": {"$gte": min(cart_ids), "$lte": max(cart_ids)}}
    else:
        query = {"cartId": {"$in": cart_ids}}
    return {doc["cartId"]: doc for doc in carts.find(query, {"_id": 0}) if doc["cartId"] in wanted}


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale_skipped: int = 0


def _is_version_guard(error: dict[str, Any]) -> bool:
    return error.get("code") == DUPLICATE_KEY and error.get("keyPattern") == {"cartId": 1}


def write_snapshots(carts: Collection, snapshots: list[dict[str, Any]]) -> WriteCounts:
    """Version-guarded upserts in one unordered bulk. A newer stored version makes the upsert collide
    with the unique cartId index: that cart is stale_skipped. Any other error raises CartWriteError."""
    if not snapshots:
        return WriteCounts()
    operations = [
        UpdateOne(
            {"cartId": s["cartId"], "version": {"$lte": s["version"]}},
            {"$set": {f: s[f] for f in COMPARED_FIELDS}, "$setOnInsert": {"createdAt": s["createdAt"]}},
            upsert=True,
        )
        for s in snapshots
    ]
    try:
        result = carts.bulk_write(operations, ordered=False).bulk_api_result
    except BulkWriteError as err:
        result = err.details
        failures = [e for e in result.get("writeErrors", []) if not _is_version_guard(e)]
        failures += result.get("writeConcernErrors", [])
        if failures:
            first = failures[0]
            raise CartWriteError(
                f"writing {len(snapshots)} cart snapshots failed: {len(failures)} error(s), first: "
                f"code {first.get('code')} {first.get('errmsg', '')[:300]}"
            ) from err
    return WriteCounts(
        inserted=result["nUpserted"],
        updated=result["nModified"],
        unchanged=result["nMatched"] - result["nModified"],
        stale_skipped=len(result.get("writeErrors", [])),
    )


def _open_quarantine_ids(warehouse: Engine, cart_ids: list[str]) -> set[str]:
    """For a dry run: which of these carts a real run would resolve."""
    with warehouse.connect() as conn:
        return set(conn.execute(sa.text("""
            SELECT record_id FROM etl_quarantine
            WHERE source = :source AND resolved_at IS NULL AND record_id = ANY(:ids)
        """), {"source": SOURCE, "ids": cart_ids}).scalars())


def _clock(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT now()")).scalar_one()


# ---------- the sync ----------

def sync_carts(
    cart_db: Engine,
    order_db: Database,
    warehouse: Engine,
    *,
    mode: str = "incremental",
    dry_run: bool = False,
    batch_size: int = 5000,
    run_id: str,
    progress: Callable[[str], None] | None = None,
) -> SyncReport:
    """Bring Order MongoDB `carts` in line with the cart database. Returns what changed (or would).

    A dry run writes nothing (no snapshot, index, quarantine row or watermark). Its `resolved` counts
    the quarantined carts it sees valid, not the ones a full pass would close because they are gone.
    """
    if mode not in ("incremental", "full"):
        raise ValueError(f"mode must be 'incremental' or 'full', not {mode!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    # Both clocks come from the servers that stamp the rows they are compared with.
    cart_db_started = _clock(cart_db)
    warehouse_started = _clock(warehouse)
    watermark = load_watermark(warehouse, SYNC_NAME)
    full = mode == "full" or watermark is None
    since = None if full else datetime.fromisoformat(watermark["changed_at"]) - WATERMARK_LOOKBACK
    report = SyncReport(mode="full" if full else "incremental", dry_run=dry_run, watermark_before=watermark)
    quarantine = Quarantine(warehouse, SOURCE, run_id)
    carts = order_db[COLLECTION]
    if not dry_run:
        ensure_indexes(order_db)

    for rows in iter_cart_pages(cart_db, since, batch_size):
        batch = check_batch(rows)
        stored = stored_snapshots(carts, [s["cartId"] for s in batch.snapshots], contiguous=full)
        changes = {s["cartId"]: classify(s, stored.get(s["cartId"])) for s in batch.snapshots}
        to_write = [s for s in batch.snapshots if changes[s["cartId"]] in ("insert", "update")]
        valid_ids = list(changes)
        if dry_run:
            counts = WriteCounts(
                inserted=sum(c == "insert" for c in changes.values()),
                updated=sum(c == "update" for c in changes.values()),
            )
            resolved = len(_open_quarantine_ids(warehouse, valid_ids))
        else:
            counts = write_snapshots(carts, to_write)
            quarantine.put(batch.rejections)
            resolved = quarantine.resolve(valid_ids)
        report.batches += 1
        report.read += len(rows)
        report.inserted += counts.inserted
        report.updated += counts.updated
        report.unchanged += counts.unchanged + sum(c == "unchanged" for c in changes.values())
        report.stale_skipped += counts.stale_skipped + sum(c == "stale" for c in changes.values())
        report.quarantined += len(batch.rejections)
        report.resolved += resolved
        if progress:
            progress(f"{'dry run: ' if dry_run else ''}cart sync batch {report.batches}: read {report.read}, inserted {report.inserted}, "
                     f"updated {report.updated}, unchanged {report.unchanged}, "
                     f"stale_skipped {report.stale_skipped}, quarantined {report.quarantined}, "
                     f"resolved {report.resolved} (through cart {rows[-1]['cart_id']})")

    report.watermark_after = {"changed_at": cart_db_started.isoformat()}
    if not dry_run:
        if full:
            # Carts rejected before but neither rejected nor seen valid in this pass are gone.
            report.resolved += quarantine.resolve_unseen_since(warehouse_started)
        save_watermark(warehouse, SYNC_NAME, report.watermark_after, run_id)
    return report.finish()
