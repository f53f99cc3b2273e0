"""The measurements behind the asset checks, against real stores: each inconsistency is counted and named,
and each measurement comes back clean once the data is fixed."""

import time
from datetime import timedelta

import pymongo
import pytest
import sqlalchemy as sa
from bson import Decimal128, ObjectId

from etl_assets.schemas.warehouse import DailySalesTable
from etl_assets.sync import reconcile
from etl_assets.sync.products import SOURCE as PRODUCTS_SOURCE
from etl_assets.sync.quarantine import Quarantine, Rejection
from etl_assets.sync.stores import StoreUnavailableError
from etl_assets_tests.checks.seed import (
    DAY,
    add_cart,
    add_order,
    execute,
    product_doc,
    product_id,
    seed_catalog,
    sync_cart_snapshots,
    sync_catalog,
)
from etl_assets_tests.sync.test_products import FindCommands


def reconcile_products(stores, batch_size: int = 4) -> reconcile.ProductReconciliation:
    return reconcile.reconcile_products(stores.product_db, stores.cart_engine, stores.warehouse_engine,
                                        batch_size=batch_size)


# ---------- Product MongoDB ↔ Cart PostgreSQL product ----------

def test_catalog_and_copy_agree_after_a_full_sync_quarantine_included(stores):
    seed_catalog(stores, 10, product_doc(11, price=-1), {"_id": "legacy-id", "title": "no ObjectId"})
    sync_catalog(stores)
    result = reconcile_products(stores)
    assert result.passed, result.details()
    assert (result.source_documents, result.source_rejected, result.quarantined_open,
            result.active_copy_rows) == (12, 2, 2, 10)


def test_the_catalog_is_compared_through_several_routers(stores, routers):
    routers.insert(stores.product_db_name, "products", [product_doc(n) for n in range(1, 11)])
    sync_catalog(stores)
    client = routers.client()
    try:
        result = reconcile.reconcile_products(client[stores.product_db_name], stores.cart_engine,
                                              stores.warehouse_engine, batch_size=3)
    finally:
        client.close()
    assert result.passed, result.details()
    assert (result.source_documents, result.active_copy_rows) == (10, 10)


def test_records_out_of_sync_are_counted_named_and_gone_after_a_sync(stores):
    seed_catalog(stores, 10)
    sync_catalog(stores)
    products = stores.product_db.products
    products.update_one({"_id": ObjectId(product_id(1))}, {"$set": {"price": 99.5}})
    products.update_one({"_id": ObjectId(product_id(2)), }, {"$set": {"description": "new text"}})
    products.insert_one(product_doc(20))
    products.delete_one({"_id": ObjectId(product_id(4))})
    execute(stores.cart_engine, "UPDATE product SET quantity = 0, image = 'x' WHERE id = :id", id=product_id(3))
    execute(stores.cart_engine, "UPDATE product SET is_active = false WHERE id = :id", id=product_id(5))
    execute(stores.cart_engine, "INSERT INTO product (id, title, price, image, content_hash) "
                                "VALUES (:id, 'stray', 1, 'i', repeat('0', 32))", id="f" * 24)

    result = reconcile_products(stores)
    assert not result.passed
    assert (result.missing.count, sorted(result.missing.ids)) == (2, [product_id(5), product_id(20)])
    assert (result.extra.count, sorted(result.extra.ids)) == (2, [product_id(4), "f" * 24])
    assert (result.drifted.count, sorted(result.drifted.ids)) == (3, [product_id(n) for n in (1, 2, 3)])
    assert result.drifted_fields == {"price": 1, "other": 1, "quantity": 1, "image": 1}
    assert result.failing == 7 and len(result.sample_ids) == 7
    # 10 documents, nothing quarantined, but 10 active rows of which only 7 are right.
    assert (result.source_documents, result.active_copy_rows, result.counts_match) == (10, 10, True)

    # The sync rewrites only what changed in the catalog; the copy's own edit is undone by hand.
    execute(stores.cart_engine, "UPDATE product SET quantity = 3, image = :image WHERE id = :id",
            id=product_id(3), image="https://img.example/3.png")
    sync_catalog(stores)
    result = reconcile_products(stores)
    assert result.passed, result.details()
    assert (result.source_documents, result.active_copy_rows) == (10, 10)


