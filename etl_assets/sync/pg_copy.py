"""Bulk reads and writes of polars frames in PostgreSQL: COPY … TO STDOUT and FROM STDIN as CSV."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import polars as pl
from psycopg2.sql import Composable

COPY_NULL = "\\N"
CSV_OPTIONS = f"(FORMAT csv, NULL '{COPY_NULL}')"  # what csv_rows writes


def csv_rows(frame: pl.DataFrame) -> io.BytesIO:
    """The frame's rows as CSV (polars writes it off the GIL): strings quoted, NULL as an unquoted \\N,
    floats with two decimals."""
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, quote_style="non_numeric", null_value=COPY_NULL,
                    float_precision=2)
    return buffer


def copy_rows(cursor: Any, statement: str, rows: io.BytesIO) -> None:
    """Run `statement` (a COPY … FROM STDIN WITH CSV_OPTIONS) over `rows`, sent in one piece: psycopg2
    would otherwise read the buffer 8 KiB at a time, taking the GIL for each."""
    rows.seek(0)
    cursor.copy_expert(statement, rows, size=max(rows.getbuffer().nbytes, 1))


def copy_frame(cursor: Any, statement: str, frame: pl.DataFrame) -> None:
    copy_rows(cursor, statement, csv_rows(frame))


def read_frame(cursor: Any, query: str | Composable, params: Mapping[str, Any], schema: pl.Schema) -> pl.DataFrame:
    """The rows of `query` (psycopg2 placeholders, bound by the driver) as a frame of `schema`, in column
    order, read through COPY … TO STDOUT as CSV: no Python object per value."""
    buffer = io.BytesIO()
    cursor.copy_expert(b"COPY (" + cursor.mogrify(query, params) + b") TO STDOUT WITH (FORMAT csv)", buffer)
    buffer.seek(0)
    return pl.read_csv(buffer, has_header=False, schema=schema, raise_if_empty=False)
