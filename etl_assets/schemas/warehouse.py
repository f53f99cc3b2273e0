"""One model per warehouse analytics table: what the loaders write and the asset checks verify.

Frames read back from a table match these dtypes when the query casts numeric to float8 and
integer to bigint (see etl_assets/sync/warehouse.py).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.engines import polars_engine

from etl_assets.schemas.orders import OrderItemRow, OrderRow


class OrdersTable(OrderRow):
    """Table `orders`: the valid orders, one row each, keyed by order_id."""


class OrderItemsTable(OrderItemRow):
    """Table `order_items`: the lines of the valid orders, keyed by (order_id, line_no)."""


class DailySalesTable(pa.DataFrameModel):
    """Table `daily_sales`: one row per day, zero counts included, from the day's order items."""

    day: polars_engine.Date = pa.Field(unique=True)
    orders: int = pa.Field(ge=0, description="Orders created that day (all statuses).")
    units: int = pa.Field(ge=0, description="Sum of item quantities.")
    revenue: float = pa.Field(ge=0, description="Sum of item subtotals, before tax, shipping and discount.")
    paid_orders: int = pa.Field(ge=0, description="Orders of the day whose payment status is now `paid`.")
    paid_revenue: float = pa.Field(ge=0, description="Sum of the item subtotals of those paid orders.")

    @pa.check("units", name="at least one unit per order")
    def units_cover_orders(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("units") >= pl.col("orders"))

    @pa.check("paid_orders", name="paid orders are orders of the day")
    def paid_within_orders(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("paid_orders") <= pl.col("orders"))

    @pa.check("paid_revenue", name="paid revenue is part of the revenue")
    def paid_within_revenue(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("paid_revenue") <= pl.col("revenue"))

    class Config:
        strict = True


class ProductSalesTable(pa.DataFrameModel):
    """Table `product_sales`: one row per product sold on a day."""

    day: polars_engine.Date = pa.Field()
    product_id: str = pa.Field(str_length={"min_value": 1})
    units: int = pa.Field(gt=0)
    revenue: float = pa.Field(ge=0, description="Sum of the product's item subtotals that day.")

    class Config:
        strict = True
        unique = ["day", "product_id"]


class CartFunnelTable(pa.DataFrameModel):
    """Table `cart_funnel`: the carts that exist at the end of a day, in three disjoint states."""

    day: polars_engine.Date = pa.Field(unique=True)
    active_carts: int = pa.Field(ge=0, description="Neither converted nor abandoned.")
    abandoned_carts: int = pa.Field(ge=0, description="Not converted and idle longer than abandon_after_days.")
    converted_carts: int = pa.Field(
        ge=0, description="The user ordered the product at or after the cart was created."
    )
    abandon_after_days: int = pa.Field(ge=1, description="The idle threshold the row was computed with.")

    class Config:
        strict = True
