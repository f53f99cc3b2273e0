"""Row-by-row validation of a batch against a pandera model: valid rows go on, the rest get a reason.

The rules live in the pandera models (etl_assets/schemas/). pandera's validate() runs a few queries
per rule, a fixed cost per batch whatever it holds. So split_valid reads the model's rules (columns,
dtypes, nulls, uniqueness, and pandera's own check functions) and evaluates them all in one polars
query, with the reasons pandera would give. A rule it does not model (coercion, a custom, element-wise
or dataframe-level check) sends the batch to validate() itself.

A performance path; validate() is the simple one. Measured with dev/fast_paths.py (full syncs of
200,000 products, each fast path swapped for its simple path in turn; docs/benchmark.md, "Fast paths"):
it saves the product sync 0.33 CPU-seconds cold and 0.50 warm, 5.4% and 5.8% of a full sync's wall
time on a quiet machine: the smallest of the three fast paths, just over the 5% that keeps one. The
tests that it gives validate()'s verdicts and reasons: etl_assets_tests/sync/test_validate.py::
test_each_corpus_row_gets_pandera_verdict and test_a_batch_with_several_failures_per_row_and_duplicates.
It calls pandera internals (a check's _check_fn and _check_kwargs):
test_the_pandera_internals_the_rules_call_are_unchanged and
test_a_pandera_check_function_gives_one_verdict_per_row fail, naming what to re-check, when pandera
changes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.backends.polars.builtin_checks  # noqa: F401 - registers the check functions the rules call
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.engines import polars_engine

ROW = "__row"
# pandera's built-in column checks: each turns a column into one boolean per row.
ROW_CHECKS = frozenset({
    "equal_to", "not_equal_to", "greater_than", "greater_than_or_equal_to", "less_than",
    "less_than_or_equal_to", "in_range", "isin", "notin", "str_matches", "str_contains", "str_startswith",
    "str_endswith", "str_length",
})


@dataclass(frozen=True)
class Rule:
    """One rule of a model as pandera names it in failure cases, and its verdict per row."""

    column: str
    check: str
    verdict: pl.LazyFrame  # one boolean column, one row per frame row


def model_rules(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> list[Rule] | None:
    """The model's rules over `frame`, in the order pandera checks them; None if the model has a rule
    this does not model, or if `frame` fails it as a whole (a missing column, a wrong dtype)."""
    schema = model.to_schema()
    if schema.checks or schema.coerce or schema.unique or schema.strict not in (True, False):
        return None
    if schema.strict and set(frame.columns) - set(schema.columns):
        return None
    lazy, rules = frame.lazy(), []
    for name, column in schema.columns.items():
        if name not in frame.columns or column.regex or column.coerce:
            return None
        if column.dtype is not None and not column.dtype.check(polars_engine.Engine.dtype(frame.schema[name])):
            return None
        values = pl.col(name)
        if not column.nullable:
            present = values.is_not_null()
            if frame.schema[name].is_float():  # pandera counts NaN as null
                present &= values.is_not_nan()
            rules.append(Rule(name, "not_nullable", lazy.select(present)))
        if column.unique:
            rules.append(Rule(name, "field_uniqueness", lazy.select(~values.is_duplicated())))
        for check in column.checks:
            if check.name not in ROW_CHECKS or check.element_wise or check.groupby is not None:
                return None
            checked = check._check_fn(PolarsData(lazy, name), **check._check_kwargs)
            result = pl.col(checked.collect_schema().names()[0])
            verdict = (result | result.is_null()) if check.ignore_na else result.fill_null(False)
            rules.append(Rule(name, check.error, checked.select(verdict)))
    return rules


def split_valid(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> tuple[pl.DataFrame, dict[int, str]]:
    """Validate every row of `frame` and return (valid rows, {row position: reason}).

    Reasons read like pandera's failure cases: `column: check (value)`, each failed rule of a row in
    the order pandera checks them. Field types must already be coerced (a wrong dtype fails a whole
    column with no row index); the flatteners do that.
    """
    if frame.is_empty():
        return frame, {}
    rules = model_rules(frame, model)
    reasons = _reasons_by_validate(frame, model) if rules is None else _reasons_by_rules(frame, rules)
    if not reasons:
        return frame, {}
    return frame.with_row_index(ROW).filter(~pl.col(ROW).is_in(list(reasons))).drop(ROW), reasons


def _reasons_by_rules(frame: pl.DataFrame, rules: list[Rule]) -> dict[int, str]:
    verdicts = pl.concat([rule.verdict.select(pl.all().alias(str(n))) for n, rule in enumerate(rules)],
                         how="horizontal").collect()
    failing = verdicts.with_row_index(ROW).filter(~pl.all_horizontal(pl.exclude(ROW)))
    reasons: dict[int, str] = {}
    for row in failing.iter_rows():
        position, passed = row[0], row[1:]
        reasons[position] = "; ".join(
            _reason(rule.column, rule.check, _as_text(frame[rule.column], position))
            for rule, ok in zip(rules, passed, strict=True) if not ok)
    return reasons


def _reasons_by_validate(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> dict[int, str]:
    try:
        model.validate(frame, lazy=True)
        return {}
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    if cases["index"].null_count():
        column_level = cases.filter(pl.col("index").is_null())
        raise ValueError(f"batch failed {model.__name__} as a whole: {column_level.rows(named=True)[:5]}")
    reasons: dict[int, str] = {}
    for case in cases.sort("index").iter_rows(named=True):
        text = _reason(case["column"], case["check"], case["failure_case"])
        index = int(case["index"])
        reasons[index] = f"{reasons[index]}; {text}" if index in reasons else text
    return reasons


def _as_text(values: pl.Series, position: int) -> object:
    """A failing value as pandera reports it: as text where polars can cast it, else as it is."""
    try:
        return values[position:position + 1].cast(pl.String)[0]
    except pl.exceptions.InvalidOperationError:
        return values[position]


def _reason(column: str, check: str, value: object) -> str:
    return f"{column}: {check} (value {short_repr(value)})"


def short_repr(value: object, limit: int = 80) -> str:
    """A value as it reads in a reason, cut at `limit` characters with its full length noted."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
