"""Benchmark data: N products in a Product MongoDB database of their own, the matching carts, the 1%
change, and the resets that give each measured step the state it needs.

A product collection is generated once per size (`bench_products_<N>`) and reused by later runs: a
meta document records that the generation finished. Every product has a fixed id; its content comes
from a random generator seeded by the chunk it falls in, so the same size always gives the same data.
Chunks are generated and inserted by GENERATORS worker processes, each on its own connection, as
BSON encoded in the worker (unordered inserts of raw documents: the server's cheapest write path), and
the (updatedAt, _id) index is built once at the end instead of being maintained per insert.
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import bson
import pymongo
import sqlalchemy as sa
from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, UpdateMany
from pymongo.database import Database
from sqlalchemy.engine import Engine

from dev.demo_data import _order, _order_item, catalog_product, object_id
from etl_assets.sync.carts import COLLECTION as CART_COLLECTION
from etl_assets.sync.carts import SOURCE as CART_SOURCE
from etl_assets.sync.carts import SYNC_NAME as CART_SYNC_NAME
from etl_assets.sync.orders import day_window
from etl_assets.sync.products import SOURCE as PRODUCT_SOURCE
from etl_assets.sync.products import SYNC_NAME

SEED = 20261123
GENERATOR_VERSION = 1  # bump when the documents change shape, so stale collections are regenerated
INSERT_CHUNK = 5_000
# Worker processes generating and inserting chunks: generation is Python-bound, so it runs beside the
# server instead of before each insert; more than the server can absorb only adds contention.
GENERATORS = 3
# One product in this many has a negative price: the quarantine path runs at a realistic rate.
INVALID_EVERY = 10_000
CHANGED_EVERY = 100  # the incremental step changes every 100th product: 1%
CARTS_PER_PRODUCT = 0.25  # for the product sync's warm step: the carts a catalog of this size has
# The cart sync and the validate checks run at 1,000,000 carts over 200,000 products (issue #16).
CART_SYNC_CARTS_PER_PRODUCT = 5
# One day of orders for the warehouse build: 100,000 orders of 3 items at 200,000 products.
ORDERS_PER_PRODUCT = 0.5
ITEMS_PER_ORDER = 3
CART_CHANGED_EVERY = 100  # the cart sync's 1% change
META = "bench_meta"
_CART_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://shop-sync.example/bench/cart")


def database_name(products: int) -> str:
    return f"bench_products_{products}"


def bench_product_id(index: int) -> ObjectId:
    return object_id(b"BNCH", index)


def bench_product(rng: random.Random, index: int, now: datetime) -> dict[str, Any]:
    """A demo-shaped catalog document; one in INVALID_EVERY has a negative price, so quarantine runs."""
    doc = catalog_product(rng, bench_product_id(index), now)
    if index % INVALID_EVERY == INVALID_EVERY - 1:
        doc["price"] = -1.0
    return doc


def product_chunk(start: int, count: int, now: datetime) -> list[dict[str, Any]]:
    """The products from `start` on, at most INSERT_CHUNK of them, from the chunk's own seed."""
    rng = random.Random(f"{SEED}:{start}")
    return [bench_product(rng, index, now) for index in range(start, min(start + INSERT_CHUNK, count))]


def product_chunks(count: int, now: datetime) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, count, INSERT_CHUNK):
        yield product_chunk(start, count, now)


_worker_products: pymongo.collection.Collection | None = None


def _connect_worker(mongo_uri: str, database: str) -> None:
    global _worker_products  # one connection per worker process, for its whole life
    _worker_products = pymongo.MongoClient(mongo_uri)[database]["products"]


def _insert_chunk(start: int, count: int, now: datetime) -> int:
    """Generate one chunk in this worker and insert it as raw BSON, unordered."""
    documents = [RawBSONDocument(bson.encode(doc)) for doc in product_chunk(start, count, now)]
    _worker_products.insert_many(documents, ordered=False)
    return len(documents)


def ensure_products(product_db: Database, count: int, progress: Callable[[str], None] = print) -> bool:
    """Make `products` hold exactly the generated `count` documents and the (updatedAt, _id) index the
    product service keeps. Returns True if it had to generate them, False if they were already there."""
    wanted = {"_id": "products", "count": count, "seed": SEED, "version": GENERATOR_VERSION}
    products = product_db["products"]
    if product_db[META].find_one({"_id": "products"}) == wanted and products.estimated_document_count() == count:
        return False
    product_db[META].delete_many({})
    products.drop()
    # Timestamps stay at least a day old, so only the 1% change lands after the full sync's watermark.
    now = datetime.now(UTC) - timedelta(days=1)
    address = product_db.client.address
    mongo_uri = f"mongodb://{address[0]}:{address[1]}/?directConnection=true"
    starts = range(0, count, INSERT_CHUNK)
    with ProcessPoolExecutor(GENERATORS, initializer=_connect_worker,
                             initargs=(mongo_uri, product_db.name)) as workers:
        written = 0
        for number, inserted in enumerate(workers.map(_insert_chunk, starts, [count] * len(starts),
                                                      [now] * len(starts)), start=1):
            written += inserted
            if number % 40 == 0:
                progress(f"  generated {written:,} of {count:,} products")
    products.create_index([("updatedAt", ASCENDING), ("_id", ASCENDING)])
    product_db[META].insert_one(wanted)
    return True


