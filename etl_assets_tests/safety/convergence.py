"""Seeded sources, a messy target to start from, and the independent check that a sync converged.

"Converged" is recomputed from the source, record by record, without the engine's batching: every valid
product is in the copy, active, with the content hash of its source document (and the stored columns
hash to it too, so no row is torn); the rows of products that turned invalid stay as they were (stale beats
missing); everything else in the copy is inactive; every valid cart has exactly
the snapshot build_snapshot makes of it; each invalid record is open in quarantine; nothing is doubled.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from bson import ObjectId
from pymongo.database import Database

from etl_assets.sync.carts import READ_AT, build_snapshot
from etl_assets.sync.carts import SOURCE as CART_SOURCE
from etl_assets.sync.product_transform import (
    InvalidProduct,
    flatten_product,
    record_id,
    row_hashes,
)
from etl_assets.sync.products import SOURCE as PRODUCT_SOURCE

INVALID_EVERY = 97  # every 97th product has a price the contract refuses, every 97th cart quantity 0
STALE_EVERY = 10  # every 10th record starts the run with an outdated copy in the target
PRODUCTS_GONE = 100  # products in the copy no longer in the catalog: within the 5% the guard lets go
CART_PRODUCTS = 100
INACTIVE_PRODUCT_EVERY = 20
CATEGORIES = ("phone", "earphone", "book", "fashions", "other")
STORED_COLUMNS = ("title", "image", "price", "seller_id", "category", "description", "rating", "quantity")
SHOWN = 5  # problems listed per check; the count says how many there were


def _open_quarantine_ids(warehouse: sa.Engine, source: str) -> set[str]:
    with warehouse.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT record_id FROM etl_quarantine WHERE source = :source AND resolved_at IS NULL"
        ), {"source": source}).scalars())


def _summary(problems: list[str]) -> list[str]:
    return problems[:SHOWN] + ([f"... {len(problems) - SHOWN} more"] if len(problems) > SHOWN else [])


def reset_warehouse(warehouse: sa.Engine) -> None:
    with warehouse.begin() as conn:
        conn.exec_driver_sql("TRUNCATE etl_quarantine, etl_sync_state")


# ---------- products ----------

def seed_catalog(product_db: Database, count: int) -> None:
    started = datetime(2026, 6, 1, tzinfo=UTC)
    product_db["products"].insert_many([{
        "_id": ObjectId(f"{n:024x}"),
        "title": f"Crash-test product {n} — ünïcødé 🛒",
        "image": f"https://img.example/{n}.jpg",
        "price": "n/a" if n % INVALID_EVERY == 0 else round(1 + (n * 7919) % 100_000 / 100, 2),
        "sellerId": f"seller-{n % 37}",
        "category": CATEGORIES[n % len(CATEGORIES)],
        "description": f"Product {n}, line one\nline two, with \"quotes\" and a \\ backslash",
        "rating": (n % 500) / 100,
        "quantity": n % 50,
        "tags": [f"tag-{n % 11}", "crash"],
        "updatedAt": started + timedelta(seconds=n),
    } for n in range(count)], ordered=False)


def reset_product_copy(cart_db: sa.Engine, warehouse: sa.Engine, count: int, *, empty: bool = False) -> None:
    """The copy as an earlier, partly stale sync left it: products since removed from the catalog, outdated
    or deactivated copies of current ones, and copies of products that have turned invalid. Or, with
    `empty`, no copy at all: a first load."""
    reset_warehouse(warehouse)
    with cart_db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE product, cart")
        if empty:
            return
        conn.execute(sa.text("""
            INSERT INTO product (id, title, price, image, content_hash, is_active, synced_at)
            SELECT 'fade' || lpad(to_hex(g), 20, '0'), 'left the catalog', 1, 'img', repeat('0', 32), true,
                   now() - interval '1 day'
            FROM generate_series(1, :gone) g
        """), {"gone": PRODUCTS_GONE})
        conn.execute(sa.text("""
            INSERT INTO product (id, title, price, image, content_hash, is_active, synced_at)
            SELECT lpad(to_hex(g), 24, '0'), 'outdated', 2, 'img', repeat('f', 32), g % (2 * :every) <> 0,
                   now() - interval '1 day'
            FROM generate_series(0, :count - 1) g
            WHERE g % :every = 0 OR g % :invalid = 0
        """), {"every": STALE_EVERY, "invalid": INVALID_EVERY, "count": count})


def stored_content(row: Any) -> dict[str, Any]:
    """A copy row in flatten_product's shape, so its hash can be recomputed from what was stored."""
    return {
        **{column: getattr(row, column) for column in STORED_COLUMNS},
        "price": float(row.price), "rating": float(row.rating),
        "tags_json": json.dumps(row.tags, ensure_ascii=False),
    }


@dataclass(frozen=True)
class CatalogTruth:
    """What the copy must hold, recomputed from the catalog: each valid product's content hash, and the
    quarantine ids of the invalid ones (the seeded invalid documents all fail flatten_product)."""

    hashes: dict[str, str]
    invalid: set[str]


def catalog_truth(product_db: Database) -> CatalogTruth:
    truth = CatalogTruth({}, set())
    valid = []
    for doc in product_db["products"].find({}):
        try:
            valid.append(flatten_product(doc))
        except InvalidProduct:
            truth.invalid.add(record_id(doc))
    truth.hashes.update(zip((row["id"] for row in valid), row_hashes(valid), strict=True))
    return truth


