"""The cart funnel transform on plain polars frames, and the replace-day loaders on real stores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from etl_assets.schemas.warehouse import CartFunnelTable, DailySalesTable, ProductSalesTable
from etl_assets.sync.orders import sync_order_day
from etl_assets.sync.warehouse import (
    CART_SCHEMA,
    ORDERED_SCHEMA,
    cart_funnel,
    load_cart_funnel,
    load_daily_sales,
    load_product_sales,
)
from etl_assets_tests.sync.test_carts import PRODUCT_A, PRODUCT_B, add_cart, add_product, delete_cart
from etl_assets_tests.sync.test_orders import at, make_order

DAY = date(2025, 3, 10)
END_OF_DAY = datetime(2025, 3, 11, tzinfo=UTC)


# --- the cart funnel transform -------------------------------------------------------------------------

def carts(*rows: tuple[str, str, datetime, datetime | None]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CART_SCHEMA, orient="row")


def ordered(*rows: tuple[str, str, datetime]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ORDERED_SCHEMA, orient="row")


def funnel(cart_rows: pl.DataFrame, order_rows: pl.DataFrame, abandon_after_days: int = 3) -> dict[str, Any]:
    return cart_funnel(DAY, cart_rows, order_rows, abandon_after_days).row(0, named=True)


def test_a_cart_converts_when_its_user_orders_its_product_after_creating_it() -> None:
    created = END_OF_DAY - timedelta(days=10)
    cart_rows = carts(("u1", "p1", created, None), ("u2", "p1", created, None), ("u3", "p1", created, None),
                      ("u4", "p1", created, None))
    order_rows = ordered(
        ("u1", "p1", created),                            # at the cart's creation: converted
        ("u2", "p1", created - timedelta(days=1)),        # before the cart: not converted
        ("u3", "p2", created + timedelta(days=1)),        # another product: not converted
        ("u4", "p1", END_OF_DAY),                         # after the day: not yet converted
        ("u9", "p1", created + timedelta(days=1)),        # another user
    )
    assert funnel(cart_rows, order_rows)["converted_carts"] == 1


def test_idle_carts_are_abandoned_and_the_rest_active() -> None:
    cart_rows = carts(
        ("u1", "p1", END_OF_DAY - timedelta(days=5), None),                                  # idle 5 days
        ("u2", "p1", END_OF_DAY - timedelta(days=5), END_OF_DAY - timedelta(days=2)),        # touched 2 days ago
        ("u3", "p1", END_OF_DAY - timedelta(days=3), None),                                  # idle exactly 3 days
        ("u4", "p1", END_OF_DAY - timedelta(days=9), END_OF_DAY + timedelta(days=1)),        # touched after the day
        ("u5", "p1", END_OF_DAY, None),                                                      # created after the day
    )
    result = cart_funnel(DAY, cart_rows, ordered(), 3)
    assert result.rows() == [(DAY, 3, 1, 0, 3)]
    CartFunnelTable.validate(result)
    assert funnel(cart_rows, ordered(), abandon_after_days=1)["abandoned_carts"] == 3


def test_a_converted_cart_is_never_abandoned() -> None:
    created = END_OF_DAY - timedelta(days=30)
    row = funnel(carts(("u1", "p1", created, None)), ordered(("u1", "p1", created + timedelta(days=1))))
    assert (row["active_carts"], row["abandoned_carts"], row["converted_carts"]) == (0, 0, 1)


def test_no_carts_give_a_row_of_zeros() -> None:
    assert cart_funnel(DAY, carts(), ordered(), 3).rows() == [(DAY, 0, 0, 0, 3)]


# --- loaders on real stores ----------------------------------------------------------------------------

def table(engine: sa.Engine, query: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(query))]


@pytest.fixture
def loaded_day(stores):
    """Three valid orders on DAY, one the day before, loaded into the warehouse's orders tables."""
    stores.order_db.orders.insert_many([
        make_order(at(DAY, 1), user="u1", items=[("p1", 2, 5.0), ("p2", 1, 3.25)]),
        make_order(at(DAY, 2), user="u2", items=[("p1", 1, 5.0)], paymentStatus="pending", paidAt=None),
        make_order(at(DAY, 3), user="u3", items=[("p3", 4, 0.1)]),
        make_order(at(DAY - timedelta(days=1), 4), user="u4", items=[("p1", 9, 5.0)]),
    ])
    for day in (DAY - timedelta(days=1), DAY):
        sync_order_day(stores.order_db, stores.warehouse_engine, day, run_id="run-1")
    return stores


def test_daily_sales_replaces_its_day_and_a_rerun_is_idempotent(loaded_day) -> None:
    engine = loaded_day.warehouse_engine
    first = load_daily_sales(engine, DAY)
    assert (first.read, first.replaced) == (4, 0)
    query = "SELECT day, orders, units, revenue::float8, paid_orders, paid_revenue::float8 FROM daily_sales"
    rows = table(engine, query)
    assert rows == [(DAY, 3, 8, 18.65, 2, 13.65)]  # u2's order is not paid yet

    again = load_daily_sales(engine, DAY)
    assert again.replaced == 1
    assert table(engine, query) == rows


