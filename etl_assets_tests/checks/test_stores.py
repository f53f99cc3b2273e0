"""Store health through Dagster: a store that is down fails its checks, saying which and why."""

from pathlib import Path

from dev.stores import free_port
from etl_assets.checks.carts import cart_snapshots_in_sync
from etl_assets.checks.stores import store_checks
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sync.stores import CART_DB, ORDER_DB, PRODUCT_DB, WAREHOUSE
from etl_assets_tests.checks.harness import evaluate_checks, metadata

reachable_checks = [check for check in store_checks if check.check_key.name == "store_reachable"]


def unreachable_mongo(database: str, store: str) -> MongoStoreResource:
    """A resource for a port nothing listens on."""
    return MongoStoreResource(uri=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", database=database,
                              store_name=store, timeout_s=1)


def unreachable_postgres(socket_dir: Path, migrations: str, store: str) -> PostgresStoreResource:
    """A resource for a socket directory no server uses."""
    return PostgresStoreResource(url=f"postgresql+psycopg2://postgres@/{migrations}?host={socket_dir}",
                                 store_name=store, migrations=migrations, timeout_s=1)


def test_every_store_answers(stores):
    checks = evaluate_checks(stores.resources(), *reachable_checks)
    assert sorted(checks) == ["cart_db/cart:store_reachable", "order_db/orders:store_reachable",
                              "product_db/products:store_reachable", "warehouse/orders:store_reachable"]
    for check in checks.values():
        assert check.passed and metadata(check)["server_version"] and metadata(check)["latency_ms"] >= 0


def test_a_store_that_is_down_fails_the_checks_that_need_it_with_its_name_and_why(stores, tmp_path):
    resources = {
        **stores.resources(),
        "order_db": unreachable_mongo("orders", ORDER_DB),
        "warehouse": unreachable_postgres(tmp_path, "warehouse", WAREHOUSE),
    }
    checks = evaluate_checks(resources, *reachable_checks, cart_snapshots_in_sync)
    assert checks["product_db/products:store_reachable"].passed
    assert checks["cart_db/cart:store_reachable"].passed
    for key, store in [("order_db/orders:store_reachable", ORDER_DB), ("warehouse/orders:store_reachable", WAREHOUSE),
                       ("order_db/carts:in_sync_with_cart_db", ORDER_DB)]:
        check = checks[key]
        assert not check.passed
        assert check.description.startswith(f"{store} is unavailable: ")
        assert metadata(check)["store"] == store and metadata(check)["unavailable"]


def test_the_product_and_cart_stores_down_fail_their_checks_too(stores, tmp_path):
    resources = {
        **stores.resources(),
        "product_db": unreachable_mongo("products", PRODUCT_DB),
        "cart_db": unreachable_postgres(tmp_path, "cart_db", CART_DB),
    }
    checks = evaluate_checks(resources, *reachable_checks)
    for key, store in [("product_db/products:store_reachable", PRODUCT_DB), ("cart_db/cart:store_reachable", CART_DB)]:
        assert not checks[key].passed and checks[key].description.startswith(f"{store} is unavailable: ")
    assert checks["order_db/orders:store_reachable"].passed
