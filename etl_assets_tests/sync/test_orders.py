"""The order day sync: flattening, validation and quarantine, and the replace-day load on real stores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from bson import Decimal128, ObjectId
from bson.datetime_ms import DatetimeMS

from etl_assets.sync.orders import (
    SOURCE,
    UnreadableFieldError,
    flatten_order,
    quarantine_undated_orders,
    split_orders,
    sync_order_day,
)
from etl_assets.sync.quarantine import open_count

DAY = date(2025, 3, 10)


def make_order(created_at: datetime, *, user: str = "user-1", items: list[tuple[str, int, float]] | None = None,
               **fields: Any) -> dict[str, Any]:
    """A valid order document; `items` are (productId, quantity, unitPrice); `fields` override."""
    lines = [
        {"productId": product, "productTitle": f"Title {product}", "productPrice": price, "sellerId": "seller-1",
         "quantity": quantity, "unitPrice": price, "subtotal": round(quantity * price, 2)}
        for product, quantity, price in (items or [("p1", 2, 5.0), ("p2", 1, 3.25)])
    ]
    subtotal = round(sum(line["subtotal"] for line in lines), 2)
    doc = {
        "_id": ObjectId(), "userId": user, "orderItems": lines, "orderStatus": "delivered", "paymentStatus": "paid",
        "subtotal": subtotal, "tax": 1.0, "shipping": 4.99, "discount": 0.5,
        "total": round(subtotal + 1.0 + 4.99 - 0.5, 2), "createdAt": created_at,
        "paidAt": created_at + timedelta(minutes=5),
    }
    doc.update(fields)
    return doc


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def reasons_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {r.record_id: r.reason for r in split_orders(docs).rejections}


# --- flattening and validation, no servers ---------------------------------------------------------------

def test_flatten_coerces_bson_and_text_values() -> None:
    doc = make_order(at(DAY, 9), userId=ObjectId("0" * 24), tax=Decimal128("1.00"), shipping="4.99",
                     paidAt="2025-03-10T09:30:00Z")
    doc["orderItems"][0]["quantity"] = 2.0
    order, items = flatten_order(doc)
    assert order["user_id"] == "0" * 24
    assert (order["tax"], order["shipping"]) == (1.0, 4.99)
    assert order["paid_at"] == datetime(2025, 3, 10, 9, 30, tzinfo=UTC)
    assert order["order_day"] == DAY and order["item_count"] == 2 and order["items_subtotal"] == 13.25
    assert [(i["line_no"], i["product_id"], i["quantity"]) for i in items] == [(1, "p1", 2), (2, "p2", 1)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"tax": "twelve"}, "tax: cannot be read as a number (value 'twelve')"),
    ({"total": True}, "total: cannot be read as a number"),
    ({"orderItems": "p1 x2"}, "orderItems: cannot be read as a list of items"),
    ({"userId": 42}, "userId: cannot be read as text"),
    ({"paidAt": "yesterday"}, "paidAt: cannot be read as an ISO 8601 timestamp"),
    ({"paidAt": DatetimeMS(2**62)}, "paidAt: cannot be read as a timestamp within years 1 to 9999"),
])
def test_flatten_names_the_field_it_cannot_coerce(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UnreadableFieldError, match=message.replace("(", r"\(").replace(")", r"\)")):
        flatten_order(make_order(at(DAY, 9), **changes))


def test_a_fractional_quantity_cannot_be_coerced() -> None:
    doc = make_order(at(DAY, 9))
    doc["orderItems"][1]["quantity"] = 1.5
    with pytest.raises(UnreadableFieldError, match=r"orderItems\[1\]\.quantity: cannot be read as a whole number"):
        flatten_order(doc)


def test_valid_orders_pass_with_their_items() -> None:
    docs = [make_order(at(DAY, 1)), make_order(at(DAY, 2), items=[("p3", 3, 0.1)])]
    batch = split_orders(docs)
    assert batch.rejections == []
    assert batch.orders["order_id"].to_list() == [str(d["_id"]) for d in docs]
    assert batch.items.height == 3
    assert "items_subtotal" not in batch.orders.columns


def test_each_broken_rule_is_rejected_with_a_readable_reason() -> None:
    good = make_order(at(DAY, 1))
    negative = make_order(at(DAY, 2), items=[("p1", 1, 5.0)])
    negative["orderItems"][0].update(quantity=-1, subtotal=-5.0)
    off_by_more_than_a_cent = make_order(at(DAY, 3), items=[("p1", 3, 2.0)])
    off_by_more_than_a_cent["orderItems"][0]["subtotal"] = 6.02
    off_by_a_cent = make_order(at(DAY, 3), items=[("p1", 3, 2.0)])
    off_by_a_cent["orderItems"][0]["subtotal"] = 6.01
    off_by_a_cent.update(subtotal=6.01, total=round(6.01 + 1.0 + 4.99 - 0.5, 2))
    docs = {
        "good": good,
        "missing user": make_order(at(DAY, 1), userId=None),
        "negative quantity": negative,
        "item subtotal": off_by_more_than_a_cent,
        "a cent is tolerated": off_by_a_cent,
        "total": make_order(at(DAY, 4), total=99.0),
        "order subtotal": make_order(at(DAY, 5), subtotal=20.0, total=25.49),
        "wrong type": make_order(at(DAY, 6), discount={"code": "SPRING"}),
        "no items": make_order(at(DAY, 7), orderItems=[], subtotal=0.0, total=5.49),
    }
    by_case = {case: str(doc["_id"]) for case, doc in docs.items()}
    reasons = {case: reasons_of(list(docs.values())).get(order_id) for case, order_id in by_case.items()}

    assert reasons["good"] is None and reasons["a cent is tolerated"] is None
    assert reasons["missing user"] == "user_id: not_nullable (value None)"
    assert "orderItems[0].quantity: greater_than(0) (value '-1')" in reasons["negative quantity"]
    assert "orderItems[0].subtotal: equals quantity x unit price within a cent (value '6.02')" in reasons[
        "item subtotal"]
    assert reasons["total"] == "total: equals subtotal + tax + shipping - discount within a cent (value '99.0')"
    assert reasons["order subtotal"] == "subtotal: equals the sum of the item subtotals within a cent (value '20.0')"
    assert reasons["wrong type"] == "discount: cannot be read as a number (value {'code': 'SPRING'})"
    assert "item_count: greater_than_or_equal_to(1)" in reasons["no items"]


def test_a_rejected_order_keeps_none_of_its_items() -> None:
    bad = make_order(at(DAY, 1), items=[("p1", 1, 5.0), ("p2", 1, 3.0)])
    bad["orderItems"][1]["productId"] = ""
    batch = split_orders([bad, make_order(at(DAY, 2))])
    assert [r.record_id for r in batch.rejections] == [str(bad["_id"])]
    assert "orderItems[1].product_id: str_length(1, None)" in batch.rejections[0].reason
    assert batch.rejections[0].payload is bad
    assert str(bad["_id"]) not in batch.items["order_id"].to_list()
    assert batch.items.height == 2


# --- one day against real stores -----------------------------------------------------------------------

def warehouse_rows(engine: sa.Engine, query: str, **params: Any) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(query), params)]


def test_a_day_loads_its_orders_and_quarantines_the_invalid_ones(stores) -> None:
    engine = stores.warehouse_engine
    day_orders = [make_order(at(DAY, hour)) for hour in (0, 6, 12, 18, 23)]
    bad = make_order(at(DAY, 8), total=1.0)
    other_days = [make_order(at(DAY - timedelta(days=1), 23)), make_order(at(DAY + timedelta(days=1), 0))]
    stores.order_db.orders.insert_many([*day_orders, bad, *other_days])

    report = sync_order_day(stores.order_db, engine, DAY, run_id="run-1", batch_size=2)

    assert (report.read, report.inserted, report.items_inserted, report.quarantined) == (6, 5, 10, 1)
    assert report.batches == 3 and report.quarantine_rate == round(1 / 6, 4)
    loaded = warehouse_rows(engine, "SELECT order_id, order_day FROM orders ORDER BY created_at")
    assert loaded == [(str(doc["_id"]), DAY) for doc in day_orders]
    assert warehouse_rows(engine, "SELECT count(*), sum(subtotal) FROM order_items") == [(10, Decimal("66.25"))]
    quarantined = warehouse_rows(
        engine, "SELECT record_id, reason, payload->>'userId' FROM etl_quarantine WHERE resolved_at IS NULL")
    assert quarantined == [(str(bad["_id"]), "total: equals subtotal + tax + shipping - discount within a cent "
                            "(value '1.0')", "user-1")]


def test_rerunning_a_day_replaces_it_and_resolves_fixed_orders(stores) -> None:
    engine = stores.warehouse_engine
    kept, deleted = make_order(at(DAY, 1)), make_order(at(DAY, 2))
    bad = make_order(at(DAY, 3), total=1.0)
    stores.order_db.orders.insert_many([kept, deleted, bad])
    sync_order_day(stores.order_db, engine, DAY, run_id="run-1")

    stores.order_db.orders.delete_one({"_id": deleted["_id"]})
    stores.order_db.orders.update_one({"_id": bad["_id"]}, {"$set": {"total": make_order(at(DAY, 3))["total"]}})
    report = sync_order_day(stores.order_db, engine, DAY, run_id="run-2")

    assert (report.replaced, report.inserted, report.quarantined, report.resolved) == (2, 2, 0, 1)
    assert sorted(warehouse_rows(engine, "SELECT order_id FROM orders")) == sorted(
        [(str(kept["_id"]),), (str(bad["_id"]),)])
    assert warehouse_rows(engine, "SELECT count(*) FROM order_items") == [(4,)]
    assert open_count(engine, SOURCE) == 0


def test_a_day_whose_orders_all_left_the_source_is_emptied(stores) -> None:
    engine = stores.warehouse_engine
    stores.order_db.orders.insert_many([make_order(at(DAY, 1)), make_order(at(DAY, 2))])
    sync_order_day(stores.order_db, engine, DAY, run_id="run-1")
    stores.order_db.orders.delete_many({})

    report = sync_order_day(stores.order_db, engine, DAY, run_id="run-2")

    assert (report.read, report.replaced, report.inserted) == (0, 2, 0)
    assert warehouse_rows(engine, "SELECT count(*) FROM orders") == [(0,)]
    assert warehouse_rows(engine, "SELECT count(*) FROM order_items") == [(0,)]


def test_an_order_that_left_the_day_is_resolved_in_the_quarantine(stores) -> None:
    engine = stores.warehouse_engine
    bad = make_order(at(DAY, 3), userId="")
    stores.order_db.orders.insert_one(bad)
    assert sync_order_day(stores.order_db, engine, DAY, run_id="run-1").quarantined == 1
    stores.order_db.orders.delete_one({"_id": bad["_id"]})
    assert sync_order_day(stores.order_db, engine, DAY, run_id="run-2").resolved == 1
    assert open_count(engine, SOURCE) == 0


def test_orders_without_a_date_are_quarantined_once_and_resolved_when_dated(stores) -> None:
    engine = stores.warehouse_engine
    missing = make_order(at(DAY, 1))
    del missing["createdAt"]
    as_text = make_order(at(DAY, 1), createdAt="2025-03-10T01:00:00Z")
    stores.order_db.orders.insert_many([missing, as_text, make_order(at(DAY, 2))])

    assert quarantine_undated_orders(stores.order_db, engine, run_id="run-1") == 2
    reasons = dict(warehouse_rows(engine, "SELECT record_id, reason FROM etl_quarantine"))
    assert reasons[str(missing["_id"])] == "createdAt: missing, so the order belongs to no day"
    assert reasons[str(as_text["_id"])].startswith("createdAt: not a date, so the order belongs to no day")

    stores.order_db.orders.update_one({"_id": as_text["_id"]}, {"$set": {"createdAt": at(DAY, 1)}})
    assert quarantine_undated_orders(stores.order_db, engine, run_id="run-2") == 1
    assert open_count(engine, SOURCE) == 1


def test_amounts_are_judged_as_stored_in_cents():
    order, _ = flatten_order({
        "_id": ObjectId(), "userId": "u1", "orderStatus": "paid", "paymentStatus": "paid",
        "createdAt": datetime(2025, 3, 10, tzinfo=UTC), "subtotal": 10.004, "tax": 0.004, "shipping": 0,
        "discount": 0, "total": 10.008,
        "orderItems": [{"productId": "p", "productTitle": "t", "quantity": 1, "unitPrice": 10.004,
                        "subtotal": 10.004}],
    })
    assert (order["subtotal"], order["tax"], order["total"]) == (10.0, 0.0, 10.01)
