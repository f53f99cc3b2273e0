"""Checks of the carts (Cart PostgreSQL `cart`) and their snapshots (Order MongoDB `carts`)."""

import dagster as dg

from etl_assets.assets.carts import cart_db_cart, order_db_carts
from etl_assets.assets.products import cart_db_product
from etl_assets.checks.common import ERROR, WARN, evaluate
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sync.carts import COLLECTION
from etl_assets.sync.reconcile.carts import reconcile_carts
from etl_assets.sync.reconcile.integrity import cart_product_references
from etl_assets.sync.reconcile.schema import cart_rows_schema, cart_snapshot_schema
from etl_assets.sync.reconcile.uniqueness import unique_field_index


@dg.asset_check(
    asset=cart_db_cart,
    name="matches_schema",
    description="Every cart row satisfies CartRow (pandera), read in batches. WARN: the cart service owns these "
    "rows; the cart sync quarantines the ones that fail.",
)
def cart_rows_match_schema(cart_db: PostgresStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: cart_rows_schema(cart_db.engine()), WARN)


@dg.asset_check(
    asset=cart_db_cart,
    name="products_exist_and_active",
    # In a run that syncs the product copy (full_reconcile), it judges the copy the sync left.
    additional_deps=[cart_db_product],
    description="Every cart points at a product the copy holds and has active; such a cart cannot be snapshot.",
)
def carts_reference_active_products(cart_db: PostgresStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: cart_product_references(cart_db.engine()), ERROR)


@dg.asset_check(
    asset=order_db_carts,
    name="matches_schema",
    description="Every live snapshot document (not marked deletedAt) satisfies CartSnapshot (pandera), including "
    "total = productPrice × cartQuantity; documents are streamed in batches.",
)
def cart_snapshots_match_schema(order_db: MongoStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: cart_snapshot_schema(order_db.db()), ERROR)


@dg.asset_check(
    asset=order_db_carts,
    name="in_sync_with_cart_db",
    description="Cart PostgreSQL against the snapshots: carts the sync would snapshot that have no live one "
    "(missing), whose snapshot has another version (stale), or whose snapshot total is not the copy's "
    "price × the cart's quantity (wrong total); and live snapshots whose cart is gone (without cart), which the "
    "sync marks deletedAt.",
)
def cart_snapshots_in_sync(cart_db: PostgresStoreResource, order_db: MongoStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: reconcile_carts(cart_db.engine(), order_db.db()), ERROR)


@dg.asset_check(
    asset=order_db_carts,
    name="cart_id_unique_index",
    description="A unique index on `cartId` (not partial) keeps one snapshot per cart; the version guard of "
    "the cart sync relies on it. Fails when it is missing from a collection that holds snapshots, and then also "
    "counts the cartIds already doubled.",
)
def cart_snapshots_cart_id_unique_index(order_db: MongoStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: unique_field_index(order_db.db()[COLLECTION], "cartId"), ERROR)


cart_checks = [
    cart_rows_match_schema,
    carts_reference_active_products,
    cart_snapshots_match_schema,
    cart_snapshots_in_sync,
    cart_snapshots_cart_id_unique_index,
]