def test_daily_sales_counts_orders_by_their_first_line(loaded_day) -> None:
    load = load_daily_sales(loaded_day.warehouse_engine, DAY)  # u1's order has two lines
    expected = pl.DataFrame({"day": [DAY], "orders": [3], "units": [8], "revenue": [18.65], "paid_orders": [2],
                             "paid_revenue": [13.65]})
    assert_frame_equal(load.rows, expected, check_dtypes=False)
    DailySalesTable.validate(load.rows)


def test_a_day_without_orders_has_a_daily_row_of_zeros_and_no_product_rows(loaded_day) -> None:
    engine = loaded_day.warehouse_engine
    empty_day = DAY + timedelta(days=1)
    sales = load_daily_sales(engine, empty_day)
    products = load_product_sales(engine, empty_day)
    assert sales.rows.rows() == [(empty_day, 0, 0, 0.0, 0, 0.0)] and sales.read == 0
    assert products.rows.is_empty() and products.read == 0
    assert table(engine, "SELECT day, orders, revenue::float8 FROM daily_sales") == [(empty_day, 0, 0.0)]
    assert table(engine, "SELECT count(*) FROM product_sales") == [(0,)]


def test_product_sales_writes_one_row_per_product_of_the_day(loaded_day) -> None:
    engine = loaded_day.warehouse_engine
    load = load_product_sales(engine, DAY)
    assert load.read == 4 and load.rows.height == 3
    load_product_sales(engine, DAY)
    assert table(engine, "SELECT product_id, units, revenue::float8 FROM product_sales ORDER BY product_id") == [
        ("p1", 3, 15.0), ("p2", 1, 3.25), ("p3", 4, 0.4)]


def test_product_sales_sums_units_and_revenue_per_product(loaded_day) -> None:
    load = load_product_sales(loaded_day.warehouse_engine, DAY)  # p1 is in u1's and u2's orders
    assert load.rows.rows() == [(DAY, "p1", 3, 15.0), (DAY, "p2", 1, 3.25), (DAY, "p3", 4, 0.4)]
    ProductSalesTable.validate(load.rows)


def test_a_rebuild_drops_the_products_no_longer_sold_that_day(loaded_day) -> None:
    engine = loaded_day.warehouse_engine
    load_product_sales(engine, DAY)
    loaded_day.order_db.orders.delete_one({"userId": "u3"})
    sync_order_day(loaded_day.order_db, engine, DAY, run_id="run-2")

    load = load_product_sales(engine, DAY)

    assert load.replaced == 3
    assert table(engine, "SELECT product_id FROM product_sales ORDER BY product_id") == [("p1",), ("p2",)]


def test_a_rebuild_rewrites_only_the_products_whose_sales_changed(loaded_day) -> None:
    engine = loaded_day.warehouse_engine
    versions = "SELECT product_id, xmin::text FROM product_sales ORDER BY product_id"  # xmin: the writing transaction
    load_product_sales(engine, DAY)
    before = dict(table(engine, versions))
    load_product_sales(engine, DAY)
    assert dict(table(engine, versions)) == before  # nothing changed, nothing written

    loaded_day.order_db.orders.insert_one(make_order(at(DAY, 5), user="u5", items=[("p2", 1, 3.25)]))
    sync_order_day(loaded_day.order_db, engine, DAY, run_id="run-2")
    load = load_product_sales(engine, DAY)

    after = dict(table(engine, versions))
    assert [product for product in after if after[product] != before[product]] == ["p2"]
    assert load.replaced == 3
    assert table(engine, "SELECT product_id, units, revenue::float8 FROM product_sales ORDER BY product_id") == [
        ("p1", 3, 15.0), ("p2", 2, 6.5), ("p3", 4, 0.4)]


def test_product_ids_with_csv_characters_are_kept_as_they_are(stores) -> None:
    odd = ['a,"b"\nc', "\\N", " 42 "]
    stores.order_db.orders.insert_one(make_order(at(DAY, 1), items=[(product, 1, 1.0) for product in odd]))
    sync_order_day(stores.order_db, stores.warehouse_engine, DAY, run_id="run-1")
    load = load_product_sales(stores.warehouse_engine, DAY)
    written = [product for (product,) in table(stores.warehouse_engine, "SELECT product_id FROM product_sales")]
    assert sorted(load.rows["product_id"].to_list()) == sorted(written) == sorted(odd)


