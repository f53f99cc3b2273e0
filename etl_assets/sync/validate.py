"""Row-by-row validation of a batch against a pandera model: valid rows go on, the rest get a reason."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

ROW = "__row"


def split_valid(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> tuple[pl.DataFrame, dict[int, str]]:
    """Validate every row of `frame` and return (valid rows, {row position: reason}).

    Reasons read like pandera's failure cases: `column: check (value)`. Field types must already be
    coerced (a wrong dtype fails a whole column with no row index); the flatteners do that.
    """
    if frame.is_empty():
        return frame, {}
    try:
        model.validate(frame, lazy=True)
        return frame, {}
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    if cases["index"].null_count():
        column_level = cases.filter(pl.col("index").is_null())
        raise ValueError(f"batch failed {model.__name__} as a whole: {column_level.rows(named=True)[:5]}")
    reasons: dict[int, str] = {}
    for case in cases.sort("index").iter_rows(named=True):
        text = f"{case['column']}: {case['check']} (value {short_repr(case['failure_case'])})"
        index = int(case["index"])
        reasons[index] = f"{reasons[index]}; {text}" if index in reasons else text
    valid = frame.with_row_index(ROW).filter(~pl.col(ROW).is_in(list(reasons))).drop(ROW)
    return valid, reasons


def short_repr(value: object, limit: int = 80) -> str:
    """A value as it reads in a reason, cut at `limit` characters with its full length noted."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
