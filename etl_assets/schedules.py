"""Schedules: the periodic syncs, the nightly reconcile, hourly validation and the nightly warehouse build
and sweep.

Cron strings and the time zone come from etl_assets/settings.py. Every schedule follows
SHOP_SYNC_AUTOMATION_DEFAULT (running unless set to "stopped"). The incremental product sync also runs
on a schedule although product_changes launches it on every change: the schedule is the safety net for
writes whose updatedAt lands behind the sensor's watermark, and for a stopped sensor.
"""

from datetime import UTC, timedelta

import dagster as dg

from etl_assets.jobs import full_reconcile, product_sync_incremental, validate, warehouse_build
from etl_assets.partitions import order_window
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.sensors import order_day_requests
from etl_assets.settings import SETTINGS

SCHEDULE_STATUS = (
    dg.DefaultScheduleStatus.RUNNING if SETTINGS.automation_running else dg.DefaultScheduleStatus.STOPPED
)


def cron_schedule(job, cron: str, description: str) -> dg.ScheduleDefinition:
    """`job` on `cron` in the configured time zone, named after the job."""
    return dg.ScheduleDefinition(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone=SETTINGS.schedule_timezone,
        default_status=SCHEDULE_STATUS,
        description=description,
    )


product_sync_incremental_schedule = cron_schedule(
    product_sync_incremental, SETTINGS.product_sync_cron,
    "Copy changed products into the cart database (SHOP_SYNC_PRODUCT_SYNC_CRON).",
)
full_reconcile_schedule = cron_schedule(
    full_reconcile, SETTINGS.full_reconcile_cron,
    "Nightly full product and cart sync with every check of both (SHOP_SYNC_FULL_RECONCILE_CRON).",
)
validate_schedule = cron_schedule(
    validate, SETTINGS.validation_cron, "Run every asset check against the stores (SHOP_SYNC_VALIDATION_CRON)."
)


@dg.schedule(
    name="warehouse_build_schedule",
    job=warehouse_build,
    cron_schedule=f"{SETTINGS.warehouse_build_minute} {SETTINGS.warehouse_build_hour} * * *",
    # The partitions' own time zone: "yesterday" is a UTC day like every partition.
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Nightly: build the day that just ended, and sweep the lookback window "
    "(SHOP_SYNC_ORDER_LOOKBACK_DAYS): rebuild every day whose orders differ from what its last build "
    "recorded, so a change order_changes missed (sensor stopped, failed tick) heals by itself.",
)
def warehouse_build_schedule(
    context: dg.ScheduleEvaluationContext, order_db: MongoStoreResource, warehouse: PostgresStoreResource
):
    yesterday = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    found = order_day_requests(context.instance, order_db.db()["orders"], warehouse.engine(),
                               *order_window(yesterday))
    sweep = {request.partition_key: request for request in found.requests}
    # The day that ended is built even without orders (its daily_sales row of zeros and its cart funnel),
    # with the fingerprint the sweep took when it has one, so its load need not take it again.
    ended = sweep.pop(yesterday.isoformat(), None)
    return [dg.RunRequest(run_key=yesterday.isoformat(), partition_key=yesterday.isoformat(),
                          tags=ended.tags if ended else {}), *sweep.values()]


all_schedules = [
    product_sync_incremental_schedule,
    full_reconcile_schedule,
    validate_schedule,
    warehouse_build_schedule,
]
