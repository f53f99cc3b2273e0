"""Asset checks, one module per asset family; etl_assets/sync/reconcile/ does the measuring."""

from etl_assets.checks.carts import cart_checks
from etl_assets.checks.freshness import freshness_checks, freshness_sensor
from etl_assets.checks.orders import order_checks
from etl_assets.checks.products import product_checks
from etl_assets.checks.stores import store_checks
from etl_assets.checks.warehouse import warehouse_checks

all_checks = [*product_checks, *cart_checks, *order_checks, *warehouse_checks, *store_checks, *freshness_checks]

__all__ = ["all_checks", "freshness_sensor"]
