"""Sensors: source changes that launch syncs, and alerts on failed runs and failed checks.

Default status (docs/automation.md):
- product_changes, cart_changes, new_orders follow SHOP_SYNC_AUTOMATION_DEFAULT (running unless set to
  "stopped"); they only launch runs, and the run queue keeps two syncs into one store apart.
- alert_on_run_failure, alert_on_failed_checks are always running: a failure must never go unnoticed.

Each change sensor keeps a JSON cursor and derives its run_key from the watermark it saw, so the same
changes never launch twice, even when a tick is evaluated again after a crash.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa
from bson import ObjectId, json_util
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from etl_assets.alerts import Alert, AlertWebhookResource, FailedCheck, deliver
from etl_assets.assets.orders import DAILY
from etl_assets.jobs import cart_sync, product_sync_incremental, warehouse_build
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.settings import SETTINGS

CHANGE_SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if SETTINGS.automation_running else dg.DefaultSensorStatus.STOPPED
# A change-stream tick stops reading after this many events; the rest are read by the next tick.
MAX_STREAM_EVENTS_PER_TICK = 10_000
STREAM_AWAIT_MS = 200
# Set by the instance on a failed run that run_retries will launch again.
WILL_RETRY_TAG = "dagster/will_retry"
_DAGSTER_WRAPPERS = ("Dagster", "RetryRequested")


def load_cursor(context: dg.SensorEvaluationContext) -> dict[str, Any] | None:
    return json_util.loads(context.cursor) if context.cursor else None


def dump_cursor(state: dict[str, Any]) -> str:
    return json_util.dumps(state, sort_keys=True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _digest(value: Any) -> str:
    return hashlib.sha256(json_util.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# ---------- products ----------

def newest_product_change(
    products: Collection, since: datetime | None, now: datetime
) -> tuple[datetime | None, int]:
    """The newest updatedAt after `since`, up to `now`, and how many products changed in between. A
    product dated in the future would otherwise move the cursor past every change still to come."""
    query = {"updatedAt": {"$gt": since or datetime.min.replace(tzinfo=UTC), "$lte": now}}
    newest = products.find_one(query, {"updatedAt": 1}, sort=[("updatedAt", -1)])
    if newest is None:
        return None, 0
    return newest["updatedAt"], products.count_documents(query)


def newest_product_without_updated_at(
    products: Collection, after: ObjectId | None, now: datetime
) -> tuple[ObjectId | None, int]:
    """The newest _id after `after`, created up to `now`, of the products without updatedAt (a bulk
    import), and how many there are: what the incremental sync's second stream reads. The same
    (updatedAt, _id) index, bounded on both fields."""
    ids: dict[str, ObjectId] = {"$lt": ObjectId.from_datetime(now + timedelta(seconds=1))}
    if after is not None:
        ids["$gt"] = after
    query = {"updatedAt": None, "_id": ids}
    newest = products.find_one(query, {"_id": 1}, sort=[("updatedAt", -1), ("_id", -1)])
    if newest is None:
        return None, 0
    return newest["_id"], products.count_documents(query)


@dataclass
class StreamRead:
    resume_token: dict  # where the next tick resumes; it moves with the server's clock even when idle
    last_event: dict | None  # the last change event's own token: the same changes, the same value
    events: int


def read_change_stream(products: Collection, resume_token: dict | None) -> StreamRead:
    """The change events after `resume_token` (a new stream starts now), at most a tick's worth."""
    with products.watch(resume_after=resume_token, max_await_time_ms=STREAM_AWAIT_MS) as stream:
        read = StreamRead(stream.resume_token, None, 0)
        while read.events < MAX_STREAM_EVENTS_PER_TICK and (event := stream.try_next()) is not None:
            read.last_event = event["_id"]
            read.events += 1
        read.resume_token = stream.resume_token
        return read


def _product_sync_request(run_key: str, changed: int) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, tags={"shop-sync/changed-products": str(changed)})


def _poll_products(products: Collection, state: dict[str, Any]) -> dg.SensorResult:
    since, after = _when(state.get("updated_at")), state.get("created_id")
    now = datetime.now(UTC)
    newest, changed = newest_product_change(products, since, now)
    created, inserted = newest_product_without_updated_at(products, ObjectId(after) if after else None, now)
    if newest is None and created is None:
        return dg.SensorResult(skip_reason=f"no product changed after {_iso(since) or 'the start'}, and none "
                                           f"without updatedAt inserted after {after or 'the start'}",
                               cursor=dump_cursor(state))
    moved = {**state, **({"updated_at": newest.isoformat()} if newest else {}),
             **({"created_id": str(created)} if created else {})}
    run_key = f"product-changes-{moved.get('updated_at') or 'none'}"
    if moved.get("created_id"):
        run_key += f"-{moved['created_id']}"
    return dg.SensorResult(run_requests=[_product_sync_request(run_key, changed + inserted)],
                           cursor=dump_cursor(moved))


