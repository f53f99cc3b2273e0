"""Stored rows and documents against their pandera models, against real stores: each invalid one is named
with its reason."""

from datetime import timedelta

from etl_assets.schemas.warehouse import DailySalesTable
from etl_assets.sync.reconcile.schema import (
    cart_rows_schema,
    cart_snapshot_schema,
    order_tables_schema,
    product_copy_schema,
    warehouse_table_schema,
)
from etl_assets_tests.checks.seed import (
    DAY,
    add_order,
    execute,
    product_id,
    seed_catalog,
    snapshot_carts,
    sync_cart_snapshots,
    sync_catalog,
)


def test_the_snapshot_schema_ignores_marked_snapshots(stores):
    carts = snapshot_carts(stores, 2)
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = :id", id=carts[0])
    sync_cart_snapshots(stores)
    # What a deleted cart's snapshot holds no longer matters: it is out of every measurement.
    stores.order_db.carts.update_one({"cartId": carts[0]}, {"$set": {"total": 1.0}})

    result = cart_snapshot_schema(stores.order_db)

    assert result.passed and result.checked == {"carts": 1}


def test_product_copy_rows_against_the_model(stores):
    seed_catalog(stores, 6)
    sync_catalog(stores)
    assert product_copy_schema(stores.cart_engine, batch_size=4).passed
    execute(stores.cart_engine, "UPDATE product SET price = -1 WHERE id = :id", id=product_id(2))
    execute(stores.cart_engine, "UPDATE product SET category = 'toys', title = '' WHERE id = :id", id=product_id(5))

    result = product_copy_schema(stores.cart_engine, batch_size=4)
    assert (result.checked, result.failing, sorted(result.sample_ids)) == ({"product": 6}, 2,
                                                                           [product_id(2), product_id(5)])
    reasons = "\n".join(result.reasons)
    assert f"{product_id(2)}: price: greater_than_or_equal_to(0)" in reasons
    assert "category: isin" in reasons and "title: str_length" in reasons


def test_cart_rows_and_snapshots_against_their_models(stores):
    carts = snapshot_carts(stores, 3, products=2)
    assert cart_rows_schema(stores.cart_engine).passed
    assert cart_snapshot_schema(stores.order_db).passed

    execute(stores.cart_engine, "UPDATE cart SET quantity = 0 WHERE id = :id", id=carts[0])
    execute(stores.cart_engine, "UPDATE cart SET updated_at = 'infinity' WHERE id = :id", id=carts[2])
    rows = cart_rows_schema(stores.cart_engine)
    assert (rows.failing, sorted(rows.sample_ids)) == (2, [carts[0], carts[2]])
    reasons = "\n".join(rows.reasons)
    assert f"{carts[0]}: quantity: greater_than_or_equal_to(1) (value '0')" in reasons
    assert f"{carts[2]}: updated_at: not_nullable" in reasons

    stores.order_db.carts.update_one({"cartId": carts[1]}, {"$set": {"total": 999.0}})
    stores.order_db.carts.update_one({"cartId": carts[2]}, {"$set": {"productPrice": "12.00"}})
    snapshots = cart_snapshot_schema(stores.order_db)
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

    result = order_tables_schema(stores.warehouse_engine, batch_size=2)
    assert result.checked == {"orders": 3, "order_items": 3}
    assert (result.failing, sorted(result.sample_ids)) == (3, ["bad-total", "good#1", "old-bad"])
    of_the_day = order_tables_schema(stores.warehouse_engine, (DAY, DAY))
    assert (of_the_day.failing, of_the_day.scope) == (2, DAY.isoformat())

    execute(stores.warehouse_engine, "INSERT INTO daily_sales VALUES (:day, 3, 1, 10), (:next, 1, 1, 10)",
            day=DAY, next=DAY + timedelta(days=1))
    sales = warehouse_table_schema(stores.warehouse_engine, "daily_sales", DailySalesTable, ["day"])
    assert (sales.failing, sales.sample_ids) == (1, [DAY.isoformat()])
    assert "units: at least one unit per order" in sales.reasons[0]
    execute(stores.warehouse_engine, "UPDATE daily_sales SET units = 3")
    assert warehouse_table_schema(stores.warehouse_engine, "daily_sales", DailySalesTable, ["day"]).passed
