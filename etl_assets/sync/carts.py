"""Cart snapshot sync: Cart PostgreSQL `cart` JOIN `product` → Order MongoDB `carts`.

One document per cart, keyed by `cartId` (unique index). What a snapshot holds:
- money (`productPrice`, `total`) as BSON doubles rounded to 2 dp; `total` = price × quantity in Decimal;
- `createdAt` / `updatedAt` are the cart's own `created_at` / `updated_at` (BSON keeps milliseconds), so a
  product price change rewrites the price and total but not the cart's timestamps, and a rerun is a no-op.
  `createdAt` is written once, on insert.

Carts are read in keyset pages on the cart id; each page is validated (CartRow, then the product must
exist and be active, then CartSnapshot), compared with the stored snapshots, and only new or changed
snapshots are written: plain inserts for carts without a snapshot, guarded upserts for the rest.
Rejected carts go to quarantine. The watermark is saved only after the whole run succeeded, so a killed
run is run again.

The cart row is the truth, whatever its version: a snapshot always becomes the content of the latest
read of its row, so a version that went down (a row recreated with the same id, a restore from backup)
converges, and is counted and logged as a version reset. `sourceReadAt` (the cart database's
statement_timestamp() of the read a snapshot was built from) takes over the version guard's job: a write
lands only over a snapshot built from the same or an earlier read. An older read never replaces a newer
snapshot: the guarded filter misses, the upsert collides with the unique index (E11000) and the cart is
counted as stale_skipped. Any other write error fails the run.

A deleted cart leaves no row to read, so every run also looks for snapshots without a cart. One is
marked `deletedAt` (never removed: Order MongoDB is INSERT/UPDATE only for the ETL); a write clears
the mark. The mark is guarded like a write: it lands only on a snapshot read before the cart was seen
gone.
- A full pass reads every cart, so it compares the keys as it goes: each keyset page (after, last] is
  every cart in that id range at the page's read, and its stored snapshots are read as the same range
  of the cartId index; a live snapshot in the range whose cart the page does not hold is gone. Its mark
  lands on snapshots read no later than the previous page's read (the run's start for the first page),
  a statement that ended before this page's began. The snapshots after the last page are compared as
  an incremental run compares all of them. No separate pass over the snapshots: a warm full pass reads
  each snapshot once. The ranges hold the snapshots whose cartId is a string (the only kind the ETL
  writes, and the only kind a mark can match).
- An incremental run reads only what changed, so it first counts (`no_cart_was_deleted`): its pages
  and the count of carts come from one REPEATABLE READ snapshot S of the cart database; after the
  changed carts are written, if the live snapshots are exactly as many as the carts of S that are not
  in quarantine, and the sums of their versions are equal too, no live snapshot lacks a cart or holds
  another version than its row, and the keys are not compared. Otherwise it streams
  every snapshot's (cartId, version, deletedAt) in batches against their carts' rows looked up by
  primary key (memory follows the batch size). A marked snapshot whose cart exists again, or a live one
  whose version differs from its row's (a restore that kept an old updated_at), is read again by id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import polars as pl
import sqlalchemy as sa
from pymongo import ASCENDING, InsertOne, UpdateMany, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError
from sqlalchemy.engine import Connection, Engine

from etl_assets.schemas.carts import UUID, CartRow, CartSnapshot
from etl_assets.sync.modes import Mode, check_run_arguments
from etl_assets.sync.quarantine import Quarantine, Rejection
from etl_assets.sync.report import SyncReport
from etl_assets.sync.state import load_watermark, save_watermark
from etl_assets.sync.streams import batched, read_ahead, transform_then_load
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
TIME_FIELDS = frozenset(f for f, dtype in SNAPSHOT_FRAME_SCHEMA.items() if isinstance(dtype, pl.Datetime))
# Compared to decide whether a stored snapshot needs a write; createdAt is only ever set on insert.
COMPARED_FIELDS = tuple(f for f in SNAPSHOT_FIELDS if f != "createdAt")
# The ETL's own fields: when the row a snapshot holds was read, and when its cart was found gone.
READ_AT = "sourceReadAt"
DELETED_AT = "deletedAt"
# The snapshots of carts that exist: what the funnel and every check read. Matches a missing deletedAt.
LIVE = {DELETED_AT: None}
SAMPLE_SIZE = 20  # cart ids a report names per kind of change
IN_LOOKUP_SIZE = 25  # ids per `$in` of scattered snapshots: the cheapest per id measured on secantusdb

Change = Literal["insert", "update", "reset", "reappear", "unchanged", "stale"]


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
        READ_AT: bson_time(row["read_at"]),
    }


def snapshot_frame(snapshots: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """Snapshots as a frame for CartSnapshot. Values must already have the snapshot's types; timestamps
    may be naive UTC (as a MongoClient without tz_aware returns them)."""
    docs = list(snapshots)
    columns = {field: [_plain(doc.get(field)) for doc in docs] if field in TIME_FIELDS else
               [doc.get(field) for doc in docs] for field in SNAPSHOT_FIELDS}
    return pl.DataFrame(columns, schema=SNAPSHOT_FRAME_SCHEMA)


def _plain(value: Any) -> Any:
    return bson_time(value) if isinstance(value, datetime) else value


def cart_frame(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """Cart table columns of joined rows as a frame for CartRow."""
    rows = list(rows)
    columns = {column: [row["cart_id" if column == "id" else column] for row in rows] for column in CART_FRAME_SCHEMA}
    return pl.DataFrame(columns, schema=CART_FRAME_SCHEMA)


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
    """What writing `snapshot` over the stored document would do: nothing when the stored one was built
    from a later read (stale) or holds the same content; else the row wins, even with a lower version."""
    if stored is None:
        return "insert"
    stored_read = stored.get(READ_AT)
    if isinstance(stored_read, datetime) and bson_time(stored_read) > snapshot[READ_AT]:
        return "stale"
    if stored.get(DELETED_AT) is not None:
        return "reappear"
    new = [snapshot[f] for f in COMPARED_FIELDS]
    old = [stored.get(f) for f in COMPARED_FIELDS]
    # The common case at C speed: equal values of equal types (a BSON datetime is already milliseconds).
    if (new == old and list(map(type, new)) == list(map(type, old))) or all(map(_same, new, old)):
        return "unchanged"
    stored_version = stored.get("version")
    if isinstance(stored_version, int) and stored_version > snapshot["version"]:
        return "reset"
    return "update"


def _same(new: Any, stored: Any) -> bool:
    if isinstance(stored, datetime):
        stored = bson_time(stored)
    # Types must match too, so a price stored as an int or a Decimal128 is rewritten as a double.
    return type(new) is type(stored) and new == stored


@dataclass
class Page:
    """Joined cart rows and stored snapshots by cartId: those of the rows' carts, or (a full pass) every
    snapshot in the page's id range. `seen_gone_at`: a cart database time before the rows were read."""

    rows: list[dict[str, Any]]
    stored: dict[str, dict[str, Any]]
    seen_gone_at: datetime


