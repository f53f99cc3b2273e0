"""Product assets: the catalog in Product MongoDB and its copy in Cart PostgreSQL."""

import json

import dagster as dg
from pydantic import Field

from etl_assets.assets.common import (
    STORE_RETRY,
    SyncConfig,
    observe_collection,
    quarantine_metadata,
    report_metadata,
)
from etl_assets.k8s import CART_DB_TARGET
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.settings import SETTINGS
from etl_assets.sync.guard import MassDeactivationRefused
from etl_assets.sync.products import BATCH_SIZE, PRODUCT_TABLE_COLUMNS, SOURCE, active_rows, sync_products

PRODUCT_COLUMNS = dg.TableSchema(columns=[
    dg.TableColumn(column.name, column.sql_type, description=column.description)
    for column in PRODUCT_TABLE_COLUMNS
])


# Run tag the instance's run retries read: a refused deactivation would only be refused again.
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


def allow_mass_deactivation_field() -> bool:
    return Field(
        default=False,
        description="For this run only: let a full sync deactivate more products than the guard allows "
        "(SHOP_SYNC_MAX_DEACTIVATION_SHARE of the active rows, at least SHOP_SYNC_DEACTIVATION_FLOOR), or "
        "deactivate them although it read no document. Use it when the products really left the catalog.",
    )


class ProductSyncConfig(SyncConfig):
    """Run config of the product sync; larger batches amortise per-batch validation."""

    batch_size: int = BATCH_SIZE
    allow_mass_deactivation: bool = allow_mass_deactivation_field()


def override_run_config(op_name: str, **config: object) -> str:
    """The run config that lets one full sync deactivate past the guard, as JSON (valid YAML too)."""
    return json.dumps({"ops": {op_name: {"config": {**config, "allow_mass_deactivation": True}}}})


def refused_deactivation(context: dg.OpExecutionContext | dg.AssetExecutionContext, refused: MassDeactivationRefused,
                         override: str) -> dg.Failure:
    """The step's failure: the guard's message, and the run config that overrides it for one run.
    Neither a step retry nor a run retry would read another source, so it stops both: a person decides."""
    context.instance.add_run_tags(context.run_id, {RETRY_ON_STEP_FAILURE_TAG: "false"})
    return dg.Failure(
        description=f"{refused} If they really left the catalog, override for one run with the run config {override}",
        metadata={"would_deactivate": refused.deactivating, "active_rows": refused.active,
                  "deactivation_limit": refused.limit, "read": refused.read},
        allow_retries=False,
    )


@dg.observable_source_asset(
    key=["product_db", "products"],
    group_name="products",
    description="The product service's catalog (Product MongoDB `products`). Read only. Its data version "
    "changes when a product is added or removed, or a newer updatedAt appears.",
    tags={"dagster/kind/mongodb": ""},
)
def product_db_products(product_db: MongoStoreResource) -> dg.ObserveResult:
    return observe_collection(product_db.db()["products"], "updatedAt")


@dg.asset(
    key=["cart_db", "product"],
    deps=[product_db_products],
    group_name="products",
    kinds={"mongodb", "postgres", "polars"},
    pool=CART_DB_TARGET,
    retry_policy=STORE_RETRY,
    metadata={"dagster/column_schema": PRODUCT_COLUMNS, "dagster/table_name": "cart.public.product"},
    description="The cart service's copy of the catalog (Cart PostgreSQL `product`): inserts new "
    "products, updates changed ones by content hash, deactivates products that left the source.",
)
def cart_db_product(
    context: dg.AssetExecutionContext,
    config: ProductSyncConfig,
    product_db: MongoStoreResource,
    cart_db: PostgresStoreResource,
    warehouse: PostgresStoreResource,
) -> dg.MaterializeResult:
    try:
        report = sync_products(
            product_db.db(), cart_db.engine(), warehouse.engine(),
            mode=config.mode, dry_run=config.dry_run, batch_size=config.batch_size,
            run_id=context.run.run_id, progress=context.log.info,
            guard=SETTINGS.deactivation_guard(allow_mass_deactivation=config.allow_mass_deactivation),
        )
    except MassDeactivationRefused as refused:
        override = override_run_config(context.op_def.name, mode="full")
        raise refused_deactivation(context, refused, override) from refused
    context.log.info(f"product sync done: {report.as_dict()}")
    return dg.MaterializeResult(metadata={
        **report_metadata(report),
        "dagster/row_count": active_rows(cart_db.engine()),
        **quarantine_metadata(warehouse.engine(), SOURCE),
    })


product_assets = [product_db_products, cart_db_product]
