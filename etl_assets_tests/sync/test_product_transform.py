"""The product transform: its columnar path must give exactly what the exact path gives, document for
document, including on every widening pymongoarrow does (bools and integers read as numbers, any
value read as an empty list)."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime

import bson
import polars as pl
import pyarrow as pa
import pytest
from bson import Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS
from bson.son import SON
from pymongoarrow.context import PyMongoArrowContext
from pymongoarrow.schema import Schema
from pymongoarrow.types import ObjectIdType

from etl_assets.schemas.products import SourceProduct
from etl_assets.sync.product_transform import (
    CODEC,
    FRAME_SCHEMA,
    InvalidProduct,
    content_hashes,
    flatten_product,
    record_id,
    row_hashes,
    transform_batch,
)
from etl_assets.sync.validate import split_valid
from etl_assets_tests.safety.bad_input_corpus import product_documents

MISSING = object()


def product(n: int, **fields) -> dict:
    doc = {
        "_id": ObjectId(f"{n:024x}"), "title": f"Product {n}", "image": f"https://img.example/{n}.png",
        "price": 10.25, "sellerId": ObjectId(f"{n + 1:024x}"), "category": "book", "description": "d",
        "rating": 4.5, "quantity": 3, "tags": ["a", "b"], "updatedAt": datetime(2026, 11, 1, tzinfo=UTC),
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not MISSING}


TRICKY = [
    {}, {"price": 10}, {"price": Int64(12)}, {"price": True}, {"price": 1.005}, {"price": 0.1 + 0.2},
    {"price": float("nan")}, {"price": float("inf")}, {"price": Decimal128("3.5")}, {"price": "3.5"},
    {"price": -1.5}, {"price": 2**60}, {"rating": False}, {"rating": 4.25}, {"rating": 7},
    {"quantity": 3.0}, {"quantity": 2.5}, {"quantity": True}, {"quantity": Int64(2**53 + 1)},
    {"quantity": -2}, {"quantity": 1e20}, {"quantity": "3"}, {"quantity": MISSING}, {"rating": MISSING},
    {"tags": []}, {"tags": "abc"}, {"tags": {"a": "b"}}, {"tags": 5}, {"tags": None}, {"tags": MISSING},
    {"tags": ["a", 1]}, {"tags": [["a"]]}, {"tags": [None]}, {"tags": ['say "hi"']}, {"tags": ["back\\slash"]},
    {"tags": ["line\nbreak"]}, {"tags": ["nul\x00"]}, {"tags": ["emoji 🎧", "日本語"]},
    {"tags": "abc", "meta": {"tags": []}}, {"tags": [], "xtags": 1}, {"tags": "x", "note": "tags\x00"},
    {"sellerId": "legacy-7"}, {"sellerId": 7}, {"sellerId": None}, {"sellerId": MISSING},
    {"updatedAt": MISSING}, {"updatedAt": "2026-01-01"}, {"updatedAt": None},
    {"description": MISSING}, {"description": 5}, {"description": ""}, {"title": ""}, {"title": 5},
    {"title": "nul\x00inside"}, {"category": MISSING}, {"category": "toys"}, {"_id": "plain-string"},
    {"_id": 42}, {"image": ["i"]}, {"extra": {"nested": [1, 2]}},
]


def exact_transform(docs: list[dict]) -> tuple[pl.DataFrame, dict[str, str]]:
    """What every document gets from the exact path alone."""
    rows, reasons = [], {}
    for doc in docs:
        try:
            rows.append(flatten_product(doc))
        except InvalidProduct as err:
            reasons[record_id(doc)] = str(err)
    frame = pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row")
    valid, failures = split_valid(frame, SourceProduct)
    for position, reason in failures.items():
        reasons[rows[position]["id"]] = reason
    return valid.with_columns(content_hashes(valid)), reasons


def assert_paths_agree(docs: list[dict]) -> int:
    """Returns how many documents took the columnar path."""
    documents = [bson.encode(doc) for doc in docs]
    batch = transform_batch(documents)
    # What a MongoDB server hands back: the same bytes, decoded as the sync decodes them.
    decoded = [bson.decode(document, codec_options=CODEC) for document in documents]
    expected_valid, expected_reasons = exact_transform(decoded)
    assert batch.read == len(docs)
    assert batch.valid.sort("id").to_dicts() == expected_valid.sort("id").to_dicts()
    assert {r.record_id: r.reason for r in batch.rejections} == expected_reasons
    assert len(batch.valid) + len(batch.rejections) == len(docs)
    return batch.columnar


@pytest.mark.parametrize("fields", TRICKY, ids=[repr(f)[:60] for f in TRICKY])
def test_columnar_path_agrees_with_exact_path_on_each_tricky_document(fields):
    # Among clean neighbours, so the columnar path runs and the odd one out must be told apart.
    assert assert_paths_agree([product(1), product(2, **fields), product(3)]) >= 2


def test_columnar_path_agrees_on_a_batch_of_everything():
    assert assert_paths_agree([product(n, **fields) for n, fields in enumerate(TRICKY, start=10)]) > 5


def test_columnar_path_agrees_on_the_bad_input_corpus():
    assert assert_paths_agree([doc for _, doc in product_documents()]) > 0


def test_duplicate_ids_are_rejected_on_both_paths():
    batch = transform_batch([bson.encode(product(1, **f)) for f in ({}, {"updatedAt": MISSING})])
    assert batch.valid.is_empty()
    assert [r.record_id for r in batch.rejections] == [f"{1:024x}"] * 2


def test_key_order_does_not_matter():
    doc = product(1)
    reordered = SON(reversed(list(doc.items())))
    assert assert_paths_agree([doc, {**reordered, "_id": ObjectId(f"{2:024x}")}]) == 2


def test_watermark_is_the_latest_date_among_all_documents_valid_or_not():
    late = datetime(2027, 1, 1, tzinfo=UTC)
    batch = transform_batch([bson.encode(d) for d in (product(1), product(2, price="x", updatedAt=late))])
    assert batch.max_updated_at == late


def test_dates_beyond_python_are_quarantined_and_do_not_sink_their_batch():
    # BSON dates span ±290 million years; Python's stop at years 1 and 9999. (secantusdb refuses to store
    # such dates, so this is shown on raw BSON, as a real MongoDB would send it.)
    first_ms, last_ms = (int(DatetimeMS(d.replace(tzinfo=UTC))) for d in (datetime.min, datetime.max))
    dates = [DatetimeMS(last_ms + 1), DatetimeMS(first_ms - 1), DatetimeMS(last_ms), DatetimeMS(first_ms)]
    batch = transform_batch([bson.encode(product(n, updatedAt=date)) for n, date in enumerate(dates)])
    assert [(r.record_id, r.reason) for r in batch.rejections] == [
        (f"{n:024x}", f"updatedAt: a date outside years 1 to 9999 (DatetimeMS({ms}))")
        for n, ms in enumerate((last_ms + 1, first_ms - 1))
    ]
    assert batch.valid["id"].to_list() == [f"{2:024x}", f"{3:024x}"]
    assert batch.max_updated_at == datetime.max.replace(microsecond=999000, tzinfo=UTC)


def test_content_hash_is_md5_of_the_documented_canonical_form():
    row = flatten_product(product(1, sellerId=MISSING, price=1234.5, tags=["x"]))
    canonical = "\0".join(("Product 1", "1234.50", "https://img.example/1.png", "\1", "3", "book", "=d", "4.50",
                           '["x"]'))
    assert row_hashes([row]) == [hashlib.md5(canonical.encode()).hexdigest()]


def with_repeated_field(doc: dict, field: str, value: float) -> bytes:
    """The document's BSON with `field` appended a second time, as raw BSON can hold (MongoDB does not
    support it, and pymongo reads the last value)."""
    body = bson.encode(doc)[4:-1] + b"\x01" + field.encode() + b"\x00" + struct.pack("<d", value)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


@pytest.mark.parametrize("later_lacks_it", [True, False], ids=["shift hidden by a later gap", "column too long"])
def test_a_repeated_field_name_never_shifts_values_onto_other_documents(later_lacks_it):
    later = product(3, price=MISSING) if later_lacks_it else product(3)
    documents = [bson.encode(product(1)), with_repeated_field(product(2), "price", 99.5), bson.encode(later)]
    batch = transform_batch(documents)
    decoded = [bson.decode(document, codec_options=CODEC) for document in documents]
    expected_valid, expected_reasons = exact_transform(decoded)
    assert batch.columnar == 0  # the whole batch took the exact path
    assert batch.valid.sort("id").to_dicts() == expected_valid.sort("id").to_dicts()
    assert {r.record_id: r.reason for r in batch.rejections} == expected_reasons
    assert dict(batch.valid.select("id", "price").iter_rows())[f"{2:024x}"] == 99.5


PYMONGOARROW_RECHECK = (
    "pymongoarrow changed what the columnar path of etl_assets/sync/product_transform.py relies on: "
    "PyMongoArrowContext (not its documented API) or how it types, widens and places values. Re-check "
    "_decode and the widening checks of _columnar_rows, and the pyarrow pin in pyproject.toml, then run "
    "etl_assets_tests/sync/test_product_transform.py"
)


def arrow_decode(docs: list[dict | bytes], schema: Schema) -> list[dict]:
    """The documents as pymongoarrow's context decodes them, the way _decode drives it."""
    context = PyMongoArrowContext(schema, codec_options=CODEC, allow_invalid=True)
    context.process_bson_stream(b"".join(doc if isinstance(doc, bytes) else bson.encode(doc) for doc in docs))
    table = context.finish()
    assert isinstance(table, pa.Table), PYMONGOARROW_RECHECK
    return table.to_pylist()