@dataclass
class PagePlan:
    """A page checked and compared with the stored snapshots: what to write, and the live snapshots in
    its range whose cart it does not hold (none unless the page holds its whole range)."""

    page: Page
    batch: CheckedBatch
    changes: dict[str, Change]
    to_write: list[dict[str, Any]]
    gone: list[str]


def plan_page(page: Page) -> PagePlan:
    batch = check_batch(page.rows)
    changes = {s["cartId"]: classify(s, page.stored.get(s["cartId"])) for s in batch.snapshots}
    to_write = [s for s in batch.snapshots if changes[s["cartId"]] not in ("unchanged", "stale")]
    read = {row["cart_id"] for row in page.rows}
    gone = sorted(cart_id for cart_id, doc in page.stored.items()
                  if cart_id not in read and doc.get(DELETED_AT) is None)
    return PagePlan(page, batch, changes, to_write, gone)


# ---------- extract ----------

# psycopg2 cannot turn a timestamp outside Python's years 1..9999 (or ±infinity) into a datetime, and one
# such cart would fail every page read: it is read as NULL instead, which CartRow quarantines.
# `since` (a cart or its product changed since) is found through the indexes on cart.updated_at and
# product.synced_at, not by joining every cart; as an array, so that the planner expects a few carts and
# looks their products up by id rather than hashing every product. `ids` reads given carts only, and of those only the ones
# not changed since `changed_before`.
_PAGE = sa.text("""
    SELECT c.id::text AS cart_id, c.user_id, c.product_id, c.quantity, c.version,
           coalesce(CAST(:read_at AS timestamptz), statement_timestamp()) AS read_at,
           CASE WHEN c.created_at BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
                THEN c.created_at END AS created_at,
           CASE WHEN c.updated_at BETWEEN '0001-01-02 00:00+00' AND '9999-12-30 00:00+00'
                THEN c.updated_at END AS updated_at,
           p.id IS NOT NULL AS product_found, p.is_active AS product_active, p.title AS product_title,
           p.price AS product_price, p.image AS product_image, p.seller_id,
           p.quantity AS product_quantity
    FROM cart c LEFT JOIN product p ON p.id = c.product_id
    WHERE (CAST(:after AS uuid) IS NULL OR c.id > CAST(:after AS uuid))
      AND (CAST(:since AS timestamptz) IS NULL OR c.id = ANY(ARRAY(
           SELECT id FROM cart WHERE updated_at >= :since
           UNION
           SELECT changed.id FROM product synced JOIN cart changed ON changed.product_id = synced.id
           WHERE synced.synced_at >= :since)))
      AND (CAST(:ids AS uuid[]) IS NULL OR c.id = ANY(CAST(:ids AS uuid[])))
      AND (CAST(:changed_before AS timestamptz) IS NULL
           OR greatest(c.updated_at, p.synced_at) < :changed_before)
    ORDER BY c.id
    LIMIT :limit
""")


