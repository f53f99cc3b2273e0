"""Warehouse tables that no sync has created yet, as the measurements read them."""

from etl_assets.schemas.warehouse import DailySalesTable
from etl_assets.sync.products import SOURCE as PRODUCTS_SOURCE
from etl_assets.sync.reconcile.integrity import orphan_order_items
from etl_assets.sync.reconcile.quarantine import quarantine_status
from etl_assets.sync.reconcile.schema import order_tables_schema, warehouse_table_schema
from etl_assets_tests.checks.seed import execute


def test_tables_no_sync_has_created_yet_are_empty_not_an_error(stores):
    execute(stores.warehouse_engine, "DROP TABLE etl_quarantine, orders, order_items, daily_sales")
    assert order_tables_schema(stores.warehouse_engine).passed
    assert warehouse_table_schema(stores.warehouse_engine, "daily_sales", DailySalesTable, ["day"]).passed
    assert orphan_order_items(stores.warehouse_engine, stores.cart_engine).passed
    assert quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, None).open == 0
