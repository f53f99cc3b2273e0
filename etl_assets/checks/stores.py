"""Checks of the stores themselves: each one answers, and what each sync has put in quarantine."""

from datetime import UTC, datetime

import dagster as dg

from etl_assets.assets.carts import cart_db_cart, order_db_carts
from etl_assets.assets.orders import order_db_orders, warehouse_orders
from etl_assets.assets.products import cart_db_product, product_db_products
from etl_assets.checks.common import ERROR, WARN, evaluate, latest_evaluation_with
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sync import carts, orders, products, stores
from etl_assets.sync.reconcile.quarantine import AS_OF, quarantine_status


def store_reachable_check(asset: dg.AssetsDefinition, resource_key: str, store: str) -> dg.AssetChecksDefinition:
    """One round trip to the store of `resource_key`, bounded by the resource's timeout (seconds)."""

    @dg.asset_check(
        asset=asset,
        name="store_reachable",
        required_resource_keys={resource_key},
        description=f"{store} answers within the resource's timeout; otherwise the check fails saying why.",
    )
    def store_reachable(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        resource = getattr(context.resources, resource_key)

        def ping() -> stores.StoreHealth:
            if isinstance(resource, MongoStoreResource):
                return stores.ping_mongo(resource.db(), store)
            return stores.ping_postgres(resource.engine(), store)

        return evaluate(ping, ERROR)

    return store_reachable


def previous_as_of(context: dg.AssetCheckExecutionContext) -> datetime | None:
    """The warehouse time of this check's last evaluation, kept in its metadata in the Dagster instance."""
    previous = latest_evaluation_with(context, AS_OF)
    return datetime.fromtimestamp(previous[0].metadata[AS_OF].value, UTC) if previous else None


def quarantine_check(asset: dg.AssetsDefinition, source: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="no_new_quarantined_records",
        description=f"Records of `{source}` in quarantine now, and those quarantined since this check last ran "
        "(WARN when there are any, with their ids and reasons).",
    )
    def no_new_quarantined_records(
        context: dg.AssetCheckExecutionContext, warehouse: PostgresStoreResource
    ) -> dg.AssetCheckResult:
        since = previous_as_of(context)
        return evaluate(lambda: quarantine_status(warehouse.engine(), source, since), WARN)

    return no_new_quarantined_records


store_checks = [
    store_reachable_check(product_db_products, "product_db", stores.PRODUCT_DB),
    store_reachable_check(cart_db_cart, "cart_db", stores.CART_DB),
    store_reachable_check(order_db_orders, "order_db", stores.ORDER_DB),
    store_reachable_check(warehouse_orders, "warehouse", stores.WAREHOUSE),
    quarantine_check(cart_db_product, products.SOURCE),
    quarantine_check(order_db_carts, carts.SOURCE),
    quarantine_check(warehouse_orders, orders.SOURCE),
]