def iter_cart_pages(cart_db: Engine, since: datetime | None, batch_size: int, *, ids: list[str] | None = None,
                    changed_before: datetime | None = None,
                    snapshot: CartDbSnapshot | None = None) -> Iterator[list[dict[str, Any]]]:
    """Keyset pages of joined cart rows in cart id order; only carts changed since `since` when given,
    only the carts `ids` not changed since `changed_before` when those are given. Each page is read at
    its own statement, or every page within `snapshot` (read at its time)."""
    after: str | None = None
    while True:
        params = {"after": after, "since": since, "ids": ids, "changed_before": changed_before,
                  "limit": batch_size, "read_at": snapshot.read_at if snapshot else None}
        if snapshot:
            rows = [dict(r._mapping) for r in snapshot.conn.execute(_PAGE, params)]
        else:
            with cart_db.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(_PAGE, params)]
        if not rows:
            return
        after = rows[-1]["cart_id"]
        yield rows


# ---------- keys: the snapshots against the carts ----------

_CART_VERSIONS = sa.text("SELECT id::text AS cart_id, version FROM cart WHERE id = ANY(CAST(:ids AS uuid[]))")
_CANONICAL_UUID = re.compile(UUID)


@dataclass
class KeyDiff:
    """A batch of the key comparison: live snapshots whose cart is gone, and carts to read again by id
    (a marked snapshot whose cart is back, or a live one whose version is not the row's)."""

    gone: list[str] = field(default_factory=list)
    read_again: list[str] = field(default_factory=list)


def diff_keys(cart_db: Engine, carts: Collection, batch_size: int, *, after: str | None = None) -> Iterator[KeyDiff]:
    """Every snapshot's (cartId, version, deletedAt), or only those whose cartId is a string after `after`,
    streamed in batches (the next read while this one is compared), against the rows of its batch's carts,
    looked up by primary key: one pass over the snapshots, one index lookup per cart, memory following
    the batch size. A cartId that is no canonical uuid names no cart."""
    query = {} if after is None else {"cartId": {"$gt": after}}
    docs = carts.find(query, {"_id": 0, "cartId": 1, "version": 1, DELETED_AT: 1}, batch_size=batch_size)
    for batch in read_ahead(batched(docs, batch_size)):
        ids = [doc["cartId"] for doc in batch if _CANONICAL_UUID.match(str(doc.get("cartId")))]
        with cart_db.connect() as conn:
            versions = dict(conn.execute(_CART_VERSIONS, {"ids": ids}).tuples().all())
        diff = KeyDiff()
        for doc in batch:
            cart_id, marked = doc.get("cartId"), doc.get(DELETED_AT) is not None
            if cart_id not in versions:
                if not marked:
                    diff.gone.append(str(cart_id))
            elif marked or doc.get("version") != versions[cart_id]:
                diff.read_again.append(cart_id)
        if diff.gone or diff.read_again:
            diff.gone.sort()
            diff.read_again.sort()
            yield diff