def test_money_adds_up_to_exact_cents(stores) -> None:
    # 0.1 + 0.2 is 0.30000000000000004 in floating point.
    stores.order_db.orders.insert_many([make_order(at(DAY, hour), items=[("p1", 1, price)])
                                        for hour, price in ((1, 0.1), (2, 0.2))])
    sync_order_day(stores.order_db, stores.warehouse_engine, DAY, run_id="run-1")
    sales = load_daily_sales(stores.warehouse_engine, DAY)
    products = load_product_sales(stores.warehouse_engine, DAY)
    assert (sales.rows["revenue"].item(), sales.rows["paid_revenue"].item()) == (0.3, 0.3)
    assert products.rows["revenue"].to_list() == [0.3]


def add_funnel_carts(engine: sa.Engine, *carts: tuple[str, str, datetime | str, datetime | str | None]) -> None:
    """Cart rows (user, product, created_at, updated_at; updated_at defaults to created_at), whatever their
    product: the foreign key is bypassed as for legacy rows."""
    for user, product, created, updated in carts:
        add_cart(engine, product, user_id=user, created_at=created,
                 updated_at=created if updated is None else updated, bypass_foreign_key=True)


def test_the_cart_funnel_reads_carts_and_the_warehouse_orders(loaded_day) -> None:
    old = END_OF_DAY - timedelta(days=10)
    add_funnel_carts(
        loaded_day.cart_engine,
        ("u1", "p1", old, old),                                 # converted
        ("u4", "p1", old, old),                                 # converted earlier
        ("u5", "p1", old, old),                                 # abandoned
        ("u6", "p2", old, END_OF_DAY - timedelta(hours=1)),     # active
        ("u7", "p2", END_OF_DAY, None),                         # after the day
        ("u8", "p2", "-infinity", None),                        # a creation date the funnel cannot read
    )
    engine = loaded_day.warehouse_engine
    load = load_cart_funnel(loaded_day.cart_engine, engine, DAY, batch_size=2)
    assert (load.read, load.skipped) == (5, 1)
    assert table(engine, "SELECT * FROM cart_funnel") == [(DAY, 1, 1, 2, 3)]

    load_cart_funnel(loaded_day.cart_engine, engine, DAY, abandon_after_days=30)
    assert table(engine, "SELECT * FROM cart_funnel") == [(DAY, 2, 0, 2, 30)]


def test_an_order_after_the_day_converts_its_cart_on_the_next_day_only(loaded_day) -> None:
    old = END_OF_DAY - timedelta(days=10)
    add_funnel_carts(loaded_day.cart_engine, ("u5", "p1", old, old))
    next_day = DAY + timedelta(days=1)
    loaded_day.order_db.orders.insert_one(make_order(at(next_day, 1), user="u5", items=[("p1", 1, 5.0)]))
    engine = loaded_day.warehouse_engine
    sync_order_day(loaded_day.order_db, engine, next_day, run_id="run-2")

    funnels = [load_cart_funnel(loaded_day.cart_engine, engine, day).rows.row(0) for day in (DAY, next_day)]

    assert funnels == [(DAY, 0, 1, 0, 3), (next_day, 0, 0, 1, 3)]


def test_the_cart_funnel_leaves_out_carts_deleted_from_the_cart_database(stores) -> None:
    add_product(stores.cart_engine, PRODUCT_A)
    add_cart(stores.cart_engine, PRODUCT_A)
    deleted = add_cart(stores.cart_engine, PRODUCT_A)
    today = datetime.now(UTC).date()
    assert load_cart_funnel(stores.cart_engine, stores.warehouse_engine, today).rows["active_carts"].to_list() == [2]
    delete_cart(stores.cart_engine, deleted)

    load = load_cart_funnel(stores.cart_engine, stores.warehouse_engine, today)

    assert load.read == 1
    assert table(stores.warehouse_engine, "SELECT * FROM cart_funnel") == [(today, 1, 0, 0, 3)]


def test_the_cart_funnel_counts_every_cart_row_without_waiting_for_its_snapshot(stores) -> None:
    add_product(stores.cart_engine, PRODUCT_A)
    add_product(stores.cart_engine, PRODUCT_B, active=False)
    add_cart(stores.cart_engine, PRODUCT_A)
    add_cart(stores.cart_engine, PRODUCT_B)  # its product is inactive: the cart sync quarantines it
    add_cart(stores.cart_engine, "c" * 24, bypass_foreign_key=True)  # no such product
    today = datetime.now(UTC).date()

    load = load_cart_funnel(stores.cart_engine, stores.warehouse_engine, today)

    assert stores.order_db.carts.count_documents({}) == 0  # no cart sync ran
    assert (load.read, load.skipped) == (3, 0)
    assert table(stores.warehouse_engine, "SELECT * FROM cart_funnel") == [(today, 3, 0, 0, 3)]


def test_the_idle_threshold_must_be_at_least_a_day(stores) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        load_cart_funnel(stores.cart_engine, stores.warehouse_engine, DAY, abandon_after_days=0)