def _stream_products(
    context: dg.SensorEvaluationContext, products: Collection, state: dict[str, Any]
) -> dg.SensorResult:
    token = state.get("resume_token")
    if token is not None:
        try:
            read = read_change_stream(products, token)
        except OperationFailure as err:
            # The token fell off the oplog or is invalid: start a new stream and catch up by polling.
            context.log.warning(f"product change stream could not resume ({err.code}): {err.details or err}")
        else:
            state = {**state, "resume_token": read.resume_token}
            if read.last_event is None:
                return dg.SensorResult(skip_reason="no product change event since the last tick",
                                       cursor=dump_cursor(state))
            return dg.SensorResult(
                run_requests=[_product_sync_request(f"product-changes-stream-{_digest(read.last_event)}",
                                                    read.events)],
                cursor=dump_cursor(state),
            )
    try:
        # Opened before the catch-up poll, so no change falls between the two.
        token = read_change_stream(products, None).resume_token
    except OperationFailure as err:
        context.log.warning(f"the product store has no change streams ({err.code}); polling updatedAt")
        return _poll_products(products, {**state, "resume_token": None})
    return _poll_products(products, {**state, "resume_token": token})


@dg.sensor(
    job=product_sync_incremental,
    minimum_interval_seconds=SETTINGS.product_sensor_interval_s,
    default_status=CHANGE_SENSOR_STATUS,
    description="Launches an incremental product sync when products changed in Product MongoDB: by polling "
    "updatedAt past the cursor (and the _id of products inserted without updatedAt), or by reading the change "
    "stream when SHOP_SYNC_PRODUCT_CHANGE_STREAM is set.",
)
def product_changes(context: dg.SensorEvaluationContext, product_db: MongoStoreResource):
    state = load_cursor(context) or {"updated_at": None}
    products = product_db.db()["products"]
    if SETTINGS.product_change_stream:
        return _stream_products(context, products, state)
    return _poll_products(products, state)


# ---------- carts ----------

_CART_STATE = sa.text("""
    SELECT count(*) AS carts, max(updated_at) AS updated_at, coalesce(sum(version), 0) AS versions,
           (SELECT max(synced_at) FROM product) AS products_synced_at
    FROM cart
""")


def cart_watermark(cart_db: sa.Engine) -> dict[str, Any]:
    """What moves when a cart is added, removed, updated (updated_at) or bumped (version), or when the
    product copy the snapshots embed is rewritten."""
    with cart_db.connect() as conn:
        row = conn.execute(_CART_STATE).one()
    return {"carts": row.carts, "updated_at": _iso(row.updated_at), "versions": int(row.versions),
            "products_synced_at": _iso(row.products_synced_at)}


@dg.sensor(
    job=cart_sync,
    minimum_interval_seconds=SETTINGS.cart_sensor_interval_s,
    default_status=CHANGE_SENSOR_STATUS,
    description="Launches a cart snapshot sync when carts moved (count, updated_at, version) or the product "
    "copy they embed was rewritten.",
)
def cart_changes(context: dg.SensorEvaluationContext, cart_db: PostgresStoreResource):
    previous = load_cursor(context)
    current = cart_watermark(cart_db.engine())
    if current == previous or (previous is None and current["carts"] == 0):
        return dg.SensorResult(skip_reason=f"no cart changed (carts {current['carts']}, newest update "
                                           f"{current['updated_at'] or 'none'})", cursor=dump_cursor(current))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"cart-changes-{_digest(current)}",
                                    tags={"shop-sync/cart-watermark": json.dumps(current)})],
        cursor=dump_cursor(current),
    )


# ---------- orders ----------

def newest_order(orders: Collection, before: datetime) -> datetime | None:
    newest = orders.find_one({"createdAt": {"$gte": DAILY.start, "$lt": before}}, {"createdAt": 1},
                             sort=[("createdAt", -1)])
    return newest["createdAt"] if newest else None


def orders_by_day(orders: Collection, since: datetime | None, before: datetime) -> list[dict[str, Any]]:
    """Per partition day, the orders created after `since` and before `before`, and the newest."""
    created = {"$gte": DAILY.start, "$lt": before}
    if since:
        created["$gt"] = since
    return list(orders.aggregate([
        {"$match": {"createdAt": created}},
        {"$group": {
            "_id": {"$dateToString": {"format": DAILY.fmt, "date": "$createdAt", "timezone": DAILY.timezone}},
            "orders": {"$sum": 1},
            "newest": {"$max": "$createdAt"},
        }},
        {"$sort": {"_id": 1}},
    ]))