@dataclass
class CartDbSnapshot:
    """A REPEATABLE READ transaction of the cart database: every statement in it sees the carts as they
    were at its first one, which began at `read_at` (the snapshot is taken after: a read time never later
    than the data it stamps, so the write guard can only err towards stale_skipped)."""

    conn: Connection
    read_at: datetime


@contextmanager
def cart_db_snapshot(cart_db: Engine) -> Iterator[CartDbSnapshot]:
    options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with cart_db.connect().execution_options(**options) as conn, conn.begin():
        yield CartDbSnapshot(conn, conn.execute(sa.text("SELECT statement_timestamp()")).scalar_one())


def carts_due_a_live_snapshot(snapshot: CartDbSnapshot, quarantined: list[str]) -> tuple[int, int]:
    """How many carts of the snapshot were valid at their latest read (all but those open in quarantine),
    and the sum of their versions."""
    row = snapshot.conn.execute(sa.text("""
        SELECT count(*), coalesce(sum(version), 0) FROM cart WHERE NOT (id = ANY(CAST(:ids AS uuid[])))
    """), {"ids": quarantined}).one()
    return row[0], int(row[1])


def live_snapshot_totals(carts: Collection) -> tuple[int, int]:
    """How many live snapshots there are, and the sum of their versions: one aggregation, nothing but the
    two numbers crosses the wire. secantusdb still reads every document for it (an index on deletedAt
    would not spare that pass, and would cost the inserts of a cold sync about a third more)."""
    totals = list(carts.aggregate([{"$match": LIVE},
                                   {"$group": {"_id": None, "count": {"$sum": 1}, "versions": {"$sum": "$version"}}}]))
    return (totals[0]["count"], totals[0]["versions"]) if totals else (0, 0)


def no_cart_was_deleted(snapshot: CartDbSnapshot, carts: Collection, quarantined: list[str]) -> bool:
    """Whether an incremental run, its changed carts read from `snapshot` and written, may skip comparing
    the keys: True only if no live snapshot lacks a cart of the snapshot and none holds another version
    than its cart's row.

    Let S be the snapshot's carts, Q the carts open in quarantine (read after this run's verdicts) and L
    the live snapshots now. Every cart of S - Q has a live snapshot in L holding its row's version: one
    changed since the run's `since` was read from S by this run and, valid, written or found unchanged
    and live (a marked one is "reappear", and written); one not changed since was read by an earlier
    successful run (the watermark and its lookback), which wrote it or quarantined it, and a live
    snapshot is marked only by a run that saw its cart gone. So |L| = |S - Q| + (live snapshots of carts
    in Q) + (live snapshots without a cart in S), and |L| == |S - Q| leaves the last term 0: no cart was
    deleted.

    What breaks the premise is a restore that keeps an updated_at older than the watermark: over a
    marked snapshot it leaves one live snapshot short (the counts differ), in place with another version
    it leaves the versions' sums different (the same signal the cart_changes sensor launches on). Either
    way the keys are compared, unless faults cancel out exactly (a deletion and a restore over a marked
    snapshot in the same interval, the deleted cart's version equal to the restored one's). Other
    writers: a sync that read earlier than S can only add live snapshots (its marks land only on
    snapshots read before them), which makes the counts differ; a sync that read later may mark a cart
    deleted after S, and every cart gone before S is gone at its read too, so it finds those itself. A
    dry run writes nothing, so it always compares the keys (not this check)."""
    return live_snapshot_totals(carts) == carts_due_a_live_snapshot(snapshot, quarantined)


# ---------- load ----------

def ensure_indexes(order_db: Database, collection: str = COLLECTION) -> None:
    """The indexes of `carts` (or of `collection`, to be written like it): the unique cartId index the write
    guard relies on. Idempotent."""
    order_db[collection].create_index([("cartId", ASCENDING)], unique=True, name=CART_ID_INDEX)


def stored_snapshots(carts: Collection, cart_ids: list[str], *, contiguous: bool) -> dict[str, dict[str, Any]]:
    """The stored snapshots of these carts, whole (a projection is work for the server, not a saving). A
    contiguous keyset page (a full pass) is read as one index range, since MongoDB orders canonical uuid
    text as PostgreSQL orders uuids; scattered ids (an incremental page) are looked up with small `$in`s,
    as a server may match each document against the whole list (a page-sized `$in` is quadratic)."""
    if not cart_ids:
        return {}
    wanted = set(cart_ids)
    if contiguous:
        queries = [{"cartId": {"$gte": min(cart_ids), "$lte": max(cart_ids)}}]
    else:
        queries = [{"cartId": {"$in": chunk}} for chunk in batched(cart_ids, IN_LOOKUP_SIZE)]
    return {doc["cartId"]: doc for query in queries for doc in carts.find(query) if doc["cartId"] in wanted}


