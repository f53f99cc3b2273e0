"""Bulk writes to PostgreSQL: polars frames sent with COPY … FROM STDIN as CSV."""

from __future__ import annotations

import io
from typing import Any

import polars as pl

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
