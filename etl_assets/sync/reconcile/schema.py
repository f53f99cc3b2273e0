"""Stored rows and documents against their pandera models: the product copy, the carts and their
snapshots, the warehouse's order tables and daily analytics tables."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandera.polars as pa
import polars as pl
from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.schemas.carts import CartRow, CartSnapshot
from etl_assets.schemas.orders import polars_schema
from etl_assets.schemas.products import CartDbProduct
from etl_assets.schemas.warehouse import OrderItemsTable, OrdersTable
from etl_assets.sync import carts as cart_sync
from etl_assets.sync.reconcile.findings import SAMPLE_SIZE, UNREPORTED, Finding, Sample, reported
from etl_assets.sync.reconcile.tables import (
    BATCH_SIZE,
    DayRange,
    day_condition,
    day_scope,
    stream_table,
    table_exists,
)
from etl_assets.sync.streams import batched, read_ahead
from etl_assets.sync.validate import split_valid


@dataclass
class SchemaReport(Finding):
    """Stored rows checked against their pandera model(s)."""

    checked: dict[str, int] = field(default_factory=dict)
    invalid: Sample = field(default_factory=Sample, metadata=UNREPORTED)
    reasons: list[str] = field(default_factory=list, metadata=reported("sample_reasons"))
    scope: str = "all rows"

    @property
    def failing(self) -> int:
        return self.invalid.count

    @property
    def sample_ids(self) -> list[str]:
        return self.invalid.ids

    def reject(self, record_ids: Sequence[str], reasons: Sequence[str]) -> None:
        room = SAMPLE_SIZE - len(self.reasons)
        self.reasons.extend(f"{i}: {r}" for i, r in zip(record_ids[:room], reasons[:room], strict=True))
        self.invalid.add(record_ids)

    def validate(self, name: str, frames: Iterable[pl.DataFrame], model: type[pa.DataFrameModel],
                 key: pl.Expr) -> SchemaReport:
        """Validate each frame with `model`; `key` names a row in the sample (e.g. the id column)."""
        for frame in frames:
            self.checked[name] = self.checked.get(name, 0) + frame.height
            _, reasons = split_valid(frame, model)
            if reasons:
                keys = frame.select(key.cast(pl.String)).to_series()
                positions = sorted(reasons)
                self.reject([keys[p] for p in positions], [reasons[p] for p in positions])
        self.checked.setdefault(name, 0)
        return self


def product_copy_schema(cart_db: Engine, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """Every row of Cart PostgreSQL `product` against CartDbProduct."""
    frames = stream_table(cart_db, "product", polars_schema(CartDbProduct), batch_size=batch_size)
    return SchemaReport().validate("product", frames, CartDbProduct, pl.col("id"))


def cart_rows_schema(cart_db: Engine, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """Every row of Cart PostgreSQL `cart` against CartRow (the rows the cart sync would quarantine)."""
    frames = stream_table(cart_db, "cart", polars_schema(CartRow), batch_size=batch_size)
    return SchemaReport().validate("cart", frames, CartRow, pl.col("id"))


def _python_value(value: Any, dtype: pl.DataType) -> Any:
    """A BSON value as the polars type wants it, or TypeError when it is of another type."""
    if value is None:
        return None
    if isinstance(dtype, pl.Datetime):
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
    elif dtype == pl.String:
        if isinstance(value, str):
            return value
    elif not isinstance(value, bool):
        if dtype == pl.Int64 and isinstance(value, int):
            return value
        if dtype == pl.Float64 and isinstance(value, int | float):
            return float(value)
    raise TypeError(f"expected {dtype}, got {type(value).__name__} {value!r:.60}")


def _snapshot_frames(docs: Iterable[list[dict]], report: SchemaReport) -> Iterator[pl.DataFrame]:
    """Snapshot documents as CartSnapshot frames. A document with a field of the wrong type cannot be
    a row; it is rejected here with the field's name."""
    schema = polars_schema(CartSnapshot)
    for batch in docs:
        rows = []
        for doc in batch:
            row, problems = {}, []
            for name, dtype in schema.items():
                try:
                    row[name] = _python_value(doc.get(name), dtype)
                except TypeError as err:
                    problems.append(f"{name}: {err}")
            if problems:
                report.checked["carts"] = report.checked.get("carts", 0) + 1
                report.reject([str(doc.get("cartId", doc.get("_id")))], ["; ".join(problems)])
            else:
                rows.append(row)
        yield pl.DataFrame(rows, schema=schema, orient="row")


def cart_snapshot_schema(order_db: Database, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """Every live Order MongoDB `carts` document (not marked deleted) against CartSnapshot, total = price ×
    quantity included."""
    report = SchemaReport()
    # Batches are fetched on a thread while this one checks the last.
    live = order_db[cart_sync.COLLECTION].find(cart_sync.LIVE, batch_size=batch_size)
    docs = read_ahead(batched(live, batch_size))
    return report.validate("carts", _snapshot_frames(docs, report), CartSnapshot, pl.col("cartId"))


def _validate_days(report: SchemaReport, warehouse: Engine, table: str, model: type[pa.DataFrameModel],
                   key: pl.Expr, day_column: str, days: DayRange | None, batch_size: int) -> SchemaReport:
    """A warehouse table's rows of `days` (or all) into `report`; a table no sync has created yet is empty."""
    with warehouse.connect() as conn:
        if not table_exists(conn, table):
            return report
    condition, params = day_condition(day_column, days)
    frames = stream_table(warehouse, table, polars_schema(model), where=f"WHERE {condition}", params=params,
                          batch_size=batch_size)
    return report.validate(table, frames, model, key)


def order_tables_schema(warehouse: Engine, days: DayRange | None = None, *,
                        batch_size: int = BATCH_SIZE) -> SchemaReport:
    """The warehouse's `orders` and `order_items` rows (of `days`, or all) against their models."""
    report = SchemaReport(scope=day_scope(days))
    _validate_days(report, warehouse, "orders", OrdersTable, pl.col("order_id"), "order_day", days, batch_size)
    item_key = pl.concat_str([pl.col("order_id"), pl.col("line_no").cast(pl.String)], separator="#")
    return _validate_days(report, warehouse, "order_items", OrderItemsTable, item_key, "order_day", days, batch_size)


def warehouse_table_schema(warehouse: Engine, table: str, model: type[pa.DataFrameModel], key: Sequence[str],
                           days: DayRange | None = None, *, batch_size: int = BATCH_SIZE) -> SchemaReport:
    """A daily analytics table's rows (of `days`, or all) against its model; `key` names a row ("a/b")."""
    key_expr = pl.concat_str([pl.col(column).cast(pl.String) for column in key], separator="/")
    return _validate_days(SchemaReport(scope=day_scope(days)), warehouse, table, model, key_expr, "day", days,
                          batch_size)
