"""The cart checks through Dagster: the cart rows, their products and their Order MongoDB snapshots."""

import dagster as dg

from etl_assets.assets.carts import order_db_carts
from etl_assets.checks.carts import cart_checks
from etl_assets.checks.stores import store_checks
from etl_assets.sync.carts import CART_ID_INDEX
from etl_assets_tests.checks.harness import evaluate_checks, failing, metadata
from etl_assets_tests.checks.seed import (
    add_cart,
    execute,
    product_id,
    seed_catalog,
    snapshot_carts,
    sync_cart_snapshots,
    sync_catalog,
)


def test_cart_checks_name_the_bad_records_and_pass_once_they_are_fixed(stores):
    seed_catalog(stores, 5)
    sync_catalog(stores)
    carts = [add_cart(stores, n, product=n) for n in range(1, 6)]
    sync_cart_snapshots(stores)
    assert all(check.passed for check in evaluate_checks(stores.resources(), *cart_checks).values())

    execute(stores.cart_engine, "UPDATE cart SET quantity = 0 WHERE id = :id", id=carts[0])
    execute(stores.cart_engine, "UPDATE product SET is_active = false WHERE id = :id", id=product_id(2))
    dangling = add_cart(stores, 9, product=8, bypass_foreign_key=True)
    stores.order_db.carts.update_one({"cartId": carts[2]}, {"$set": {"total": 0.5}})
    stores.order_db.carts.delete_one({"cartId": carts[3]})
    stores.order_db.carts.drop_index(CART_ID_INDEX)
    stores.order_db.carts.insert_one({**stores.order_db.carts.find_one({"cartId": carts[4]}, {"_id": 0})})

    checks = evaluate_checks(stores.resources(), *cart_checks)
    rows = checks["cart_db/cart:matches_schema"]
    assert (failing(rows), rows.severity) == ((False, 1, [carts[0]]), dg.AssetCheckSeverity.WARN)
    assert "quantity: greater_than_or_equal_to(1)" in metadata(rows)["sample_reasons"][0]

    references = checks["cart_db/cart:products_exist_and_active"]
    assert failing(references) == (False, 2, [dangling, carts[1]])
    assert (metadata(references)["missing_product"], metadata(references)["inactive_product"]) == (1, 1)

    snapshots = checks["order_db/carts:matches_schema"]
    # The duplicate breaks the model's unique cartId too.
    assert failing(snapshots)[:2] == (False, 3)
    assert sorted(failing(snapshots)[2]) == sorted([carts[2], carts[4], carts[4]])

    # The cart with quantity 0 and the one of the inactive product are quarantined, not expected.
    in_sync = checks["order_db/carts:in_sync_with_cart_db"]
    assert failing(in_sync) == (False, 2, [carts[3], carts[2]])
    assert (metadata(in_sync)["missing"], metadata(in_sync)["wrong_totals"]) == (1, 1)

    cart_ids_index = checks["order_db/carts:cart_id_unique_index"]
    assert failing(cart_ids_index) == (False, 2, [carts[4]])
    assert metadata(cart_ids_index)["problem"] == "no unique index on carts.cartId"
    assert all(check.severity == dg.AssetCheckSeverity.ERROR for key, check in checks.items()
               if key != "cart_db/cart:matches_schema")

    execute(stores.cart_engine, "UPDATE cart SET quantity = 1 WHERE id = :id", id=carts[0])
    execute(stores.cart_engine, "UPDATE product SET is_active = true WHERE id = :id", id=product_id(2))
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = :id", id=dangling)
    stores.order_db.carts.delete_one({"cartId": carts[4]})
    sync_cart_snapshots(stores)
    checks = evaluate_checks(stores.resources(), *cart_checks)
    assert all(check.passed for check in checks.values()), checks


def test_a_deleted_cart_fails_the_reconciliation_until_the_sync_marks_its_snapshot(stores):
    carts = snapshot_carts(stores, 2)
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = :id", id=carts[0])

    in_sync = evaluate_checks(stores.resources(), *cart_checks)["order_db/carts:in_sync_with_cart_db"]
    assert failing(in_sync) == (False, 1, [carts[0]])
    assert (metadata(in_sync)["without_cart"], metadata(in_sync)["without_cart_ids"]) == (1, [carts[0]])

    sync_cart_snapshots(stores)
    # A spoiled marked snapshot is out of every check: the schema and uniqueness checks ignore it too.
    stores.order_db.carts.update_one({"cartId": carts[0]}, {"$set": {"total": -1.0}})
    checks = evaluate_checks(stores.resources(), *cart_checks)
    assert all(check.passed for check in checks.values()), checks
    assert metadata(checks["order_db/carts:in_sync_with_cart_db"])["marked_deleted"] == 1


def test_the_cart_id_index_check_fails_without_duplicates_too(stores):
    """Issue 12 §5: the old check grouped cartIds under the unique index every cart sync creates, so it
    could not fail; this one fails as soon as nothing enforces one snapshot per cart."""
    seed_catalog(stores, 2)
    sync_catalog(stores)
    add_cart(stores, 1, product=1)
    sync_cart_snapshots(stores)
    check = "order_db/carts:cart_id_unique_index"
    assert metadata(evaluate_checks(stores.resources(), *cart_checks)[check])["index"] == CART_ID_INDEX

    stores.order_db.carts.drop_index(CART_ID_INDEX)
    stores.order_db.carts.create_index("cartId", name="cartId_plain")  # an index, but not a unique one
    evaluation = evaluate_checks(stores.resources(), *cart_checks)[check]
    assert failing(evaluation) == (False, 0, [])
    assert metadata(evaluation)["problem"] == "no unique index on carts.cartId"


def test_a_cart_the_sync_quarantines_warns_in_its_quarantine_check(stores):
    seed_catalog(stores, 1)
    sync_catalog(stores)
    bad = add_cart(stores, 1, product=1, quantity=0)
    sync_cart_snapshots(stores)
    quarantine_check = next(c for c in store_checks if c.check_key.asset_key == order_db_carts.key)
    evaluation = evaluate_checks(stores.resources(), quarantine_check)["order_db/carts:no_new_quarantined_records"]
    assert failing(evaluation) == (False, 1, [bad]) and evaluation.severity == dg.AssetCheckSeverity.WARN
