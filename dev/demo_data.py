"""Deterministic demo data for the shop's stores, including a few deliberately bad records.

Two phases, in the order the shop's services would produce the data:

- `load_sources`: Product MongoDB `products` and Order MongoDB `orders` (orders from the 30 days
  before today, UTC).
- `load_carts`: Cart PostgreSQL `cart`. Run it after the first product sync: the cart service only
  accepts carts for products it knows, and the loader never writes the ETL-owned `product` table.
- `pay_late_order`: after the warehouse built yesterday, pays yesterday's 23:40 order, a late payment
  the automation must carry into the warehouse.

Every record has a fixed id and is upserted, so loading again converges instead of duplicating.
The same seed and day always give the same records. `BAD_RECORDS` lists the defective ones.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from bson import ObjectId
from pymongo import ReplaceOne
from pymongo.database import Database

from etl_assets.resources import CART_DB, ORDER_DB, PRODUCT_DB
from etl_assets.schemas.products import CATEGORIES
from etl_assets.sync.stores import mongo_database, postgres_engine

SEED = 20261123
PRODUCT_COUNT = 3000
CART_COUNT = 2000
ORDER_COUNT = 3000
USER_COUNT = 800
SELLER_COUNT = 60
HISTORY_DAYS = 30
CONVERTED_CART_SHARE = 0.3  # carts whose user later ordered the cart's product

_NOUNS = {
    "phone": ("Smartphone", "Phone", "Flip Phone", "Rugged Phone"),
    "earphone": ("Earbuds", "Headphones", "In-Ear Monitors", "Headset"),
    "book": ("Novel", "Cookbook", "Field Guide", "Biography", "Atlas"),
    "fashions": ("Jacket", "Sneakers", "Scarf", "Backpack", "Dress"),
    "other": ("Desk Lamp", "Water Bottle", "Phone Case", "Charger", "Notebook"),
}
_BRANDS = ("Acme", "Nordlys", "Kestrel", "Umbra", "Pavo", "Lumen", "Tessera", "Orbit", "Vale", "Quill")
_TAGS = ("new", "sale", "bestseller", "eco", "gift", "limited", "refurbished", "bundle", "premium")
_ORDER_STATUSES = ("delivered", "shipped", "processing", "pending", "cancelled")
_ORDER_STATUS_WEIGHTS = (45, 20, 15, 10, 10)

# ObjectIds are built from a fixed 12-byte pattern: the generation time 2025-01-01T00:00Z, a 4-byte
# tag naming what the id is for, and a 4-byte index. Hex ids are therefore stable across runs.
_ID_EPOCH = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()).to_bytes(4, "big")
_CART_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://shop-sync.example/demo/cart")


def object_id(tag: bytes, index: int) -> ObjectId:
    return ObjectId(_ID_EPOCH + tag + index.to_bytes(4, "big"))


def product_id(index: int) -> ObjectId:
    return object_id(b"PROD", index)


def cart_id(index: int) -> str:
    return str(uuid.uuid5(_CART_NAMESPACE, f"cart-{index}"))


def user_id(index: int) -> str:
    return f"user-{index:04d}"


# A good product that the demo deletes from Product MongoDB after the first sync, so its cart DB
# copy becomes inactive while carts still point at it.
RETIRED_PRODUCT_ID = product_id(7)

# A good cart that the demo deletes from Cart PostgreSQL after its snapshot was written, as the cart
# service would: the cart sync marks the snapshot deletedAt, and cart_funnel, which counts the cart
# rows, no longer counts it.
DELETED_CART_ID = cart_id(0)

# The deliberately bad records: BAD_PER_DEFECT of each defect below.
BAD_PER_DEFECT = 3
_BAD_PRODUCT_DEFECTS = {  # defect -> how it spoils an otherwise good document (n: 0..BAD_PER_DEFECT-1)
    "negative price": lambda doc, n: doc.update(price=-round(4.99 + n, 2)),
    "price as a string": lambda doc, n: doc.update(price=f"{19 + n}.99 USD"),
    "missing title": lambda doc, n: doc.pop("title"),
    "non-string tags": lambda doc, n: doc.update(tags=[["sale", 7], [None], [{"name": "gift"}]][n]),
    "NUL byte in the title": lambda doc, n: doc.update(title=f"{doc['title']}\x00 (legacy import)"),
}
CART_QUANTITY_ZERO = "quantity 0"
CART_INACTIVE_PRODUCT = "product is inactive (deleted from the source after the first sync)"
CART_MISSING_PRODUCT = "product does not exist (legacy row inserted without the foreign key)"
ORDER_SUBTOTAL_MISMATCH = "subtotal does not match the sum of its items"
ORDER_UNKNOWN_PRODUCT = "an order item points at an unknown product id"
_CART_DEFECTS = (CART_QUANTITY_ZERO, CART_INACTIVE_PRODUCT, CART_MISSING_PRODUCT)
_ORDER_DEFECTS = (ORDER_SUBTOTAL_MISMATCH, ORDER_UNKNOWN_PRODUCT)


def _bad_product_id(k: int) -> ObjectId:
    return object_id(b"BADP", k)


def _unknown_product_id(n: int) -> ObjectId:
    return object_id(b"GONE", n)


def _bad_cart_id(k: int) -> str:
    return str(uuid.uuid5(_CART_NAMESPACE, f"bad-cart-{k}"))


def _bad_order_id(k: int) -> ObjectId:
    return object_id(b"BADO", k)


def _enumerate_bad(defects: Iterable[str]) -> list[tuple[int, int, str]]:
    """(k: number among the records of this store, n: number within the defect, defect)."""
    return [(i * BAD_PER_DEFECT + n, n, defect) for i, defect in enumerate(defects) for n in range(BAD_PER_DEFECT)]


@dataclass(frozen=True)
class BadRecord:
    """A deliberately defective record: where it lives, its id, and what is wrong with it."""

    source: str
    record_id: str
    defect: str

    @property
    def quarantined(self) -> bool:
        """Whether the sync quarantines it. An order whose item names an unknown product loads, and the
        WARN check items_reference_known_products flags it."""
        return self.defect != ORDER_UNKNOWN_PRODUCT


BAD_RECORDS: tuple[BadRecord, ...] = (
    *(BadRecord("product_db.products", str(_bad_product_id(k)), defect)
      for k, _, defect in _enumerate_bad(_BAD_PRODUCT_DEFECTS)),
    *(BadRecord("cart_db.cart", _bad_cart_id(k), defect) for k, _, defect in _enumerate_bad(_CART_DEFECTS)),
    *(BadRecord("order_db.orders", str(_bad_order_id(k)), defect)
      for k, _, defect in _enumerate_bad(_ORDER_DEFECTS)),
)


@dataclass
class DemoData:
    """Every demo record, ready to write. Carts are cart-table rows; the rest are Mongo documents."""

    products: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    carts: list[dict[str, Any]]
    legacy_carts: list[dict[str, Any]]  # rows whose product does not exist; they bypass the foreign key


def history_start(today: date) -> datetime:
    """Midnight UTC, HISTORY_DAYS days before `today`: orders and carts fall in [start, today)."""
    return datetime.combine(today - timedelta(days=HISTORY_DAYS), time(0), tzinfo=UTC)


def build_demo_data(
    seed: int = SEED,
    today: date | None = None,
    product_count: int = PRODUCT_COUNT,
    cart_count: int = CART_COUNT,
    order_count: int = ORDER_COUNT,
) -> DemoData:
    """The demo records for `today` (UTC by default). Pure: the same arguments give the same data."""
    today = today or datetime.now(UTC).date()
    start = history_start(today)
    end = start + timedelta(days=HISTORY_DAYS)
    products = _products(random.Random(f"{seed}:products"), product_count, end)
    good_products = [p for p in products if p["_id"] != RETIRED_PRODUCT_ID]
    carts = _carts(random.Random(f"{seed}:carts"), cart_count, good_products, start, end)
    orders = _orders(random.Random(f"{seed}:orders"), order_count, good_products, carts, start, end)
    bad_carts, legacy_carts = _bad_carts(random.Random(f"{seed}:bad-carts"), good_products, start)
    return DemoData(
        products=products + _bad_products(random.Random(f"{seed}:bad-products"), end),
        orders=orders + _bad_orders(random.Random(f"{seed}:bad-orders"), good_products, start)
        + [_late_payment_order(random.Random(f"{seed}:late-payment"), good_products, today)],
        carts=carts + bad_carts,
        legacy_carts=legacy_carts,
    )


def catalog_product(rng: random.Random, oid: ObjectId, now: datetime) -> dict[str, Any]:
    """A valid catalog document shaped like the product service's, legacy variants included."""
    category = rng.choice(CATEGORIES)
    title = f"{rng.choice(_BRANDS)} {rng.choice(_NOUNS[category])} {rng.randint(1, 99)}"
    seller = object_id(b"SELL", rng.randrange(SELLER_COUNT))
    doc: dict[str, Any] = {
        "_id": oid,
        "title": title,
        "image": f"https://images.shop.example/products/{oid}.jpg",
        "price": round(rng.uniform(2, 1500), 2),
        # The product service stored seller ids as strings before it switched to ObjectIds.
        "sellerId": str(seller) if rng.random() < 0.2 else seller,
        "category": category,
        "description": f"{title}: {rng.choice(('durable', 'light', 'classic', 'compact'))} and "
        f"{rng.choice(('affordable', 'stylish', 'reliable', 'popular'))}.",
        "rating": round(rng.uniform(0, 5), 1),
        "quantity": rng.randint(0, 250),
        "tags": rng.sample(_TAGS, rng.randint(0, 3)),
    }
    age = rng.random()
    if age < 0.05:
        # Documents from before the service recorded timestamps have neither field, and the oldest
        # ones also lack the fields that have contract defaults.
        if age < 0.02:
            for field in ("category", "rating", "quantity"):
                doc.pop(field)
    else:
        created = now - timedelta(days=rng.uniform(30, 400))
        doc["createdAt"] = _millis(created)
        doc["updatedAt"] = _millis(created + (now - created) * rng.random())
    return doc


