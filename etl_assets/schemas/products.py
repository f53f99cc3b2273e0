"""Rules for products: source documents after flattening, and the cart database's copy."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

CATEGORIES = ["phone", "earphone", "book", "fashions", "other"]
MAX_PRICE = 9_999_999_999.99  # numeric(12,2)
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


class SourceProduct(pa.DataFrameModel):
    """A Product MongoDB document, flattened and type-coerced, ready for the cart database."""

    id: str = pa.Field(unique=True, str_matches=r"^[0-9a-f]{24}$")
    title: str = pa.Field(str_length={"min_value": 1, "max_value": 1_000}, str_matches=NO_NUL)
    image: str = pa.Field(str_length={"min_value": 1, "max_value": 2_048}, str_matches=NO_NUL)
    price: float = pa.Field(ge=0, le=MAX_PRICE)
    seller_id: str = pa.Field(nullable=True, str_length={"max_value": 200}, str_matches=NO_NUL)
    category: str = pa.Field(isin=CATEGORIES)
    description: str = pa.Field(nullable=True, str_length={"max_value": 100_000}, str_matches=NO_NUL)
    rating: float = pa.Field(ge=0, le=5)
    quantity: int = pa.Field(ge=0, le=2_147_483_647)
    tags_json: str = pa.Field(str_length={"max_value": 10_000}, str_matches=NO_NUL)
    source_updated_at: pl.Datetime(time_zone="UTC") = pa.Field(nullable=True)  # type: ignore[valid-type]

    class Config:
        strict = True


class CartDbProduct(pa.DataFrameModel):
    """A row of the cart database's `product` table."""

    id: str = pa.Field(unique=True, str_matches=r"^[0-9a-f]{24}$")
    title: str = pa.Field(str_length={"min_value": 1, "max_value": 1_000})
    image: str = pa.Field(str_length={"min_value": 1, "max_value": 2_048})
    price: float = pa.Field(ge=0, le=MAX_PRICE)
    quantity: int = pa.Field(ge=0)
    category: str = pa.Field(isin=CATEGORIES)
    content_hash: str = pa.Field(str_matches=r"^[0-9a-f]{32}$")
    is_active: bool
    synced_at: pl.Datetime(time_zone="UTC")  # type: ignore[valid-type]

    class Config:
        strict = False
