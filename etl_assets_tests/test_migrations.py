"""The ETL's schemas come only from its Alembic migrations (issue 12 §2, issue 14 §3): the deploy
command migrates and checks, a step against a schema that is not at the code's head fails at once naming
the command, and the cart database's history adopts what exists and never touches the cart service's
own columns."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dev.stores import create_cart_service_tables
from etl_assets import migrations
from etl_assets.assets.products import product_assets
from etl_assets.jobs import product_sync_incremental
from etl_assets_tests.conftest import StoreSet

EMPTY_DATABASES = ("cart_unmigrated", "warehouse_unmigrated")


@pytest.fixture
def unmigrated(stores: StoreSet) -> dict[str, str]:
    """A cart database with only the cart service's tables and an empty warehouse: before the first deploy."""
    suffix = uuid.uuid4().hex[:12]
    urls = {}
    with stores.local.postgres.admin_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in EMPTY_DATABASES:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}_{suffix}"')
            urls[name] = stores.local.postgres.url(f"{name}_{suffix}")
    create_cart_service_tables(urls["cart_unmigrated"])
    return {"CART_PG_MIGRATE_URL": urls["cart_unmigrated"], "WAREHOUSE_PG_MIGRATE_URL": urls["warehouse_unmigrated"]}


def migrate_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "etl_assets.migrate", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def columns(url: str, table: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("""
            SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name = :table ORDER BY ordinal_position
        """), {"table": table}).all()
    engine.dispose()
    return [tuple(row) for row in found]


def test_the_migrate_command_checks_migrates_and_is_idempotent(unmigrated):
    check = migrate_command(unmigrated, "--check")
    assert check.returncode == 1
    assert ("Cart PostgreSQL schema is at no revision (never migrated), the code needs revision "
            f"{migrations.code_revision('cart_db')}. Migrate it with `python -m etl_assets.migrate cart_db`"
            ) in check.stdout

    first = migrate_command(unmigrated, "all")
    assert first.returncode == 0, first.stderr
    assert "Cart PostgreSQL (postgresql+psycopg2://postgres@/" in first.stdout
    assert "migrated from an empty schema" in first.stdout
    again = migrate_command(unmigrated)
    assert again.returncode == 0 and again.stdout.count("already at the head") == 2, again.stdout
    assert migrate_command(unmigrated, "--check").returncode == 0


def test_the_migrate_command_needs_its_own_url(unmigrated):
    missing = migrate_command({"CART_PG_MIGRATE_URL": "", "CART_PG_URL": unmigrated["CART_PG_MIGRATE_URL"]},
                              "cart_db")
    assert missing.returncode != 0
    assert "CART_PG_MIGRATE_URL is not set" in missing.stderr


def test_the_cart_history_adds_the_etl_columns_and_keeps_the_cart_services(unmigrated):
    url = unmigrated["CART_PG_MIGRATE_URL"]
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a product the cart service wrote before the ETL's first deploy
        conn.exec_driver_sql("INSERT INTO product (id, title, price, image) VALUES ('p1', 'old', 1, 'i')")
    service_product, service_cart = columns(url, "product"), columns(url, "cart")

    migrations.upgrade(engine, "cart_db")
    product = columns(url, "product")
    assert product[:len(service_product)] == service_product
    assert [name for name, *_ in product[len(service_product):]] == [
        "category", "description", "rating", "tags", "source_updated_at", "content_hash", "is_active", "synced_at"]
    assert columns(url, "cart") == service_cart
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT content_hash, is_active FROM product")).one() == ("0" * 32, True)
        assert conn.execute(sa.text("SELECT to_regclass('product_synced_at_idx')")).scalar() is not None

    # Downgraded, only the ETL's columns go.
    with engine.begin() as conn:
        alembic_config = migrations.alembic_config(migrations.HISTORIES["cart_db"], conn)
        from alembic import command
        command.downgrade(alembic_config, "base")
    assert columns(url, "product") == service_product and columns(url, "cart") == service_cart
    engine.dispose()


