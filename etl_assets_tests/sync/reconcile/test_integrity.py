"""Referential integrity against real stores: carts and order items whose product the copy lacks."""

from datetime import timedelta

from etl_assets.sync.reconcile.integrity import cart_product_references, orphan_order_items
from etl_assets_tests.checks.seed import (
    DAY,
    add_cart,
    add_order,
    execute,
    product_id,
    seed_catalog,
    sync_catalog,
)


def test_carts_pointing_at_missing_or_inactive_products(stores):
    seed_catalog(stores, 2)
    sync_catalog(stores)
    add_cart(stores, 1, product=1)
    inactive = add_cart(stores, 2, product=2)
    dangling = add_cart(stores, 3, product=9, bypass_foreign_key=True)
    execute(stores.cart_engine, "UPDATE product SET is_active = false WHERE id = :id", id=product_id(2))

    result = cart_product_references(stores.cart_engine)
    assert (result.carts, result.failing) == (3, 2)
    assert (result.missing_product.count, result.missing_product.ids) == (1, [dangling])
    assert (result.inactive_product.count, result.inactive_product.ids) == (1, [inactive])
    assert result.product_ids == [product_id(9), product_id(2)]

    execute(stores.cart_engine, "UPDATE product SET is_active = true WHERE id = :id", id=product_id(2))
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = :id", id=dangling)
    assert cart_product_references(stores.cart_engine).passed


def test_order_items_of_unknown_products(stores):
    seed_catalog(stores, 2)
    sync_catalog(stores)
    add_order(stores, "o1", [(product_id(1), 1, 10.0), ("unknown-a", 2, 5.0)])
    add_order(stores, "o2", [("unknown-a", 1, 5.0), ("unknown-b", 1, 1.0), (product_id(2), 1, 3.0)])
    add_order(stores, "o3", [("unknown-c", 1, 1.0)], day=DAY - timedelta(days=1))

    result = orphan_order_items(stores.warehouse_engine, stores.cart_engine, batch_size=2)
    assert (result.items, result.products) == (6, 5)
    assert (result.failing, result.sample_ids) == (4, ["o1#2", "o2#1", "o2#2", "o3#1"])
    assert sorted(result.unknown_products.ids) == ["unknown-a", "unknown-b", "unknown-c"]

    of_the_day = orphan_order_items(stores.warehouse_engine, stores.cart_engine, (DAY, DAY))
    assert (of_the_day.failing, of_the_day.unknown_products.count, of_the_day.scope) == (3, 2, DAY.isoformat())

    execute(stores.warehouse_engine, "UPDATE order_items SET product_id = :id WHERE product_id LIKE 'unknown%'",
            id=product_id(1))
    assert orphan_order_items(stores.warehouse_engine, stores.cart_engine).passed
