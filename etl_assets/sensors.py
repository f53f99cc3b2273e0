"""Change sensors: they launch a sync when its source changed. The alert sensors are in alerts.py, the
freshness sensor in checks/freshness.py.

product_changes, cart_changes and order_changes follow SHOP_SYNC_AUTOMATION_DEFAULT (running unless set
to "stopped", docs/automation.md); they only launch runs, and the run queue keeps two syncs into one
store apart.

product_changes and cart_changes keep a JSON cursor and derive their run_key from the watermark they saw;
order_changes compares the source with the build state the warehouse records. Either way the same
changes never launch twice, even when a tick is evaluated again after a crash.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa
from bson import ObjectId, json_util
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from etl_assets.assets.orders import ORDER_COUNT_TAG, ORDER_FINGERPRINT_TAG
from etl_assets.jobs import WILL_RETRY_TAG, cart_sync, product_sync_incremental, warehouse_build
from etl_assets.partitions import DAILY, order_window
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.settings import SETTINGS
from etl_assets.sync.order_days import days_to_build

CHANGE_SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if SETTINGS.automation_running else dg.DefaultSensorStatus.STOPPED
# A change-stream tick stops reading after this many events; the rest are read by the next tick.
MAX_STREAM_EVENTS_PER_TICK = 10_000
STREAM_AWAIT_MS = 200


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

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def days_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """The partition keys of warehouse_build runs queued or running: a single day, or a backfill's range."""
    days: set[str] = set()
    for run in instance.get_runs(dg.RunsFilter(job_name=warehouse_build.name, statuses=IN_FLIGHT)):
        if PARTITION_TAG in run.tags:
            days.add(run.tags[PARTITION_TAG])
        elif RANGE_START_TAG in run.tags and RANGE_END_TAG in run.tags:
            days.update(DAILY.get_partition_keys_in_range(
                dg.PartitionKeyRange(run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG])))
    return days


def failed_attempts(instance: dg.DagsterInstance, day: str, fingerprint: str) -> int:
    """Runs for this day and fingerprint that failed for good (the instance will not retry them)."""
    runs = instance.get_runs(dg.RunsFilter(job_name=warehouse_build.name, statuses=[dg.DagsterRunStatus.FAILURE],
                                           tags={PARTITION_TAG: day, ORDER_FINGERPRINT_TAG: fingerprint}))
    return sum(run.tags.get(WILL_RETRY_TAG) != "true" for run in runs)


@dataclass
class OrderDayRequests:
    requests: list[dg.RunRequest]
    in_flight: list[str]  # days to build that a queued or running run is building already


def order_day_requests(
    instance: dg.DagsterInstance, orders: Collection, warehouse: sa.Engine, first: date, last: date
) -> OrderDayRequests:
    """A warehouse_build run for every day from `first` to `last` whose orders differ from what its last
    build recorded, unless a run for it is queued or running.

    The run_key names the fingerprint, the build it replaces and the failed attempts so far: a tick
    evaluated again asks for the same runs, while a new change, a finished build or a run that failed
    for good gives a new key, so the day is requested again until a build records it."""
    in_flight = days_in_flight(instance)
    result = OrderDayRequests([], [])
    for stale in days_to_build(orders, warehouse, first, last):
        day, fingerprint = stale.day.isoformat(), stale.fingerprint.digest
        if day in in_flight:
            result.in_flight.append(day)
            continue
        replaces = stale.built.run_id if stale.built else "none"
        failed = failed_attempts(instance, day, fingerprint)
        result.requests.append(dg.RunRequest(
            run_key=f"order-day-{day}-{fingerprint[:16]}-after-{replaces}-failed-{failed}",
            partition_key=day,
            tags={ORDER_FINGERPRINT_TAG: fingerprint, ORDER_COUNT_TAG: str(stale.fingerprint.orders)},
        ))
    return result


@dg.sensor(
    job=warehouse_build,
    minimum_interval_seconds=SETTINGS.order_sensor_interval_s,
    default_status=CHANGE_SENSOR_STATUS,
    description="Rebuilds the warehouse partitions (orders, daily_sales, product_sales, cart_funnel) of every "
    "day in the lookback window (SHOP_SYNC_ORDER_LOOKBACK_DAYS) whose orders changed in any way, or that no "
    "build recorded: the source's per-day fingerprint against the one the day's last build recorded.",
)
def order_changes(context: dg.SensorEvaluationContext, order_db: MongoStoreResource,
                  warehouse: PostgresStoreResource):
    last_window = DAILY.get_last_partition_window()
    if last_window is None:
        return dg.SkipReason("the warehouse's first day has not ended yet")
    first, last = order_window(last_window.start.date())
    # No cursor: the build state in the warehouse is the watermark, so nothing can move past a day that
    # was never built.
    found = order_day_requests(context.instance, order_db.db()["orders"], warehouse.engine(), first, last)
    if not found.requests:
        building = f"; being built: {', '.join(found.in_flight)}" if found.in_flight else ""
        return dg.SkipReason(f"every day from {first} to {last} is built from its current orders{building}")
    return dg.SensorResult(run_requests=found.requests)


change_sensors = [product_changes, cart_changes, order_changes]