def test_counts_disagree_when_the_quarantine_is_out_of_date(stores):
    seed_catalog(stores, 5)
    sync_catalog(stores)
    Quarantine(stores.warehouse_engine, PRODUCTS_SOURCE, "test").put([Rejection("gone", "price: bad", {})])
    result = reconcile_products(stores)
    assert (result.failing, result.counts_match, result.passed) == (0, False, False)
    assert result.details()["expected_active_rows"] == 4


# ---------- Cart PostgreSQL cart ↔ Order MongoDB carts ----------

def test_cart_snapshots_missing_stale_or_with_a_wrong_total(stores):
    seed_catalog(stores, 3)
    sync_catalog(stores)
    carts = [add_cart(stores, n, product=1 + n % 3) for n in range(1, 7)]
    add_cart(stores, 7, product=1, quantity=0)  # quarantined by the sync: no snapshot expected
    sync_cart_snapshots(stores)
    assert reconcile.reconcile_carts(stores.cart_engine, stores.order_db, batch_size=4).passed

    stores.order_db.carts.delete_one({"cartId": carts[0]})
    execute(stores.cart_engine, "UPDATE cart SET version = 2, quantity = 5 WHERE id = :id", id=carts[1])
    stores.order_db.carts.update_one({"cartId": carts[2]}, {"$set": {"total": 1.0}})
    stores.order_db.carts.update_one({"cartId": carts[3]}, {"$set": {"total": Decimal128("26.00")}})
    result = reconcile.reconcile_carts(stores.cart_engine, stores.order_db, batch_size=4)
    assert (result.carts, result.expected_snapshots) == (7, 6)
    assert (result.missing.count, result.missing.ids) == (1, [carts[0]])
    assert (result.stale.count, result.stale.ids) == (1, [carts[1]])
    assert (result.wrong_total.count, result.wrong_total.ids) == (2, [carts[2], carts[3]])
    assert result.failing == 4 and result.sample_ids == carts[:4]

    sync_cart_snapshots(stores)
    assert reconcile.reconcile_carts(stores.cart_engine, stores.order_db, batch_size=4).passed


def test_snapshots_without_a_cart_are_counted_apart_and_fail_until_the_sync_marks_them(stores):
    seed_catalog(stores, 1)
    sync_catalog(stores)
    carts = [add_cart(stores, n, product=1) for n in range(1, 6)]
    sync_cart_snapshots(stores)
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = ANY(CAST(:ids AS uuid[]))", ids=carts[:2])

    result = reconcile.reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)

    assert not result.passed
    assert (result.without_cart.count, result.without_cart.ids) == (2, carts[:2])
    assert (result.missing.count, result.stale.count, result.marked_deleted) == (0, 0, 0)
    assert result.sample_ids == carts[:2]
    details = result.details()
    assert (details["without_cart"], details["without_cart_ids"]) == (2, carts[:2])

    sync_cart_snapshots(stores)  # marks both
    result = reconcile.reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)
    assert result.passed and (result.without_cart.count, result.marked_deleted) == (0, 2)

    # A marked snapshot of a cart that came back is no snapshot: missing until the sync clears the mark.
    add_cart(stores, 1, product=1)
    result = reconcile.reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)
    assert (result.missing.count, result.missing.ids, result.without_cart.count) == (1, [carts[0]], 0)
    sync_cart_snapshots(stores)
    result = reconcile.reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)
    assert result.passed and result.marked_deleted == 1


def test_the_snapshot_schema_ignores_marked_snapshots(stores):
    seed_catalog(stores, 1)
    sync_catalog(stores)
    carts = [add_cart(stores, n, product=1) for n in range(1, 3)]
    sync_cart_snapshots(stores)
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = :id", id=carts[0])
    sync_cart_snapshots(stores)
    # What a deleted cart's snapshot holds no longer matters: it is out of every measurement.
    stores.order_db.carts.update_one({"cartId": carts[0]}, {"$set": {"total": 1.0}})

    result = reconcile.cart_snapshot_schema(stores.order_db)

    assert result.passed and result.checked == {"carts": 1}