def test_pymongoarrow_types_and_widens_as_the_columnar_path_assumes():
    """The columnar path takes a value from pymongoarrow only where it can prove the exact path would give
    the same; that proof rests on each behaviour below."""
    oid, when = ObjectId(f"{1:024x}"), datetime(2026, 1, 2, 3, 4, 5, 678000)
    schema = Schema({"_id": ObjectIdType(), "price": pa.float64(), "tags": pa.list_(pa.string()),
                     "title": pa.string(), "updatedAt": pa.timestamp("ms")})
    decoded = arrow_decode([
        {"_id": oid, "price": 1.5, "tags": ["a"], "title": "t", "updatedAt": when},
        {"_id": "not an ObjectId", "price": True, "tags": "abc", "title": 5, "updatedAt": "2026-01-02"},
        {"price": Int64(7), "tags": 5},  # missing fields
        {"price": "1.5", "tags": None},
    ], schema)
    assert decoded == [
        {"_id": oid, "price": 1.5, "tags": ["a"], "title": "t", "updatedAt": when},
        # Widenings the probe pass and the raw-bytes checks must catch: a bool and an int as numbers, any
        # value as an empty list. Any other mismatched type, and a missing field, read as null.
        {"_id": None, "price": 1.0, "tags": [], "title": None, "updatedAt": None},
        {"_id": None, "price": 7.0, "tags": [], "title": None, "updatedAt": None},
        {"_id": None, "price": None, "tags": None, "title": None, "updatedAt": None},
    ], PYMONGOARROW_RECHECK


def test_pymongoarrow_places_values_by_position():
    """A repeated field name adds a value to its column, so the columns no longer line up with the
    documents: what the columnar path's repeated-field guard detects."""
    repeated = with_repeated_field({"price": 1.0}, "price", 2.0)
    decoded = PyMongoArrowContext(Schema({"price": pa.float64()}), codec_options=CODEC, allow_invalid=True)
    decoded.process_bson_stream(repeated)
    assert decoded.finish().column("price").to_pylist() == [1.0, 2.0], PYMONGOARROW_RECHECK
