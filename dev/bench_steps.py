"""The benchmark's measured steps. Each runs in a process of its own (`python -m dev.bench
step <name>`), so its peak RSS is its own; it times only the work, after the imports, and writes its
result as JSON for the parent.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pymongo
import sqlalchemy as sa
from bson import ObjectId

from dev import bench_report as report
from etl_assets.resources import CART_DB, ORDER_DB, PRODUCT_DB, WAREHOUSE
from etl_assets.sync.carts import ensure_indexes, sync_carts
from etl_assets.sync.order_days import day_fingerprints
from etl_assets.sync.orders import day_window, sync_order_day
from etl_assets.sync.products import sync_products
from etl_assets.sync.reconcile.products import reconcile_products
from etl_assets.sync.stores import mongo_database, postgres_engine
from etl_assets.sync.streams import batched, read_ahead
from etl_assets.sync.warehouse import load_cart_funnel, load_daily_sales, load_product_sales

RAW_TABLE = "raw_products"
RAW_ORDER_ITEMS_TABLE = "raw_order_items"
RAW_CARTS_COLLECTION = "raw_carts"  # the cart raw limit's target, beside `carts` in the bench order database
SLING_TABLE = "sling_products"
LEGACY_TABLE = "legacy_product"
# The bench database's own tables: the raw limit's and the old service's targets (Sling makes its own).
BENCH_SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS {RAW_TABLE} (doc bytea NOT NULL);
    CREATE TABLE IF NOT EXISTS {RAW_ORDER_ITEMS_TABLE} (
        order_id text, order_day date, position integer, product_id text, quantity integer,
        unit_price numeric(12,2), subtotal numeric(12,2)
    );
    CREATE TABLE IF NOT EXISTS {LEGACY_TABLE} (
        id varchar(24) PRIMARY KEY, title text, price numeric(12,2), image text, seller_id text,
        quantity integer, category text, description text, rating numeric(3,2), tags jsonb
    );
"""
# The old service's pacing: batches of 100 single-row inserts, then a 100 ms pause.
LEGACY_BATCH = 100
LEGACY_PAUSE_S = 0.1

PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
PGCOPY_TRAILER = struct.pack("!h", -1)
_ONE_FIELD = struct.Struct("!hi")  # a binary COPY tuple: field count, then the field's length


@dataclass
class StepContext:
    """Where a step finds its stores, passed to the step process as JSON."""

    mongo_uri: str
    product_db: str
    cart_url: str
    warehouse_url: str
    bench_url: str  # the bench database (SQLAlchemy URL): raw limit, Sling and old-service targets
    sling_url: str  # the same database as Sling's PostgreSQL driver takes it
    sling_binary: str
    sling_home: str
    batch_size: int
    order_db: str = ""  # the bench's Order MongoDB database: cart snapshots and one day of orders
    day: str = ""  # the warehouse build's day, ISO

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StepContext:
        return cls(**json.loads(text))