# ---------- referential integrity ----------

def test_carts_pointing_at_missing_or_inactive_products(stores):
    seed_catalog(stores, 2)
    sync_catalog(stores)
    add_cart(stores, 1, product=1)
    inactive = add_cart(stores, 2, product=2)
    dangling = add_cart(stores, 3, product=9, bypass_foreign_key=True)
    execute(stores.cart_engine, "UPDATE product SET is_active = false WHERE id = :id", id=product_id(2))

    result = reconcile.cart_product_references(stores.cart_engine)
    assert (result.carts, result.failing) == (3, 2)
    assert (result.missing_product.count, result.missing_product.ids) == (1, [dangling])
    assert (result.inactive_product.count, result.inactive_product.ids) == (1, [inactive])
    assert result.product_ids == [product_id(9), product_id(2)]

    execute(stores.cart_engine, "UPDATE product SET is_active = true WHERE id = :id", id=product_id(2))
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = :id", id=dangling)
    assert reconcile.cart_product_references(stores.cart_engine).passed


def test_order_items_of_unknown_products(stores):
    seed_catalog(stores, 2)
    sync_catalog(stores)
    add_order(stores, "o1", [(product_id(1), 1, 10.0), ("unknown-a", 2, 5.0)])
    add_order(stores, "o2", [("unknown-a", 1, 5.0), ("unknown-b", 1, 1.0), (product_id(2), 1, 3.0)])
    add_order(stores, "o3", [("unknown-c", 1, 1.0)], day=DAY - timedelta(days=1))

    result = reconcile.orphan_order_items(stores.warehouse_engine, stores.cart_engine, batch_size=2)
    assert (result.items, result.products) == (6, 5)
    assert (result.failing, result.sample_ids) == (4, ["o1#2", "o2#1", "o2#2", "o3#1"])
    assert sorted(result.unknown_products.ids) == ["unknown-a", "unknown-b", "unknown-c"]

    of_the_day = reconcile.orphan_order_items(stores.warehouse_engine, stores.cart_engine, (DAY, DAY))
    assert (of_the_day.failing, of_the_day.unknown_products.count, of_the_day.scope) == (3, 2, DAY.isoformat())

    execute(stores.warehouse_engine, "UPDATE order_items SET product_id = :id WHERE product_id LIKE 'unknown%'",
            id=product_id(1))
    assert reconcile.orphan_order_items(stores.warehouse_engine, stores.cart_engine).passed


# ---------- uniqueness ----------

def test_duplicate_keys_in_a_table_and_in_collections(stores):
    seed_catalog(stores, 3)
    sync_catalog(stores)
    assert reconcile.duplicate_rows(stores.cart_engine, "product", "id").passed
    execute(stores.cart_engine, "ALTER TABLE product DROP CONSTRAINT product_pkey CASCADE")
    execute(stores.cart_engine, "INSERT INTO product SELECT * FROM product WHERE id IN (:a, :b)",
            a=product_id(1), b=product_id(2))
    execute(stores.cart_engine, "INSERT INTO product SELECT * FROM product WHERE id = :a LIMIT 1", a=product_id(1))
    duplicated = reconcile.duplicate_rows(stores.cart_engine, "product", "id")
    assert (duplicated.failing, duplicated.sample_ids, duplicated.keys.count) == (5, [product_id(1), product_id(2)], 2)

    stores.order_db.carts.insert_many([{"cartId": "c1"}, {"cartId": "c1"}, {"cartId": "c2"}])
    carts = reconcile.duplicate_documents(stores.order_db.carts, "$cartId")
    assert (carts.failing, carts.sample_ids) == (2, ["c1"])

    oid = ObjectId()
    stores.order_db.orders.insert_many([{"_id": oid}, {"_id": str(oid)}, {"_id": ObjectId()}])
    orders = reconcile.duplicate_documents(stores.order_db.orders, {"$toString": "$_id"})
    assert (orders.failing, orders.sample_ids) == (2, [str(oid)])
    stores.order_db.orders.delete_one({"_id": str(oid)})
    assert reconcile.duplicate_documents(stores.order_db.orders, {"$toString": "$_id"}).passed