def change_one_percent(product_db: Database, count: int) -> int:
    """What the product service does to 1% of the catalog: a field changes and updatedAt moves to now."""
    now = datetime.now(UTC)
    ids = [bench_product_id(index) for index in range(0, count, CHANGED_EVERY)]
    operations = [
        UpdateMany({"_id": {"$in": ids[start:start + 1000]}},
                   {"$inc": {"quantity": 1}, "$set": {"updatedAt": now}})
        for start in range(0, len(ids), 1000)
    ]
    return product_db["products"].bulk_write(operations, ordered=False).modified_count


def reset_product_copy(cart_db: Engine, warehouse: Engine) -> None:
    """An empty product copy (and so no carts, which reference it) and no product sync state."""
    with cart_db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE product, cart")
    with warehouse.begin() as conn:
        conn.execute(sa.text("DELETE FROM etl_sync_state WHERE sync_name = :name"), {"name": SYNC_NAME})
        conn.execute(sa.text("DELETE FROM etl_quarantine WHERE source = :source"), {"source": PRODUCT_SOURCE})


def load_carts(cart_db: Engine, carts: int) -> int:
    """`carts` carts spread over the copy's active products, via COPY, in place of the table's."""
    with cart_db.connect() as conn:
        product_ids = list(conn.execute(sa.text("SELECT id FROM product WHERE is_active ORDER BY id")).scalars())
    rng = random.Random(f"{SEED}:carts:{carts}")
    # At least a day old, so the 1% change is all an incremental cart sync finds.
    now = datetime.now(UTC) - timedelta(days=1)
    buffer = io.StringIO()
    for index in range(carts):
        created = now - timedelta(days=rng.uniform(0, 30))
        updated = created + (now - created) * rng.random()
        buffer.write(f"{uuid.uuid5(_CART_NAMESPACE, str(index))}\tuser-{rng.randrange(50_000):05d}\t"
                     f"{rng.choice(product_ids)}\t{rng.randint(1, 4)}\t1\t{created.isoformat()}\t"
                     f"{updated.isoformat()}\n")
    buffer.seek(0)
    raw = cart_db.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.execute("TRUNCATE cart")
            cur.copy_expert("COPY cart (id, user_id, product_id, quantity, version, created_at, updated_at) "
                            "FROM STDIN", buffer)
            count = cur.rowcount
        raw.commit()
    finally:
        raw.close()
    return count


def change_carts_one_percent(cart_db: Engine) -> int:
    """What the cart service does to 1% of the carts: the quantity changes, the version and updated_at move."""
    with cart_db.begin() as conn:
        return conn.execute(sa.text("""
            UPDATE cart c SET quantity = c.quantity % 4 + 1, version = c.version + 1, updated_at = now()
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM cart) numbered
            WHERE numbered.id = c.id AND numbered.n % :every = 0
        """), {"every": CART_CHANGED_EVERY}).rowcount


def reset_cart_snapshots(order_db: Database, warehouse: Engine) -> None:
    """No snapshots in Order MongoDB `carts`, and no cart sync state: the next cart sync is a cold one."""
    order_db[CART_COLLECTION].drop()
    with warehouse.begin() as conn:
        conn.execute(sa.text("DELETE FROM etl_sync_state WHERE sync_name = :name"), {"name": CART_SYNC_NAME})
        conn.execute(sa.text("DELETE FROM etl_quarantine WHERE source = :source"), {"source": CART_SOURCE})


def bench_day() -> date:
    """The day the warehouse build loads: yesterday, a complete day."""
    return datetime.now(UTC).date() - timedelta(days=1)


def ensure_orders(order_db: Database, day: date, orders: int, products: int) -> bool:
    """One day of `orders` orders of ITEMS_PER_ORDER items each over the generated products, in
    `orders` of `order_db`. Returns True if it had to generate them."""
    wanted = {"_id": "orders", "count": orders, "day": day.isoformat(), "products": products, "seed": SEED,
              "version": GENERATOR_VERSION}
    if order_db[META].find_one({"_id": "orders"}) == wanted:
        return False
    order_db[META].delete_many({"_id": "orders"})
    order_db["orders"].drop()
    start, _ = day_window(day)
    for chunk_start in range(0, orders, INSERT_CHUNK):
        rng = random.Random(f"{SEED}:orders:{chunk_start}")
        documents = []
        for index in range(chunk_start, min(chunk_start + INSERT_CHUNK, orders)):
            items = [_order_item(rng, {"_id": bench_product_id(rng.randrange(products)), "title": f"product {n}",
                                       "price": round(rng.uniform(2, 500), 2), "sellerId": "seller"})
                     for n in range(ITEMS_PER_ORDER)]
            documents.append(RawBSONDocument(bson.encode(_order(
                rng, object_id(b"BORD", index), f"user-{rng.randrange(50_000):05d}", items,
                start + timedelta(seconds=rng.uniform(0, 86_399))))))
        order_db["orders"].insert_many(documents, ordered=False)
    order_db["orders"].create_index([("createdAt", ASCENDING)])
    order_db[META].insert_one(wanted)
    return True


WAREHOUSE_DAY_TABLES = ("order_items", "orders")
ANALYTICS_TABLES = ("daily_sales", "product_sales", "cart_funnel")


def reset_warehouse_day(warehouse: Engine, day: date) -> None:
    """The day absent from the warehouse, as before its first build."""
    with warehouse.begin() as conn:
        for table in WAREHOUSE_DAY_TABLES:
            conn.execute(sa.text(f"DELETE FROM {table} WHERE order_day = :day"), {"day": day})  # noqa: S608
        for table in ANALYTICS_TABLES:
            conn.execute(sa.text(f"DELETE FROM {table} WHERE day = :day"), {"day": day})  # noqa: S608
