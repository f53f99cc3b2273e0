"""The warehouse's daily analytics tables, computed from the warehouse's orders (and the cart database's
carts)."""

from typing import Any

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from etl_assets.assets.carts import cart_db_cart
from etl_assets.assets.common import STORE_RETRY, partition_row_count
from etl_assets.assets.orders import column_schema, warehouse_orders
from etl_assets.k8s import WAREHOUSE_TARGET
from etl_assets.partitions import DAILY, DAILY_BACKFILL, partition_days
from etl_assets.resources import PostgresStoreResource
from etl_assets.schemas.warehouse import CartFunnelTable, DailySalesTable, ProductSalesTable
from etl_assets.sync.warehouse import DayLoad, load_cart_funnel, load_daily_sales, load_product_sales


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def load_metadata(engine: Engine, load: DayLoad) -> dict[str, Any]:
    """What every daily load reports, whatever its table: the rows the day holds now, and those the load
    wrote (rows_processed) and read."""
    return {
        "day": load.day.isoformat(),
        "dagster/row_count": partition_row_count(engine, load.table, "day", load.day),
        "rows_processed": load.rows.height,
        "read": load.read,
        "replaced": load.replaced,
        "duration_s": load.duration_s,
    }


class CartFunnelConfig(dg.Config):
    """Run config of warehouse/cart_funnel."""

    abandon_after_days: int = Field(default=3, ge=1, description="A cart idle longer than this is abandoned.")


_COMMON = {
    "group_name": "warehouse",
    "partitions_def": DAILY,
    "backfill_policy": DAILY_BACKFILL,
    "pool": WAREHOUSE_TARGET,
    "retry_policy": STORE_RETRY,
}


@dg.asset(
    key=["warehouse", "daily_sales"],
    deps=[warehouse_orders],
    kinds={"postgres", "polars"},
    description="Orders, units and revenue (sum of item subtotals) of each UTC day, all order statuses, "
    "and the orders and revenue of those paid so far; a day without orders has a row of zeros.",
    **_COMMON,
)
def daily_sales(context: dg.AssetExecutionContext, warehouse: PostgresStoreResource) -> dg.MaterializeResult:
    engine = warehouse.engine()
    for day in partition_days(context):
        load = load_daily_sales(engine, day)
        sales = load.rows.row(0, named=True)
        context.add_asset_metadata({
            **load_metadata(engine, load),
            "orders": sales["orders"],
            "units": sales["units"],
            "revenue": sales["revenue"],
            "paid_orders": sales["paid_orders"],
            "paid_revenue": sales["paid_revenue"],
            "average_order_value": round(sales["revenue"] / sales["orders"], 2) if sales["orders"] else 0.0,
            "units_per_order": _ratio(sales["units"], sales["orders"]),
        }, partition_key=day.isoformat())
    return dg.MaterializeResult(
        metadata={"dagster/column_schema": column_schema(engine, "daily_sales", DailySalesTable)}
    )


@dg.asset(
    key=["warehouse", "product_sales"],
    deps=[warehouse_orders],
    kinds={"postgres", "polars"},
    description="Units and revenue (sum of item subtotals) of each product sold on each UTC day.",
    **_COMMON,
)
def product_sales(context: dg.AssetExecutionContext, warehouse: PostgresStoreResource) -> dg.MaterializeResult:
    engine = warehouse.engine()
    for day in partition_days(context):
        load = load_product_sales(engine, day)
        revenue = float(load.rows["revenue"].sum())
        top = load.rows.sort("revenue", descending=True).head(1).to_dicts()
        context.add_asset_metadata({
            **load_metadata(engine, load),
            "products": load.rows.height,
            "units": int(load.rows["units"].sum()),
            "revenue": round(revenue, 2),
            "top_product": top[0]["product_id"] if top else "none",
            "top_product_revenue_share": _ratio(top[0]["revenue"], revenue) if top else 0.0,
        }, partition_key=day.isoformat())
    return dg.MaterializeResult(
        metadata={"dagster/column_schema": column_schema(engine, "product_sales", ProductSalesTable)}
    )


@dg.asset(
    key=["warehouse", "cart_funnel"],
    deps=[warehouse_orders, cart_db_cart],
    kinds={"postgres", "polars"},
    description="Active, abandoned and converted carts at the end of each UTC day. A cart converts when its "
    "user orders its product at or after the cart's creation; it is abandoned when idle longer than "
    "`abandon_after_days`. Carts are read in their current state from Cart PostgreSQL `cart`; every cart "
    "counts, whatever its product's state.",
    **_COMMON,
)
def cart_funnel(
    context: dg.AssetExecutionContext,
    config: CartFunnelConfig,
    cart_db: PostgresStoreResource,
    warehouse: PostgresStoreResource,
) -> dg.MaterializeResult:
    engine = warehouse.engine()
    for day in partition_days(context):
        load = load_cart_funnel(cart_db.engine(), engine, day, abandon_after_days=config.abandon_after_days)
        funnel = load.rows.row(0, named=True)
        carts = funnel["active_carts"] + funnel["abandoned_carts"] + funnel["converted_carts"]
        context.add_asset_metadata({
            **load_metadata(engine, load),
            "carts": carts,
            "active_carts": funnel["active_carts"],
            "abandoned_carts": funnel["abandoned_carts"],
            "converted_carts": funnel["converted_carts"],
            "skipped_carts": load.skipped,
            "abandon_after_days": config.abandon_after_days,
            "conversion_rate": _ratio(funnel["converted_carts"], carts),
            "abandonment_rate": _ratio(funnel["abandoned_carts"], carts),
        }, partition_key=day.isoformat())
    return dg.MaterializeResult(
        metadata={"dagster/column_schema": column_schema(engine, "cart_funnel", CartFunnelTable)}
    )


warehouse_assets = [daily_sales, product_sales, cart_funnel]
