"""The one place that assembles shop-sync's Definitions."""

import dagster as dg

from etl_assets.assets.carts import cart_assets
from etl_assets.assets.orders import order_assets
from etl_assets.assets.products import product_assets
from etl_assets.assets.warehouse import warehouse_assets
from etl_assets.jobs import ALL_JOBS
from etl_assets.resources import build_resources

defs = dg.Definitions(
    assets=[*product_assets, *cart_assets, *order_assets, *warehouse_assets],
    jobs=ALL_JOBS,
    resources=build_resources(),
)
