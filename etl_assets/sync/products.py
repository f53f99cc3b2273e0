"""Product sync: Product MongoDB `products` → Cart PostgreSQL `product`.

Streams the source in batches (full mode: one server cursor over the collection; incremental mode:
one cursor over the (updatedAt, _id) index from the watermark), with the next batch read ahead
while this one is transformed and loaded. Each document is flattened and validated; valid rows are
bulk loaded (COPY into a session-private staging table, then INSERT … ON CONFLICT) and the rest are
quarantined. Unchanged rows are not rewritten (content hash). After a complete full pass, active
rows not seen valid are deactivated, never deleted. Each batch commits on its own and the watermark
is saved only at the end, so a killed run is simply run again and converges.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import polars as pl
from bson import Decimal128, ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.schemas.products import SourceProduct
from etl_assets.sync.quarantine import Quarantine, Rejection
from etl_assets.sync.report import SyncReport
from etl_assets.sync.state import load_watermark, save_watermark
from etl_assets.sync.streams import batched, read_ahead
from etl_assets.sync.validate import short_repr, split_valid

SOURCE = "product_db.products"
SYNC_NAME = "product_sync"
# Re-read this much before the watermark: writers' clocks and in-flight writes may lag a little.
WATERMARK_LOOKBACK = timedelta(seconds=60)

FRAME_SCHEMA = {
    "id": pl.String, "title": pl.String, "image": pl.String, "price": pl.Float64, "seller_id": pl.String,
    "category": pl.String, "description": pl.String, "rating": pl.Float64, "quantity": pl.Int64,
    "tags_json": pl.String, "source_updated_at": pl.Datetime("us", "UTC"),
}
COPY_COLUMNS = ("id", "title", "price", "image", "seller_id", "quantity", "category", "description",
                "rating", "tags", "source_updated_at", "content_hash")
CENT = Decimal("0.01")
# Validation has a fixed cost per batch; 10,000 documents amortise it and keep memory well bounded.
BATCH_SIZE = 10_000
_TAGS_JSON = json.JSONEncoder(ensure_ascii=False).encode
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RECORD_ID_CHARS = 80
REASON_VALUE_CHARS = 60  # how much of a bad value a reason quotes


class InvalidProduct(ValueError):
    """A document whose fields cannot be coerced to the contract's types."""


# ---------- transform ----------

