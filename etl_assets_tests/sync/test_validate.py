"""Row validation: the model's rules evaluated in one query must give exactly what pandera's validate()
gives, row for row and reason for reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pandera.polars as pa
import polars as pl
import pytest
from pandera.api.polars.types import PolarsData

from etl_assets.schemas.carts import CartRow, CartSnapshot
from etl_assets.schemas.orders import FlatOrder, OrderItemRow
from etl_assets.schemas.products import SourceProduct
from etl_assets.sync.product_transform import FRAME_SCHEMA, InvalidProduct, flatten_product
from etl_assets.sync.validate import _reasons_by_validate, model_rules, split_valid
from etl_assets_tests.safety.bad_input_corpus import product_documents
from etl_assets_tests.sync.test_product_transform import TRICKY, product


def flattened_rows() -> list[dict]:
    docs = [doc for _, doc in product_documents()] + [product(n, **f) for n, f in enumerate(TRICKY, start=1)]
    rows = []
    for doc in docs:
        try:
            rows.append(flatten_product(doc))
        except InvalidProduct:
            continue
    return rows


ROWS = flattened_rows()


def assert_same_as_pandera(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> dict[int, str]:
    assert model_rules(frame, model) is not None  # the rule path, not the fallback
    valid, reasons = split_valid(frame, model)
    expected_reasons = _reasons_by_validate(frame, model)
    assert reasons == expected_reasons
    assert valid.equals(frame.filter(~pl.Series(range(frame.height)).is_in(list(expected_reasons))))
    return reasons


@pytest.mark.parametrize("position", range(len(ROWS)))
def test_each_corpus_row_gets_pandera_verdict(position):
    assert_same_as_pandera(pl.DataFrame([ROWS[position]], schema=FRAME_SCHEMA, orient="row"), SourceProduct)


def test_a_batch_with_several_failures_per_row_and_duplicates():
    rows = [*ROWS, ROWS[0], {**ROWS[1], "title": "", "price": -1.0, "category": "toys", "rating": 9.0},
            {**ROWS[2], "id": "not-hex", "quantity": -5, "seller_id": "x" * 300}]
    reasons = assert_same_as_pandera(pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row"), SourceProduct)
    assert len(reasons) > 5
    assert any(reason.count(";") >= 3 for reason in reasons.values())


def test_nan_counts_as_null_in_a_required_number():
    frame = pl.DataFrame([{**ROWS[0], "price": float("nan")}], schema=FRAME_SCHEMA, orient="row")
    assert "price: not_nullable" in assert_same_as_pandera(frame, SourceProduct)[0]


def test_cart_rows_get_pandera_verdict():
    now = datetime(2026, 11, 1, tzinfo=UTC)
    good = {"id": "0b9f5c9e-4d1a-4a57-9a35-3f6d2b8e7c11", "user_id": "u1", "product_id": "a" * 24,
            "quantity": 2, "version": 1, "created_at": now, "updated_at": now}
    rows = [good, {**good, "id": good["id"][:-1] + "2", "quantity": 0},
            {**good, "id": good["id"][:-1] + "3", "user_id": "", "product_id": "xyz", "version": -1}]
    schema = {name: dtype for name, dtype in CartRow.to_schema().dtypes.items()}
    frame = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows],
                         schema={k: v.type for k, v in schema.items()}, orient="row")
    assert set(assert_same_as_pandera(frame, CartRow)) == {1, 2}


def test_what_the_rules_do_not_model_goes_to_pandera():
    class Custom(pa.DataFrameModel):
        n: int = pa.Field(ge=0)

        @pa.check("n")
        def even(cls, data):  # noqa: N805 - pandera passes the class
            return data.lazyframe.select(pl.col(data.key) % 2 == 0)

    class Coerced(pa.DataFrameModel):
        n: int = pa.Field(ge=0, coerce=True)

    frame = pl.DataFrame({"n": [2, 3]})
    assert model_rules(frame, Custom) is None and model_rules(frame, Coerced) is None
    assert list(split_valid(frame, Custom)[1]) == [1]  # pandera's answer, custom check included
    assert model_rules(frame.cast({"n": pl.Float64}), SourceProduct) is None
    with pytest.raises(ValueError, match="as a whole"):
        split_valid(pl.DataFrame({"n": ["2"]}), Custom)


PANDERA_RECHECK = (
    "pandera changed an internal that split_valid (etl_assets/sync/validate.py) calls: a check's _check_fn, "
    "_check_kwargs or the attributes model_rules reads. Re-check model_rules against pandera's validate() "
    "(the other tests of etl_assets_tests/sync/test_validate.py), or drop the rule path and let split_valid "
    "call validate()"
)


@pytest.mark.parametrize("model", [SourceProduct, CartRow, CartSnapshot, FlatOrder, OrderItemRow],
                         ids=lambda model: model.__name__)
def test_the_pandera_internals_the_rules_call_are_unchanged(model):
    """model_rules calls each built-in check's private check function itself; a pandera upgrade that
    renames it, or changes what it takes or returns, must fail here with what to re-check."""
    for column in model.to_schema().columns.values():
        for check in column.checks:
            assert callable(getattr(check, "_check_fn", None)), PANDERA_RECHECK
            assert isinstance(getattr(check, "_check_kwargs", None), dict), PANDERA_RECHECK
            read = ("name", "error", "element_wise", "groupby", "ignore_na")
            assert all(hasattr(check, name) for name in read), PANDERA_RECHECK


def test_a_pandera_check_function_gives_one_verdict_per_row():
    frame = pl.DataFrame(ROWS[:3], schema=FRAME_SCHEMA, orient="row").lazy()
    price = SourceProduct.to_schema().columns["price"]
    for check in price.checks:
        verdict = check._check_fn(PolarsData(frame, "price"), **check._check_kwargs)
        assert isinstance(verdict, pl.LazyFrame), PANDERA_RECHECK
        assert verdict.collect_schema().dtypes() == [pl.Boolean], PANDERA_RECHECK
        assert verdict.collect().height == 3, PANDERA_RECHECK
