"""Duplicated keys against real stores, counted and sampled by the servers."""

from bson import ObjectId

from etl_assets.sync.reconcile.uniqueness import duplicate_documents, duplicate_rows
from etl_assets_tests.checks.seed import execute, product_id, seed_catalog, sync_catalog


def test_duplicate_keys_in_a_table_and_in_collections(stores):
    seed_catalog(stores, 3)
    sync_catalog(stores)
    assert duplicate_rows(stores.cart_engine, "product", "id").passed
    execute(stores.cart_engine, "ALTER TABLE product DROP CONSTRAINT product_pkey CASCADE")
    execute(stores.cart_engine, "INSERT INTO product SELECT * FROM product WHERE id IN (:a, :b)",
            a=product_id(1), b=product_id(2))
    execute(stores.cart_engine, "INSERT INTO product SELECT * FROM product WHERE id = :a LIMIT 1", a=product_id(1))
    duplicated = duplicate_rows(stores.cart_engine, "product", "id")
    assert (duplicated.failing, duplicated.sample_ids, duplicated.keys.count) == (5, [product_id(1), product_id(2)], 2)

    stores.order_db.carts.insert_many([{"cartId": "c1"}, {"cartId": "c1"}, {"cartId": "c2"}])
    carts = duplicate_documents(stores.order_db.carts, "$cartId")
    assert (carts.failing, carts.sample_ids) == (2, ["c1"])

    oid = ObjectId()
    stores.order_db.orders.insert_many([{"_id": oid}, {"_id": str(oid)}, {"_id": ObjectId()}])
    orders = duplicate_documents(stores.order_db.orders, {"$toString": "$_id"})
    assert (orders.failing, orders.sample_ids) == (2, [str(oid)])
    stores.order_db.orders.delete_one({"_id": str(oid)})
    assert duplicate_documents(stores.order_db.orders, {"$toString": "$_id"}).passed
