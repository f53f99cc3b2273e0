"""Checks of the product copy (Cart PostgreSQL `product`): its rules, and agreement with the catalog."""

import dagster as dg

from etl_assets.assets.products import cart_db_product
from etl_assets.checks.common import ERROR, evaluate
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sync import reconcile


@dg.asset_check(
    asset=cart_db_product,
    name="matches_schema",
    blocking=True,
    description="Every row of the copy satisfies CartDbProduct (pandera), read in batches. Blocking: the cart "
    "snapshots are not built in the same run from a copy that fails it.",
)
def product_copy_matches_schema(cart_db: PostgresStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: reconcile.product_copy_schema(cart_db.engine()), ERROR)


@dg.asset_check(
    asset=cart_db_product,
    name="in_sync_with_catalog",
    description="Product MongoDB against the copy: source documents − open quarantine = active copy rows, and "
    "the records out of sync: missing (valid in the catalog, not active in the copy), extra (active in the "
    "copy, not a valid catalog product) and drifted (content hash differs; price, title, quantity, image "
    "counted apart).",
)
def product_copy_in_sync_with_catalog(
    product_db: MongoStoreResource, cart_db: PostgresStoreResource, warehouse: PostgresStoreResource
) -> dg.AssetCheckResult:
    return evaluate(
        lambda: reconcile.reconcile_products(product_db.db(), cart_db.engine(), warehouse.engine()), ERROR
    )


@dg.asset_check(
    asset=cart_db_product,
    name="unique_ids",
    description="No product id occurs twice in the copy (grouped by the server).",
)
def product_copy_unique_ids(cart_db: PostgresStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: reconcile.duplicate_rows(cart_db.engine(), "product", "id"), ERROR)


product_checks = [product_copy_matches_schema, product_copy_in_sync_with_catalog, product_copy_unique_ids]
