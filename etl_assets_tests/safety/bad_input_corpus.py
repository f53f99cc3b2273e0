"""Named kinds of bad (and tricky but valid) source records for the product and the cart sync.

Every kind says what the sync must do with its record: store it verbatim (`reason=None`), or
quarantine it with a reason that contains `reason`, so a person reading the quarantine knows which
field is at fault. The test module seeds the stores from these lists and checks every kind by name.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Decimal128, Int64, ObjectId

from etl_assets.schemas.products import MAX_PRICE

MISSING = object()  # as a field value: leave the field out of the record
ONE_MB = "x" * 1_000_000
INJECTION = "Robert'); DROP TABLE product; --"
INJECTION_TEXTS = {
    "title": INJECTION,
    "description": "' OR '1'='1'; DELETE FROM cart WHERE ''='",
    "sellerId": "x'||pg_sleep(10)||'",
    "tags": ["1; TRUNCATE product", "$where: function() { return true }", "{$ne: null}"],
}
UNICODE_TEXTS = {
    "title": "Ünïcødé café ✓ 商品 🛒 👩‍👩‍👧‍👦",
    "description": "RTL مرحبا بالعالم, combining e\u0301, zero-width\u200bspace, BOM \ufeff, 𝔘𝔫𝔦",
    "sellerId": "séller-東京-🏪",
    "tags": ["emoji 🎧", "ß", "日本語"],
}
# Characters that mean something to CSV or to COPY: quotes, separators, line breaks, the null marker
# and the end-of-data marker. Written through COPY, they must come back unchanged.
COPY_SPECIAL_TEXTS = {
    "title": 'He said "hi", then\ttabbed; a\\b',
    "description": "\\N",
    "tags": ["\\.", "line one\r\nline two", ",", '"'],
}
COPY_END_MARKER_TEXTS = {"description": "first line\n\\.\nlast line"}
LITERAL_NUL_ESCAPE = "\\u0000"  # six characters of text, not a NUL


@dataclass(frozen=True)
class HexOf:
    """As an `_id`: the hex string of another kind's ObjectId."""

    kind: str


@dataclass(frozen=True)
class ProductKind:
    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # None: valid, stored verbatim


