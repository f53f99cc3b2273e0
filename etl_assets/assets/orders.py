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
from etl_assets.k8s import WAREHOUSE_TARGET
from etl_assets.partitions import DAILY, DAILY_BACKFILL, partition_days
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.schemas.warehouse import OrderItemsTable, OrdersTable
from etl_assets.sync.order_days import DayFingerprint
from etl_assets.sync.orders import SOURCE, quarantine_undated_orders, sync_order_day
from etl_assets.sync.warehouse import table_columns

# What the order_changes sensor saw when it requested a day's build: the source fingerprint
# (etl_assets/sync/order_days.py) and the orders it counts.
ORDER_FINGERPRINT_TAG = "shop-sync/order-fingerprint"
ORDER_COUNT_TAG = "shop-sync/orders"


def requested_fingerprint(context: dg.AssetExecutionContext, days: list[date]) -> DayFingerprint | None:
    """The fingerprint the run was requested for, when it builds that one day: the sensor took it before
    the run started, so before the load reads (what the recorded fingerprint needs), and the load need
    not aggregate the day again. A change since then leaves the day outdated, and it is built again."""
    tags = context.run.tags
    if len(days) != 1 or ORDER_FINGERPRINT_TAG not in tags or not tags.get(ORDER_COUNT_TAG, "").isdigit():
        return None
    return DayFingerprint(int(tags[ORDER_COUNT_TAG]), tags[ORDER_FINGERPRINT_TAG])


class OrderSyncConfig(dg.Config):
    """Run config of warehouse/orders."""

    batch_size: int = 5000


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
    pool=WAREHOUSE_TARGET,
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
    days = partition_days(context)
    requested = requested_fingerprint(context, days)
    for day in days:
        report = sync_order_day(db, engine, day, run_id=context.run_id, batch_size=config.batch_size,
                                fingerprint=requested)
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