# ---------- schema ----------

def test_product_copy_rows_against_the_model(stores):
    seed_catalog(stores, 6)
    sync_catalog(stores)
    assert reconcile.product_copy_schema(stores.cart_engine, batch_size=4).passed
    execute(stores.cart_engine, "UPDATE product SET price = -1 WHERE id = :id", id=product_id(2))
    execute(stores.cart_engine, "UPDATE product SET category = 'toys', title = '' WHERE id = :id", id=product_id(5))

    result = reconcile.product_copy_schema(stores.cart_engine, batch_size=4)
    assert (result.checked, result.failing, sorted(result.sample_ids)) == ({"product": 6}, 2,
                                                                           [product_id(2), product_id(5)])
    reasons = "\n".join(result.reasons)
    assert f"{product_id(2)}: price: greater_than_or_equal_to(0)" in reasons
    assert "category: isin" in reasons and "title: str_length" in reasons


def test_cart_rows_and_snapshots_against_their_models(stores):
    seed_catalog(stores, 2)
    sync_catalog(stores)
    carts = [add_cart(stores, n, product=1) for n in range(1, 4)]
    sync_cart_snapshots(stores)
    assert reconcile.cart_rows_schema(stores.cart_engine).passed
    assert reconcile.cart_snapshot_schema(stores.order_db).passed

    execute(stores.cart_engine, "UPDATE cart SET quantity = 0 WHERE id = :id", id=carts[0])
    execute(stores.cart_engine, "UPDATE cart SET updated_at = 'infinity' WHERE id = :id", id=carts[2])
    rows = reconcile.cart_rows_schema(stores.cart_engine)
    assert (rows.failing, sorted(rows.sample_ids)) == (2, [carts[0], carts[2]])
    reasons = "\n".join(rows.reasons)
    assert f"{carts[0]}: quantity: greater_than_or_equal_to(1) (value '0')" in reasons
    assert f"{carts[2]}: updated_at: not_nullable" in reasons

    stores.order_db.carts.update_one({"cartId": carts[1]}, {"$set": {"total": 999.0}})
    stores.order_db.carts.update_one({"cartId": carts[2]}, {"$set": {"productPrice": "12.00"}})
    snapshots = reconcile.cart_snapshot_schema(stores.order_db)
    assert (snapshots.checked, snapshots.failing) == ({"carts": 3}, 2)
    assert sorted(snapshots.sample_ids) == sorted(carts[1:])
    reasons = "\n".join(snapshots.reasons)
    assert "total = productPrice × cartQuantity" in reasons
    assert "productPrice: expected Float64, got str '12.00'" in reasons


def test_warehouse_tables_against_their_models_by_day(stores):
    add_order(stores, "good", [(product_id(1), 1, 10.0)])
    add_order(stores, "bad-total", [(product_id(1), 2, 10.0)], total_offset=5)
    add_order(stores, "old-bad", [(product_id(1), 1, 10.0)], day=DAY - timedelta(days=3), total_offset=1)
    execute(stores.warehouse_engine, "UPDATE order_items SET subtotal = 1 WHERE order_id = 'good'")

    result = reconcile.order_tables_schema(stores.warehouse_engine, batch_size=2)
    assert result.checked == {"orders": 3, "order_items": 3}
    assert (result.failing, sorted(result.sample_ids)) == (3, ["bad-total", "good#1", "old-bad"])
    of_the_day = reconcile.order_tables_schema(stores.warehouse_engine, (DAY, DAY))
    assert (of_the_day.failing, of_the_day.scope) == (2, DAY.isoformat())

    execute(stores.warehouse_engine, "INSERT INTO daily_sales VALUES (:day, 3, 1, 10), (:next, 1, 1, 10)",
            day=DAY, next=DAY + timedelta(days=1))
    sales = reconcile.warehouse_table_schema(stores.warehouse_engine, "daily_sales", DailySalesTable, ["day"])
    assert (sales.failing, sales.sample_ids) == (1, [DAY.isoformat()])
    assert "units: at least one unit per order" in sales.reasons[0]
    execute(stores.warehouse_engine, "UPDATE daily_sales SET units = 3")
    assert reconcile.warehouse_table_schema(stores.warehouse_engine, "daily_sales", DailySalesTable, ["day"]).passed


