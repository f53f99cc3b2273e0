"""Warehouse tables that no sync has created yet, as the measurements read them."""

import subprocess
import sys
from pathlib import Path

from etl_assets.schemas.warehouse import DailySalesTable
from etl_assets.sync.products import SOURCE as PRODUCTS_SOURCE
from etl_assets.sync.reconcile.integrity import orphan_order_items
from etl_assets.sync.reconcile.quarantine import quarantine_status
from etl_assets.sync.reconcile.schema import order_tables_schema, warehouse_table_schema
from etl_assets_tests.checks.seed import execute

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_tables_no_sync_has_created_yet_are_empty_not_an_error(stores):
    execute(stores.warehouse_engine, "DROP TABLE etl_quarantine, orders, order_items, daily_sales")
    assert order_tables_schema(stores.warehouse_engine).passed
    assert warehouse_table_schema(stores.warehouse_engine, "daily_sales", DailySalesTable, ["day"]).passed
    assert orphan_order_items(stores.warehouse_engine, stores.cart_engine).passed
    assert quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, None).open == 0


_STREAM_A_WIDE_TABLE = """
import sys
import polars as pl
import sqlalchemy as sa
from dev.bench_steps import peak_rss_bytes
from etl_assets.sync.reconcile.tables import stream_table
engine = sa.create_engine(sys.argv[1])
pl.DataFrame({"id": [1], "payload": ["x"]})  # polars loaded and connected before the baseline
with engine.connect() as conn:
    conn.execute(sa.text("SELECT 1"))
before = peak_rss_bytes()
frames = stream_table(engine, "wide_rows", pl.Schema({"id": pl.Int64, "payload": pl.String}), batch_size=1000)
rows = sum(frame.height for frame in frames)
print(rows, (peak_rss_bytes() - before) // 2**20)
"""


def test_a_table_is_streamed_in_batches_not_buffered_whole(stores):
    """The checks page through tables of a million rows; a result buffered whole took the product
    copy's schema check to 1.5 GiB at 1,000,000 products. 120 MiB of rows must cost the reader far less."""
    execute(stores.cart_engine, "CREATE TABLE wide_rows AS SELECT n AS id, repeat('x', 1000) AS payload "
                                "FROM generate_series(1, 120000) AS n")
    result = subprocess.run([sys.executable, "-c", _STREAM_A_WIDE_TABLE, stores.cart_url],
                            capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    rows, growth_mib = map(int, result.stdout.split())
    assert rows == 120_000
    assert growth_mib < 40, f"reading 120 MiB of rows grew the reader by {growth_mib} MiB"
