"""The per-day fingerprint of the source orders and the build state it is compared with, on real stores."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from etl_assets.sync.order_days import EMPTY_DAY, day_fingerprints, days_to_build
from etl_assets.sync.orders import sync_order_day
from etl_assets.sync.state import load_day_builds
from etl_assets_tests.sync.test_orders import DAY, at, make_order

NEXT_DAY = DAY + timedelta(days=1)


def fingerprint(stores):
    return day_fingerprints(stores.order_db.orders, DAY, NEXT_DAY)


@pytest.mark.parametrize(("change", "what"), [
    (lambda orders, doc: orders.update_one({"_id": doc["_id"]}, {"$set": {"orderStatus": "cancelled"}}), "status"),
    (lambda orders, doc: orders.update_one({"_id": doc["_id"]}, {"$set": {"paymentStatus": "refunded"}}), "payment"),
    (lambda orders, doc: orders.update_one({"_id": doc["_id"]}, {"$set": {"paidAt": at(NEXT_DAY, 1)}}), "paidAt"),
    (lambda orders, doc: orders.update_one({"_id": doc["_id"]}, {"$set": {"total": 99.0}}), "total"),
    (lambda orders, doc: orders.update_one({"_id": doc["_id"]}, {"$set": {"userId": "user-22"}}), "other field"),
    (lambda orders, doc: orders.delete_one({"_id": doc["_id"]}), "deletion"),
    (lambda orders, doc: orders.insert_one(make_order(at(DAY, 3))), "late insert"),
    (lambda orders, doc: (orders.delete_one({"_id": doc["_id"]}), orders.insert_one({**doc, "_id": "re-keyed"})),
     "same order under a new id"),
])
def test_every_kind_of_change_moves_its_days_fingerprint_only(stores, change, what):
    orders = stores.order_db.orders
    doc = make_order(at(DAY, 2))
    orders.insert_many([doc, make_order(at(DAY, 5)), make_order(at(NEXT_DAY, 5))])
    before = fingerprint(stores)
    assert fingerprint(stores) == before and before[DAY].orders == 2

    change(orders, doc)
    after = fingerprint(stores)
    assert after[DAY].digest != before[DAY].digest, what
    assert after[NEXT_DAY] == before[NEXT_DAY]


def test_documents_of_any_shape_are_fingerprinted_without_failing(stores):
    stores.order_db.orders.insert_many([
        {"_id": {"odd": 1}, "createdAt": at(DAY, 1), "orderStatus": 5, "paymentStatus": {"x": 1}, "total": "12",
         "paidAt": "yesterday", "updatedAt": "later"},
        {"createdAt": at(DAY, 2), "total": float("nan")},
        {"createdAt": at(DAY, 3), "total": 1e300},
    ])
    assert fingerprint(stores)[DAY].orders == 3
    assert day_fingerprints(stores.order_db.orders, NEXT_DAY, NEXT_DAY) == {}


def test_a_day_build_records_the_fingerprint_it_read_with_its_rows(stores):
    engine = stores.warehouse_engine
    stores.order_db.orders.insert_many([make_order(at(DAY, 1)), make_order(at(NEXT_DAY, 1))])
    assert [stale.day for stale in days_to_build(stores.order_db.orders, engine, DAY, NEXT_DAY)] == [DAY, NEXT_DAY]

    report = sync_order_day(stores.order_db, engine, DAY, run_id="run-1")
    [built] = load_day_builds(engine, DAY, NEXT_DAY).values()
    assert (built.day, built.fingerprint, built.orders, built.run_id) == (DAY, report.fingerprint, 1, "run-1")
    assert built.fingerprint == fingerprint(stores)[DAY].digest
    assert [stale.day for stale in days_to_build(stores.order_db.orders, engine, DAY, NEXT_DAY)] == [NEXT_DAY]

    # Every order of the day deleted: the day differs from its build until it is rebuilt, empty.
    stores.order_db.orders.delete_many({"createdAt": {"$lt": at(NEXT_DAY, 0)}})
    [stale] = days_to_build(stores.order_db.orders, engine, DAY, DAY)
    assert stale.fingerprint == EMPTY_DAY and stale.reason.startswith("built from 1 orders")
    sync_order_day(stores.order_db, engine, DAY, run_id="run-2")
    assert days_to_build(stores.order_db.orders, engine, DAY, DAY) == []


def test_a_failed_day_build_records_nothing(stores, monkeypatch):
    engine = stores.warehouse_engine
    stores.order_db.orders.insert_one(make_order(at(DAY, 1)))
    sync_order_day(stores.order_db, engine, DAY, run_id="run-1")
    stores.order_db.orders.insert_one(make_order(at(DAY, 2)))

    def fail(*args, **kwargs):
        raise RuntimeError("the warehouse went away mid-load")

    monkeypatch.setattr("etl_assets.sync.orders._insert", fail)
    with pytest.raises(RuntimeError):
        sync_order_day(stores.order_db, engine, DAY, run_id="run-2")
    assert load_day_builds(engine, DAY, DAY)[DAY].run_id == "run-1"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one() == 1
    assert [stale.day for stale in days_to_build(stores.order_db.orders, engine, DAY, DAY)] == [DAY]


def test_a_build_given_the_requests_fingerprint_records_it_without_aggregating(stores, monkeypatch):
    engine = stores.warehouse_engine
    stores.order_db.orders.insert_one(make_order(at(DAY, 1)))
    requested = fingerprint(stores)[DAY]

    def no_aggregation(*args, **kwargs):
        raise AssertionError("the load aggregated the day although the request carried its fingerprint")

    monkeypatch.setattr("etl_assets.sync.orders.day_fingerprints", no_aggregation)
    report = sync_order_day(stores.order_db, engine, DAY, run_id="run-1", fingerprint=requested)
    assert (report.fingerprint, report.fingerprint_given, report.inserted) == (requested.digest, True, 1)
    assert load_day_builds(engine, DAY, DAY)[DAY].fingerprint == requested.digest


def test_a_change_after_the_request_leaves_the_day_outdated_until_built_again(stores):
    engine = stores.warehouse_engine
    stores.order_db.orders.insert_one(make_order(at(DAY, 1)))
    [requested] = days_to_build(stores.order_db.orders, engine, DAY, DAY)
    # An order lands between the request and the run: the run loads it, but records what was requested.
    stores.order_db.orders.insert_one(make_order(at(DAY, 2)))
    report = sync_order_day(stores.order_db, engine, DAY, run_id="run-1", fingerprint=requested.fingerprint)
    assert report.inserted == 2

    [again] = days_to_build(stores.order_db.orders, engine, DAY, DAY)
    assert (again.built.orders, again.fingerprint.orders) == (1, 2)
    sync_order_day(stores.order_db, engine, DAY, run_id="run-2", fingerprint=again.fingerprint)
    assert days_to_build(stores.order_db.orders, engine, DAY, DAY) == []