@dataclass
class StepOutcome:
    rows: int
    seconds: float
    cpu_seconds: float  # of the process doing the work, all its threads, during the timed work only
    details: dict[str, Any] = field(default_factory=dict)
    # The peak RSS of the process that did the work: the step's own (set by run_step), or Sling's.
    peak_rss_bytes: int = 0


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """A process's own peak RSS (VmHWM), None once it has exited (a zombie has no memory to report).
    Not rusage's ru_maxrss: Linux carries the parent's peak into a child across fork and exec, so a step
    started by the bench process would report the bench's."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


class Stopwatch:
    """Wall and CPU time (this process, every thread) of the work in a `with` block."""

    def __enter__(self) -> Stopwatch:
        self.seconds = self.cpu_seconds = 0.0
        self.started, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self._cpu


# ---------- raw limit ----------

def bson_documents(raw_batch: bytes) -> Iterator[memoryview]:
    """The documents of a raw batch: BSON documents back to back, each led by its int32 length."""
    view = memoryview(raw_batch)
    offset = 0
    while offset < len(view):
        length = int.from_bytes(view[offset:offset + 4], "little")
        yield view[offset:offset + length]
        offset += length


def binary_copy_payload(raw_batch: bytes) -> tuple[bytes, int]:
    """A raw batch as PostgreSQL binary COPY data: one bytea row per document. Returns (data, rows)."""
    parts = [PGCOPY_HEADER]
    rows = 0
    for document in bson_documents(raw_batch):
        parts.append(_ONE_FIELD.pack(1, len(document)))
        parts.append(document)
        rows += 1
    parts.append(PGCOPY_TRAILER)
    return b"".join(parts), rows


def raw_limit(ctx: StepContext) -> StepOutcome:
    """The floor for moving this collection: the same cursor, read-ahead and per-batch commits as the
    full sync, but no decoding, transform, validation or upsert."""
    client: pymongo.MongoClient = pymongo.MongoClient(ctx.mongo_uri)
    conn = sa.create_engine(ctx.bench_url).raw_connection()
    rows = 0
    first_batch_s = None
    with Stopwatch() as watch:
        raw_batches = client[ctx.product_db]["products"].find_raw_batches({}, batch_size=ctx.batch_size)
        for raw_batch in read_ahead(iter(raw_batches)):
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - watch.started
            payload, count = binary_copy_payload(raw_batch)
            with conn.cursor() as cur:
                cur.copy_expert(f"COPY {RAW_TABLE} (doc) FROM STDIN WITH (FORMAT binary)", io.BytesIO(payload))
            conn.commit()
            rows += count
    conn.close()
    client.close()
    # How long the source took to answer at all: with secantusdb, most of the raw limit.
    return StepOutcome(rows, watch.seconds, watch.cpu_seconds, {"first_batch_s": round(first_batch_s or 0.0, 3)})


# ---------- our syncs ----------

def _sync(ctx: StepContext, mode: str) -> StepOutcome:
    product_db = mongo_database(ctx.mongo_uri, ctx.product_db, store=PRODUCT_DB, timeout_s=10)
    cart_db = postgres_engine(ctx.cart_url, store=CART_DB, timeout_s=10)
    warehouse = postgres_engine(ctx.warehouse_url, store=WAREHOUSE, timeout_s=10)
    with Stopwatch() as watch:
        result = sync_products(product_db, cart_db, warehouse, mode=mode, batch_size=ctx.batch_size,
                               run_id=f"bench-{mode}")
    counts = result.as_dict()
    details = {key: counts[key] for key in ("mode", "read", "inserted", "updated", "unchanged", "deactivated",
                                            "quarantined", "resolved", "batches")}
    return StepOutcome(result.read, watch.seconds, watch.cpu_seconds, details)


def full_sync(ctx: StepContext) -> StepOutcome:
    return _sync(ctx, "full")


def incremental_sync(ctx: StepContext) -> StepOutcome:
    return _sync(ctx, "incremental")


# ---------- Sling ----------

def sling(ctx: StepContext) -> StepOutcome:
    """Sling's own binary, MongoDB → PostgreSQL, full refresh, with its defaults (each document lands
    in one jsonb column). The binary's peak RSS and CPU are what count, read from its own rusage."""
    if not ctx.sling_binary:
        raise RuntimeError("no Sling binary: `make bench` installs the bench extra (sling-linux-amd64), "
                           "or set SLING_BINARY")
    log = Path(ctx.sling_home) / "last-run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SLING_BINARY": ctx.sling_binary,
        "SLING_HOME_DIR": ctx.sling_home,
        "SLING_DISABLE_TELEMETRY": "true",
        "BENCH_MONGO": ctx.mongo_uri,
        "BENCH_PG": ctx.sling_url,
    }
    command = [ctx.sling_binary, "run", "--src-conn", "BENCH_MONGO", "--src-stream", f"{ctx.product_db}.products",
               "--tgt-conn", "BENCH_PG", "--tgt-object", f"public.{SLING_TABLE}", "--mode", "full-refresh"]
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
        peak = 0
        while process.poll() is None:  # VmHWM only grows: its last reading is the peak, within 20 ms
            peak = peak_rss_bytes(process.pid) or peak
            time.sleep(0.02)
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"sling exited with {process.returncode}; see {log}")
    with sa.create_engine(ctx.bench_url).connect() as conn:
        rows = conn.execute(sa.text(f"SELECT count(*) FROM {SLING_TABLE}")).scalar_one()  # noqa: S608
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # Sling is the only child this step waits for
    return StepOutcome(rows, seconds, usage.ru_utime + usage.ru_stime, {"log": str(log)}, peak_rss_bytes=peak)