PRODUCT_KINDS: list[ProductKind] = [
    # Valid, some only after coercion: each must land in the copy exactly as flatten_product reads it.
    ProductKind("valid baseline"),
    ProductKind("price as Decimal128", {"price": Decimal128("19.99")}),
    ProductKind("price as Decimal128 rounded half-up to cents", {"price": Decimal128("0.125")}),
    ProductKind("price and quantity as BSON Int64", {"price": Int64(12), "quantity": Int64(7)}),
    ProductKind("quantity as a whole float", {"quantity": 3.0}),
    ProductKind("price and rating zero", {"price": 0, "rating": 0}),
    ProductKind("largest price", {"price": MAX_PRICE}),
    ProductKind("sellerId as ObjectId", {"sellerId": ObjectId("65a1b2c3d4e5f6a7b8c9d0e1")}),
    ProductKind("optional fields absent", dict.fromkeys(
        ("sellerId", "category", "description", "rating", "quantity", "tags", "updatedAt"), MISSING)),
    ProductKind("unknown extra fields", {"legacy": {"nested": [1, {"deep": None}]}, "$odd": 1}),
    ProductKind("unicode and emoji", UNICODE_TEXTS),
    ProductKind("SQL injection text", INJECTION_TEXTS),
    ProductKind("CSV and COPY special characters", COPY_SPECIAL_TEXTS),
    ProductKind("COPY end-of-data marker on its own line", COPY_END_MARKER_TEXTS),
    ProductKind("literal \\u0000 text", {"description": LITERAL_NUL_ESCAPE, "tags": [LITERAL_NUL_ESCAPE]}),
    ProductKind("title of exactly 1000 characters", {"title": "t" * 1000}),
    ProductKind("updatedAt the last millisecond of year 9999",
                {"updatedAt": datetime.max.replace(microsecond=999000, tzinfo=UTC)}),
    # Invalid: missing or wrongly typed fields.
    ProductKind("title missing", {"title": MISSING}, "title: required field missing"),
    ProductKind("image missing", {"image": MISSING}, "image: required field missing"),
    ProductKind("price missing", {"price": MISSING}, "price: required field missing"),
    ProductKind("title null", {"title": None}, "title: required field missing"),
    ProductKind("title as a number", {"title": 42}, "title: expected a string, got int"),
    ProductKind("title empty", {"title": ""}, "title: str_length"),
    ProductKind("category as a number", {"category": 3}, "category: expected a string, got int"),
    ProductKind("category outside the list", {"category": "toys"}, "category: isin"),
    ProductKind("sellerId as a number", {"sellerId": 17}, "sellerId: expected an ObjectId or a string"),
    ProductKind("updatedAt as a string", {"updatedAt": "2026-01-01"}, "updatedAt: expected a date, got str"),
    # Invalid numbers.
    ProductKind("price as a string", {"price": "12.50"}, "price: expected a number, got str"),
    ProductKind("price as a boolean", {"price": True}, "price: expected a number, got bool"),
    ProductKind("price as an array", {"price": [1, 2]}, "price: expected a number, got list"),
    ProductKind("price negative", {"price": -0.01}, "price: greater_than_or_equal_to(0)"),
    ProductKind("price NaN", {"price": float("nan")}, "price: not a finite number (nan)"),
    ProductKind("price Infinity", {"price": float("inf")}, "price: not a finite number (inf)"),
    ProductKind("price -Infinity", {"price": float("-inf")}, "price: not a finite number (-inf)"),
    ProductKind("price Decimal128 NaN", {"price": Decimal128("NaN")}, "price: not a finite number (NaN)"),
    ProductKind("price Decimal128 Infinity", {"price": Decimal128("Infinity")},
                "price: not a finite number (Infinity)"),
    ProductKind("price Decimal128 beyond the context", {"price": Decimal128("1E+30")},
                "price: out of range (1E+30)"),
    ProductKind("price above numeric(12,2)", {"price": 1e13}, "price: less_than_or_equal_to"),
    ProductKind("rating as a string", {"rating": "good"}, "rating: expected a number, got str"),
    ProductKind("rating above 5", {"rating": 7}, "rating: less_than_or_equal_to(5)"),
    ProductKind("quantity fractional", {"quantity": 2.5}, "quantity: expected an integer, got float"),
    ProductKind("quantity as a string", {"quantity": "5"}, "quantity: expected an integer, got str"),
    ProductKind("quantity negative", {"quantity": -3}, "quantity: greater_than_or_equal_to(0)"),
    ProductKind("quantity above int4", {"quantity": Int64(2**40)}, "quantity: less_than_or_equal_to"),
    ProductKind("quantity a whole float beyond int64", {"quantity": 1e20}, "quantity: out of range"),
    # Invalid text: NUL bytes (PostgreSQL text and jsonb cannot hold them) and 1 MB values.
    ProductKind("NUL byte in title", {"title": "nul\x00title"}, "title: str_matches"),
    ProductKind("NUL byte in image", {"image": "https://img.example/\x00.png"}, "image: str_matches"),
    ProductKind("NUL byte in description", {"description": "a\x00b"}, "description: str_matches"),
    ProductKind("NUL byte in sellerId", {"sellerId": "seller\x00"}, "seller_id: str_matches"),
    ProductKind("NUL byte in a tag", {"tags": ["ok", "bad\x00tag"]}, "tags: NUL character"),
    ProductKind("1 MB title", {"title": ONE_MB}, "title: str_length"),
    ProductKind("1 MB description", {"description": ONE_MB}, "description: str_length"),
    ProductKind("1 MB image", {"image": ONE_MB}, "image: str_length"),
    # Invalid tags.
    ProductKind("tags nested", {"tags": ["a", ["b", "c"]]}, "tags: expected a list of strings"),
    ProductKind("tags not strings", {"tags": [1, 2.5, None]}, "tags: expected a list of strings"),
    ProductKind("tags as one string", {"tags": "a,b"}, "tags: expected a list of strings"),
    ProductKind("tags as an object", {"tags": {"a": 1}}, "tags: expected a list of strings"),
    ProductKind("tags too long together", {"tags": ["t" * 100] * 200}, "tags_json: str_length"),
    # Invalid payload text that the quarantine itself must store: a literal \u0000 next to a bad field.
    ProductKind("literal \\u0000 text in an invalid document", {"title": LITERAL_NUL_ESCAPE, "price": "x"},
                "price: expected a number, got str"),
    # Invalid or colliding _id values.
    ProductKind("_id a string equal to another document's ObjectId hex", {"_id": HexOf("valid baseline")},
                "_id: expected an ObjectId, got str"),
    ProductKind("_id an integer", {"_id": 42}, "_id: expected an ObjectId, got int"),
    ProductKind("_id an embedded document", {"_id": {"sku": "A-1", "v": 2}},
                "_id: expected an ObjectId, got dict"),
    ProductKind("_id null", {"_id": None}, "_id: expected an ObjectId, got NoneType"),
    ProductKind("_id a long string (A)", {"_id": "sku-" + "0" * 200 + "A"},
                "_id: expected an ObjectId, got str"),
    ProductKind("_id a long string sharing A's first 200 characters (B)", {"_id": "sku-" + "0" * 200 + "B"},
                "_id: expected an ObjectId, got str"),
]

UPDATED_AT = datetime(2026, 10, 1, tzinfo=UTC)


def product_object_id(position: int) -> ObjectId:
    return ObjectId(f"5afe{position:020x}")


