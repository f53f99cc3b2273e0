"""Product transform: a raw BSON batch from Product MongoDB → typed, validated, hashed rows.

Two paths give the same rows. The columnar path decodes the whole batch into Arrow in C
(pymongoarrow) and builds the rows with polars expressions. It takes only the documents it can prove
well-typed: every field present with its contract type, amounts already at two decimals, tags that
need no JSON escaping, a date Python can hold. Every other document (a missing field that has a
default, a legacy type, any bad value) takes the exact path, which decodes it with pymongo and
coerces field by field, with a reason for each rejection. Then both go through the pandera model and
one content hash.

The columnar path is a performance path; the exact path alone is the simple one. Measured with
dev/fast_paths.py (full syncs of 200,000 products, each fast path swapped for its simple path in turn;
docs/benchmark.md, "Fast paths"): it saves the sync 2.12 CPU-seconds cold and 1.94 warm, 35% and 23%
of a full sync's wall time on a quiet machine. The tests that both paths give the same rows, hashes and
reasons: etl_assets_tests/sync/test_product_transform.py::
test_columnar_path_agrees_on_a_batch_of_everything, with the tricky-document, bad-input-corpus and
repeated-field-name tests beside it. It relies on
pymongoarrow's PyMongoArrowContext (not its documented API) and on how it types, widens and places
values; test_pymongoarrow_types_and_widens_as_the_columnar_path_assumes and
test_pymongoarrow_places_values_by_position fail, naming what to re-check, when that changes. pyarrow is
pinned in pyproject.toml for pymongoarrow's compiled extension; this path is their only user.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import bson
import polars as pl
import polars_hash  # noqa: F401 - registers the .nchash expressions (MD5 in Rust, off the GIL)
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pymongoarrow imports it on first use: at import, not inside the first batch
from bson import Decimal128, ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from pymongoarrow.context import PyMongoArrowContext
from pymongoarrow.schema import Schema
from pymongoarrow.types import ObjectIdType

from etl_assets.schemas.products import SourceProduct
from etl_assets.sync.quarantine import Rejection
from etl_assets.sync.validate import short_repr, split_valid

FRAME_SCHEMA = {
    "id": pl.String, "title": pl.String, "image": pl.String, "price": pl.Float64, "seller_id": pl.String,
    "category": pl.String, "description": pl.String, "rating": pl.Float64, "quantity": pl.Int64,
    "tags_json": pl.String, "source_updated_at": pl.Datetime("us", "UTC"),
}
# A date outside Python's years 1..9999 decodes as a DatetimeMS, which its field's check rejects.
CODEC = CodecOptions(tz_aware=True, tzinfo=UTC, datetime_conversion=DatetimeConversion.DATETIME_AUTO)
CENT = Decimal("0.01")
_TAGS_JSON = json.JSONEncoder(ensure_ascii=False).encode
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RECORD_ID_CHARS = 80
REASON_VALUE_CHARS = 60  # how much of a bad value a reason quotes


class InvalidProduct(ValueError):
    """A document whose fields cannot be coerced to the contract's types."""


# ---------- the exact path: one decoded document at a time ----------