def snapshots_in_range(carts: Collection, after: str | None, through: str) -> dict[str, dict[str, Any]]:
    """Every stored snapshot whose cartId is a string in (after, through], whole: one index range."""
    bounds = {"$lte": through} if after is None else {"$gt": after, "$lte": through}
    return {doc["cartId"]: doc for doc in carts.find({"cartId": bounds})}


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale_skipped: int = 0
    skipped_ids: list[str] = field(default_factory=list)


def _read_no_later_than(read_at: datetime) -> dict[str, Any]:
    """Matches a snapshot built from a read at or before `read_at`, or by a sync that kept no read time."""
    return {READ_AT: {"$not": {"$gt": read_at}}}


def _is_version_guard(error: dict[str, Any]) -> bool:
    return error.get("code") == DUPLICATE_KEY and error.get("keyPattern") == {"cartId": 1}


def _guarded_upsert(snapshot: dict[str, Any]) -> UpdateOne:
    return UpdateOne(
        {"cartId": snapshot["cartId"], **_read_no_later_than(snapshot[READ_AT])},
        {"$set": {f: snapshot[f] for f in (*COMPARED_FIELDS, READ_AT)},
         "$setOnInsert": {"createdAt": snapshot["createdAt"]}, "$unset": {DELETED_AT: ""}},
        upsert=True,
    )


def _insert(snapshot: dict[str, Any]) -> InsertOne:
    """The document the guarded upsert would create, as a plain insert."""
    return InsertOne({f: snapshot[f] for f in ("cartId", *COMPARED_FIELDS, READ_AT, "createdAt")})


def _bulk(carts: Collection, operations: list[UpdateOne | InsertOne], counts: WriteCounts) -> list[int]:
    """One unordered bulk, added to `counts`; returns the indexes of the operations that collided with the
    unique cartId index. Any other error raises CartWriteError."""
    if not operations:
        return []
    try:
        result = carts.bulk_write(operations, ordered=False).bulk_api_result
    except BulkWriteError as err:
        result = err.details
        failures = [e for e in result.get("writeErrors", []) if not _is_version_guard(e)]
        failures += result.get("writeConcernErrors", [])
        if failures:
            first = failures[0]
            raise CartWriteError(
                f"writing {len(operations)} cart snapshots failed: {len(failures)} error(s), first: "
                f"code {first.get('code')} {first.get('errmsg', '')[:300]}"
            ) from err
    counts.inserted += result["nInserted"] + result["nUpserted"]
    counts.updated += result["nModified"]
    counts.unchanged += result["nMatched"] - result["nModified"]
    return [e["index"] for e in result.get("writeErrors", [])]


def write_snapshots(carts: Collection, snapshots: list[dict[str, Any]], *,
                    new_ids: AbstractSet[str] = frozenset()) -> WriteCounts:
    """Write snapshots in unordered bulks; each clears the deletion mark. Carts in `new_ids` had no
    snapshot when the page was read and are inserted plainly, several times cheaper than an upsert (the
    cold sync); one that another sync wrote meanwhile collides and is retried with the rest as a guarded
    upsert. A stored snapshot built from a later read makes the upsert collide with the unique cartId
    index: that cart is stale_skipped. Any other error raises CartWriteError."""
    counts = WriteCounts()
    inserts = [s for s in snapshots if s["cartId"] in new_ids]
    upserts = [s for s in snapshots if s["cartId"] not in new_ids]
    upserts += [inserts[i] for i in _bulk(carts, [_insert(s) for s in inserts], counts)]
    skipped = [upserts[i]["cartId"] for i in _bulk(carts, [_guarded_upsert(s) for s in upserts], counts)]
    counts.stale_skipped, counts.skipped_ids = len(skipped), skipped
    return counts


