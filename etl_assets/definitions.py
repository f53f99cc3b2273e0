"""The one place that assembles shop-sync's Definitions."""

import dagster as dg

from etl_assets.alerts import alert_sensors, alert_webhook_resource
from etl_assets.assets.carts import cart_assets
from etl_assets.assets.orders import order_assets
from etl_assets.assets.products import product_assets
from etl_assets.assets.warehouse import warehouse_assets
from etl_assets.checks import all_checks, freshness_sensor
from etl_assets.jobs import all_jobs
from etl_assets.resources import build_resources
from etl_assets.schedules import all_schedules
from etl_assets.sensors import change_sensors
from etl_assets.settings import SETTINGS

defs = dg.Definitions(
    assets=[*product_assets, *cart_assets, *order_assets, *warehouse_assets],
    asset_checks=all_checks,
    jobs=all_jobs,
    sensors=[*change_sensors, *alert_sensors, freshness_sensor],
    schedules=all_schedules,
    resources={**build_resources(), "alert_webhook": alert_webhook_resource(SETTINGS)},
)
