"""Benchmark data: N products in a Product MongoDB database of their own, the matching carts, the 1%
change, and the resets that give each measured step the state it needs.

A product collection is generated once per size (`bench_products_<N>`) and reused by later runs: a
meta document records that the generation finished. Every product has a fixed id; its content comes
from a random generator seeded by the chunk it falls in, so the same size always gives the same data.
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from bson import ObjectId
from pymongo import ASCENDING, UpdateMany
from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.local.demo_data import catalog_product, object_id
from etl_assets.sync.products import SOURCE as PRODUCT_SOURCE
from etl_assets.sync.products import SYNC_NAME

SEED = 20261123
GENERATOR_VERSION = 1  # bump when the documents change shape, so stale collections are regenerated
INSERT_CHUNK = 5_000
# One product in this many has a negative price: the quarantine path runs at a realistic rate.
INVALID_EVERY = 10_000
CHANGED_EVERY = 100  # the incremental step changes every 100th product: 1%
CARTS_PER_PRODUCT = 0.25
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


def product_chunks(count: int, now: datetime) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, count, INSERT_CHUNK):
        rng = random.Random(f"{SEED}:{start}")
        yield [bench_product(rng, index, now) for index in range(start, min(start + INSERT_CHUNK, count))]


def ensure_products(product_db: Database, count: int, progress: Callable[[str], None] = print) -> bool:
    """Make `products` hold exactly the generated `count` documents and the (updatedAt, _id) index the
    product service keeps. Returns True if it had to generate them, False if they were already there."""
    wanted = {"_id": "products", "count": count, "seed": SEED, "version": GENERATOR_VERSION}
    products = product_db["products"]
    if product_db[META].find_one({"_id": "products"}) == wanted and products.estimated_document_count() == count:
        return False
    product_db[META].delete_many({})
    products.drop()
    products.create_index([("updatedAt", ASCENDING), ("_id", ASCENDING)])
    # Timestamps stay at least a day old, so only the 1% change lands after the full sync's watermark.
    now = datetime.now(UTC) - timedelta(days=1)
    for written, chunk in enumerate(product_chunks(count, now), start=1):
        products.insert_many(chunk, ordered=False)
        if written % 40 == 0:
            progress(f"  generated {written * INSERT_CHUNK:,} of {count:,} products")
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


def load_carts(cart_db: Engine, products: int) -> int:
    """Carts for a quarter as many products, spread over the copy's active products, via COPY."""
    with cart_db.connect() as conn:
        product_ids = list(conn.execute(sa.text("SELECT id FROM product WHERE is_active ORDER BY id")).scalars())
    rng = random.Random(f"{SEED}:carts:{products}")
    now = datetime.now(UTC)
    buffer = io.StringIO()
    for index in range(int(products * CARTS_PER_PRODUCT)):
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
