"""Rules for carts: rows of the cart database's `cart` table, and the Order MongoDB `carts` snapshots.

Money in a snapshot is a BSON double rounded to 2 decimal places (`productPrice`, `total`); the sync
computes `total` with Decimal, so the float is the nearest double to an exact 2 dp amount.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from etl_assets.schemas.products import MAX_PRICE

UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
PRODUCT_ID = r"^[0-9a-f]{24}$"
INT4_MAX = 2_147_483_647
# Half a cent: a stored total may differ from price × quantity by float rounding, never by more.
TOTAL_TOLERANCE = 0.005


class CartRow(pa.DataFrameModel):
    """A row of the cart database's `cart` table. `quantity` has no CHECK there: this is the rule."""

    id: str = pa.Field(unique=True, str_matches=UUID)
    user_id: str = pa.Field(str_length={"min_value": 1, "max_value": 200})
    product_id: str = pa.Field(str_matches=PRODUCT_ID)
    quantity: int = pa.Field(ge=1, le=INT4_MAX)
    version: int = pa.Field(ge=1, le=INT4_MAX)
    created_at: pl.Datetime(time_zone="UTC")  # type: ignore[valid-type]
    updated_at: pl.Datetime(time_zone="UTC")  # type: ignore[valid-type]

    class Config:
        strict = False


class CartSnapshot(pa.DataFrameModel):
    """An Order MongoDB `carts` document, flattened: the cart joined with its (active) product."""

    cartId: str = pa.Field(unique=True, str_matches=UUID)
    userId: str = pa.Field(str_length={"min_value": 1, "max_value": 200})
    productId: str = pa.Field(str_matches=PRODUCT_ID)
    productTitle: str = pa.Field(str_length={"min_value": 1, "max_value": 1_000})
    productPrice: float = pa.Field(ge=0, le=MAX_PRICE)
    productImage: str = pa.Field(str_length={"min_value": 1, "max_value": 2_048})
    sellerId: str = pa.Field(nullable=True)
    productQuantity: int = pa.Field(ge=0)
    cartQuantity: int = pa.Field(ge=1, le=INT4_MAX)
    total: float = pa.Field(ge=0)
    version: int = pa.Field(ge=1, le=INT4_MAX)
    createdAt: pl.Datetime(time_zone="UTC")  # type: ignore[valid-type]
    updatedAt: pl.Datetime(time_zone="UTC")  # type: ignore[valid-type]

    class Config:
        strict = False

    @pa.dataframe_check(name="total = productPrice × cartQuantity")
    def total_is_price_times_quantity(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("total") - pl.col("productPrice") * pl.col("cartQuantity")).abs() < TOTAL_TOLERANCE
        )
