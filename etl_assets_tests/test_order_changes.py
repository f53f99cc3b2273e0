"""Late and changed orders reach the warehouse: order_changes, evaluated as the daemon would against real
stores, requests the day, and one warehouse_build run (the real job) rebuilds it. Each case asserts what
the warehouse tables hold afterwards; then the retry of a failed build, the nightly sweep and the
coverage check."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets import jobs
from etl_assets.assets.orders import ORDER_FINGERPRINT_TAG, order_assets
from etl_assets.assets.warehouse import warehouse_assets
from etl_assets.checks.orders import warehouse_orders_built_from_current_orders
from etl_assets.definitions import defs
from etl_assets.settings import SETTINGS
from etl_assets.sync.orders import SOURCE
from etl_assets.sync.quarantine import open_count
from etl_assets_tests.checks.harness import evaluate_checks, failing, metadata
from etl_assets_tests.sync.test_orders import make_order

ORDER_SENSOR = "order_changes"
TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)
LAST_WEEK = TODAY - timedelta(days=7)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def tick(stores, instance: dg.DagsterInstance, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                 resources=stores.resources()) as context:
        return defs.resolve_sensor_def(ORDER_SENSOR).evaluate_tick(context)


def build(stores, instance: dg.DagsterInstance, day: date, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    """One warehouse_build run of `day`, as the daemon would launch it for a request."""
    build_defs = dg.Definitions(assets=[*order_assets, *warehouse_assets], jobs=[jobs.warehouse_build],
                                resources=stores.resources())
    result = build_defs.resolve_job_def("warehouse_build").execute_in_process(
        partition_key=day.isoformat(), instance=instance, tags=tags or {})
    assert result.success
    return result


def automation_pass(stores, instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[str], str | None]:
    """One sensor tick, and one run for each day it requests; returns those days and the new cursor."""
    result = tick(stores, instance, cursor)
    for request in result.run_requests:
        build(stores, instance, date.fromisoformat(request.partition_key), request.tags)
    return [request.partition_key for request in result.run_requests], result.cursor or cursor


def built_and_watched(stores, instance: dg.DagsterInstance, *days: date) -> str | None:
    """The days built as the nightly schedule builds them, and the sensor settled: its cursor."""
    for day in days:
        build(stores, instance, day)
    _, cursor = automation_pass(stores, instance, None)
    requested, cursor = automation_pass(stores, instance, cursor)
    assert requested == []
    return cursor


def rows(stores, query: str, **params: Any) -> list[tuple]:
    with stores.warehouse_engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(query), params)]


def order_row(stores, order: dict) -> tuple:
    return rows(stores, "SELECT order_status, payment_status, paid_at FROM orders WHERE order_id = :id",
                id=str(order["_id"]))[0]


def daily_sales(stores, day: date) -> tuple:
    return rows(stores, "SELECT orders, units, revenue FROM daily_sales WHERE day = :day", day=day)[0]


def paid_sales(stores, day: date) -> tuple:
    return rows(stores, "SELECT paid_orders, paid_revenue FROM daily_sales WHERE day = :day", day=day)[0]


def pending(created_at: datetime, **fields: Any) -> dict:
    return make_order(created_at, orderStatus="pending", paymentStatus="pending", paidAt=None, **fields)


def test_an_order_paid_after_midnight_is_rebuilt_as_paid(stores, instance):
    late = pending(at(YESTERDAY, 23, 40), items=[("p1", 1, 20.0)])
    stores.order_db.orders.insert_many([late, make_order(at(YESTERDAY, 9))])
    cursor = built_and_watched(stores, instance, YESTERDAY)
    assert order_row(stores, late) == ("pending", "pending", None)
    assert paid_sales(stores, YESTERDAY) == (1, Decimal("13.25"))

    paid_at = at(TODAY, 0, 45)
    stores.order_db.orders.update_one({"_id": late["_id"]}, {"$set": {
        "orderStatus": "processing", "paymentStatus": "paid", "paidAt": paid_at}})
    requested, _ = automation_pass(stores, instance, cursor)

    assert requested == [YESTERDAY.isoformat()]
    assert order_row(stores, late) == ("processing", "paid", paid_at)
    assert daily_sales(stores, YESTERDAY) == (2, 4, Decimal("33.25"))
    assert paid_sales(stores, YESTERDAY) == (2, Decimal("33.25"))


def test_an_order_cancelled_later_is_rebuilt_as_cancelled(stores, instance):
    order = make_order(at(LAST_WEEK, 12))
    stores.order_db.orders.insert_one(order)
    cursor = built_and_watched(stores, instance, LAST_WEEK)
    assert paid_sales(stores, LAST_WEEK) == (1, Decimal("13.25"))

    stores.order_db.orders.update_one({"_id": order["_id"]}, {"$set": {
        "orderStatus": "cancelled", "paymentStatus": "refunded"}})
    requested, _ = automation_pass(stores, instance, cursor)

    assert requested == [LAST_WEEK.isoformat()]
    assert order_row(stores, order) == ("cancelled", "refunded", order["paidAt"])
    assert daily_sales(stores, LAST_WEEK) == (1, 3, Decimal("13.25"))  # still an order of the day
    assert paid_sales(stores, LAST_WEEK) == (0, Decimal("0.00"))


def test_an_order_inserted_late_into_an_older_day_is_loaded(stores, instance):
    stores.order_db.orders.insert_many([make_order(at(LAST_WEEK, 8)), make_order(at(YESTERDAY, 23))])
    cursor = built_and_watched(stores, instance, LAST_WEEK, YESTERDAY)
    assert daily_sales(stores, LAST_WEEK) == (1, 3, Decimal("13.25"))

    backdated = make_order(at(LAST_WEEK, 10), items=[("p3", 4, 2.5)])  # createdAt behind every watermark
    stores.order_db.orders.insert_one(backdated)
    requested, _ = automation_pass(stores, instance, cursor)

    assert requested == [LAST_WEEK.isoformat()]
    assert rows(stores, "SELECT product_id, quantity FROM order_items WHERE order_id = :id",
                id=str(backdated["_id"])) == [("p3", 4)]
    assert daily_sales(stores, LAST_WEEK) == (2, 7, Decimal("23.25"))
    assert rows(stores, "SELECT units FROM product_sales WHERE day = :day AND product_id = 'p3'",
                day=LAST_WEEK) == [(4,)]


def test_a_deleted_order_leaves_the_warehouse(stores, instance):
    kept, deleted = make_order(at(LAST_WEEK, 8)), make_order(at(LAST_WEEK, 9), items=[("p9", 3, 7.0)])
    stores.order_db.orders.insert_many([kept, deleted])
    cursor = built_and_watched(stores, instance, LAST_WEEK)
    assert daily_sales(stores, LAST_WEEK) == (2, 6, Decimal("34.25"))

    stores.order_db.orders.delete_one({"_id": deleted["_id"]})
    requested, _ = automation_pass(stores, instance, cursor)

    assert requested == [LAST_WEEK.isoformat()]
    assert rows(stores, "SELECT order_id FROM orders") == [(str(kept["_id"]),)]
    assert rows(stores, "SELECT count(*) FROM order_items WHERE order_id = :id", id=str(deleted["_id"])) == [(0,)]
    assert daily_sales(stores, LAST_WEEK) == (1, 3, Decimal("13.25"))
    assert rows(stores, "SELECT count(*) FROM product_sales WHERE product_id = 'p9'") == [(0,)]


def test_a_quarantined_order_fixed_at_the_source_is_loaded_and_resolved(stores, instance):
    broken = make_order(at(LAST_WEEK, 8), total=1.0)
    stores.order_db.orders.insert_one(broken)
    cursor = built_and_watched(stores, instance, LAST_WEEK)
    assert rows(stores, "SELECT count(*) FROM orders") == [(0,)]
    assert open_count(stores.warehouse_engine, SOURCE) == 1

    stores.order_db.orders.update_one({"_id": broken["_id"]}, {"$set": {"total": make_order(at(LAST_WEEK, 8))["total"]}})
    requested, _ = automation_pass(stores, instance, cursor)

    assert requested == [LAST_WEEK.isoformat()]
    assert rows(stores, "SELECT order_id, total FROM orders") == [(str(broken["_id"]), Decimal("18.74"))]
    assert daily_sales(stores, LAST_WEEK) == (1, 3, Decimal("13.25"))
    assert open_count(stores.warehouse_engine, SOURCE) == 0


def add_run(instance: dg.DagsterInstance, request: dg.RunRequest, status: dg.DagsterRunStatus,
            **extra_tags: str) -> None:
    """A warehouse_build run launched for `request`, as the daemon records it, in `status`."""
    instance.add_run(dg.DagsterRun(job_name=jobs.warehouse_build.name, run_id=str(uuid.uuid4()), status=status,
                                   tags={**request.tags, "dagster/partition": request.partition_key,
                                         **extra_tags}))


def test_a_failed_build_is_requested_again_until_a_run_builds_the_day(stores, instance):
    stores.order_db.orders.insert_many([make_order(at(YESTERDAY, 8)), make_order(at(YESTERDAY, 9))])
    first = tick(stores, instance)
    cursor = first.cursor
    if not first.run_requests:  # a sensor that starts by recording a watermark gets its second tick
        stores.order_db.orders.insert_one(make_order(at(YESTERDAY, 10)))
        first = tick(stores, instance, cursor)
    [request] = first.run_requests
    assert request.partition_key == YESTERDAY.isoformat()

    # While the run is in progress, the day is not requested twice.
    add_run(instance, request, dg.DagsterRunStatus.STARTED)
    waiting = tick(stores, instance, first.cursor)
    assert not waiting.run_requests and YESTERDAY.isoformat() in waiting.skip_message
    instance.delete_run(instance.get_runs()[0].run_id)

    # The run failed and the instance will retry it: its retry carries the day.
    add_run(instance, request, dg.DagsterRunStatus.FAILURE, **{"dagster/will_retry": "true"})
    retrying = tick(stores, instance, first.cursor)
    assert [r.run_key for r in retrying.run_requests] == [request.run_key]  # a key already launched: skipped

    # It failed for good: the next tick asks again, under a new run key.
    add_run(instance, request, dg.DagsterRunStatus.FAILURE, **{"dagster/will_retry": "false"})
    again = tick(stores, instance, retrying.cursor)
    [retry] = again.run_requests
    assert retry.partition_key == YESTERDAY.isoformat() and retry.run_key != request.run_key
    assert rows(stores, "SELECT count(*) FROM orders") == [(0,)]

    build(stores, instance, YESTERDAY, retry.tags)
    assert rows(stores, "SELECT count(*) FROM orders WHERE order_day = :day", day=YESTERDAY) == [(
        stores.order_db.orders.count_documents({}),)]
    assert daily_sales(stores, YESTERDAY)[0] == stores.order_db.orders.count_documents({})
    assert not tick(stores, instance, again.cursor).run_requests


def test_requests_are_stable_and_stay_inside_the_lookback_window(stores, instance):
    outside = TODAY - timedelta(days=SETTINGS.order_lookback_days + 1)
    stores.order_db.orders.insert_many([make_order(at(outside, 8)), make_order(at(LAST_WEEK, 8)),
                                        make_order(at(TODAY, 0, 5))])
    first = tick(stores, instance)
    # A tick evaluated again (after a daemon restart) asks for the same runs; today is no partition yet.
    assert [(r.partition_key, r.run_key) for r in first.run_requests] == [
        (r.partition_key, r.run_key) for r in tick(stores, instance).run_requests]
    assert [r.partition_key for r in first.run_requests] == [LAST_WEEK.isoformat()]
    assert first.run_requests[0].tags[ORDER_FINGERPRINT_TAG]


def sweep(stores, instance: dg.DagsterInstance, at_time: datetime) -> list[dg.RunRequest]:
    schedule = defs.resolve_schedule_def("warehouse_build_schedule")
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at_time,
                                   resources=stores.resources(), repository_def=defs.get_repository_def()) as context:
        return list(schedule.evaluate_tick(context).run_requests)


def test_the_nightly_sweep_builds_yesterday_and_every_changed_day(stores, instance):
    changed, unchanged = make_order(at(LAST_WEEK, 8)), make_order(at(LAST_WEEK - timedelta(days=1), 8))
    stores.order_db.orders.insert_many([changed, unchanged])
    build(stores, instance, LAST_WEEK)
    build(stores, instance, LAST_WEEK - timedelta(days=1))
    stores.order_db.orders.update_one({"_id": changed["_id"]}, {"$set": {"paymentStatus": "refunded"}})

    requests = sweep(stores, instance, at(TODAY, SETTINGS.warehouse_build_hour, SETTINGS.warehouse_build_minute))

    assert defs.resolve_schedule_def("warehouse_build_schedule").job_name == "warehouse_build"
    assert [r.partition_key for r in requests] == [YESTERDAY.isoformat(), LAST_WEEK.isoformat()]
    assert requests[0].run_key == YESTERDAY.isoformat()
    assert ORDER_FINGERPRINT_TAG not in requests[0].tags  # yesterday has no orders, so the sweep found it built
    for request in requests:
        build(stores, instance, date.fromisoformat(request.partition_key), request.tags)
    assert order_row(stores, changed)[1] == "refunded"
    assert daily_sales(stores, YESTERDAY) == (0, 0, Decimal("0.00"))
    assert [r.partition_key for r in sweep(stores, instance, at(TODAY, 1))] == [YESTERDAY.isoformat()]


def test_the_coverage_check_fails_for_unbuilt_and_outdated_days(stores, instance):
    older, newest = make_order(at(LAST_WEEK, 8)), make_order(at(YESTERDAY, 8))
    stores.order_db.orders.insert_many([older, newest])
    key = "warehouse/orders:days_built_from_current_orders"

    def coverage() -> dg.AssetCheckEvaluation:
        return evaluate_checks(stores.resources(), warehouse_orders_built_from_current_orders)[key]

    # Nothing built: the older day is lost (ERROR), the newest may still be on its way.
    lost = coverage()
    assert failing(lost) == (False, 2, [LAST_WEEK.isoformat(), YESTERDAY.isoformat()])
    assert lost.severity == dg.AssetCheckSeverity.ERROR
    assert metadata(lost)["never_built"] == 2
    assert metadata(lost)["reasons"][LAST_WEEK.isoformat()] == "never built (1 orders in the source)"

    build(stores, instance, LAST_WEEK)
    build(stores, instance, YESTERDAY)
    assert failing(coverage()) == (True, 0, [])

    # A payment after the build: outdated until order_changes rebuilds the day.
    stores.order_db.orders.update_one({"_id": newest["_id"]}, {"$set": {"paidAt": at(TODAY, 0, 30)}})
    outdated = coverage()
    assert failing(outdated) == (False, 1, [YESTERDAY.isoformat()])
    assert outdated.severity == dg.AssetCheckSeverity.WARN and metadata(outdated)["outdated"] == 1
    automation_pass(stores, instance, None)
    assert failing(coverage()) == (True, 0, [])


def test_a_requested_build_records_the_fingerprint_it_was_requested_for(stores, instance):
    stores.order_db.orders.insert_one(make_order(at(YESTERDAY, 8)))
    [request] = tick(stores, instance).run_requests
    # The order the sensor saw changes before the run starts: the run loads the change, records the
    # fingerprint it was requested for, and the next tick asks for the day again.
    stores.order_db.orders.insert_one(make_order(at(YESTERDAY, 9)))
    result = build(stores, instance, YESTERDAY, request.tags)

    [materialization] = result.asset_materializations_for_node("warehouse__orders")
    assert materialization.metadata["fingerprint"].value == request.tags[ORDER_FINGERPRINT_TAG]
    assert materialization.metadata["fingerprint_given"].value is True
    assert rows(stores, "SELECT fingerprint, orders FROM etl_order_day_builds WHERE day = :day", day=YESTERDAY) == [
        (request.tags[ORDER_FINGERPRINT_TAG], 1)]
    assert daily_sales(stores, YESTERDAY)[0] == 2
    [again] = tick(stores, instance).run_requests
    build(stores, instance, YESTERDAY, again.tags)
    assert not tick(stores, instance).run_requests


def test_the_nightly_build_of_the_day_that_ended_carries_the_sweeps_fingerprint(stores, instance):
    stores.order_db.orders.insert_one(make_order(at(YESTERDAY, 8)))
    [request] = sweep(stores, instance, at(TODAY, SETTINGS.warehouse_build_hour, SETTINGS.warehouse_build_minute))
    assert (request.partition_key, request.run_key) == (YESTERDAY.isoformat(), YESTERDAY.isoformat())
    assert request.tags[ORDER_FINGERPRINT_TAG] == tick(stores, instance).run_requests[0].tags[ORDER_FINGERPRINT_TAG]
