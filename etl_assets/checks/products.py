"""Checks of the product copy (Cart PostgreSQL `product`): its rules, and agreement with the catalog."""

import dagster as dg

from etl_assets.assets.products import cart_db_product
from etl_assets.checks.common import ERROR, evaluate, latest_evaluation_with
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.settings import SETTINGS
from etl_assets.sync.reconcile.products import (
    ACTIVE_ROWS,
    BASELINE_ACTIVE_ROWS,
    active_rows_drop,
    reconcile_products,
)
from etl_assets.sync.reconcile.schema import product_copy_schema
from etl_assets.sync.reconcile.uniqueness import unique_key

# The product sync's override, as its materialization records it.
MASS_DEACTIVATION_ALLOWED = "mass_deactivation_allowed"


@dg.asset_check(
    asset=cart_db_product,
    name="matches_schema",
    blocking=True,
    description="Every row of the copy satisfies CartDbProduct (pandera), read in batches. Blocking: the cart "
    "snapshots are not built in the same run from a copy that fails it.",
)
def product_copy_matches_schema(cart_db: PostgresStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: product_copy_schema(cart_db.engine()), ERROR)


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
    return evaluate(lambda: reconcile_products(
        product_db.db(), cart_db.engine(), warehouse.engine(), guard=SETTINGS.deactivation_guard()), ERROR)


@dg.asset_check(
    asset=cart_db_product,
    name="id_unique_index_valid",
    description="A valid unique index on `id` (the primary key) keeps product ids unique and lets the sync "
    "upsert by id. Fails when it is missing or left invalid (a failed CREATE INDEX CONCURRENTLY), and then "
    "also counts the ids that already occur twice.",
)
def product_copy_id_unique_index_valid(cart_db: PostgresStoreResource) -> dg.AssetCheckResult:
    return evaluate(lambda: unique_key(cart_db.engine(), "product", "id"), ERROR)


def active_rows_baseline(context: dg.AssetCheckExecutionContext) -> int | None:
    """What the active rows are compared with: the active rows of this check's last passing evaluation (a
    failing one carries its own baseline forward), unless a product sync since then was allowed to
    deactivate past the guard (allow_mass_deactivation): its result is the new baseline."""
    previous = latest_evaluation_with(context, ACTIVE_ROWS)
    baseline, evaluated_at = None, 0.0
    if previous:
        evaluation, evaluated_at = previous
        baseline = evaluation.metadata[ACTIVE_ROWS if evaluation.passed
                                       else BASELINE_ACTIVE_ROWS].value
    materialization = context.instance.get_latest_materialization_event(cart_db_product.key)
    if materialization and materialization.timestamp > evaluated_at:
        metadata = materialization.asset_materialization.metadata
        if MASS_DEACTIVATION_ALLOWED in metadata and metadata[MASS_DEACTIVATION_ALLOWED].value:
            return metadata["dagster/row_count"].value
    return baseline


@dg.asset_check(
    asset=cart_db_product,
    name="active_rows_did_not_drop",
    description="The copy's active rows fell, since the last passing evaluation, by no more than the "
    "mass-deactivation guard allows (SHOP_SYNC_MAX_DEACTIVATION_SHARE of them, at least "
    "SHOP_SYNC_DEACTIVATION_FLOOR): catches a wiped copy whatever wiped it. A product sync run with "
    "allow_mass_deactivation sets a new baseline.",
)
def product_copy_active_rows_did_not_drop(
    context: dg.AssetCheckExecutionContext, cart_db: PostgresStoreResource
) -> dg.AssetCheckResult:
    baseline = active_rows_baseline(context)
    return evaluate(lambda: active_rows_drop(cart_db.engine(), baseline,
                                                       guard=SETTINGS.deactivation_guard()), ERROR)


product_checks = [
    product_copy_matches_schema,
    product_copy_in_sync_with_catalog,
    product_copy_id_unique_index_valid,
    product_copy_active_rows_did_not_drop,
]
