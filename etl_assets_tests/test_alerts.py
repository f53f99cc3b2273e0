"""Alerts: a run that failed because a store was down, and a run whose ERROR check failed, each become
one structured log line and a webhook post that carries no secret."""

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import sqlalchemy as sa
from bson import ObjectId

from dev.stores import free_port
from etl_assets.alerts import (
    LOG_PREFIX,
    Alert,
    AlertWebhookResource,
    FailedCheck,
    alert_on_failed_checks,
    alert_on_run_failure,
    alert_webhook_resource,
    deliver,
    redact,
)
from etl_assets.assets.carts import cart_assets
from etl_assets.assets.products import product_assets
from etl_assets.checks import all_checks
from etl_assets.jobs import full_reconcile, product_sync_incremental
from etl_assets.resources import CART_DB, PRODUCT_DB, MongoStoreResource, PostgresStoreResource
from etl_assets.settings import ALERT_WEBHOOK_URL_ENV, SETTINGS


@dataclass
class Webhook:
    url: str
    posts: list[dict] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Webhook(f"http://127.0.0.1:{server.server_port}/hooks/shop-sync", received)
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("text", "expected"), [
    ("connect to postgresql+psycopg2://etl:s3cret@db:5432/cart failed",
     "connect to postgresql+psycopg2://***@db:5432/cart failed"),
    ("mongodb://admin:p%40ss@mongo-0,mongo-1/?replicaSet=rs0", "mongodb://***@mongo-0,mongo-1/?replicaSet=rs0"),
    ("https://ghp_abc123@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("GET https://api.example.com/x?id=3&token=abc&api_key=zzz", "GET https://api.example.com/x?id=3&token=***&api_key=***"),
    ("password=hunter2 user=etl", "password=*** user=etl"),
    ("postgresql+psycopg2://postgres@/cart?host=/tmp", "postgresql+psycopg2://***@/cart?host=/tmp"),
    ("Cart PostgreSQL is unavailable: connection refused", "Cart PostgreSQL is unavailable: connection refused"),
])
def test_redact_hides_credentials(text, expected):
    assert redact(text) == expected


def test_alert_payload_is_redacted_json_with_one_log_line(caplog):
    alert = Alert(
        kind="run_failure", run_id="0d5c1f7e-aaaa-bbbb-cccc-000000000000", job="cart_sync",
        assets=("order_db/carts",), summary="OperationalError: mongodb://etl:s3cret@orders:27017 timed out\nTrace",
        failed_steps=("order_db__carts",),
        failed_checks=(FailedCheck("order_db/carts", "snapshots_match_schema", "2 invalid; see token=abc"),),
        occurred_at=datetime(2026, 11, 23, 2, 5, tzinfo=UTC),
    )
    payload = alert.payload()
    assert payload["summary"] == "OperationalError: mongodb://***@orders:27017 timed out"
    assert payload["failed_checks"] == [{"asset": "order_db/carts", "check": "snapshots_match_schema",
                                         "description": "2 invalid; see token=***"}]
    with caplog.at_level(logging.INFO):
        deliver(alert, AlertWebhookResource(), logging.getLogger("test_alerts"))
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.getMessage().startswith(LOG_PREFIX)
    assert json.loads(record.getMessage().removeprefix(LOG_PREFIX)) == payload
    assert "s3cret" not in record.getMessage()


def test_a_dead_webhook_is_logged_and_does_not_raise(caplog):
    alert = Alert(kind="run_failure", run_id="r1", job="validate", assets=(), summary="boom")
    dead = AlertWebhookResource(url=f"http://127.0.0.1:{free_port()}/hook?token=secret-token", timeout_s=1)
    with caplog.at_level(logging.INFO):
        deliver(alert, dead, logging.getLogger("test_alerts"))
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith(LOG_PREFIX)
    assert "alert webhook delivery failed for run r1" in messages[1]
    assert "secret-token" not in " ".join(messages)


def test_webhook_url_comes_from_the_environment_through_env_var(monkeypatch, webhook):
    assert not alert_webhook_resource(SETTINGS if not SETTINGS.alert_webhook_configured
                                      else dataclasses.replace(SETTINGS, alert_webhook_configured=False)).enabled
    monkeypatch.setenv(ALERT_WEBHOOK_URL_ENV, webhook.url)
    configured = alert_webhook_resource(dataclasses.replace(SETTINGS, alert_webhook_configured=True))
    with dg.build_resources({"alert_webhook": configured}) as resources:
        assert resources.alert_webhook.url == webhook.url


def run_events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> dg.DagsterEvent:
    [record] = instance.get_records_for_run(run_id, of_type=event_type).records
    return record.event_log_entry.dagster_event


def run_status_context(sensor_name: str, instance: dg.DagsterInstance, run_id: str,
                       event_type: dg.DagsterEventType, webhook: Webhook) -> dg.RunStatusSensorContext:
    """What the daemon hands the alert sensor `sensor_name` for the run's `event_type`."""
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=run_events(instance, run_id, event_type),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
        resources={"alert_webhook": AlertWebhookResource(url=webhook.url)},
    )


def evaluate_run_failure_alert(instance: dg.DagsterInstance, run_id: str, webhook: Webhook):
    return alert_on_run_failure(run_status_context(
        "alert_on_run_failure", instance, run_id, dg.DagsterEventType.RUN_FAILURE, webhook).for_run_failure())


