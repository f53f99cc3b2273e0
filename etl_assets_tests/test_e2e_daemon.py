"""End to end through the real daemon: `dagster dev -w workspace.yaml` (webserver, daemon, code server)
on a free port with the local instance (QueuedRunCoordinator with the shop-sync/target limits), pointed at this test's stores.

A product changed in Product MongoDB reaches Cart PostgreSQL through product_changes → run queue →
product_sync_incremental, with nothing but the sensor turned on over GraphQL. Then two syncs into the
same store are launched at once, and the second waits in the queue until the first has finished. A late
payment of yesterday's order reaches the warehouse through order_changes → warehouse_build.
"""

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from bson import ObjectId
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from etl_assets_tests.dagster_dev import (
    DONE,
    IN_PROGRESS,
    LOCATION,
    REPOSITORY,
    DagsterDev,
    dagster_env,
    running_dagster_dev,
)
from etl_assets_tests.sync.test_orders import make_order

SENSOR_INTERVAL_S = 5
# A bound, not an expectation: a run process starts in a few seconds on a laptop.
ARRIVAL_TIMEOUT_S = 180
# A warehouse_build run has four asset steps and their checks, each its own process.
BUILD_TIMEOUT_S = 600

START_SENSOR = """
mutation StartSensor($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""


@pytest.fixture
def dagster_dev(stores, tmp_path: Path) -> Iterator[DagsterDev]:
    env = dagster_env(
        stores.env(), tmp_path / "dagster_home",
        # Nothing ticks until the test turns it on, so no other run competes with the ones it measures.
        SHOP_SYNC_AUTOMATION_DEFAULT="stopped",
        SHOP_SYNC_PRODUCT_SENSOR_INTERVAL_S=str(SENSOR_INTERVAL_S),
        SHOP_SYNC_ORDER_SENSOR_INTERVAL_S=str(SENSOR_INTERVAL_S),
    )
    with running_dagster_dev(env, tmp_path / "dagster_dev.log") as dev:
        yield dev


def cart_product_title(stores, product_id: str) -> str | None:
    with stores.cart_engine.connect() as conn:
        return conn.execute(sa.text("SELECT title FROM product WHERE id = :id"), {"id": product_id}).scalar()


def sensor_runs(dev: DagsterDev, sensor: str = "product_changes") -> list[dict]:
    return dev.runs(tags=[{"key": "dagster/sensor_name", "value": sensor}])


def start_sensor(dev: DagsterDev, name: str) -> None:
    started = dev.query(START_SENSOR, selector={
        "repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name})
    assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started


@pytest.mark.timeout(300)
def test_a_product_change_flows_to_the_cart_db_and_syncs_never_overlap(stores, dagster_dev, capsys):
    dev = dagster_dev
    lamp, desk = ObjectId(), ObjectId()
    stores.product_db.products.insert_many([
        {"_id": lamp, "title": "Lamp", "image": "lamp.png", "price": 10, "updatedAt": datetime.now(UTC)},
        {"_id": desk, "title": "Desk", "image": "desk.png", "price": 120, "updatedAt": datetime.now(UTC)},
    ])

    start_sensor(dev, "product_changes")

    # The first tick catches up with the catalog.
    dev.wait_until(lambda: cart_product_title(stores, str(desk)) == "Desk", ARRIVAL_TIMEOUT_S,
                   "the first sensor run to copy the catalog")

    changed_at = time.monotonic()
    stores.product_db.products.update_one(
        {"_id": lamp}, {"$set": {"title": "Lamp, brass", "updatedAt": datetime.now(UTC)}})
    dev.wait_until(lambda: cart_product_title(stores, str(lamp)) == "Lamp, brass", ARRIVAL_TIMEOUT_S,
                   "the product change to reach the cart database")
    arrival_s = time.monotonic() - changed_at
    with capsys.disabled():
        print(f"\nproduct change reached the cart DB in {arrival_s:.1f}s "
              f"(sensor interval {SENSOR_INTERVAL_S}s, run queue, run process start, sync)")

    def finished_sensor_runs() -> list[dict] | None:
        runs = sensor_runs(dev)
        return runs if len(runs) == 2 and all(run["status"] in DONE for run in runs) else None

    runs = dev.wait_until(finished_sensor_runs, 60, "both sensor runs to finish")
    client = DagsterGraphQLClient("127.0.0.1", port_number=dev.port)
    for run in runs:
        assert run["jobName"] == "product_sync_incremental"
        assert client.get_run_status(run["runId"]) == DagsterRunStatus.SUCCESS
    run_keys = sorted(tag["value"] for run in runs for tag in run["tags"] if tag["key"] == "dagster/run_key")
    assert len(run_keys) == 2 and all(key.startswith("product-changes-") for key in run_keys)

    # Two syncs into cart_db launched at once: the queue starts one and holds the other.
    first, second = (client.submit_job_execution("product_sync_incremental", repository_location_name=LOCATION,
                                                 repository_name=REPOSITORY) for _ in range(2))
    held = []

    def both_done() -> bool:
        statuses = {run["runId"]: run["status"] for run in dev.runs(runIds=[first, second])}
        if {statuses[first], statuses[second]} & IN_PROGRESS:
            assert not {statuses[first], statuses[second]} <= IN_PROGRESS, f"two cart_db syncs at once: {statuses}"
            if "QUEUED" in statuses.values():
                held.append(statuses)
        return set(statuses.values()) <= DONE

    dev.wait_until(both_done, ARRIVAL_TIMEOUT_S, "both launched syncs to finish")
    assert held, "never saw one sync running while the other waited in the queue"
    for run_id in (first, second):
        assert client.get_run_status(run_id) == DagsterRunStatus.SUCCESS
    earlier, later = sorted(dev.runs(runIds=[first, second]), key=lambda run: run["startTime"])
    assert later["startTime"] >= earlier["endTime"]
    with capsys.disabled():
        print(f"queued sync started {later['startTime'] - earlier['endTime']:.1f}s after the other ended; "
              f"seen held in the queue {len(held)} times")


def warehouse_payment(stores, order_id: str) -> tuple[str, datetime | None] | None:
    with stores.warehouse_engine.connect() as conn:
        row = conn.execute(sa.text("SELECT payment_status, paid_at FROM orders WHERE order_id = :id"),
                           {"id": order_id}).one_or_none()
    return None if row is None else (row.payment_status, row.paid_at)


def paid_orders(stores, day: date) -> int | None:
    with stores.warehouse_engine.connect() as conn:
        return conn.execute(sa.text("SELECT paid_orders FROM daily_sales WHERE day = :day"),
                            {"day": day}).scalar_one_or_none()


def finished_runs(dev: DagsterDev, sensor: str, count: int) -> list[dict] | None:
    runs = sensor_runs(dev, sensor)
    return runs if len(runs) == count and all(run["status"] in DONE for run in runs) else None


@pytest.mark.timeout(2000)
def test_a_late_payment_reaches_the_warehouse_through_order_changes(stores, dagster_dev, capsys):
    dev = dagster_dev
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    created_at = datetime(yesterday.year, yesterday.month, yesterday.day, 23, 40, tzinfo=UTC)
    order = make_order(created_at, orderStatus="pending", paymentStatus="pending", paidAt=None)
    order_id = str(order["_id"])
    stores.order_db.orders.insert_one(order)

    start_sensor(dev, "order_changes")
    # Yesterday has never been built: the first tick requests it. The payment comes after that run.
    dev.wait_until(lambda: finished_runs(dev, "order_changes", 1), BUILD_TIMEOUT_S, "the first build of yesterday")
    assert warehouse_payment(stores, order_id) == ("pending", None)
    assert paid_orders(stores, yesterday) == 0

    paid_at = datetime.now(UTC).replace(microsecond=0)
    paid = time.monotonic()
    stores.order_db.orders.update_one({"_id": order["_id"]}, {"$set": {
        "orderStatus": "processing", "paymentStatus": "paid", "paidAt": paid_at}})
    dev.wait_until(lambda: warehouse_payment(stores, order_id) == ("paid", paid_at)
                   and paid_orders(stores, yesterday) == 1, BUILD_TIMEOUT_S,
                   "the late payment to reach the warehouse's orders and daily_sales")
    latency_s = time.monotonic() - paid

    runs = dev.wait_until(lambda: finished_runs(dev, "order_changes", 2), BUILD_TIMEOUT_S,
                          "the rebuild to finish")
    assert {run["status"] for run in runs} == {"SUCCESS"}
    rebuild = max(runs, key=lambda run: run["startTime"])
    with capsys.disabled():
        print(f"\nlate payment reached the warehouse (orders and daily_sales) in {latency_s:.1f}s (sensor interval {SENSOR_INTERVAL_S}s, "
              f"run queue, run process start, rebuild of the day); the rebuild run took "
              f"{rebuild['endTime'] - rebuild['startTime']:.1f}s from start to end, its checks included")
    tags = [{tag["key"]: tag["value"] for tag in run["tags"]} for run in runs]
    assert {run_tags["dagster/partition"] for run_tags in tags} == {yesterday.isoformat()}
    assert all(run_tags["dagster/run_key"].startswith(f"order-day-{yesterday}-") for run_tags in tags)
