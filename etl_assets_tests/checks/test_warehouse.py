"""The warehouse tables' schema checks through Dagster."""

from datetime import timedelta

import dagster as dg

from etl_assets.checks.warehouse import warehouse_checks
from etl_assets_tests.checks.harness import evaluate_checks, failing, metadata
from etl_assets_tests.checks.seed import DAY, execute


def test_warehouse_table_checks_name_the_bad_rows_and_pass_once_they_are_fixed(stores):
    next_day = DAY + timedelta(days=1)
    execute(stores.warehouse_engine, "INSERT INTO daily_sales VALUES (:day, 2, 1, 10), (:next, 1, 1, 10)",
            day=DAY, next=next_day)
    execute(stores.warehouse_engine, "INSERT INTO product_sales VALUES (:day, 'p1', 0, 5), (:day, 'p2', 1, 5)",
            day=DAY)
    execute(stores.warehouse_engine, "INSERT INTO cart_funnel VALUES (:day, 1, -1, 0, 3), (:next, 1, 0, 0, 0)",
            day=DAY, next=next_day)

    checks = evaluate_checks(stores.resources(), *warehouse_checks)
    assert failing(checks["warehouse/daily_sales:matches_schema"]) == (False, 1, [DAY.isoformat()])
    assert failing(checks["warehouse/product_sales:matches_schema"]) == (False, 1, [f"{DAY.isoformat()}/p1"])
    funnel = checks["warehouse/cart_funnel:matches_schema"]
    assert sorted(failing(funnel)[2]) == [DAY.isoformat(), next_day.isoformat()]
    assert metadata(funnel)["checked"] == {"cart_funnel": 2} and metadata(funnel)["scope"] == "all days"
    assert all(check.severity == dg.AssetCheckSeverity.ERROR for check in checks.values())

    execute(stores.warehouse_engine, "UPDATE daily_sales SET units = 2")
    execute(stores.warehouse_engine, "UPDATE product_sales SET units = 1")
    execute(stores.warehouse_engine, "UPDATE cart_funnel SET abandoned_carts = 0, abandon_after_days = 3")
    checks = evaluate_checks(stores.resources(), *warehouse_checks)
    assert all(check.passed for check in checks.values()), checks