def test_tables_no_sync_has_created_yet_are_empty_not_an_error(stores):
    execute(stores.warehouse_engine, "DROP TABLE etl_quarantine, orders, order_items, daily_sales")
    assert reconcile.order_tables_schema(stores.warehouse_engine).passed
    assert reconcile.warehouse_table_schema(stores.warehouse_engine, "daily_sales", DailySalesTable, ["day"]).passed
    assert reconcile.orphan_order_items(stores.warehouse_engine, stores.cart_engine).passed
    assert reconcile.quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, None).open == 0


# ---------- quarantine ----------

def test_quarantine_counts_what_is_open_and_what_is_new_since_the_last_look(stores):
    quarantine = Quarantine(stores.warehouse_engine, PRODUCTS_SOURCE, "run-1")
    quarantine.put([Rejection("a", "price: below 0", {}), Rejection("b", "title: missing", {})])
    first = reconcile.quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, None)
    assert (first.open, first.failing, sorted(first.sample_ids)) == (2, 2, ["a", "b"])

    quarantine.put([Rejection("b", "title: still missing", {}), Rejection("c", "tags: not a list", {})])
    quarantine.resolve(["a"])
    second = reconcile.quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, first.as_of)
    assert (second.open, second.failing, second.sample_ids) == (2, 1, ["c"])
    assert second.reasons == ["c: tags: not a list"]

    third = reconcile.quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, second.as_of)
    assert (third.open, third.passed) == (2, True)


# ---------- store health ----------

def test_reachable_stores_answer_with_their_version(stores):
    assert reconcile.ping_mongo(stores.order_db, "Order MongoDB").server_version
    health = reconcile.ping_postgres(stores.cart_engine, "Cart PostgreSQL")
    assert health.passed and health.latency_ms >= 0


@pytest.mark.parametrize("store", ["mongo", "postgres"])
def test_an_unreachable_store_is_named_within_seconds(tmp_path, store):
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="^Test store is unavailable: .+") as raised:
        if store == "mongo":
            client = pymongo.MongoClient("mongodb://127.0.0.1:9/?directConnection=true", serverSelectionTimeoutMS=1000)
            reconcile.ping_mongo(client["db"], "Test store")
        else:
            engine = sa.create_engine(f"postgresql+psycopg2://postgres@/x?host={tmp_path}",
                                      connect_args={"connect_timeout": 1})
            reconcile.ping_postgres(engine, "Test store")
    assert raised.value.store == "Test store"
    assert time.monotonic() - started < 5


def test_cart_reconciliation_reads_each_page_of_snapshots_as_one_cartid_range(stores):
    """A page's stored snapshots are one range of the cartId index, as a full cart sync reads them: a
    `$in` of a whole page costs some servers a scan per page (secantusdb: 50× a range)."""
    seed_catalog(stores, 2)
    sync_catalog(stores)
    for n in range(1, 10):
        add_cart(stores, n, product=1 + n % 2)
    sync_cart_snapshots(stores)
    listener = FindCommands()
    client = pymongo.MongoClient(stores.env()["ORDER_MONGO_URI"], event_listeners=[listener])
    try:
        result = reconcile.reconcile_carts(stores.cart_engine, client[stores.order_db.name], batch_size=4)
    finally:
        client.close()
    assert result.passed
    page_reads = [find["filter"] for find in listener.finds if find["find"] == "carts" and "cartId" in find["filter"]]
    assert len(page_reads) == 3  # 9 carts in pages of 4
    assert all(set(read["cartId"]) == {"$gte", "$lte"} for read in page_reads), page_reads
