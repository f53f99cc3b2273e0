"""The product copy's checks through Dagster, against real stores."""

import dagster as dg
from bson import ObjectId

from etl_assets.assets.carts import order_db_carts
from etl_assets.assets.products import cart_db_product, product_db_products
from etl_assets.checks.products import product_checks
from etl_assets.checks.stores import store_checks
from etl_assets.sync.products import SOURCE
from etl_assets_tests.checks.harness import by_key, evaluate_checks, failing, metadata
from etl_assets_tests.checks.seed import (
    add_cart,
    execute,
    product_doc,
    product_id,
    seed_catalog,
    sync_catalog,
)

QUARANTINE_CHECK = next(c for c in store_checks if c.check_key.asset_key == cart_db_product.key)


def test_product_checks_name_the_bad_records_and_pass_once_they_are_fixed(stores):
    seed_catalog(stores, 6, product_doc(7, price=-1))
    sync_catalog(stores)
    stores.product_db.products.delete_one({"_id": ObjectId(product_id(4))})
    execute(stores.cart_engine, "UPDATE product SET price = -1 WHERE id = :id", id=product_id(2))
    execute(stores.cart_engine, "ALTER TABLE product DROP CONSTRAINT product_pkey CASCADE")
    execute(stores.cart_engine, "INSERT INTO product SELECT * FROM product WHERE id = :id", id=product_id(1))

    checks = evaluate_checks(stores.resources(), *product_checks)
    schema = checks["cart_db/product:matches_schema"]
    passed, count, sample_ids = failing(schema)
    # Both rows of the duplicated id break the model's uniqueness rule too.
    assert (passed, count, sorted(sample_ids)) == (False, 3, [product_id(1), product_id(1), product_id(2)])
    assert schema.severity == dg.AssetCheckSeverity.ERROR and schema.blocking
    assert f"{product_id(2)}: price: greater_than_or_equal_to(0) (value '-1.0')" in metadata(schema)["sample_reasons"]

    in_sync = checks["cart_db/product:in_sync_with_catalog"]
    assert failing(in_sync) == (False, 2, [product_id(4), product_id(2)])
    details = metadata(in_sync)
    assert (details["extra_ids"], details["drifted_ids"], details["drifted_fields"]) == (
        [product_id(4)], [product_id(2)], {"price": 1})
    # 6 documents, 1 quarantined: 5 products should be active; the copy has 7 (one gone, one twice).
    assert (details["expected_active_rows"], details["active_copy_rows"], details["counts_match"]) == (5, 7, False)

    assert failing(checks["cart_db/product:unique_ids"]) == (False, 2, [product_id(1)])

    execute(stores.cart_engine, "DELETE FROM product WHERE ctid = (SELECT max(ctid) FROM product WHERE id = :id)",
            id=product_id(1))
    execute(stores.cart_engine, "ALTER TABLE product ADD PRIMARY KEY (id)")
    execute(stores.cart_engine, "UPDATE product SET price = 12 WHERE id = :id", id=product_id(2))
    sync_catalog(stores)
    checks = evaluate_checks(stores.resources(), *product_checks)
    assert all(check.passed for check in checks.values()), checks
    assert metadata(checks["cart_db/product:in_sync_with_catalog"])["active_copy_rows"] == 5


def test_a_copy_failing_its_schema_keeps_the_cart_snapshots_from_being_built(stores):
    seed_catalog(stores, 3)
    sync_catalog(stores)
    add_cart(stores, 1, product=1)
    # Someone wrote a row into the copy behind the ETL's back: the sync deactivates it (it is not in the
    # catalog) but never deletes it, so the copy keeps failing its schema.
    execute(stores.cart_engine, "INSERT INTO product (id, title, price, image, quantity, content_hash) "
                                "VALUES ('rogue', 'rogue', 1, 'i', -1, :hash)", hash="0" * 32)

    result = dg.materialize(
        [product_db_products, cart_db_product, order_db_carts, *product_checks], resources=stores.resources(),
        selection=dg.AssetSelection.assets(cart_db_product, order_db_carts), raise_on_error=False,
    )
    assert [m.asset_key for m in result.get_asset_materialization_events()] == [cart_db_product.key]
    assert not by_key(result)["cart_db/product:matches_schema"].passed
    assert stores.order_db.carts.count_documents({}) == 0


def test_rejected_products_land_in_quarantine_with_a_readable_reason(stores):
    seed_catalog(stores, 2, product_doc(3, price=-4.5), product_doc(4, category="toys", title=""))
    with dg.instance_for_test() as instance:
        result = dg.materialize([product_db_products, cart_db_product, QUARANTINE_CHECK], instance=instance,
                                resources=stores.resources(), selection=dg.AssetSelection.assets(cart_db_product))
        check = by_key(result)["cart_db/product:no_new_quarantined_records"]
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert failing(check) == (False, 2, [product_id(3), product_id(4)])
        details = metadata(check)
        assert (details["source"], details["open"], details["new"]) == (SOURCE, 2, 2)
        assert details["sample_reasons"] == [
            f"{product_id(3)}: price: greater_than_or_equal_to(0) (value '-4.5')",
            f"{product_id(4)}: title: str_length(1, 1000) (value ''); category: isin(['phone', 'earphone', 'book', "
            "'fashions', 'other']) (value 'toys')",
        ]

        # Nothing new since that run: it passes, and still counts what is open.
        check = evaluate_checks(stores.resources(), QUARANTINE_CHECK, instance=instance)[
            "cart_db/product:no_new_quarantined_records"]
        assert check.passed and metadata(check)["open"] == 2
