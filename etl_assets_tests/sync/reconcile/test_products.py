"""The catalog against the product copy, against real stores: each record out of sync is counted and named,
and the reconciliation comes back clean once a sync fixes the data."""

from bson import ObjectId

from etl_assets.sync.products import SOURCE as PRODUCTS_SOURCE
from etl_assets.sync.quarantine import Quarantine, Rejection
from etl_assets.sync.reconcile.products import ProductReconciliation, reconcile_products
from etl_assets_tests.checks.seed import execute, product_doc, product_id, seed_catalog, sync_catalog


def reconcile_catalog(stores, batch_size: int = 4) -> ProductReconciliation:
    """reconcile_products over the test stores."""
    return reconcile_products(stores.product_db, stores.cart_engine, stores.warehouse_engine,
                              batch_size=batch_size)


def test_catalog_and_copy_agree_after_a_full_sync_quarantine_included(stores):
    seed_catalog(stores, 10, product_doc(11, price=-1), {"_id": "legacy-id", "title": "no ObjectId"})
    sync_catalog(stores)
    result = reconcile_catalog(stores)
    assert result.passed, result.details()
    assert (result.source_documents, result.source_rejected, result.quarantined_open,
            result.active_copy_rows) == (12, 2, 2, 10)


def test_the_catalog_is_compared_through_several_routers(stores, routers):
    routers.insert(stores.product_db_name, "products", [product_doc(n) for n in range(1, 11)])
    sync_catalog(stores)
    client = routers.client()
    try:
        result = reconcile_products(client[stores.product_db_name], stores.cart_engine,
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

    result = reconcile_catalog(stores)
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
    result = reconcile_catalog(stores)
    assert result.passed, result.details()
    assert (result.source_documents, result.active_copy_rows) == (10, 10)


def test_counts_disagree_when_the_quarantine_is_out_of_date(stores):
    seed_catalog(stores, 5)
    sync_catalog(stores)
    Quarantine(stores.warehouse_engine, PRODUCTS_SOURCE, "test").put([Rejection("gone", "price: bad", {})])
    result = reconcile_catalog(stores)
    assert (result.failing, result.counts_match, result.passed) == (0, False, False)
    assert result.details()["expected_active_rows"] == 4