def product_documents() -> list[tuple[ProductKind, dict[str, Any]]]:
    """Each kind with its source document."""
    positions = {kind.name: n for n, kind in enumerate(PRODUCT_KINDS)}
    documents = []
    for n, kind in enumerate(PRODUCT_KINDS):
        doc: dict[str, Any] = {
            "_id": product_object_id(n),
            "title": f"Product {n}",
            "image": f"https://img.example/{n}.png",
            "price": 10 + n,
            "sellerId": f"seller-{n % 5}",
            "category": "book",
            "description": f"Description of product {n}",
            "rating": 4.25,
            "quantity": n,
            "tags": ["safety", f"kind-{n}"],
            "updatedAt": UPDATED_AT + timedelta(minutes=n),
        }
        for name, value in kind.fields.items():
            if value is MISSING:
                doc.pop(name)
            elif isinstance(value, HexOf):
                doc[name] = str(product_object_id(positions[value.kind]))
            else:
                doc[name] = value
        documents.append((kind, doc))
    return documents


# ---------- carts ----------

@dataclass(frozen=True)
class CartKind:
    name: str
    cart: dict[str, Any] = field(default_factory=dict)  # cart columns over the defaults
    product: dict[str, Any] | None = field(default_factory=dict)  # product columns; None: no product row
    reason: str | None = None  # None: valid; or text the quarantine reason must contain
    later: dict[str, Any] = field(default_factory=dict)  # cart columns changed after the first sync


CART_KINDS: list[CartKind] = [
    CartKind("valid baseline"),
    CartKind("unicode and emoji user id", {"user_id": "ユーザー-😀-ü"}),
    CartKind("SQL injection user id", {"user_id": "1'; DROP TABLE cart; --"}),
    CartKind("product without a seller", product={"seller_id": None}),
    CartKind("largest price times largest quantity", {"quantity": 2_147_483_647},
             product={"price": "9999999999.99"}),
    CartKind("product missing", product=None, reason="does not exist in cart_db.product"),
    CartKind("product inactive", product={"is_active": False}, reason="is inactive in cart_db.product"),
    CartKind("quantity 0", {"quantity": 0}, reason="quantity: greater_than_or_equal_to(1)"),
    CartKind("quantity negative", {"quantity": -2}, reason="quantity: greater_than_or_equal_to(1)"),
    CartKind("version 0", {"version": 0}, reason="version: greater_than_or_equal_to(1)"),
    CartKind("version negative", {"version": -1}, reason="version: greater_than_or_equal_to(1)"),
    # The row is the truth: its snapshot takes the lower version (a version reset).
    CartKind("version going backwards", {"version": 5}, later={"version": 3, "quantity": 9}),
    CartKind("user id empty", {"user_id": ""}, reason="user_id: str_length"),
    CartKind("1 MB user id", {"user_id": ONE_MB}, reason="user_id: str_length"),
    CartKind("product id not hex", product={"id": "NOT-A-HEX-PRODUCT-ID-123"},
             reason="product_id: str_matches"),
    CartKind("product price negative", product={"price": "-1.00"},
             reason="productPrice: greater_than_or_equal_to(0)"),
    CartKind("product title empty", product={"title": ""}, reason="productTitle: str_length"),
    CartKind("product quantity negative", product={"quantity": -1},
             reason="productQuantity: greater_than_or_equal_to(0)"),
    CartKind("1 MB product image", product={"image": ONE_MB}, reason="productImage: str_length"),
    CartKind("updated_at beyond year 9999", {"updated_at": "10000-01-01 00:00+00"},
             reason="updated_at: not_nullable"),
    CartKind("created_at -infinity", {"created_at": "-infinity"}, reason="created_at: not_nullable"),
]

CART_CREATED = "2026-09-01 10:00:00.123456+00"
CART_UPDATED = "2026-09-02 11:30:00.654321+00"


def cart_id(position: int) -> str:
    return str(uuid.UUID(int=0x5AFE_0000 + position))


def cart_rows() -> list[tuple[CartKind, dict[str, Any], dict[str, Any] | None]]:
    """Each kind with its cart row and its product row (None: the cart points at no product)."""
    rows = []
    for n, kind in enumerate(CART_KINDS):
        product = None
        if kind.product is not None:
            product = {
                "id": f"ca27{n:020x}", "title": f"Cart product {n}", "price": "19.99",
                "image": f"https://img.example/cart/{n}.png", "seller_id": "seller-1", "quantity": 4,
                "is_active": True, **kind.product,
            }
        cart = {
            "id": cart_id(n), "user_id": f"user-{n}",
            "product_id": product["id"] if product else f"0dd{n:021x}",
            "quantity": 2, "version": 1, "created_at": CART_CREATED, "updated_at": CART_UPDATED, **kind.cart,
        }
        rows.append((kind, cart, product))
    return rows