# ---------- the old service ----------

_LEGACY_INSERT = (f"INSERT INTO {LEGACY_TABLE} (id, title, price, image, seller_id, quantity, category, "  # noqa: S608
                  "description, rating, tags) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def legacy_row(doc: dict[str, Any]) -> tuple[Any, ...]:
    """The old service's mapping: fields as they come, its defaults where one is missing, no validation."""
    seller = doc.get("sellerId")
    return (str(doc["_id"]), doc.get("title"), doc.get("price"), doc.get("image"),
            str(seller) if isinstance(seller, ObjectId) else seller, doc.get("quantity", 5),
            doc.get("category", "other"), doc.get("description"), doc.get("rating", 4.5),
            json.dumps(doc.get("tags", [])))


@dataclass
class LegacyResult:
    inserted: int = 0
    failed: int = 0
    batches: int = 0


def legacy_sync(products: list[dict[str, Any]], existing_ids: set[str], insert: Callable[[tuple], None],
                pause: Callable[[float], None] = time.sleep) -> LegacyResult:
    """The Node service's loop: every product not in the copy is inserted on its own, in batches of 100
    with a 100 ms pause after each batch. A failed insert is logged and skipped."""
    missing = [doc for doc in products if str(doc["_id"]) not in existing_ids]
    result = LegacyResult()
    for start in range(0, len(missing), LEGACY_BATCH):
        for doc in missing[start:start + LEGACY_BATCH]:
            try:
                insert(legacy_row(doc))
                result.inserted += 1
            except Exception:  # the old service caught and logged every failed insert, and went on
                result.failed += 1
        result.batches += 1
        pause(LEGACY_PAUSE_S)
    return result


def old_service(ctx: StepContext) -> StepOutcome:
    """Both sides loaded whole into memory, then `legacy_sync` with one autocommitted INSERT per row."""
    client: pymongo.MongoClient = pymongo.MongoClient(ctx.mongo_uri)
    conn = sa.create_engine(ctx.bench_url).raw_connection()
    conn.autocommit = True  # node-postgres commits every statement on its own
    with Stopwatch() as watch:
        products = list(client[ctx.product_db]["products"].find({}))
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {LEGACY_TABLE}")  # noqa: S608 - a constant
            existing = cur.fetchall()
        with conn.cursor() as cur:
            result = legacy_sync(products, {row[0] for row in existing},
                                 lambda row: cur.execute(_LEGACY_INSERT, row))
    conn.close()
    client.close()
    return StepOutcome(len(products), watch.seconds, watch.cpu_seconds,
                       {**asdict(result), "paused_s": round(result.batches * LEGACY_PAUSE_S, 1)})


# ---------- reconciliation ----------

def reconciliation(ctx: StepContext) -> StepOutcome:
    """The product reconciliation check: the catalog streamed once, compared with the copy's active rows."""
    product_db = mongo_database(ctx.mongo_uri, ctx.product_db, store=PRODUCT_DB, timeout_s=10)
    cart_db = postgres_engine(ctx.cart_url, store=CART_DB, timeout_s=10)
    warehouse = postgres_engine(ctx.warehouse_url, store=WAREHOUSE, timeout_s=10)
    with Stopwatch() as watch:
        result = reconcile_products(product_db, cart_db, warehouse, batch_size=ctx.batch_size)
    counts = {key: value for key, value in result.details().items() if isinstance(value, int)}
    return StepOutcome(result.source_documents, watch.seconds, watch.cpu_seconds, {"passed": result.passed, **counts})


# ---------- cart sync ----------

# The join the cart sync reads, without its keyset pages, filters or validation.
_RAW_CART_JOIN = """
    SELECT c.id::text, c.user_id, c.product_id, p.title, p.price, p.image, p.seller_id, p.quantity,
           c.quantity, c.version, c.created_at, c.updated_at
    FROM cart c JOIN product p ON p.id = c.product_id
"""
_RAW_CART_FIELDS = ("cartId", "userId", "productId", "productTitle", "productPrice", "productImage", "sellerId",
                    "productQuantity", "cartQuantity", "version", "createdAt", "updatedAt")


def cart_raw_limit(ctx: StepContext) -> StepOutcome:
    """The floor for writing the cart snapshots: one server-side cursor over the same join, each row as
    a plain document (the price as a float, the total as price × quantity), unordered insert_many into
    an empty collection with the indexes of `carts` (the server maintains them on every insert, as it
    does for the sync). No validation, no comparison with stored snapshots, no upsert."""
    return _cart_raw_insert(ctx, with_indexes=True)


def cart_raw_limit_without_indexes(ctx: StepContext) -> StepOutcome:
    """The raw limit into an empty collection with no index but `_id`: a reference, not the target's."""
    return _cart_raw_insert(ctx, with_indexes=False)


def _cart_raw_insert(ctx: StepContext, *, with_indexes: bool) -> StepOutcome:
    client: pymongo.MongoClient = pymongo.MongoClient(ctx.mongo_uri)
    target = client[ctx.order_db][RAW_CARTS_COLLECTION]
    target.drop()
    if with_indexes:
        ensure_indexes(client[ctx.order_db], RAW_CARTS_COLLECTION)
    conn = sa.create_engine(ctx.cart_url).raw_connection()
    rows = 0
    with Stopwatch() as watch, conn.cursor(name="raw_cart_join") as cur:  # named: a server-side cursor
        cur.itersize = ctx.batch_size
        cur.execute(_RAW_CART_JOIN)
        while batch := cur.fetchmany(ctx.batch_size):
            documents = []
            for row in batch:
                document = dict(zip(_RAW_CART_FIELDS, row, strict=True))
                document["productPrice"] = float(document["productPrice"])
                document["total"] = document["productPrice"] * document["cartQuantity"]
                documents.append(document)
            target.insert_many(documents, ordered=False)
            rows += len(documents)
    conn.close()
    client.close()
    return StepOutcome(rows, watch.seconds, watch.cpu_seconds)


def _cart_sync(ctx: StepContext, mode: str) -> StepOutcome:
    cart_db = postgres_engine(ctx.cart_url, store=CART_DB, timeout_s=10)
    order_db = mongo_database(ctx.mongo_uri, ctx.order_db, store=ORDER_DB, timeout_s=10)
    warehouse = postgres_engine(ctx.warehouse_url, store=WAREHOUSE, timeout_s=10)
    with Stopwatch() as watch:
        result = sync_carts(cart_db, order_db, warehouse, mode=mode, run_id=f"bench-carts-{mode}")
    counts = result.as_dict()
    details = {key: counts[key] for key in ("mode", "read", "inserted", "updated", "unchanged", "quarantined",
                                            "batches")}
    return StepOutcome(result.read, watch.seconds, watch.cpu_seconds, details)


def cart_sync_full(ctx: StepContext) -> StepOutcome:
    """A full pass: into an empty `carts` (cold, the first sync), or over unchanged carts (warm, the
    nightly reconcile)."""
    return _cart_sync(ctx, "full")


def cart_sync_incremental(ctx: StepContext) -> StepOutcome:
    return _cart_sync(ctx, "incremental")


# ---------- warehouse day build ----------

_RAW_ITEM_COLUMNS = "order_id, order_day, position, product_id, quantity, unit_price, subtotal"


def warehouse_raw_limit(ctx: StepContext) -> StepOutcome:
    """The floor for loading one day: a `find` of the day's orders (decoded by pymongo, as any reader
    must to reach the items) and one CSV COPY per batch of the flattened items, with no validation,
    no order rows, no quarantine and no delete of the day first."""
    day = date.fromisoformat(ctx.day)
    start, end = day_window(day)
    client: pymongo.MongoClient = pymongo.MongoClient(ctx.mongo_uri)
    conn = sa.create_engine(ctx.bench_url).raw_connection()
    rows = orders = 0
    with Stopwatch() as watch:
        documents = client[ctx.order_db]["orders"].find({"createdAt": {"$gte": start, "$lt": end}},
                                                         batch_size=ctx.batch_size)
        for batch in batched(documents, ctx.batch_size):
            buffer = io.StringIO()
            for order in batch:
                for position, item in enumerate(order["orderItems"]):
                    buffer.write(f"{order['_id']}\t{day}\t{position}\t{item['productId']}\t{item['quantity']}\t"
                                 f"{item['unitPrice']}\t{item['subtotal']}\n")
                    rows += 1
            buffer.seek(0)
            with conn.cursor() as cur:
                cur.copy_expert(f"COPY {RAW_ORDER_ITEMS_TABLE} ({_RAW_ITEM_COLUMNS}) FROM STDIN", buffer)
            conn.commit()
            orders += len(batch)
    conn.close()
    client.close()
    return StepOutcome(rows, watch.seconds, watch.cpu_seconds, {"orders": orders})


def warehouse_load(ctx: StepContext) -> StepOutcome:
    """`sync_order_day` as `warehouse/orders` runs it for a day the order_changes sensor (or the nightly
    sweep) requested: the day's orders and items replaced, recording the fingerprint that came with the
    request. The sensor's fingerprint is taken first and timed apart (`fingerprint_s`): what a build
    launched by hand, which takes it itself, adds to the load."""
    order_db = mongo_database(ctx.mongo_uri, ctx.order_db, store=ORDER_DB, timeout_s=10)
    warehouse = postgres_engine(ctx.warehouse_url, store=WAREHOUSE, timeout_s=10)
    day = date.fromisoformat(ctx.day)
    started = time.perf_counter()
    requested = day_fingerprints(order_db.orders, day, day)[day]
    fingerprint_s = round(time.perf_counter() - started, 3)
    with Stopwatch() as watch:
        result = sync_order_day(order_db, warehouse, day, run_id="bench-warehouse", fingerprint=requested)
    return StepOutcome(result.items_inserted, watch.seconds, watch.cpu_seconds,
                       {"orders": result.inserted, "replaced": result.replaced, "quarantined": result.quarantined,
                        "fingerprint_s": fingerprint_s})


def warehouse_analytics(ctx: StepContext) -> StepOutcome:
    """The day's three analytics tables, as `warehouse/daily_sales`, `product_sales` and `cart_funnel` build
    them, one after another (each asset's time in the details)."""
    cart_db = postgres_engine(ctx.cart_url, store=CART_DB, timeout_s=10)
    warehouse = postgres_engine(ctx.warehouse_url, store=WAREHOUSE, timeout_s=10)
    day = date.fromisoformat(ctx.day)
    details: dict[str, Any] = {}
    with Stopwatch() as watch:
        for load in (lambda: load_daily_sales(warehouse, day), lambda: load_product_sales(warehouse, day),
                     lambda: load_cart_funnel(cart_db, warehouse, day)):
            started = time.perf_counter()
            result = load()
            details[f"{result.table}_s"] = round(time.perf_counter() - started, 3)
            details[f"{result.table}_read"] = result.read
    return StepOutcome(details["product_sales_read"], watch.seconds, watch.cpu_seconds, details)


STEPS: dict[str, Callable[[StepContext], StepOutcome]] = {
    report.RAW: raw_limit,
    report.FULL_COLD: full_sync,
    report.FULL_WARM: full_sync,
    report.MEMORY_SCALE: full_sync,
    report.MEMORY_SCALE_WARM: full_sync,
    report.INCREMENTAL: incremental_sync,
    report.SLING: sling,
    report.OLD_SERVICE: old_service,
    report.RECONCILE: reconciliation,
    report.CART_RAW: cart_raw_limit,
    report.CART_RAW_WITHOUT_INDEXES: cart_raw_limit_without_indexes,
    report.CART_COLD: cart_sync_full,
    report.CART_WARM: cart_sync_full,
    report.CART_INCREMENTAL: cart_sync_incremental,
    report.WAREHOUSE_RAW: warehouse_raw_limit,
    report.WAREHOUSE_FIRST: warehouse_load,
    report.WAREHOUSE_ANALYTICS_FIRST: warehouse_analytics,
    report.WAREHOUSE_REBUILD: warehouse_load,
    report.WAREHOUSE_ANALYTICS_REBUILD: warehouse_analytics,
}


def run_step(name: str, ctx: StepContext, result_file: Path) -> None:
    outcome = STEPS[name](ctx)
    outcome.peak_rss_bytes = outcome.peak_rss_bytes or peak_rss_bytes() or 0
    result_file.write_text(json.dumps(asdict(outcome)))