def test_a_schema_made_before_migrations_is_adopted(stores, unmigrated):
    """A warehouse and cart database that the old run-time schema files built already hold every object:
    the first migration keeps them, and their data, and records the revision."""
    engine = sa.create_engine(unmigrated["WAREHOUSE_PG_MIGRATE_URL"])
    source = sa.create_engine(stores.warehouse_url)
    with source.connect() as conn:  # the same tables, as a migrated warehouse has them
        tables = conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")).scalars().all()
    migrations.upgrade(engine, "warehouse")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO etl_sync_state (sync_name) VALUES ('kept')")
        conn.exec_driver_sql("DROP SCHEMA shop_sync CASCADE")  # as if never migrated
    assert migrations.upgrade(engine, "warehouse") == (None, migrations.code_revision("warehouse"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT sync_name FROM etl_sync_state")).scalars().all() == ["kept"]
        assert conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")).scalars().all() == tables
    engine.dispose()
    source.dispose()


@pytest.mark.parametrize("store", ["cart_db", "warehouse"])
def test_a_step_fails_at_once_naming_the_command_when_the_schema_lags(stores, store):
    """No DDL on the run path: the step does not migrate, it refuses, without retrying, and says how."""
    url = stores.cart_url if store == "cart_db" else stores.warehouse_url
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the code moved on to a revision this database has not seen
        conn.execute(sa.text("UPDATE shop_sync.alembic_version SET version_num = 'behind'"))
    engine.dispose()
    defs = dg.Definitions(assets=product_assets, jobs=[product_sync_incremental], resources=stores.resources())
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("product_sync_incremental").execute_in_process(
            instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert not [event for event in result.all_events if event.is_step_up_for_retry]
    history = migrations.HISTORIES[store]
    assert failure.step_failure_data.user_failure_data.description == (
        f"{history.store} schema is at revision behind, the code needs revision "
        f"{migrations.code_revision(store)}. Migrate it with `python -m etl_assets.migrate {store}` "
        f"({history.migrate_url_env} set to the migration role's URL; in Kubernetes, the shop-sync-migrate "
        "Job), then rerun.")


def test_the_installed_package_ships_both_histories(tmp_path):
    """The image installs the package, not the source tree (`pip install .`, Dockerfile): the revisions,
    the env.py files and the role scripts must be in what setuptools installs."""
    repo = Path(__file__).resolve().parents[1]
    source, built = tmp_path / "src", tmp_path / "built"
    source.mkdir()
    shutil.copy(repo / "pyproject.toml", source / "pyproject.toml")
    shutil.copytree(repo / "etl_assets", source / "etl_assets", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py", "-d", str(built)],
                   cwd=source, check=True, capture_output=True, timeout=120)
    heads = subprocess.run(
        [sys.executable, "-c", "from etl_assets.migrations import code_revision as r; print(r('cart_db'), r('warehouse'))"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(built)}, capture_output=True, text=True, timeout=60)
    assert heads.stdout.split() == [migrations.code_revision("cart_db"), migrations.code_revision("warehouse")], heads.stderr
    assert {path.name for path in (built / "etl_assets" / "sql").iterdir()} == {"etl_role.sql", "warehouse_role.sql"}


def test_paid_sales_of_days_built_before_the_paid_columns_are_filled_in(unmigrated):
    """Revision 0003 adds daily_sales.paid_orders/paid_revenue and fills them from the orders already
    loaded, so the days built before it need no rebuild."""
    engine = sa.create_engine(unmigrated["WAREHOUSE_PG_MIGRATE_URL"])
    migrations.upgrade(engine, "warehouse", "0002")
    with engine.begin() as conn:
        for order_id, status, subtotal in [("o1", "paid", 10.0), ("o2", "pending", 4.0), ("o3", "paid", 2.5)]:
            conn.execute(sa.text("""
                INSERT INTO orders (order_id, user_id, order_status, payment_status, subtotal, tax, shipping,
                                    discount, total, created_at, order_day)
                VALUES (:id, 'u', 'processing', :status, :subtotal, 0, 0, 0, :subtotal, '2026-11-20T10:00Z',
                        '2026-11-20')"""), {"id": order_id, "status": status, "subtotal": subtotal})
            conn.execute(sa.text("""
                INSERT INTO order_items (order_id, line_no, order_day, product_id, product_title, quantity,
                                         unit_price, subtotal)
                VALUES (:id, 1, '2026-11-20', 'p', 'P', 1, :subtotal, :subtotal)"""),
                {"id": order_id, "subtotal": subtotal})
        conn.execute(sa.text("INSERT INTO daily_sales VALUES ('2026-11-20', 3, 3, 16.5), ('2026-11-21', 0, 0, 0)"))
    migrations.upgrade(engine, "warehouse")
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT day::text, paid_orders, paid_revenue::float8 FROM daily_sales ORDER BY day")).all() == [
            ("2026-11-20", 2, 12.5), ("2026-11-21", 0, 0.0)]
    engine.dispose()
