"""Data for the check tests: a catalog synced into the copy, carts snapshot into Order MongoDB, and
warehouse orders, each easy to spoil in one specific way."""

import uuid
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from bson import ObjectId

from etl_assets.sync.carts import sync_carts
from etl_assets.sync.products import sync_products

DAY = date(2026, 11, 20)


def product_id(n: int) -> str:
    return f"{n:024x}"


def product_doc(n: int, **fields) -> dict:
    doc = {"_id": ObjectId(product_id(n)), "title": f"Product {n}", "image": f"https://img.example/{n}.png",
           "price": 10 + n, "quantity": 3, "category": "book",
           "updatedAt": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n)}
    return {**doc, **fields}


def seed_catalog(stores, count: int, *extra_docs: dict) -> None:
    stores.product_db.products.insert_many([product_doc(n) for n in range(1, count + 1)] + list(extra_docs))


def sync_catalog(stores) -> None:
    sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine, mode="full", run_id="seed")


def cart_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def add_cart(stores, n: int, product: int, *, quantity: int = 2, version: int = 1,
             bypass_foreign_key: bool = False) -> str:
    """A cart of product `product`. `bypass_foreign_key` writes it as legacy data did, without the FK."""
    with stores.cart_engine.begin() as conn:
        if bypass_foreign_key:
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text("""
            INSERT INTO cart (id, user_id, product_id, quantity, version, created_at, updated_at)
            VALUES (:id, 'user-1', :product_id, :quantity, :version, now() - interval '2 days', now() - interval '1 day')
        """), {"id": cart_id(n), "product_id": product_id(product), "quantity": quantity, "version": version})
    return cart_id(n)


def sync_cart_snapshots(stores) -> None:
    sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine, mode="full", run_id="seed")


def snapshot_carts(stores, count: int, *, products: int = 1) -> list[str]:
    """A synced catalog of `products` products, and `count` carts of the first one, snapshot: their ids."""
    seed_catalog(stores, products)
    sync_catalog(stores)
    carts = [add_cart(stores, n, product=1) for n in range(1, count + 1)]
    sync_cart_snapshots(stores)
    return carts


def add_order(stores, order_id: str, items: list[tuple[str, int, float]], *, day: date = DAY,
              total_offset: float = 0.0) -> None:
    """A valid warehouse order of (product id, quantity, unit price) lines; `total_offset` spoils its total."""
    lines = [{"order_id": order_id, "line_no": n, "order_day": day, "product_id": pid, "quantity": qty,
              "unit_price": price, "subtotal": round(qty * price, 2)} for n, (pid, qty, price) in enumerate(items, 1)]
    subtotal = round(sum(line["subtotal"] for line in lines), 2)
    with stores.warehouse_engine.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO orders (order_id, order_day, user_id, order_status, payment_status, subtotal, tax,
                                shipping, discount, total, created_at)
            VALUES (:order_id, :day, 'user-1', 'delivered', 'paid', :subtotal, 0, 0, 0, :total, :created_at)
        """), {"order_id": order_id, "day": day, "subtotal": subtotal, "total": subtotal + total_offset,
               "created_at": datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)})
        conn.execute(sa.text("""
            INSERT INTO order_items (order_id, line_no, order_day, product_id, product_title, quantity,
                                     unit_price, subtotal)
            VALUES (:order_id, :line_no, :order_day, :product_id, 'a product', :quantity, :unit_price, :subtotal)
        """), lines)


def execute(engine: sa.Engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def order_doc(oid: ObjectId, items: list[tuple[str, int, float]], *, day: date = DAY, **amounts: float) -> dict:
    """An Order MongoDB document of (product id, quantity, unit price) lines; `amounts` override its sums."""
    lines = [{"productId": pid, "productTitle": "a product", "quantity": qty, "unitPrice": price,
              "subtotal": round(qty * price, 2)} for pid, qty, price in items]
    subtotal = round(sum(line["subtotal"] for line in lines), 2)
    return {"_id": oid, "userId": "user-1", "orderItems": lines, "orderStatus": "delivered", "paymentStatus": "paid",
            "subtotal": subtotal, "tax": 0.0, "shipping": 0.0, "discount": 0.0, "total": subtotal,
            "createdAt": datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12), **amounts}
