"""Checks of the warehouse's daily analytics tables, each against its pandera model."""

from collections.abc import Sequence

import dagster as dg
import pandera.polars as pa

from etl_assets.assets.warehouse import cart_funnel, daily_sales, product_sales
from etl_assets.checks.common import ERROR, evaluate, run_days
from etl_assets.resources import PostgresStoreResource
from etl_assets.schemas.warehouse import CartFunnelTable, DailySalesTable, ProductSalesTable
from etl_assets.sync.reconcile.schema import warehouse_table_schema


def table_schema_check(
    asset: dg.AssetsDefinition, table: str, model: type[pa.DataFrameModel], key: Sequence[str]
) -> dg.AssetChecksDefinition:
    """`key`: the columns that name a row in the sample of failing ids (joined with "/")."""

    @dg.asset_check(
        asset=asset,
        name="matches_schema",
        description=f"Every row of `{table}` satisfies {model.__name__} (pandera), read in batches: the days "
        "of the run, or every day in the validate job.",
    )
    def matches_schema(context: dg.AssetCheckExecutionContext, warehouse: PostgresStoreResource) -> dg.AssetCheckResult:
        return evaluate(
            lambda: warehouse_table_schema(warehouse.engine(), table, model, key, run_days(context)), ERROR
        )

    return matches_schema


warehouse_checks = [
    table_schema_check(daily_sales, "daily_sales", DailySalesTable, ["day"]),
    table_schema_check(product_sales, "product_sales", ProductSalesTable, ["day", "product_id"]),
    table_schema_check(cart_funnel, "cart_funnel", CartFunnelTable, ["day"]),
]
