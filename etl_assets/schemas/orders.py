"""The rules of the Order service's documents, applied after each document is flattened to rows.

An order becomes one `OrderRow` (plus a summary of its items, `FlatOrder`) and one `OrderItemRow` per
entry of `orderItems`. The flatteners have already coerced every field to the type declared here, so
each failure names one row and reads as `column: rule (value ...)`.

Money is Float64 on purpose: the Order service writes JavaScript numbers (IEEE doubles), so a double is
the source's own representation. Equalities between amounts therefore hold within a cent, and the
warehouse stores numeric(14,2).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.engines import polars_engine

CENT = 0.01
# Doubles such as 0.1 + 0.2 miss their decimal value by ~1e-16; this keeps "exactly a cent off" valid.
_FLOAT_SLACK = 1e-9
UTC_MICROSECONDS = {"time_zone": "UTC", "time_unit": "us"}
# The largest values the warehouse columns hold: numeric(14,2) for amounts, numeric(12,2) for unit prices.
MAX_AMOUNT = 999_999_999_999.99
MAX_UNIT_PRICE = 9_999_999_999.99


def within_a_cent(left: pl.Expr, right: pl.Expr) -> pl.Expr:
    return (left - right).abs() <= CENT + _FLOAT_SLACK


class OrderRow(pa.DataFrameModel):
    """One order as the warehouse keeps it (table `orders`)."""

    order_id: str = pa.Field(str_length={"min_value": 1}, unique=True, description="The document's _id.")
    order_day: polars_engine.Date = pa.Field(description="UTC day of created_at: the partition.")
    user_id: str = pa.Field(str_length={"min_value": 1})
    order_status: str = pa.Field(str_length={"min_value": 1})
    payment_status: str = pa.Field(str_length={"min_value": 1})
    subtotal: float = pa.Field(ge=0, le=MAX_AMOUNT, description="Sum of the item subtotals.")
    tax: float = pa.Field(ge=0, le=MAX_AMOUNT)
    shipping: float = pa.Field(ge=0, le=MAX_AMOUNT)
    discount: float = pa.Field(ge=0, le=MAX_AMOUNT)
    total: float = pa.Field(ge=0, le=MAX_AMOUNT, description="subtotal + tax + shipping - discount.")
    created_at: polars_engine.DateTime = pa.Field(dtype_kwargs=UTC_MICROSECONDS)
    paid_at: polars_engine.DateTime = pa.Field(nullable=True, dtype_kwargs=UTC_MICROSECONDS)

    @pa.check("total", name="equals subtotal + tax + shipping - discount within a cent")
    def total_adds_up(cls, data: pa.PolarsData) -> pl.LazyFrame:
        parts = pl.col("subtotal") + pl.col("tax") + pl.col("shipping") - pl.col("discount")
        return data.lazyframe.select(within_a_cent(pl.col("total"), parts))

    @pa.check("order_day", name="is the UTC date of created_at")
    def day_of_creation(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("order_day") == pl.col("created_at").dt.date())

    class Config:
        strict = True


class FlatOrder(OrderRow):
    """An order document flattened: its warehouse row plus what its items add up to."""

    item_count: int = pa.Field(ge=1, description="Entries in orderItems; an order sells something.")
    items_subtotal: float = pa.Field(ge=0, description="Sum of the item subtotals, as the items state them.")

    @pa.check("subtotal", name="equals the sum of the item subtotals within a cent")
    def subtotal_matches_items(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(within_a_cent(pl.col("subtotal"), pl.col("items_subtotal")))


class OrderItemRow(pa.DataFrameModel):
    """One entry of an order's `orderItems` (table `order_items`)."""

    order_id: str = pa.Field(str_length={"min_value": 1})
    line_no: int = pa.Field(ge=1, description="1-based position in orderItems.")
    order_day: polars_engine.Date = pa.Field()
    product_id: str = pa.Field(str_length={"min_value": 1})
    product_title: str = pa.Field()
    seller_id: str = pa.Field(nullable=True)
    quantity: int = pa.Field(gt=0)
    unit_price: float = pa.Field(ge=0, le=MAX_UNIT_PRICE)
    subtotal: float = pa.Field(ge=0, le=MAX_AMOUNT, description="quantity x unit_price.")

    @pa.check("subtotal", name="equals quantity x unit price within a cent")
    def subtotal_is_quantity_times_price(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(within_a_cent(pl.col("subtotal"), pl.col("quantity") * pl.col("unit_price")))

    class Config:
        strict = True
        unique = ["order_id", "line_no"]


def polars_schema(model: type[pa.DataFrameModel]) -> pl.Schema:
    """The polars dtypes a model declares, to build frames that match it exactly."""
    return pl.Schema({name: column.dtype.type for name, column in model.to_schema().columns.items()})
