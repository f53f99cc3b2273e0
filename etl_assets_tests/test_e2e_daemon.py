"""End to end through the real daemon: `dagster dev` (webserver, daemon, code server) on free ports with
the local instance (QueuedRunCoordinator with the shop-sync/target limits), pointed at this test's stores.

A product changed in Product MongoDB reaches Cart PostgreSQL through product_changes → run queue →
product_sync_incremental, with nothing but the sensor turned on over GraphQL. Then two syncs into the
same store are launched at once, and the second waits in the queue until the first has finished.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from bson import ObjectId
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from etl_assets.local.stores import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_INSTANCE = REPO_ROOT / "etl_assets" / "local" / "dagster_local.yaml"
DAGSTER = str(Path(sys.executable).parent / "dagster")
LOCATION = "etl_assets.definitions"
REPOSITORY = "__repository__"
SENSOR_INTERVAL_S = 5
# Bounds, not expectations: a run process starts in a few seconds on a laptop.
START_TIMEOUT_S = 120
ARRIVAL_TIMEOUT_S = 180
IN_PROGRESS = {"STARTING", "STARTED"}
DONE = {"SUCCESS", "FAILURE", "CANCELED"}

START_SENSOR = """
mutation StartSensor($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
LOCATIONS = """
query { workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RUNS = """
query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { __typename ... on Runs { results {
  runId jobName status startTime endTime tags { key value } } } } }"""


@dataclass
class DagsterDev:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def graphql_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def query(self, query: str, **variables: Any) -> dict:
        response = requests.post(self.graphql_url, json={"query": query, "variables": variables}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def runs(self, **filters: Any) -> list[dict]:
        return self.query(RUNS, filter=filters)["runsOrError"]["results"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_until(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dagster dev exited:\n{self.log_tail()}"
            if value := predicate():
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{self.log_tail()}")


def _location_loaded(dev: DagsterDev) -> bool:
    try:
        entries = dev.query(LOCATIONS)["workspaceOrError"]["locationEntries"]
    except requests.RequestException:
        return False
    entry = next((e for e in entries if e["name"] == LOCATION), None)
    if entry is None or entry["loadStatus"] != "LOADED":
        return False
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry["locationOrLoadError"]
    return True


@pytest.fixture
def dagster_dev(stores, tmp_path: Path) -> Iterator[DagsterDev]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(LOCAL_INSTANCE, dagster_home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOP_SYNC_")}
    env.pop("ALERT_WEBHOOK_URL", None)
    env.update(stores.env())
    env.update({
        "DAGSTER_HOME": str(dagster_home),
        # Nothing ticks until the test turns it on, so no other run competes with the ones it measures.
        "SHOP_SYNC_AUTOMATION_DEFAULT": "stopped",
        "SHOP_SYNC_PRODUCT_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S),
    })
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", DAGSTER, "dev", "-h", "127.0.0.1", "-p", str(port),
             "-m", LOCATION],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    dev = DagsterDev(process, port, log)
    try:
        dev.wait_until(lambda: _location_loaded(dev), START_TIMEOUT_S, "the code location to load")
        yield dev
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Stop dagster dev and everything it started: its own process group, nothing else."""
    # The webserver, daemon and code server share the dev process's group (start_new_session).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def cart_product_title(stores, product_id: str) -> str | None:
    with stores.cart_engine.connect() as conn:
        return conn.execute(sa.text("SELECT title FROM product WHERE id = :id"), {"id": product_id}).scalar()


def sensor_runs(dev: DagsterDev) -> list[dict]:
    return dev.runs(tags=[{"key": "dagster/sensor_name", "value": "product_changes"}])


@pytest.mark.timeout(300)
def test_a_product_change_flows_to_the_cart_db_and_syncs_never_overlap(stores, dagster_dev, capsys):
    dev = dagster_dev
    lamp, desk = ObjectId(), ObjectId()
    stores.product_db.products.insert_many([
        {"_id": lamp, "title": "Lamp", "image": "lamp.png", "price": 10, "updatedAt": datetime.now(UTC)},
        {"_id": desk, "title": "Desk", "image": "desk.png", "price": 120, "updatedAt": datetime.now(UTC)},
    ])

    started = dev.query(START_SENSOR, selector={
        "repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": "product_changes"})
    assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started

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
