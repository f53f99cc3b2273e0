"""Freshness of the synced copies with Dagster's last-update checks, and their window setting."""

import time
from datetime import timedelta

import dagster as dg
import pytest

from etl_assets.assets.carts import order_db_carts
from etl_assets.assets.products import cart_db_product
from etl_assets.checks.freshness import build_freshness_checks
from etl_assets.settings import AutomationSettings, SettingsError
from etl_assets_tests.checks.harness import evaluate_checks

PRODUCT_FRESHNESS = "cart_db/product:freshness_check"


def test_the_copy_is_fresh_after_a_sync_and_stale_once_the_window_has_passed(stores):
    checks = build_freshness_checks(timedelta(seconds=2), timedelta(hours=1))
    with dg.instance_for_test() as instance:
        never = evaluate_checks(stores.resources(), *checks, instance=instance)
        assert not never[PRODUCT_FRESHNESS].passed and never[PRODUCT_FRESHNESS].severity == dg.AssetCheckSeverity.WARN
        assert not never["order_db/carts:freshness_check"].passed
        for key in (cart_db_product.key, order_db_carts.key):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        fresh = evaluate_checks(stores.resources(), *checks, instance=instance)
        assert fresh[PRODUCT_FRESHNESS].passed and fresh["order_db/carts:freshness_check"].passed
        time.sleep(2.5)
        stale = evaluate_checks(stores.resources(), *checks, instance=instance)
        assert not stale[PRODUCT_FRESHNESS].passed and stale["order_db/carts:freshness_check"].passed


def test_the_window_comes_from_the_environment():
    settings = AutomationSettings.from_env({"SHOP_SYNC_PRODUCT_COPY_FRESHNESS_MINUTES": "90"})
    assert settings.product_copy_freshness == timedelta(minutes=90)
    assert settings.cart_snapshots_freshness == timedelta(hours=25)
    with pytest.raises(SettingsError, match="SHOP_SYNC_PRODUCT_COPY_FRESHNESS_MINUTES must be a positive number"):
        AutomationSettings.from_env({"SHOP_SYNC_PRODUCT_COPY_FRESHNESS_MINUTES": "soon"})
