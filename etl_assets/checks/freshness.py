"""Freshness of the two synced copies, with Dagster's own machinery: a last-update check per asset,
evaluated by a sensor (and by the validate job), against a window set in the environment (settings.py).

Dagster 1.13 marks these builders as superseded by FreshnessPolicy on the assets. A policy reports
freshness as asset health, not as a check; these report it as check results, with the other checks, in
the check tab and in the validate job, so the superseding notice is silenced here.

SHOP_SYNC_PRODUCT_COPY_FRESHNESS_MINUTES (default 60): the incremental product sync runs every 15 minutes.
SHOP_SYNC_CART_SNAPSHOTS_FRESHNESS_MINUTES (default 1500): the cart sync runs when carts change, and the
nightly full reconcile rebuilds the snapshots at least once a day.
"""

import warnings
from datetime import timedelta

import dagster as dg

from etl_assets.assets.carts import order_db_carts
from etl_assets.assets.products import cart_db_product
from etl_assets.settings import SETTINGS


def build_freshness_checks(product_copy_window: timedelta, cart_snapshots_window: timedelta) -> list:
    """One last-update check per synced copy. WARN: old data is not wrong data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return [
            *dg.build_last_update_freshness_checks(assets=[cart_db_product], lower_bound_delta=product_copy_window),
            *dg.build_last_update_freshness_checks(assets=[order_db_carts],
                                                   lower_bound_delta=cart_snapshots_window),
        ]


freshness_checks = build_freshness_checks(SETTINGS.product_copy_freshness, SETTINGS.cart_snapshots_freshness)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    # Always running: a sync that silently stopped must be noticed without anyone opening the UI.
    freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks, name="sync_freshness", default_status=dg.DefaultSensorStatus.RUNNING
    )
