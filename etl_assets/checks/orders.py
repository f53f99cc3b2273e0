"""Checks of the orders: the source collection (Order MongoDB `orders`) and its daily warehouse copy."""

import dagster as dg

from etl_assets.assets.orders import order_db_orders, warehouse_orders
from etl_assets.checks.common import ERROR, WARN, evaluate, run_days
from etl_assets.partitions import DAILY, order_window
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sync.reconcile.coverage import DayCoverage, order_day_coverage
from etl_assets.sync.reconcile.integrity import orphan_order_items
from etl_assets.sync.reconcile.schema import order_tables_schema
from etl_assets.sync.reconcile.uniqueness import duplicate_documents


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
    return evaluate(lambda: order_tables_schema(warehouse.engine(), run_days(context)), ERROR)


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
        lambda: orphan_order_items(warehouse.engine(), cart_db.engine(), run_days(context)), WARN
    )


@dg.asset_check(
    asset=order_db_orders,
    name="unique_order_ids",
    description="No two orders share an order id as the warehouse keys them (the _id as text, so an ObjectId "
    "and a string of the same hex collide), grouped by the server.",
)
def orders_unique_ids(order_db: MongoStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: duplicate_documents(order_db.db()["orders"], {"$toString": "$_id"}), ERROR)


def coverage_severity(coverage: DayCoverage) -> dg.AssetCheckSeverity:
    """ERROR for a day with orders that no build recorded and that the automation should have built by
    now (older than the newest day): it has no rows at all. WARN for the rest, which the next tick of
    order_changes and one run heal: an outdated build, or the newest day not built yet."""
    return ERROR if coverage.lost_days() else WARN


@dg.asset_check(
    asset=warehouse_orders,
    name="days_built_from_current_orders",
    description="Every day of the lookback window (SHOP_SYNC_ORDER_LOOKBACK_DAYS) that has orders in the source "
    "was built, from the orders the source holds now: the day's source fingerprint equals the one its last "
    "build recorded. ERROR when a day older than the newest has no build; WARN when a build is outdated or "
    "the newest day is not built yet (order_changes rebuilds them within a tick and a run). The days of the "
    "run, or the whole window in the validate job.",
)
def warehouse_orders_built_from_current_orders(
    context: dg.AssetCheckExecutionContext, order_db: MongoStoreResource, warehouse: PostgresStoreResource
) -> dg.AssetCheckResult:
    last_window = DAILY.get_last_partition_window()
    if last_window is None:
        return dg.AssetCheckResult(passed=True, severity=WARN, description="no day has ended yet")
    first, last = order_window(last_window.start.date())
    if days := run_days(context):
        first, last = max(first, days[0]), min(last, days[1])
    if first > last:
        return dg.AssetCheckResult(passed=True, severity=WARN,
                                   description="the run's days are outside the lookback window")
    return evaluate(lambda: order_day_coverage(order_db.db()["orders"], warehouse.engine(), first, last),
                    ERROR, coverage_severity)


order_checks = [warehouse_orders_match_schema, order_items_reference_known_products, orders_unique_ids,
                warehouse_orders_built_from_current_orders]