def _number(doc: dict, field: str, default: float | None) -> float:
    value = doc.get(field, default)
    if value is None:
        raise InvalidProduct(f"{field}: required field missing")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal128):
        raise InvalidProduct(f"{field}: expected a number, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    if isinstance(value, Decimal128):
        exact = value.to_decimal()
        if not exact.is_finite():
            raise InvalidProduct(f"{field}: not a finite number ({value})")
        try:
            return float(exact.quantize(CENT, rounding=ROUND_HALF_UP))
        except InvalidOperation:  # more digits than the context holds, e.g. 1E+30
            raise InvalidProduct(f"{field}: out of range ({value})") from None
    if not math.isfinite(value):
        raise InvalidProduct(f"{field}: not a finite number ({value})")
    return round(value, 2)


def _text(doc: dict, field: str, *, required: bool, default: str | None = None) -> str | None:
    value = doc.get(field, default)
    if value is None:
        if required:
            raise InvalidProduct(f"{field}: required field missing")
        return None
    if not isinstance(value, str):
        raise InvalidProduct(f"{field}: expected a string, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    return value


def _quantity(doc: dict) -> int:
    value = doc.get("quantity", 5)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidProduct(f"quantity: expected an integer, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    if not INT64_MIN <= value <= INT64_MAX:  # a whole float such as 1e20 would overflow the frame's Int64
        raise InvalidProduct(f"quantity: out of range ({value})")
    return value


def _seller_id(doc: dict) -> str | None:
    value = doc.get("sellerId")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, ObjectId):
        return str(value)
    raise InvalidProduct(f"sellerId: expected an ObjectId or a string, got {type(value).__name__}")


def _tags(doc: dict) -> list[str]:
    value = doc.get("tags", [])
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise InvalidProduct(f"tags: expected a list of strings, got {short_repr(value, REASON_VALUE_CHARS)}")
    if any("\0" in tag for tag in value):  # jsonb refuses \u0000, which would fail the whole COPY
        raise InvalidProduct(f"tags: NUL character in {short_repr(value, REASON_VALUE_CHARS)}")
    return value


def _updated_at(doc: dict) -> datetime | None:
    value = doc.get("updatedAt")
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidProduct(f"updatedAt: expected a date, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def record_id(doc: dict) -> str:
    """The id a document is known by in the copy and in quarantine."""
    _id = doc.get("_id")
    if isinstance(_id, ObjectId):
        return str(_id)
    text = repr(_id)
    if len(text) <= RECORD_ID_CHARS:
        return f"{type(_id).__name__}:{text}"
    # A shortened id alone could name two documents; the digest of the whole id keeps them apart.
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{type(_id).__name__}:{short_repr(_id, RECORD_ID_CHARS)} md5:{digest}"


def flatten_product(doc: dict) -> dict[str, Any]:
    """A source document as a typed row, with the contract's defaults. Raises InvalidProduct."""
    if not isinstance(doc.get("_id"), ObjectId):
        raise InvalidProduct(f"_id: expected an ObjectId, got {type(doc.get('_id')).__name__}")
    return {
        "id": str(doc["_id"]),
        "title": _text(doc, "title", required=True),
        "image": _text(doc, "image", required=True),
        "price": _number(doc, "price", None),
        "seller_id": _seller_id(doc),
        "category": _text(doc, "category", required=True, default="other"),
        "description": _text(doc, "description", required=False),
        "rating": _number(doc, "rating", 4.5),
        "quantity": _quantity(doc),
        "tags_json": _TAGS_JSON(_tags(doc)),
        "source_updated_at": _updated_at(doc),
    }


def content_hash(row: dict[str, Any]) -> str:
    """MD5 of the synced content. Timestamps are excluded, so a touch without a change rewrites nothing.

    Fields are joined with NUL, which valid rows cannot contain, and a missing optional field is
    marked apart from an empty one, so different contents never share a canonical form."""
    canonical = "\0".join((
        row["title"], f"{row['price']:.2f}", row["image"], _optional(row["seller_id"]), str(row["quantity"]),
        row["category"], _optional(row["description"]), f"{row['rating']:.2f}", row["tags_json"],
    ))
    return hashlib.md5(canonical.encode("utf-8"), usedforsecurity=False).hexdigest()


def _optional(text: str | None) -> str:
    return "\1" if text is None else f"={text}"


@dataclass
class TransformedBatch:
    valid: pl.DataFrame  # FRAME_SCHEMA plus content_hash
    rejections: list[Rejection]
    max_updated_at: datetime | None


def transform_batch(docs: list[dict]) -> TransformedBatch:
    """Flatten, coerce and validate a batch; every document ends up a row or a rejection."""
    flattened: list[dict[str, Any]] = []
    sources: list[dict] = []
    rejections: list[Rejection] = []
    max_updated: datetime | None = None
    for doc in docs:
        updated = doc.get("updatedAt")
        if isinstance(updated, datetime):
            updated = updated if updated.tzinfo else updated.replace(tzinfo=UTC)
            max_updated = updated if max_updated is None else max(max_updated, updated)
        try:
            flattened.append(flatten_product(doc))
            sources.append(doc)
        except InvalidProduct as err:
            rejections.append(Rejection(record_id(doc), str(err), doc))
    frame = pl.DataFrame(flattened, schema=FRAME_SCHEMA, orient="row")
    valid, reasons = split_valid(frame, SourceProduct)
    for position, reason in reasons.items():
        rejections.append(Rejection(flattened[position]["id"], reason, sources[position]))
    hashes = [content_hash(row) for position, row in enumerate(flattened) if position not in reasons]
    return TransformedBatch(valid.with_columns(content_hash=pl.Series(hashes, dtype=pl.String)),
                            rejections, max_updated)


# ---------- extract ----------

def iter_full(products: Collection, batch_size: int) -> Iterator[list[dict]]:
    """The whole collection in one server cursor, in natural order: the cheapest full scan a server
    offers. Deactivation does not depend on the order (ids seen are collected server-side)."""
    return batched(products.find({}, batch_size=batch_size), batch_size)


def iter_changed_since(products: Collection, since: datetime, batch_size: int) -> Iterator[list[dict]]:
    """Documents changed since `since`, in (updatedAt, _id) order, in one cursor over the product
    service's {updatedAt: 1, _id: 1} index. One cursor, not a query per page: a keyset `$or` page
    query defeats the index on some servers, and a killed run restarts from the saved watermark."""
    changed = products.find({"updatedAt": {"$gte": since}}, batch_size=batch_size)
    return batched(changed.sort([("updatedAt", 1), ("_id", 1)]), batch_size)


# ---------- load ----------

_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS product_stage (
        id varchar(24), title text, price numeric(12,2), image text, seller_id text, quantity integer,
        category text, description text, rating numeric(3,2), tags jsonb, source_updated_at timestamptz,
        content_hash char(32)
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS product_seen (id varchar(24) PRIMARY KEY)
"""
# A row changes when the source content changed (hash) or when the copy itself was edited: comparing
# the columns too repairs a price someone changed in the cart database behind the ETL's back.
SYNCED_COLUMNS = ("content_hash", "title", "price", "image", "seller_id", "quantity", "category",
                  "description", "rating", "tags")


def _differs_from_copy(new: str) -> str:
    """SQL: the incoming row `new` differs from the copy row `p` in a synced column."""
    return (f"({', '.join(f'p.{c}' for c in SYNCED_COLUMNS)}) "
            f"IS DISTINCT FROM ({', '.join(f'{new}.{c}' for c in SYNCED_COLUMNS)})")


_UPSERT = f"""
    INSERT INTO product AS p (id, title, price, image, seller_id, quantity, category, description, rating,
                              tags, source_updated_at, content_hash, is_active, synced_at)
    SELECT id, title, price, image, seller_id, quantity, category, description, rating,
           tags, source_updated_at, content_hash, true, now()
    FROM product_stage
    ON CONFLICT (id) DO UPDATE SET
        title = excluded.title, price = excluded.price, image = excluded.image,
        seller_id = excluded.seller_id, quantity = excluded.quantity, category = excluded.category,
        description = excluded.description, rating = excluded.rating, tags = excluded.tags,
        source_updated_at = excluded.source_updated_at, content_hash = excluded.content_hash,
        is_active = true, synced_at = excluded.synced_at
    WHERE NOT p.is_active OR {_differs_from_copy("excluded")}
    RETURNING (xmax = 0) AS inserted
"""  # noqa: S608 - built from constant column names
_PLAN = f"""
    SELECT count(*) FILTER (WHERE p.id IS NULL) AS inserted,
           count(*) FILTER (WHERE p.id IS NOT NULL
                            AND (NOT p.is_active OR {_differs_from_copy("s")})) AS updated
    FROM product_stage s LEFT JOIN product p ON p.id = s.id
"""  # noqa: S608 - built from constant column names
COPY_NULL = "\\N"
_COPY = f"COPY product_stage ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT csv, NULL '{COPY_NULL}')"
_REMEMBER_SEEN = "INSERT INTO product_seen SELECT id FROM product_stage ON CONFLICT DO NOTHING"
_UNSEEN = "is_active AND NOT EXISTS (SELECT 1 FROM product_seen s WHERE s.id = product.id)"
_DEACTIVATE_UNSEEN = f"UPDATE product SET is_active = false, synced_at = now() WHERE {_UNSEEN}"  # noqa: S608
_COUNT_UNSEEN = f"SELECT count(*) FROM product WHERE {_UNSEEN}"  # noqa: S608 - constant


def _copy_buffer(valid: pl.DataFrame) -> io.BytesIO:
    """Valid rows as CSV in COPY_COLUMNS order: strings quoted, NULL as an unquoted \\N."""
    buffer = io.BytesIO()
    valid.select(*(("tags_json" if c == "tags" else c) for c in COPY_COLUMNS)).write_csv(
        buffer, include_header=False, quote_style="non_numeric", null_value=COPY_NULL, float_precision=2)
    buffer.seek(0)
    return buffer


@dataclass
class BatchResult:
    inserted: int
    updated: int


class ProductLoader:
    """Loads batches over one cart-database session. The session's temp tables stage each batch and
    remember the ids seen valid, so a full pass can deactivate the rest at the end. A dry run only
    counts what the writes would change; it touches nothing but its own temp tables."""

    def __init__(self, cart_db: Engine, *, dry_run: bool):
        self.dry_run = dry_run
        self.conn = cart_db.raw_connection()
        self.conn.detach()  # its own session: the temp tables end with it, never reused from the pool

    def __enter__(self) -> ProductLoader:
        with self.conn.cursor() as cur:
            cur.execute(_STAGE)
        self.conn.commit()
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def load(self, valid: pl.DataFrame, *, remember_seen: bool) -> BatchResult:
        with self.conn.cursor() as cur:
            cur.copy_expert(_COPY, _copy_buffer(valid))
            if self.dry_run:
                cur.execute(_PLAN)
                inserted, updated = cur.fetchone()
            else:
                cur.execute(_UPSERT)
                flags = [row[0] for row in cur.fetchall()]
                inserted, updated = sum(flags), len(flags) - sum(flags)
            if remember_seen:
                cur.execute(_REMEMBER_SEEN)
        self.conn.commit()
        return BatchResult(inserted, updated)

    def deactivate_unseen(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(_COUNT_UNSEEN if self.dry_run else _DEACTIVATE_UNSEEN)
            deactivated = cur.fetchone()[0] if self.dry_run else cur.rowcount
        self.conn.commit()
        return deactivated


# ---------- the sync ----------

def sync_products(
    product_db: Database,
    cart_db: Engine,
    warehouse: Engine,
    *,
    mode: str = "incremental",
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    run_id: str,
    progress: Callable[[str], None] | None = None,
) -> SyncReport:
    """Bring the cart database's product copy in line with the catalog. Returns what changed."""
    if mode not in ("incremental", "full"):
        raise ValueError(f"mode must be 'incremental' or 'full', not {mode!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started_at = datetime.now(UTC)
    watermark = load_watermark(warehouse, SYNC_NAME)
    full = mode == "full" or watermark is None
    report = SyncReport(mode="full" if full else "incremental", dry_run=dry_run, watermark_before=watermark)
    quarantine = Quarantine(warehouse, SOURCE, run_id)
    products = product_db["products"]
    if full:
        batches = iter_full(products, batch_size)
    else:
        since = datetime.fromisoformat(watermark["updated_at"]) - WATERMARK_LOOKBACK
        batches = iter_changed_since(products, since, batch_size)

    max_updated = datetime.fromisoformat(watermark["updated_at"]) if watermark else None
    def store(batch: TransformedBatch) -> tuple[BatchResult, int]:
        result = loader.load(batch.valid, remember_seen=full)
        resolved = 0
        if not dry_run:
            quarantine.put(batch.rejections)
            if not full:
                resolved = quarantine.resolve(batch.valid["id"])
        return result, resolved

    def account(batch: TransformedBatch, stored: Future) -> None:
        result, resolved = stored.result()
        report.inserted += result.inserted
        report.updated += result.updated
        report.unchanged += batch.valid.height - result.inserted - result.updated
        report.resolved += resolved
        if progress:
            progress(f"product sync batch {report.batches}: read {report.read}, inserted {report.inserted}, "
                     f"updated {report.updated}, quarantined {report.quarantined}")

    # Three stages overlap: the source streams the next batch (read_ahead), this thread transforms,
    # and one writer thread loads the previous batch. One batch is in flight at a time, in order.
    in_flight: tuple[TransformedBatch, Future] | None = None
    with ProductLoader(cart_db, dry_run=dry_run) as loader, ThreadPoolExecutor(1, "product-load") as writer:
        for docs in read_ahead(batches):
            batch = transform_batch(docs)
            report.batches += 1
            report.read += len(docs)
            report.quarantined += len(batch.rejections)
            if batch.max_updated_at and (max_updated is None or batch.max_updated_at > max_updated):
                max_updated = batch.max_updated_at
            if in_flight:
                account(*in_flight)
            in_flight = (batch, writer.submit(store, batch))
        if in_flight:
            account(*in_flight)
        if full:
            # Only after a complete pass: active rows the pass did not see valid left the source.
            report.deactivated = loader.deactivate_unseen()

    report.watermark_after = {"updated_at": max_updated.isoformat()} if max_updated else watermark
    if not dry_run:
        if full:
            report.resolved += quarantine.resolve_unseen_since(started_at)
        if report.watermark_after:
            save_watermark(warehouse, SYNC_NAME, report.watermark_after, run_id)
    return report.finish()