def _products(rng: random.Random, count: int, now: datetime) -> list[dict[str, Any]]:
    return [catalog_product(rng, product_id(i), now) for i in range(count)]


def _bad_products(rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    docs = []
    for k, n, defect in _enumerate_bad(_BAD_PRODUCT_DEFECTS):
        doc = catalog_product(rng, _bad_product_id(k), now)
        _BAD_PRODUCT_DEFECTS[defect](doc, n)
        docs.append(doc)
    return docs


def _cart_row(rng: random.Random, cid: str, product: dict[str, Any], start: datetime, end: datetime,
              quantity: int | None = None) -> dict[str, Any]:
    created = start + (end - start) * rng.random()
    version = rng.choices((1, 2, 3, 4), weights=(60, 25, 10, 5))[0]
    updated = created if version == 1 else created + (end - created) * rng.random()
    return {
        "id": cid,
        "user_id": user_id(rng.randrange(USER_COUNT)),
        "product_id": str(product["_id"]),
        "quantity": rng.randint(1, 4) if quantity is None else quantity,
        "version": version,
        "created_at": _millis(created),
        "updated_at": _millis(updated),
    }


def _carts(rng: random.Random, count: int, products: list[dict[str, Any]], start: datetime,
           end: datetime) -> list[dict[str, Any]]:
    return [_cart_row(rng, cart_id(i), rng.choice(products), start, end) for i in range(count)]


def _bad_carts(rng: random.Random, products: list[dict[str, Any]],
               start: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    end = start + timedelta(days=HISTORY_DAYS)
    retired = {"_id": RETIRED_PRODUCT_ID}
    carts, legacy = [], []
    for k, n, defect in _enumerate_bad(_CART_DEFECTS):
        if defect == CART_QUANTITY_ZERO:
            carts.append(_cart_row(rng, _bad_cart_id(k), rng.choice(products), start, end, quantity=0))
        elif defect == CART_INACTIVE_PRODUCT:
            carts.append(_cart_row(rng, _bad_cart_id(k), retired, start, end))
        else:
            legacy.append(_cart_row(rng, _bad_cart_id(k), {"_id": _unknown_product_id(n)}, start, end))
    return carts, legacy


def _order_item(rng: random.Random, product: dict[str, Any], quantity: int | None = None) -> dict[str, Any]:
    quantity = quantity or rng.choices((1, 2, 3), weights=(70, 20, 10))[0]
    unit_price = product["price"] if rng.random() > 0.1 else round(product["price"] * 0.9, 2)
    return {
        "productId": str(product["_id"]),
        "productTitle": product["title"],
        "productPrice": product["price"],
        "sellerId": str(product["sellerId"]),
        "quantity": quantity,
        "unitPrice": unit_price,
        "subtotal": round(unit_price * quantity, 2),
    }


def _order(rng: random.Random, oid: ObjectId, user: str, items: list[dict[str, Any]],
           created: datetime) -> dict[str, Any]:
    status = rng.choices(_ORDER_STATUSES, weights=_ORDER_STATUS_WEIGHTS)[0]
    payment = {"pending": "pending", "cancelled": rng.choice(("refunded", "failed"))}.get(status, "paid")
    subtotal = round(sum(item["subtotal"] for item in items), 2)
    tax = round(subtotal * 0.08, 2)
    shipping = 0.0 if subtotal >= 50 else 4.99
    discount = round(subtotal * 0.05, 2) if rng.random() < 0.15 else 0.0
    return {
        "_id": oid,
        "userId": user,
        "orderItems": items,
        "orderStatus": status,
        "paymentStatus": payment,
        "subtotal": subtotal,
        "tax": tax,
        "shipping": shipping,
        "discount": discount,
        "total": round(subtotal + tax + shipping - discount, 2),
        "createdAt": _millis(created),
        "paidAt": _millis(created + timedelta(minutes=rng.randint(1, 90)))
        if payment in ("paid", "refunded") else None,
    }


def _orders(rng: random.Random, count: int, products: list[dict[str, Any]], carts: list[dict[str, Any]],
            start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Orders in [start, end): some convert a cart (same user and product, after the cart's last
    update), the rest are random baskets."""
    by_id = {str(p["_id"]): p for p in products}
    orders: list[dict[str, Any]] = []
    for cart in carts:
        ordered_at = cart["updated_at"] + (end - cart["updated_at"]) * rng.random()
        if len(orders) < count and rng.random() < CONVERTED_CART_SHARE:
            item = _order_item(rng, by_id[cart["product_id"]], cart["quantity"])
            orders.append(_order(rng, object_id(b"ORDR", len(orders)), cart["user_id"], [item], ordered_at))
    while len(orders) < count:
        items = [_order_item(rng, p) for p in rng.sample(products, rng.choices((1, 2, 3, 4), (50, 30, 15, 5))[0])]
        created = start + (end - start) * rng.random()
        orders.append(_order(rng, object_id(b"ORDR", len(orders)), user_id(rng.randrange(USER_COUNT)), items,
                             created))
    return orders


def _bad_orders(rng: random.Random, products: list[dict[str, Any]], start: datetime) -> list[dict[str, Any]]:
    orders = []
    for k, n, defect in _enumerate_bad(_ORDER_DEFECTS):
        items = [_order_item(rng, p) for p in rng.sample(products, 2)]
        if defect == ORDER_UNKNOWN_PRODUCT:
            items[1]["productId"] = str(_unknown_product_id(n))
        order = _order(rng, _bad_order_id(k), user_id(rng.randrange(USER_COUNT)), items,
                       start + timedelta(days=HISTORY_DAYS) * rng.random())
        if defect == ORDER_SUBTOTAL_MISMATCH:
            order["subtotal"] = round(order["subtotal"] + 10 + n, 2)
        orders.append(order)
    return orders


# An order created at 23:40 on the last day and still pending when the warehouse first builds that day;
# pay_late_order pays it after the build, and the automation must rebuild the day.
LATE_PAYMENT_ORDER_ID = object_id(b"LATE", 0)


def _late_payment_order(rng: random.Random, products: list[dict[str, Any]], today: date) -> dict[str, Any]:
    created = datetime.combine(today - timedelta(days=1), time(23, 40), tzinfo=UTC)
    order = _order(rng, LATE_PAYMENT_ORDER_ID, user_id(0), [_order_item(rng, products[0], 1)], created)
    return {**order, "orderStatus": "pending", "paymentStatus": "pending", "paidAt": None}


def pay_late_order(env: Mapping[str, str] = os.environ) -> datetime:
    """Pay LATE_PAYMENT_ORDER_ID now, as the order service would after midnight; returns paidAt."""
    order_db = mongo_database(env["ORDER_MONGO_URI"], env["ORDER_MONGO_DB"], store=ORDER_DB, timeout_s=5)
    paid_at = _millis(datetime.now(UTC))
    try:
        order_db["orders"].update_one({"_id": LATE_PAYMENT_ORDER_ID}, {"$set": {
            "orderStatus": "processing", "paymentStatus": "paid", "paidAt": paid_at}})
    finally:
        order_db.client.close()
    return paid_at


def _millis(moment: datetime) -> datetime:
    """BSON dates keep milliseconds; rounding first makes what is read back equal what was built."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _upsert_documents(db: Database, collection: str, docs: list[dict[str, Any]]) -> int:
    """Replace-or-insert by _id; returns how many documents were new."""
    result = db[collection].bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs],
                                       ordered=False)
    return result.upserted_count


def load_sources(env: Mapping[str, str] = os.environ, data: DemoData | None = None) -> dict[str, int]:
    """Write the products and orders; returns how many of each were new."""
    data = data or build_demo_data()
    product_db = mongo_database(env["PRODUCT_MONGO_URI"], env["PRODUCT_MONGO_DB"], store=PRODUCT_DB, timeout_s=5)
    order_db = mongo_database(env["ORDER_MONGO_URI"], env["ORDER_MONGO_DB"], store=ORDER_DB, timeout_s=5)
    try:
        return {
            "products": _upsert_documents(product_db, "products", data.products),
            "orders": _upsert_documents(order_db, "orders", data.orders),
        }
    finally:
        product_db.client.close()
        order_db.client.close()


_UPSERT_CART = sa.text("""
    INSERT INTO cart AS c (id, user_id, product_id, quantity, version, created_at, updated_at)
    VALUES (CAST(:id AS uuid), :user_id, :product_id, :quantity, :version, :created_at, :updated_at)
    ON CONFLICT (id) DO UPDATE SET
        user_id = excluded.user_id, product_id = excluded.product_id, quantity = excluded.quantity,
        version = excluded.version, created_at = excluded.created_at, updated_at = excluded.updated_at
    WHERE (c.user_id, c.product_id, c.quantity, c.version, c.created_at, c.updated_at)
          IS DISTINCT FROM (excluded.user_id, excluded.product_id, excluded.quantity, excluded.version,
                            excluded.created_at, excluded.updated_at)
""")


class ProductsNotSyncedError(RuntimeError):
    """The carts reference products the cart database does not hold yet."""


def load_carts(env: Mapping[str, str] = os.environ, data: DemoData | None = None) -> int:
    """Write the cart rows; returns how many rows were inserted or changed.

    Raises ProductsNotSyncedError when a cart's product is not in the cart database: run the
    product sync first.
    """
    data = data or build_demo_data()
    engine = postgres_engine(env["CART_PG_URL"], store=CART_DB, timeout_s=5)
    try:
        needed = sorted({cart["product_id"] for cart in data.carts})
        with engine.connect() as conn:
            known = set(conn.execute(sa.text("SELECT id FROM product WHERE id = ANY(:ids)"), {"ids": needed}).scalars())
        missing = [pid for pid in needed if pid not in known]
        if missing:
            raise ProductsNotSyncedError(
                f"{len(missing)} products the carts need are not in the cart database (e.g. {missing[0]}); "
                "run the product sync first"
            )
        with engine.begin() as conn:
            written = conn.execute(_UPSERT_CART, data.carts).rowcount
        with engine.begin() as conn:
            # Legacy rows predate the foreign key; replica mode skips FK triggers for this transaction.
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            written += conn.execute(_UPSERT_CART, data.legacy_carts).rowcount
        return written
    finally:
        engine.dispose()


def delete_retired_product(env: Mapping[str, str] = os.environ) -> int:
    """Delete RETIRED_PRODUCT_ID from Product MongoDB, as the product service would; returns 0 or 1."""
    product_db = mongo_database(env["PRODUCT_MONGO_URI"], env["PRODUCT_MONGO_DB"], store=PRODUCT_DB, timeout_s=5)
    try:
        return product_db["products"].delete_one({"_id": RETIRED_PRODUCT_ID}).deleted_count
    finally:
        product_db.client.close()


def delete_cart(env: Mapping[str, str] = os.environ) -> int:
    """Delete DELETED_CART_ID from Cart PostgreSQL, as the cart service would; returns 0 or 1."""
    engine = postgres_engine(env["CART_PG_URL"], store=CART_DB, timeout_s=5)
    try:
        with engine.begin() as conn:
            return conn.execute(sa.text("DELETE FROM cart WHERE id = CAST(:id AS uuid)"),
                                {"id": DELETED_CART_ID}).rowcount
    finally:
        engine.dispose()
