"""Checks of the orders: the source collection (Order MongoDB `orders`) and its daily warehouse copy."""

import dagster as dg

from etl_assets.assets.orders import order_db_orders, warehouse_orders
from etl_assets.checks.common import ERROR, WARN, evaluate, run_days
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sync import reconcile


@dg.asset_check(
    asset=warehouse_orders,
    name="matches_schema",
    blocking=True,
    description="Every row of `orders` and `order_items` satisfies OrdersTable / OrderItemsTable (pandera), "
    "read in batches: the days of the run, or every day in the validate job. Blocking: the warehouse "
    "tables are not built in the same run from orders that fail it.",
)
def warehouse_orders_match_schema(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresStoreResource
) -> dg.AssetCheckResult:
    return evaluate(lambda: reconcile.order_tables_schema(warehouse.engine(), run_days(context)), ERROR)


@dg.asset_check(
    asset=warehouse_orders,
    name="items_reference_known_products",
    description="Order items whose product id the product copy has never held (orphans). WARN: the sale "
    "happened and is counted; the catalog has lost track of what was sold.",
)
def order_items_reference_known_products(
    context: dg.AssetCheckExecutionContext, warehouse: PostgresStoreResource, cart_db: PostgresStoreResource
) -> dg.AssetCheckResult:
    return evaluate(
        lambda: reconcile.orphan_order_items(warehouse.engine(), cart_db.engine(), run_days(context)), WARN
    )


@dg.asset_check(
    asset=order_db_orders,
    name="unique_order_ids",
    description="No two orders share an order id as the warehouse keys them (the _id as text, so an ObjectId "
    "and a string of the same hex collide), grouped by the server.",
)
def orders_unique_ids(order_db: MongoStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: reconcile.duplicate_documents(order_db.db()["orders"], {"$toString": "$_id"}), ERROR)


order_checks = [warehouse_orders_match_schema, order_items_reference_known_products, orders_unique_ids]