def mark_deleted(carts: Collection, cart_ids: list[str], seen_gone_at: datetime) -> int:
    """Mark the live snapshots of carts found gone at `seen_gone_at` (the cart database's clock, taken
    before the key read). A snapshot written from a later read (the cart came back) keeps its content."""
    if not cart_ids:
        return 0
    seen_gone_at = bson_time(seen_gone_at)
    # One round trip of small `$in`s: a page-sized one is quadratic on some servers (see stored_snapshots).
    return carts.bulk_write([UpdateMany(
        {"cartId": {"$in": chunk}, **LIVE, **_read_no_later_than(seen_gone_at)},
        {"$set": {DELETED_AT: seen_gone_at, READ_AT: seen_gone_at}},
    ) for chunk in batched(cart_ids, IN_LOOKUP_SIZE)], ordered=False).modified_count


def _open_quarantine_ids(warehouse: Engine, cart_ids: list[str] | None = None) -> list[str]:
    """The carts open in quarantine, or those of `cart_ids` (for a dry run: the ones a real run would
    resolve)."""
    with warehouse.connect() as conn:
        return list(conn.execute(sa.text("""
            SELECT record_id FROM etl_quarantine
            WHERE source = :source AND resolved_at IS NULL
              AND (CAST(:ids AS text[]) IS NULL OR record_id = ANY(CAST(:ids AS text[])))
        """), {"source": SOURCE, "ids": cart_ids}).scalars())


