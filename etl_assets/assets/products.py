"""Product assets: the catalog in Product MongoDB and its copy in Cart PostgreSQL."""

import dagster as dg

from etl_assets.assets.common import (
    STORE_RETRY,
    SyncConfig,
    observe_collection,
    quarantine_metadata,
    report_metadata,
)
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sync.products import BATCH_SIZE, SOURCE, sync_products

PRODUCT_COLUMNS = dg.TableSchema(columns=[
    dg.TableColumn("id", "varchar(24)", description="hex of the Product MongoDB _id"),
    dg.TableColumn("title", "text"),
    dg.TableColumn("price", "numeric(12,2)"),
    dg.TableColumn("image", "text"),
    dg.TableColumn("seller_id", "text"),
    dg.TableColumn("quantity", "integer"),
    dg.TableColumn("category", "text"),
    dg.TableColumn("description", "text"),
    dg.TableColumn("rating", "numeric(3,2)"),
    dg.TableColumn("tags", "jsonb"),
    dg.TableColumn("source_updated_at", "timestamptz"),
    dg.TableColumn("content_hash", "char(32)", description="MD5 of the synced fields"),
    dg.TableColumn("is_active", "boolean", description="false once the product left the source"),
    dg.TableColumn("synced_at", "timestamptz", description="last time the ETL wrote the row"),
])


class ProductSyncConfig(SyncConfig):
    """Run config of the product sync; larger batches amortise per-batch validation."""

    batch_size: int = BATCH_SIZE


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
    pool="cart_db",
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
    report = sync_products(
        product_db.db(), cart_db.engine(), warehouse.engine(),
        mode=config.mode, dry_run=config.dry_run, batch_size=config.batch_size,
        run_id=context.run.run_id, progress=context.log.info,
    )
    context.log.info(f"product sync done: {report.as_dict()}")
    return dg.MaterializeResult(metadata={
        **report_metadata(report), **quarantine_metadata(warehouse.engine(), SOURCE),
    })


product_assets = [product_db_products, cart_db_product]