@dg.sensor(
    job=warehouse_build,
    minimum_interval_seconds=SETTINGS.order_sensor_interval_s,
    default_status=CHANGE_SENSOR_STATUS,
    description="Requests the warehouse partitions (orders, daily_sales, product_sales, cart_funnel) of the "
    "days that received orders since the cursor. A day is requested once its partition exists.",
)
def new_orders(context: dg.SensorEvaluationContext, order_db: MongoStoreResource):
    state = load_cursor(context)
    last_window = DAILY.get_last_partition_window()
    if last_window is None:
        return dg.SkipReason("the warehouse's first day has not ended yet")
    orders = order_db.db()["orders"]
    # Orders of the day still open stay above the watermark until its partition exists.
    if state is None:
        # First tick: watch from here on. Older days are built by the daily schedule or a backfill.
        start = {"created_at": _iso(newest_order(orders, last_window.end))}
        return dg.SensorResult(skip_reason=f"watching orders created after {start['created_at'] or 'the start'}",
                               cursor=dump_cursor(start))
    days = orders_by_day(orders, _when(state["created_at"]), last_window.end)
    newest = max((day["newest"] for day in days), default=None)
    if newest is None:
        return dg.SensorResult(skip_reason=f"no new order after {state['created_at'] or 'the start'}",
                               cursor=dump_cursor(state))
    watermark = newest.isoformat()
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"new-orders-{day['_id']}-{watermark}", partition_key=day["_id"],
                          tags={"shop-sync/new-orders": str(day["orders"])})
            for day in days
        ],
        cursor=dump_cursor({"created_at": watermark}),
    )


# ---------- alerts ----------

def failed_error_checks(instance: dg.DagsterInstance, run_id: str) -> tuple[FailedCheck, ...]:
    """The ERROR-severity checks that failed in a run."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = (record.event_log_entry.dagster_event.asset_check_evaluation_data for record in records)
    return tuple(
        FailedCheck(e.asset_key.to_user_string(), e.check_name, e.description)
        for e in evaluations
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    )


def run_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, ...]:
    """The assets a run planned to materialize or check (a whole asset job's run selects none itself)."""
    planned = instance.get_asset_keys_for_run(run.run_id, of_type={
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED})
    return tuple(sorted(key.to_user_string() for key in {*planned, *(run.asset_selection or ())}))


def _run_url(run_id: str) -> str | None:
    return f"{SETTINGS.ui_base_url}/runs/{run_id}" if SETTINGS.ui_base_url else None


def _code_location(run: dg.DagsterRun) -> str | None:
    return run.remote_job_origin.location_name if run.remote_job_origin else None


def step_error(event: dg.DagsterEvent) -> str | None:
    """The error a step failed with: the user code's own error, not Dagster's wrapper around it (a
    step that used up its retries fails with RetryRequestedFromPolicy caused by the last error)."""
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cause and error.cls_name and error.cls_name.startswith(_DAGSTER_WRAPPERS):
        error = error.cause
    if error is None:
        return None
    # The message starts with the exception's dotted path; the class name is enough for a reader.
    qualified, _, text = error.message.partition(": ")
    if text and error.cls_name and qualified.endswith(error.cls_name):
        return f"{error.cls_name}: {text}"
    return error.message


@dg.run_failure_sensor(
    minimum_interval_seconds=SETTINGS.alert_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts on every failed run of this code location (syncs, validation, warehouse builds).",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alert_webhook: AlertWebhookResource):
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    errors = [error for error in map(step_error, step_failures) if error]
    alert = Alert(
        kind="run_failure",
        run_id=run.run_id,
        job=run.job_name,
        assets=run_assets(context.instance, run),
        summary=errors[0] if errors else (context.failure_event.message or "the run failed"),
        failed_steps=tuple(event.step_key for event in step_failures if event.step_key),
        failed_checks=failed_error_checks(context.instance, run.run_id),
        will_retry=run.tags.get(WILL_RETRY_TAG) == "true",
        run_url=_run_url(run.run_id),
        code_location=_code_location(run),
    )
    deliver(alert, alert_webhook, context.log)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=SETTINGS.alert_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when a run succeeded but an ERROR-severity asset check in it failed (failed runs "
    "are reported, with their failed checks, by alert_on_run_failure).",
)
def alert_on_failed_checks(context: dg.RunStatusSensorContext, alert_webhook: AlertWebhookResource):
    run = context.dagster_run
    failed = failed_error_checks(context.instance, run.run_id)
    if not failed:
        return dg.SkipReason(f"run {run.run_id} failed no ERROR-severity check")
    names = ", ".join(f"{check.asset}:{check.check}" for check in failed[:5])
    alert = Alert(
        kind="check_failure",
        run_id=run.run_id,
        job=run.job_name,
        assets=run_assets(context.instance, run),
        summary=f"{len(failed)} ERROR-severity check(s) failed: {names}",
        failed_checks=failed,
        run_url=_run_url(run.run_id),
        code_location=_code_location(run),
    )
    deliver(alert, alert_webhook, context.log)


ALL_SENSORS = [product_changes, cart_changes, new_orders, alert_on_run_failure, alert_on_failed_checks]
