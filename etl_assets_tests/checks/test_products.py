"""The product copy's checks through Dagster, against real stores."""

import dagster as dg
import pytest
import sqlalchemy as sa
from bson import ObjectId

from etl_assets.assets.carts import cart_assets, order_db_carts
from etl_assets.assets.products import cart_db_product, product_assets, product_db_products
from etl_assets.checks import all_checks
from etl_assets.checks.products import product_checks
from etl_assets.checks.stores import store_checks
from etl_assets.jobs import full_reconcile
from etl_assets.resources import PRODUCT_DB, MongoStoreResource
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

    key = checks["cart_db/product:id_unique_index_valid"]
    assert failing(key) == (False, 2, [product_id(1)])
    assert (metadata(key)["index"], metadata(key)["problem"]) == (None, "no unique index on product(id)")

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


# ---------- issue 12: checks that catch a wiped copy, and a key check that can fail ----------

def test_the_id_index_check_fails_when_the_key_is_missing_or_invalid_without_any_duplicate(stores):
    seed_catalog(stores, 3)
    sync_catalog(stores)
    check = "cart_db/product:id_unique_index_valid"
    assert metadata(evaluate_checks(stores.resources(), *product_checks)[check])["index"] == "product_pkey"

    execute(stores.cart_engine, "ALTER TABLE product DROP CONSTRAINT product_pkey CASCADE")
    evaluation = evaluate_checks(stores.resources(), *product_checks)[check]
    assert failing(evaluation) == (False, 0, []) and evaluation.severity == dg.AssetCheckSeverity.ERROR

    # A unique index that failed to build CONCURRENTLY (a duplicate got in) stays behind, invalid.
    execute(stores.cart_engine, "INSERT INTO product SELECT * FROM product WHERE id = :id", id=product_id(1))
    autocommit = stores.cart_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    with pytest.raises(sa.exc.IntegrityError), autocommit as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX CONCURRENTLY product_id_key ON product (id)")
    evaluation = evaluate_checks(stores.resources(), *product_checks)[check]
    assert failing(evaluation) == (False, 2, [product_id(1)])
    assert metadata(evaluation)["problem"] == "unique index product_id_key is not valid"


def resources_reading(stores, database: str) -> dict:
    """The resources, with PRODUCT_MONGO_DB set to `database` (a typo, a renamed database)."""
    return {**stores.resources(), "product_db": MongoStoreResource(
        uri=stores.local.mongo.uri, database=database, store_name=PRODUCT_DB)}


def test_in_sync_fails_when_the_source_reads_empty_but_the_copy_does_not(stores):
    """Issue 12 §1: after the empty source wiped the copy, 0 documents = 0 active rows, and the check passed."""
    seed_catalog(stores, 30)
    sync_catalog(stores)
    typo = resources_reading(stores, f"{stores.product_db_name}_typo")
    execute(stores.cart_engine, "UPDATE product SET is_active = false")  # what the unguarded sync did

    in_sync = evaluate_checks(typo, *product_checks)["cart_db/product:in_sync_with_catalog"]
    details = metadata(in_sync)
    assert not in_sync.passed
    assert (details["source_documents"], details["active_copy_rows"], details["copy_rows"]) == (0, 0, 30)
    assert details["source_empty"] is True


def test_in_sync_tolerates_a_few_stale_rows_and_fails_on_a_drifted_catalog(stores):
    seed_catalog(stores, 30)
    sync_catalog(stores)
    check = "cart_db/product:in_sync_with_catalog"
    stores.product_db.products.update_many({"_id": {"$in": [ObjectId(product_id(n)) for n in (1, 2)]}},
                                           {"$set": {"price": "free"}})
    sync_catalog(stores)  # kept active, stale, and quarantined
    in_sync = evaluate_checks(stores.resources(), *product_checks)[check]
    details = metadata(in_sync)
    assert in_sync.passed, details
    assert (details["stale_invalid"], details["stale_invalid_ids"], details["expected_active_rows"],
            details["active_copy_rows"]) == (2, [product_id(1), product_id(2)], 30, 30)

    stores.product_db.products.update_many({}, {"$rename": {"image": "imageUrl"}})
    sync_catalog(stores)
    in_sync = evaluate_checks(stores.resources(), *product_checks)[check]
    assert failing(in_sync)[:2] == (False, 30)
    assert (metadata(in_sync)["stale_invalid"], metadata(in_sync)["stale_limit"]) == (30, 10)


def test_the_active_rows_check_fails_after_a_sharp_drop_until_an_override_run_accepts_it(stores):
    seed_catalog(stores, 40)
    sync_catalog(stores)
    check = "cart_db/product:active_rows_did_not_drop"
    drop_check = next(c for c in product_checks if c.check_key.name == "active_rows_did_not_drop")
    with dg.instance_for_test() as instance:
        def evaluate_drop() -> dg.AssetCheckEvaluation:
            return evaluate_checks(stores.resources(), drop_check, instance=instance)[check]

        first = evaluate_drop()
        assert first.passed and metadata(first)["baseline_active_rows"] is None
        execute(stores.cart_engine, "UPDATE product SET is_active = false WHERE id <= :id", id=product_id(10))
        assert evaluate_drop().passed  # 10 of 40: within the floor
        execute(stores.cart_engine, "UPDATE product SET is_active = false WHERE id <= :id", id=product_id(21))

        dropped = evaluate_drop()
        assert dropped.severity == dg.AssetCheckSeverity.ERROR
        assert failing(dropped)[:2] == (False, 11)
        assert (metadata(dropped)["baseline_active_rows"], metadata(dropped)["active_rows"],
                metadata(dropped)["limit"]) == (30, 19, 10)
        assert not evaluate_drop().passed  # the baseline stays that of the last passing evaluation

        # The products really left the catalog: a sync with the override accepts the new level.
        stores.product_db.products.delete_many({"_id": {"$in": [ObjectId(product_id(n)) for n in range(1, 22)]}})
        result = dg.materialize([product_db_products, cart_db_product, drop_check], instance=instance,
                                resources=stores.resources(), selection=dg.AssetSelection.assets(cart_db_product),
                                run_config={"ops": {"cart_db__product": {"config": {
                                    "mode": "full", "allow_mass_deactivation": True}}}})
        assert by_key(result)[check].passed
        assert evaluate_drop().passed


def test_full_reconcile_runs_the_checks_that_catch_a_wiped_copy(stores):
    seed_catalog(stores, 20)
    sync_catalog(stores)
    add_cart(stores, 1, product=1)
    stores.product_db.products.delete_one({"_id": ObjectId(product_id(1))})
    defs = dg.Definitions(assets=[*product_assets, *cart_assets], asset_checks=all_checks, jobs=[full_reconcile],
                          resources=stores.resources())
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("full_reconcile").execute_in_process(instance=instance, raise_on_error=False)
    checks = by_key(result)
    assert {"cart_db/product:in_sync_with_catalog", "cart_db/product:active_rows_did_not_drop",
            "cart_db/cart:products_exist_and_active"} <= checks.keys()
    # It judged the copy the sync left: product 1 was deactivated in this very run.
    assert failing(checks["cart_db/cart:products_exist_and_active"])[:2] == (False, 1)
    assert checks["cart_db/product:in_sync_with_catalog"].passed