def test_run_failure_alert_for_a_sync_whose_store_is_down(stores, webhook, capfd):
    closed_port = free_port()
    resources = {**stores.resources(), "cart_db": PostgresStoreResource(
        url=f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{closed_port}/cart", store_name=CART_DB, migrations="cart_db",
        timeout_s=1)}
    defs = dg.Definitions(assets=product_assets, jobs=[product_sync_incremental], resources=resources)
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True}}) as instance:
        # The step retries (STORE_RETRY) against the closed port, then the run fails.
        result = defs.resolve_job_def("product_sync_incremental").execute_in_process(
            instance=instance, raise_on_error=False)
        assert not result.success
        capfd.readouterr()
        evaluate_run_failure_alert(instance, result.run_id, webhook)
        # The sensor logs to the console (and, in the daemon, to the tick's log in the UI).
        console = capfd.readouterr().err

    [post] = webhook.posts
    alert = post["alert"]
    assert {key: alert[key] for key in ("alert", "run_id", "job", "assets", "failed_steps", "will_retry")} == {
        "alert": "run_failure", "run_id": result.run_id, "job": "product_sync_incremental",
        "assets": ["cart_db/product"], "failed_steps": ["cart_db__product"], "will_retry": True,
    }
    assert alert["summary"].startswith("StoreUnavailableError: Cart PostgreSQL is unavailable: ")
    assert f"port {closed_port}" in alert["summary"]
    assert post["text"].startswith("shop-sync: product_sync_incremental failed (will retry), run ")
    logged = [line.partition(LOG_PREFIX)[2] for line in console.splitlines() if LOG_PREFIX in line]
    assert [json.loads(line) for line in logged] == [alert]
    assert "s3cret" not in json.dumps(post) + console
    print(f"\nalert payload: {json.dumps(alert, indent=2)}")


@dg.asset(key=["cart_db", "product"])
def product_copy() -> None:
    """Stands in for the product copy: the checks below are what this test is about."""


@dg.asset_check(asset=product_copy, description="Every active product in the copy is valid.")
def product_copy_matches_schema() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description="3 rows break the schema")


@dg.asset_check(asset=product_copy)
def product_copy_is_fresh() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset=product_copy)
def product_copy_has_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def evaluate_check_alert(instance, run_id: str, webhook: Webhook):
    return alert_on_failed_checks(run_status_context(
        "alert_on_failed_checks", instance, run_id, dg.DagsterEventType.RUN_SUCCESS, webhook))


def test_check_failure_alert_names_only_failed_error_checks(webhook):
    with dg.instance_for_test() as instance:
        failing = dg.materialize([product_copy, product_copy_matches_schema, product_copy_is_fresh,
                                  product_copy_has_rows], instance=instance)
        assert failing.success  # a failed check does not fail the run: only this sensor notices
        assert evaluate_check_alert(instance, failing.run_id, webhook) is None
        passing = dg.materialize([product_copy, product_copy_has_rows], instance=instance)
        assert isinstance(evaluate_check_alert(instance, passing.run_id, webhook), dg.SkipReason)

    [post] = webhook.posts
    alert = post["alert"]
    assert (alert["alert"], alert["run_id"], alert["assets"]) == ("check_failure", failing.run_id, ["cart_db/product"])
    assert alert["failed_checks"] == [{"asset": "cart_db/product", "check": "product_copy_matches_schema",
                                       "description": "3 rows break the schema"}]
    assert alert["summary"] == "1 ERROR-severity check(s) failed: cart_db/product:product_copy_matches_schema"


def test_run_failure_alert_carries_the_refused_deactivation_and_the_run_is_not_retried(stores, webhook):
    """Issue 12 §1: PRODUCT_MONGO_DB names a database that does not exist, and the nightly full sync runs."""
    stores.product_db.products.insert_many([{"_id": ObjectId(), "title": f"p{n}", "image": "i.png", "price": n}
                                            for n in range(500)])
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True}}) as instance:
        jobs = [product_sync_incremental, full_reconcile]
        assert dg.materialize(product_assets, instance=instance, resources=stores.resources()).success
        typo = {**stores.resources(), "product_db": MongoStoreResource(
            uri=stores.local.mongo.uri, database=f"{stores.product_db_name}_typo", store_name=PRODUCT_DB)}
        defs = dg.Definitions(assets=[*product_assets, *cart_assets], asset_checks=all_checks, jobs=jobs,
                              resources=typo)
        result = defs.resolve_job_def("full_reconcile").execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        evaluate_run_failure_alert(instance, result.run_id, webhook)
    with stores.cart_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM product WHERE is_active")).scalar_one() == 500

    [post] = webhook.posts
    alert = post["alert"]
    print(f"\nrefused deactivation, as the alert carries it:\n{alert['summary']}")
    assert alert["failed_steps"] == ["cart_db__product"] and alert["will_retry"] is False
    assert alert["summary"].startswith("Failure: product sync refused to deactivate 500 of 500 active products")
    assert "it read 0 documents from product_db.products" in alert["summary"]
    assert alert["summary"].endswith(
        'run config {"ops": {"cart_db__product": {"config": {"mode": "full", "allow_mass_deactivation": true}}}}')