def _number(doc: dict, field: str, default: float | None) -> float:
    value = doc.get(field, default)
    if value is None:
        raise InvalidProduct(f"{field}: required field missing")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal128):
        raise InvalidProduct(f"{field}: expected a number, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    if isinstance(value, Decimal128):
        exact = value.to_decimal()
        if not exact.is_finite():
            raise InvalidProduct(f"{field}: not a finite number ({value})")
        try:
            return float(exact.quantize(CENT, rounding=ROUND_HALF_UP))
        except InvalidOperation:  # more digits than the context holds, e.g. 1E+30
            raise InvalidProduct(f"{field}: out of range ({value})") from None
    if not math.isfinite(value):
        raise InvalidProduct(f"{field}: not a finite number ({value})")
    return round(value, 2)


def _text(doc: dict, field: str, *, required: bool, default: str | None = None) -> str | None:
    value = doc.get(field, default)
    if value is None:
        if required:
            raise InvalidProduct(f"{field}: required field missing")
        return None
    if not isinstance(value, str):
        raise InvalidProduct(f"{field}: expected a string, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    return value


def _quantity(doc: dict) -> int:
    value = doc.get("quantity", 5)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidProduct(f"quantity: expected an integer, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    if not INT64_MIN <= value <= INT64_MAX:  # a whole float such as 1e20 would overflow the frame's Int64
        raise InvalidProduct(f"quantity: out of range ({value})")
    return value


def _seller_id(doc: dict) -> str | None:
    value = doc.get("sellerId")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, ObjectId):
        return str(value)
    raise InvalidProduct(f"sellerId: expected an ObjectId or a string, got {type(value).__name__}")


def _tags(doc: dict) -> list[str]:
    value = doc.get("tags", [])
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise InvalidProduct(f"tags: expected a list of strings, got {short_repr(value, REASON_VALUE_CHARS)}")
    if any("\0" in tag for tag in value):  # jsonb refuses \u0000, which would fail the whole COPY
        raise InvalidProduct(f"tags: NUL character in {short_repr(value, REASON_VALUE_CHARS)}")
    return value


def _updated_at(doc: dict) -> datetime | None:
    value = doc.get("updatedAt")
    if value is None:
        return None
    if isinstance(value, DatetimeMS):
        raise InvalidProduct(f"updatedAt: a date outside years 1 to 9999 ({value})")
    if not isinstance(value, datetime):
        raise InvalidProduct(f"updatedAt: expected a date, got {type(value).__name__} {short_repr(value, REASON_VALUE_CHARS)}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def record_id(doc: dict) -> str:
    """The id a document is known by in the copy and in quarantine."""
    _id = doc.get("_id")
    if isinstance(_id, ObjectId):
        return str(_id)
    text = repr(_id)
    if len(text) <= RECORD_ID_CHARS:
        return f"{type(_id).__name__}:{text}"
    # A shortened id alone could name two documents; the digest of the whole id keeps them apart.
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{type(_id).__name__}:{short_repr(_id, RECORD_ID_CHARS)} md5:{digest}"


def flatten_product(doc: dict) -> dict[str, Any]:
    """A source document as a typed row, with the contract's defaults. Raises InvalidProduct."""
    if not isinstance(doc.get("_id"), ObjectId):
        raise InvalidProduct(f"_id: expected an ObjectId, got {type(doc.get('_id')).__name__}")
    return {
        "id": str(doc["_id"]),
        "title": _text(doc, "title", required=True),
        "image": _text(doc, "image", required=True),
        "price": _number(doc, "price", None),
        "seller_id": _seller_id(doc),
        "category": _text(doc, "category", required=True, default="other"),
        "description": _text(doc, "description", required=False),
        "rating": _number(doc, "rating", 4.5),
        "quantity": _quantity(doc),
        "tags_json": _TAGS_JSON(_tags(doc)),
        "source_updated_at": _updated_at(doc),
    }


# ---------- the columnar path: a whole batch in Arrow ----------

# pymongoarrow keeps a value only when its BSON type fits the column, with three widenings: a number
# column also takes bools and integers, and an array column takes any value as an empty list. The
# probe pass and the checks in _columnar_rows turn each widening back into a trip to the exact path.
_DECODE_SCHEMA = Schema({
    "_id": ObjectIdType(), "title": pa.string(), "image": pa.string(), "price": pa.float64(),
    "sellerId": ObjectIdType(), "category": pa.string(), "description": pa.string(), "rating": pa.float64(),
    "quantity": pa.float64(), "tags": pa.list_(pa.string()), "updatedAt": pa.timestamp("ms"),
})
_PROBE_SCHEMA = Schema({"sellerId": pa.string(), "price": pa.bool_(), "rating": pa.bool_(), "quantity": pa.bool_()})
# The probe needs only documents holding one of its fields with its type byte: a string sellerId or a
# bool number. (Anywhere in the bytes, so a nested one brings a document in too; that only costs time.)
_PROBE_MARKERS = [b"\x02sellerId\x00", b"\x08price\x00", b"\x08rating\x00", b"\x08quantity\x00"]
# Present with their own type (a null may be a missing field with a default, or a wrong type).
_REQUIRED_COLUMNS = ("_id", "title", "image", "price", "seller_id", "category", "description", "rating",
                     "quantity", "tags", "updatedAt")
_ROW = "source_row"
_FIELD_NAMES = [f"{name}\0".encode() for name in _DECODE_SCHEMA.typemap]
_NO_ROWS = pl.DataFrame(schema={_ROW: pl.UInt32, **FRAME_SCHEMA, "empty_tags": pl.Boolean})
EXACT_INT_LIMIT = 2.0**53  # every integer below this in magnitude survives the trip through float64
_NEEDS_JSON_ESCAPE = r'[\x00-\x1f"\\]'
_TAGS_KEY = b"tags\x00"
_BSON_ARRAY = 0x04
# Python's datetime range: a date outside it takes the exact path, which rejects it.
_DATETIME_RANGE = (datetime.min, datetime.max.replace(microsecond=999000))


def _decode(raw: bytes, schema: Schema) -> pl.DataFrame:
    context = PyMongoArrowContext(schema, codec_options=CODEC, allow_invalid=True)
    context.process_bson_stream(raw)
    table = context.finish()
    columns = [column.combine_chunks() for column in table.columns]
    return pl.from_arrow(pa.table(
        [column.storage if isinstance(column.type, pa.ExtensionType) else column for column in columns],
        names=table.column_names))


def _at_two_decimals(column: str) -> pl.Expr:
    """Finite and already what round(x, 2) returns. A double's shortest round-trip text has at most two
    decimals exactly when it is the double nearest some whole number of cents. (Float arithmetic cannot
    tell: polars divides by 100 as a multiplication by 0.01, which is not correctly rounded.)"""
    return pl.col(column).cast(pl.String).str.contains(r"^-?[0-9]+(\.[0-9]{1,2})?$")


def _columnar_rows(raw: bytes, documents: list[bytes]) -> pl.DataFrame:
    """The documents the columnar path can take, as rows in FRAME_SCHEMA plus their source row and
    whether their tags list is empty (to be confirmed an array). No rows at all if the batch's columns
    do not line up with its documents."""
    documents_column = pl.Series(documents, dtype=pl.Binary)
    try:
        decoded = _decode(raw, _DECODE_SCHEMA).with_row_index(_ROW)
        probe = _probe(documents, documents_column)
    except pa.ArrowInvalid:  # a column longer than the batch: some document repeats a field name
        return _NO_ROWS
    tags, quantity = pl.col("tags"), pl.col("quantity")
    rows = decoded.join(probe, on=_ROW, how="left").with_columns(
        seller_id=pl.coalesce(pl.col("sellerId").bin.encode("hex"), pl.col("probed_seller_id")),
        probed_bool=pl.any_horizontal(pl.col(c).is_not_null() for c in ("price_bool", "rating_bool", "quantity_bool")),
    ).filter(
        pl.all_horizontal(pl.col(c).is_not_null() for c in _REQUIRED_COLUMNS),
        ~pl.col("probed_bool"),
        _at_two_decimals("price"), _at_two_decimals("rating"),
        quantity == quantity.floor(), quantity.abs() < EXACT_INT_LIMIT,
        pl.col("updatedAt").is_between(*_DATETIME_RANGE),
        ~tags.list.eval(pl.element().is_null()).list.any(),
        ~tags.list.join(",").str.contains(_NEEDS_JSON_ESCAPE),
    ).select(
        _ROW,
        id=pl.col("_id").bin.encode("hex"),
        title="title", image="image", price="price", seller_id="seller_id", category="category",
        description="description", rating="rating", quantity=quantity.cast(pl.Int64),
        tags_json=pl.when(tags.list.len() == 0).then(pl.lit("[]"))
        .otherwise(pl.lit('["') + tags.list.join('", "') + pl.lit('"]')),
        source_updated_at=pl.col("updatedAt").cast(FRAME_SCHEMA["source_updated_at"]),
        empty_tags=tags.list.len() == 0,
    )
    # pymongoarrow places values by position. A document that repeats a field name (MongoDB does not
    # support it, but raw BSON can hold it) pushes that column one row down, and a later document
    # without the field pulls it back: the lengths agree, the values do not. Every row taken holds
    # every field, so a row whose bytes lack one of the names betrays the shift.
    holds_every_name = pl.select(
        pl.all_horizontal(documents_column.bin.contains(name) for name in _FIELD_NAMES)).to_series()
    return rows if holds_every_name.gather(rows[_ROW]).all() else _NO_ROWS


def _probe(documents: list[bytes], documents_column: pl.Series) -> pl.DataFrame:
    """The probe schema's values, by source row, for the documents that may hold one."""
    candidates = pl.select(pl.any_horizontal(documents_column.bin.contains(marker) for marker in _PROBE_MARKERS)
                           ).to_series().arg_true()
    probed = _decode(b"".join(documents[row] for row in candidates), _PROBE_SCHEMA)
    if probed.height != candidates.len():
        raise pa.ArrowInvalid("probe columns longer than its documents: a repeated field name")
    return probed.select(
        candidates.alias(_ROW), probed_seller_id="sellerId", price_bool="price", rating_bool="rating",
        quantity_bool="quantity")


def _holds_tags_array(document: bytes) -> bool:
    """Whether the document's top-level `tags` is a BSON array. Only when the key occurs once in the
    bytes is that occurrence surely the key itself, preceded by its type byte."""
    return document.count(_TAGS_KEY) == 1 and document[document.index(_TAGS_KEY) - 1] == _BSON_ARRAY


# ---------- one batch ----------

def _amount_text(column: str) -> pl.Expr:
    """f"{x:.2f}" for the non-negative amounts of validated rows, in polars."""
    cents = (pl.col(column) * 100).round().cast(pl.Int64)
    return pl.format("{}.{}", cents // 100, (cents % 100).cast(pl.String).str.zfill(2))


def _optional_text(column: str) -> pl.Expr:
    """A missing optional field is marked apart from an empty one."""
    return pl.when(pl.col(column).is_null()).then(pl.lit("\1")).otherwise(pl.lit("=") + pl.col(column))


def content_hashes(rows: pl.DataFrame) -> pl.Series:
    """MD5 of the synced content of validated rows. Timestamps are excluded, so a touch without a
    change rewrites nothing. Fields are joined with NUL, which valid rows cannot contain."""
    return rows.select(pl.concat_str([
        "title", _amount_text("price"), "image", _optional_text("seller_id"), pl.col("quantity").cast(pl.String),
        "category", _optional_text("description"), _amount_text("rating"), "tags_json",
    ], separator="\0").nchash.md5().alias("content_hash")).to_series()


def row_hashes(rows: list[dict[str, Any]]) -> list[str]:
    """content_hashes of rows in flatten_product's shape, in one frame."""
    return content_hashes(pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row")).to_list()


@dataclass
class TransformedBatch:
    read: int
    columnar: int  # documents that took the columnar path
    valid: pl.DataFrame  # FRAME_SCHEMA plus content_hash
    rejections: list[Rejection]
    max_updated_at: datetime | None


def transform_batch(documents: list[bytes]) -> TransformedBatch:
    """Flatten, coerce and validate a batch of raw BSON documents; each ends up a row or a rejection."""
    columnar = _columnar_rows(b"".join(documents), documents)
    empty_tags = columnar.filter(pl.col("empty_tags"))[_ROW].to_list()
    not_arrays = {row for row in empty_tags if not _holds_tags_array(documents[row])}
    columnar = columnar.filter(~pl.col(_ROW).is_in(list(not_arrays))).drop("empty_tags")

    exact_rows: list[dict[str, Any]] = []
    rejections: list[Rejection] = []
    latest: datetime | None = columnar["source_updated_at"].max()
    taken = set(columnar[_ROW].to_list())
    for row in range(len(documents)):
        if row in taken:
            continue
        doc = bson.decode(documents[row], codec_options=CODEC)
        if isinstance(updated := doc.get("updatedAt"), datetime):
            latest = updated if latest is None else max(latest, updated)
        try:
            exact_rows.append({_ROW: row, **flatten_product(doc)})
        except InvalidProduct as err:
            rejections.append(Rejection(record_id(doc), str(err), doc))
    exact = pl.DataFrame(exact_rows, schema={_ROW: pl.UInt32, **FRAME_SCHEMA}, orient="row")

    frame = pl.concat([columnar.cast({_ROW: pl.UInt32}), exact]).sort(_ROW)
    valid, reasons = split_valid(frame.drop(_ROW), SourceProduct)
    source_rows = frame[_ROW]
    for position, reason in reasons.items():
        doc = bson.decode(documents[source_rows[position]], codec_options=CODEC)
        rejections.append(Rejection(frame["id"][position], reason, doc))
    return TransformedBatch(len(documents), len(taken), valid.with_columns(content_hashes(valid)), rejections,
                            latest)