def product_problems(truth: CatalogTruth, cart_db: sa.Engine, warehouse: sa.Engine) -> list[str]:
    with cart_db.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, content_hash, is_active, tags, {', '.join(STORED_COLUMNS)}, "  # noqa: S608
                                    "synced_at > now() - interval '1 hour' AS rewritten FROM product")).all()
    problems = []
    copy = {row.id: row for row in rows}
    synced = [row for row in rows if row.is_active and row.id in truth.hashes]
    recomputed = dict(zip((row.id for row in synced), row_hashes([stored_content(row) for row in synced]),
                          strict=True))
    if len(copy) != len(rows):
        problems.append(f"{len(rows) - len(copy)} duplicate ids in the copy")
    for product_id, source_hash in truth.hashes.items():
        row = copy.get(product_id)
        if row is None:
            problems.append(f"product {product_id} missing from the copy")
        elif not row.is_active:
            problems.append(f"product {product_id} inactive")
        elif not row.content_hash == source_hash == recomputed[product_id]:
            problems.append(f"product {product_id}: stored hash {row.content_hash}, source's {source_hash}")
    problems += [f"product {row.id} active but not in the source"
                 for row in rows if row.is_active and row.id not in truth.hashes and row.id not in truth.invalid]
    problems += [f"product {row.id} turned invalid, yet its row was rewritten"
                 for row in rows if row.id in truth.invalid and row.rewritten]
    quarantined = _open_quarantine_ids(warehouse, PRODUCT_SOURCE)
    if quarantined != truth.invalid:
        problems.append(f"quarantine and invalid documents differ by {len(quarantined ^ truth.invalid)} ids")
    return _summary(problems)


# ---------- carts ----------

_JOINED = sa.text("""
    SELECT c.id::text AS cart_id, c.user_id, c.product_id, c.quantity, c.version, c.created_at, c.updated_at,
           p.title AS product_title, p.price AS product_price, p.image AS product_image, p.seller_id,
           p.quantity AS product_quantity, c.quantity >= 1 AND p.is_active AS valid, now() AS read_at
    FROM cart c JOIN product p ON p.id = c.product_id
""")


def seed_carts(cart_db: sa.Engine, count: int) -> None:
    """Products (every 20th inactive) and carts (every 97th with quantity 0) in the cart database."""
    with cart_db.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO product (id, title, price, image, seller_id, quantity, content_hash, is_active,
                                 synced_at)
            SELECT 'ca27' || lpad(to_hex(g), 20, '0'), 'Cart product ' || g,
                   round((1 + g * 3.17)::numeric, 2), 'https://img.example/c' || g, 'seller-' || g % 7,
                   g % 30, repeat('0', 32), g % :inactive <> 0, now() - interval '1 day'
            FROM generate_series(0, :products - 1) g
        """), {"products": CART_PRODUCTS, "inactive": INACTIVE_PRODUCT_EVERY})
        conn.execute(sa.text("""
            INSERT INTO cart (id, user_id, product_id, quantity, version, created_at, updated_at)
            SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'user-' || g % 500,
                   'ca27' || lpad(to_hex(g % :products), 20, '0'),
                   CASE WHEN g % :invalid = 0 THEN 0 ELSE 1 + g % 4 END,
                   1 + g % 3, timestamptz '2026-05-01' + g * interval '1 minute',
                   timestamptz '2026-05-02' + g * interval '1 minute'
            FROM generate_series(1, :count) g
        """), {"count": count, "products": CART_PRODUCTS, "invalid": INVALID_EVERY})


def reset_snapshots(cart_db: sa.Engine, order_db: Database, warehouse: sa.Engine) -> None:
    """The snapshots as an earlier sync left them: every 10th valid cart with an outdated price and total."""
    reset_warehouse(warehouse)
    order_db.drop_collection("carts")
    with cart_db.connect() as conn:
        rows = [r._asdict() for r in conn.execute(_JOINED)]
    order_db["carts"].insert_many([
        {**build_snapshot(row), "productPrice": 0.5, "total": 0.5 * row["quantity"]}
        for n, row in enumerate(r for r in rows if r["valid"]) if n % STALE_EVERY == 0
    ])


def _content(snapshot: dict) -> dict:
    return {field: value for field, value in snapshot.items() if field != READ_AT}


def cart_problems(cart_db: sa.Engine, order_db: Database, warehouse: sa.Engine) -> list[str]:
    with cart_db.connect() as conn:
        rows = [r._asdict() for r in conn.execute(_JOINED)]
    # When each snapshot's row was read is the sync's own bookkeeping, not content.
    expected = {row["cart_id"]: _content(build_snapshot(row)) for row in rows if row["valid"]}
    invalid = {row["cart_id"] for row in rows if not row["valid"]}
    documents = list(order_db["carts"].find({}, {"_id": 0, READ_AT: 0}))
    snapshots = {doc["cartId"]: doc for doc in documents}
    problems = []
    if len(snapshots) != len(documents):
        problems.append(f"{len(documents) - len(snapshots)} duplicate cart snapshots")
    problems += [f"cart {cart_id}: snapshot {snapshots.get(cart_id)} != {snapshot}"
                 for cart_id, snapshot in expected.items() if snapshots.get(cart_id) != snapshot]
    problems += [f"cart {cart_id} snapshotted but invalid" for cart_id in snapshots.keys() - expected.keys()]
    quarantined = _open_quarantine_ids(warehouse, CART_SOURCE)
    if quarantined != invalid:
        problems.append(f"quarantine differs from the invalid carts: {len(quarantined ^ invalid)} ids")
    return _summary(problems)
