"""The demo data loader against real stores: deterministic, idempotent, and carrying its bad records."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dev import demo_data
from dev.demo_data import (
    BAD_RECORDS,
    RETIRED_PRODUCT_ID,
    DemoData,
    ProductsNotSyncedError,
    build_demo_data,
    delete_retired_product,
    load_carts,
    load_sources,
)
from etl_assets.sync.carts import sync_carts
from etl_assets.sync.order_days import days_to_build
from etl_assets.sync.orders import sync_order_day
from etl_assets.sync.products import sync_products

DAY = date(2026, 11, 23)

PRODUCT_DEFECT_HOLDS = {
    "negative price": lambda doc: doc["price"] < 0,
    "price as a string": lambda doc: isinstance(doc["price"], str),
    "missing title": lambda doc: "title" not in doc,
    "non-string tags": lambda doc: any(not isinstance(tag, str) for tag in doc["tags"]),
    "NUL byte in the title": lambda doc: "\x00" in doc["title"],
}


def _stand_in_for_product_sync(cart_engine: sa.Engine, data: DemoData) -> None:
    """Copy the good products into the cart database, which is what the first product sync does."""
    bad_ids = {bad.record_id for bad in BAD_RECORDS}
    rows = [{"id": str(doc["_id"]), "title": doc["title"], "price": doc["price"], "image": doc["image"]}
            for doc in data.products if str(doc["_id"]) not in bad_ids]
    with cart_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO product (id, title, price, image, content_hash) "
                             "VALUES (:id, :title, :price, :image, repeat('0', 32))"), rows)


def _cart_rows(cart_engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with cart_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM cart")).mappings().all()
    return {str(row["id"]): dict(row) for row in rows}


def test_the_same_seed_and_day_give_the_same_data() -> None:
    first = build_demo_data(today=DAY)
    assert first == build_demo_data(today=DAY)
    assert first != build_demo_data(seed=demo_data.SEED + 1, today=DAY)
    bad_per_source = Counter(bad.source for bad in BAD_RECORDS)
    assert len(first.products) == demo_data.PRODUCT_COUNT + bad_per_source["product_db.products"]
    # The bad orders, and the order the demo pays after its day was built.
    assert len(first.orders) == demo_data.ORDER_COUNT + bad_per_source["order_db.orders"] + 1
    assert len(first.carts) + len(first.legacy_carts) == demo_data.CART_COUNT + bad_per_source["cart_db.cart"]


def test_loading_twice_converges_and_keeps_the_bad_records(stores) -> None:
    env = stores.env()
    data = build_demo_data(today=DAY)

    assert load_sources(env, data) == {"products": len(data.products), "orders": len(data.orders)}
    with pytest.raises(ProductsNotSyncedError, match="run the product sync first"):
        load_carts(env, data)
    _stand_in_for_product_sync(stores.cart_engine, data)
    assert load_carts(env, data) == len(data.carts) + len(data.legacy_carts)
    carts_after_first_load = _cart_rows(stores.cart_engine)

    assert load_sources(env, data) == {"products": 0, "orders": 0}
    assert load_carts(env, data) == 0
    assert _cart_rows(stores.cart_engine) == carts_after_first_load
    assert stores.product_db["products"].count_documents({}) == len(data.products)
    assert stores.order_db["orders"].count_documents({}) == len(data.orders)
    assert list(stores.product_db["products"].find().sort("_id")) == sorted(data.products, key=lambda d: d["_id"])

    products = {str(doc["_id"]): doc for doc in stores.product_db["products"].find()}
    orders = {str(doc["_id"]): doc for doc in stores.order_db["orders"].find()}
    with stores.cart_engine.connect() as conn:
        cart_db_products = set(conn.execute(sa.text("SELECT id FROM product")).scalars())
    for bad in BAD_RECORDS:
        if bad.source == "product_db.products":
            assert PRODUCT_DEFECT_HOLDS[bad.defect](products[bad.record_id]), bad
        elif bad.source == "cart_db.cart":
            cart = carts_after_first_load[bad.record_id]
            assert {
                demo_data.CART_QUANTITY_ZERO: cart["quantity"] == 0,
                demo_data.CART_INACTIVE_PRODUCT: cart["product_id"] == str(RETIRED_PRODUCT_ID),
                demo_data.CART_MISSING_PRODUCT: cart["product_id"] not in cart_db_products,
            }[bad.defect], bad
        else:
            order = orders[bad.record_id]
            items = order["orderItems"]
            assert {
                demo_data.ORDER_SUBTOTAL_MISMATCH:
                    order["subtotal"] != round(sum(item["subtotal"] for item in items), 2),
                demo_data.ORDER_UNKNOWN_PRODUCT: any(item["productId"] not in products for item in items),
            }[bad.defect], bad


def test_orders_fall_in_the_last_30_days_and_good_records_keep_the_contract() -> None:
    data = build_demo_data(today=DAY)
    start = demo_data.history_start(DAY)
    end = start + timedelta(days=demo_data.HISTORY_DAYS)
    bad_ids = {bad.record_id for bad in BAD_RECORDS}
    good = [order for order in data.orders if str(order["_id"]) not in bad_ids]
    assert all(start <= order["createdAt"] < end for order in data.orders)
    assert all(order["subtotal"] == round(sum(i["subtotal"] for i in order["orderItems"]), 2) for order in good)
    assert all(cart["quantity"] >= 1 for cart in data.carts if cart["id"] not in bad_ids)


def test_the_retired_product_is_deleted_once(stores) -> None:
    env = stores.env()
    load_sources(env, build_demo_data(today=DAY))
    assert delete_retired_product(env) == 1
    assert delete_retired_product(env) == 0
    assert stores.product_db["products"].find_one({"_id": RETIRED_PRODUCT_ID}) is None


def test_the_planted_deleted_cart_is_marked_and_a_rerun_of_the_demo_brings_it_back(stores) -> None:
    env = stores.env()
    data = build_demo_data(today=DAY)
    _stand_in_for_product_sync(stores.cart_engine, data)
    load_carts(env, data)
    sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine, mode="full", run_id="demo-1")
    assert demo_data.delete_cart(env) == 1
    assert demo_data.delete_cart(env) == 0

    report = sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine, run_id="demo-2")

    assert report.marked_deleted_ids == [demo_data.DELETED_CART_ID]
    # Loading the demo data again restores the cart; the next sync clears the mark.
    load_carts(env, data)
    again = sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine, run_id="demo-3")
    assert (again.reappeared, again.marked_deleted) == (1, 0)
    assert "deletedAt" not in stores.order_db["carts"].find_one({"cartId": demo_data.DELETED_CART_ID})


def test_the_syncs_quarantine_exactly_the_bad_records_the_demo_says_they_will(stores) -> None:
    env = stores.env()
    data = build_demo_data(today=DAY)
    load_sources(env, data)
    sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine, mode="full", run_id="demo-1")
    load_carts(env, data)
    delete_retired_product(env)
    sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine, mode="full", run_id="demo-2")
    sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine, mode="full", run_id="demo-2")
    first_day = demo_data.history_start(DAY).date()
    for n in range(demo_data.HISTORY_DAYS):
        sync_order_day(stores.order_db, stores.warehouse_engine, first_day + timedelta(days=n), run_id="demo-2")

    with stores.warehouse_engine.connect() as conn:
        quarantined = set(conn.execute(sa.text(
            "SELECT source, record_id FROM etl_quarantine WHERE resolved_at IS NULL")).tuples())
    assert quarantined == {(bad.source, bad.record_id) for bad in BAD_RECORDS if bad.quarantined}
    assert any(not bad.quarantined for bad in BAD_RECORDS)


def test_the_late_payment_is_paid_after_its_day_was_built(stores) -> None:
    env = stores.env()
    load_sources(env, build_demo_data(today=DAY))
    yesterday = DAY - timedelta(days=1)
    sync_order_day(stores.order_db, stores.warehouse_engine, yesterday, run_id="first-build")
    order_id = str(demo_data.LATE_PAYMENT_ORDER_ID)

    def warehouse_order() -> tuple:
        with stores.warehouse_engine.connect() as conn:
            return tuple(conn.execute(sa.text("SELECT created_at, payment_status, paid_at FROM orders "
                                              "WHERE order_id = :id"), {"id": order_id}).one())

    created_at, status, paid_at = warehouse_order()
    assert (created_at.date(), created_at.hour, status, paid_at) == (yesterday, 23, "pending", None)
    assert days_to_build(stores.order_db.orders, stores.warehouse_engine, yesterday, yesterday) == []
    paid_at = demo_data.pay_late_order(env)
    [stale] = days_to_build(stores.order_db.orders, stores.warehouse_engine, yesterday, yesterday)
    assert stale.built.run_id == "first-build"
    sync_order_day(stores.order_db, stores.warehouse_engine, yesterday, run_id="rebuild")
    assert warehouse_order()[1:] == ("paid", paid_at)
