"""The Order service's orders: the observed source collection and its daily copy in the warehouse."""

from datetime import date

import dagster as dg
import pandera.polars as pa
from sqlalchemy.engine import Engine

from etl_assets.assets.common import (
    STORE_RETRY,
    observe_collection,
    partition_row_count,
    quarantine_metadata,
    report_metadata,
)
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.schemas.warehouse import OrderItemsTable, OrdersTable
from etl_assets.settings import SETTINGS
from etl_assets.sync.order_days import lookback_window
from etl_assets.sync.orders import SOURCE, quarantine_undated_orders, sync_order_day
from etl_assets.sync.warehouse import table_columns

# The UTC day of an order's createdAt. Every order asset and every warehouse table shares it.
DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")

# A backfill launches one run per month of days instead of one per day: on the K8sRunLauncher each run
# is a pod, so a year costs 12 pods, not 365. The assets loop over `context.partition_keys` and replace
# each day in its own transaction, so a failed run keeps the days it finished and its retry redoes at
# most a month. A single run for the whole range would make every retry start over from the first day.
DAILY_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=31)


def order_window(last_day: date) -> tuple[date, date]:
    """The days whose warehouse rows order_changes, the nightly sweep and the coverage check keep in step
    with the source: SHOP_SYNC_ORDER_LOOKBACK_DAYS up to `last_day`, none before the first partition."""
    return lookback_window(last_day, SETTINGS.order_lookback_days, DAILY.start.date())


class OrderSyncConfig(dg.Config):
    """Run config of warehouse/orders."""

    batch_size: int = 5000


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days this run materializes: one for a daily run, up to a month in a backfill run."""
    return [date.fromisoformat(key) for key in context.partition_keys]


def column_schema(engine: Engine, table: str, model: type[pa.DataFrameModel]) -> dg.TableSchema:
    """The table's columns as the database declares them, described by the table's pandera model."""
    descriptions = {name: column.description for name, column in model.to_schema().columns.items()}
    return dg.TableSchema(columns=[
        dg.TableColumn(name, sql_type, description=descriptions.get(name),
                       constraints=dg.TableColumnConstraints(nullable=nullable))
        for name, sql_type, nullable in table_columns(engine, table)
    ])


@dg.observable_source_asset(
    key=["order_db", "orders"],
    group_name="orders",
    tags={"dagster/kind/mongodb": ""},
    description="The Order service's `orders` collection (read only). Its data version changes when an "
    "order is added or removed, or a newer createdAt appears.",
)
def order_db_orders(order_db: MongoStoreResource) -> dg.ObserveResult:
    return observe_collection(order_db.db()["orders"], "createdAt")


@dg.asset(
    key=["warehouse", "orders"],
    group_name="orders",
    deps=[order_db_orders],
    partitions_def=DAILY,
    backfill_policy=DAILY_BACKFILL,
    pool="warehouse",
    retry_policy=STORE_RETRY,
    kinds={"mongodb", "postgres", "polars"},
    description="The valid orders of each UTC day (tables `orders` and `order_items`); invalid ones are "
    "quarantined under source `order_db.orders`. Each day is replaced in one transaction.",
)
def warehouse_orders(
    context: dg.AssetExecutionContext,
    config: OrderSyncConfig,
    order_db: MongoStoreResource,
    warehouse: PostgresStoreResource,
) -> dg.MaterializeResult:
    engine = warehouse.engine()
    db = order_db.db()
    undated = quarantine_undated_orders(db, engine, run_id=context.run_id, batch_size=config.batch_size)
    for day in partition_days(context):
        report = sync_order_day(db, engine, day, run_id=context.run_id, batch_size=config.batch_size)
        context.log.info(
            f"{report.day}: {report.inserted} orders ({report.items_inserted} items) loaded, "
            f"{report.quarantined} quarantined, {report.replaced} replaced"
        )
        context.add_asset_metadata({
            **report_metadata(report),
            "dagster/row_count": partition_row_count(engine, "orders", "order_day", day),
            "quarantine_rate": report.quarantine_rate,
        }, partition_key=report.day)
    return dg.MaterializeResult(metadata={
        "undated_quarantined": undated,
        **quarantine_metadata(engine, SOURCE),
        "dagster/column_schema": column_schema(engine, "orders", OrdersTable),
        "order_items_column_schema": column_schema(engine, "order_items", OrderItemsTable),
    })


order_assets = [order_db_orders, warehouse_orders]