def _clock(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT now()")).scalar_one()


# ---------- the sync ----------

@dataclass
class CartSyncReport(SyncReport):
    """A SyncReport with what only carts have: snapshots marked deleted, marks cleared by a cart that came
    back, and version resets (a row whose version went down replaced its snapshot), with sample ids;
    and whether deleted carts were looked for by comparing every snapshot's key (False: an incremental
    run whose counts proved none was deleted)."""

    marked_deleted: int = 0
    marked_deleted_ids: list[str] = field(default_factory=list)
    reappeared: int = 0
    version_resets: int = 0
    version_reset_ids: list[str] = field(default_factory=list)
    compared_keys: bool = False

    @property
    def written(self) -> int:
        return super().written + self.marked_deleted


def _sample(ids: list[str], more: Iterable[str]) -> None:
    ids.extend(list(more)[: SAMPLE_SIZE - len(ids)])


def sync_carts(
    cart_db: Engine,
    order_db: Database,
    warehouse: Engine,
    *,
    mode: Mode = "incremental",
    dry_run: bool = False,
    batch_size: int = 5000,
    run_id: str,
    progress: Callable[[str], None] | None = None,
) -> CartSyncReport:
    """Bring Order MongoDB `carts` in line with the cart database. Returns what changed (or would).

    A dry run writes nothing (no snapshot, mark, index, quarantine row or watermark). Its `resolved`
    counts the quarantined carts it sees valid, not the ones a full pass would close because they are gone.
    """
    check_run_arguments(mode, batch_size)
    # Both clocks come from the servers that stamp the rows they are compared with.
    cart_db_started = _clock(cart_db)
    warehouse_started = _clock(warehouse)
    watermark = load_watermark(warehouse, SYNC_NAME)
    full = mode == "full" or watermark is None
    since = None if full else datetime.fromisoformat(watermark["changed_at"]) - WATERMARK_LOOKBACK
    report = CartSyncReport(mode="full" if full else "incremental", dry_run=dry_run, watermark_before=watermark)
    quarantine = Quarantine(warehouse, SOURCE, run_id)
    carts = order_db[COLLECTION]
    if not dry_run:
        ensure_indexes(order_db)

    def with_stored(pages: Iterator[list[dict[str, Any]]], *, whole_range: bool) -> Iterator[Page]:
        """Each page with its stored snapshots: its carts' or, `whole_range`, every one in its keyset
        range. Pages hold distinct carts, so reading a page's snapshots before the previous page is
        written reads what reading them after would."""
        after, read_before = None, cart_db_started
        for rows in pages:
            if whole_range:
                stored = snapshots_in_range(carts, after, rows[-1]["cart_id"])
            else:
                stored = stored_snapshots(carts, [row["cart_id"] for row in rows], contiguous=False)
            yield Page(rows, stored, read_before)
            after, read_before = rows[-1]["cart_id"], rows[0]["read_at"]

    def apply(plan: PagePlan) -> tuple[WriteCounts, int, int]:
        """Write a planned page and mark its gone carts (a dry run counts what it would write): its
        counts, resolved carts and marked snapshots."""
        valid_ids = list(plan.changes)
        if dry_run:
            inserts = sum(c == "insert" for c in plan.changes.values())
            counts = WriteCounts(inserted=inserts, updated=len(plan.to_write) - inserts)
            return counts, len(_open_quarantine_ids(warehouse, valid_ids)), len(plan.gone)
        counts = write_snapshots(carts, plan.to_write,
                                 new_ids={i for i, change in plan.changes.items() if change == "insert"})
        quarantine.put(plan.batch.rejections)
        resolved = quarantine.resolve(valid_ids)
        return counts, resolved, mark_deleted(carts, plan.gone, plan.page.seen_gone_at)

    def tally_marks(gone: list[str], marked: int) -> None:
        report.marked_deleted += marked
        _sample(report.marked_deleted_ids, gone)
        if progress and gone:
            progress(f"{'dry run: ' if dry_run else ''}marked {marked} snapshot(s) of deleted carts: "
                     f"{', '.join(gone[:SAMPLE_SIZE])}")

    def tally(plan: PagePlan, counts: WriteCounts, resolved: int, marked: int) -> None:
        nonlocal last_cart_id
        last_cart_id = plan.page.rows[-1]["cart_id"]
        changes = plan.changes
        skipped = set(counts.skipped_ids)
        resets = [cart_id for cart_id, c in changes.items() if c == "reset" and cart_id not in skipped]
        report.batches += 1
        report.read += len(plan.page.rows)
        report.inserted += counts.inserted
        report.updated += counts.updated
        report.unchanged += counts.unchanged + sum(c == "unchanged" for c in changes.values())
        report.stale_skipped += counts.stale_skipped + sum(c == "stale" for c in changes.values())
        report.reappeared += sum(c == "reappear" and cart_id not in skipped for cart_id, c in changes.items())
        report.version_resets += len(resets)
        _sample(report.version_reset_ids, resets)
        report.quarantined += len(plan.batch.rejections)
        report.resolved += resolved
        if progress:
            prefix = "dry run: " if dry_run else ""
            progress(f"{prefix}cart sync batch {report.batches}: read {report.read}, inserted {report.inserted}, "
                     f"updated {report.updated}, unchanged {report.unchanged}, "
                     f"stale_skipped {report.stale_skipped}, quarantined {report.quarantined}, "
                     f"resolved {report.resolved} (through cart {last_cart_id})")
            if resets:
                progress(f"{prefix}version reset: {len(resets)} cart(s) whose row has a lower version than their "
                         f"snapshot now hold the row: {', '.join(resets[:SAMPLE_SIZE])}")
        tally_marks(plan.gone, marked)

    # Reading (both servers), checking (this thread) and writing (one writer thread) overlap, page by page.
    last_cart_id: str | None = None
    with ExitStack() as stack:
        snapshot = None if full else stack.enter_context(cart_db_snapshot(cart_db))
        pages = with_stored(iter_cart_pages(cart_db, since, batch_size, snapshot=snapshot), whole_range=full)
        for plan, applied in transform_then_load(pages, plan_page, apply, thread_name="cart-writer"):
            tally(plan, *applied)
        report.compared_keys = full or dry_run or not no_cart_was_deleted(snapshot, carts,
                                                                          _open_quarantine_ids(warehouse))

    # Deleted carts leave no row to read: compare the keys (a full pass: those after its last page).
    # Whatever is gone at this clock reading is gone when the key read starts, so the mark can only land
    # on snapshots read before.
    seen_gone_at = _clock(cart_db)
    after = last_cart_id if full and last_cart_id is not None else None
    diffs = diff_keys(cart_db, carts, batch_size, after=after) if report.compared_keys else ()
    for diff in diffs:
        tally_marks(diff.gone, len(diff.gone) if dry_run else mark_deleted(carts, diff.gone, seen_gone_at))
        if not full:
            # A full pass has just read every cart; an incremental one reads these now unless it did.
            again = iter_cart_pages(cart_db, None, batch_size, ids=diff.read_again, changed_before=since)
            for page in with_stored(again, whole_range=False):
                plan = plan_page(page)
                tally(plan, *apply(plan))

    report.watermark_after = {"changed_at": cart_db_started.isoformat()}
    if not dry_run:
        if full:
            # Carts rejected before but neither rejected nor seen valid in this pass are gone.
            report.resolved += quarantine.resolve_unseen_since(warehouse_started)
        save_watermark(warehouse, SYNC_NAME, report.watermark_after, run_id)
    report.finish()
    return report
