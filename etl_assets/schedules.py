"""Schedules: the periodic syncs, the nightly reconcile, hourly validation and the daily warehouse build.

Cron strings and the time zone come from etl_assets/settings.py. Every schedule follows
SHOP_SYNC_AUTOMATION_DEFAULT (running unless set to "stopped"). The incremental product sync also runs
on a schedule although product_changes launches it on every change: the schedule is the safety net for
writes whose updatedAt lands behind the sensor's watermark, and for a stopped sensor.
"""

import dagster as dg

from etl_assets.jobs import full_reconcile, product_sync_incremental, validate, warehouse_build
from etl_assets.settings import SETTINGS

SCHEDULE_STATUS = (
    dg.DefaultScheduleStatus.RUNNING if SETTINGS.automation_running else dg.DefaultScheduleStatus.STOPPED
)

product_sync_incremental_schedule = dg.ScheduleDefinition(
    name="product_sync_incremental_schedule",
    job=product_sync_incremental,
    cron_schedule=SETTINGS.product_sync_cron,
    execution_timezone=SETTINGS.schedule_timezone,
    default_status=SCHEDULE_STATUS,
    description="Copy changed products into the cart database (SHOP_SYNC_PRODUCT_SYNC_CRON).",
)

full_reconcile_schedule = dg.ScheduleDefinition(
    name="full_reconcile_schedule",
    job=full_reconcile,
    cron_schedule=SETTINGS.full_reconcile_cron,
    execution_timezone=SETTINGS.schedule_timezone,
    default_status=SCHEDULE_STATUS,
    description="Nightly full product and cart sync with every check of both (SHOP_SYNC_FULL_RECONCILE_CRON).",
)

validate_schedule = dg.ScheduleDefinition(
    name="validate_schedule",
    job=validate,
    cron_schedule=SETTINGS.validation_cron,
    execution_timezone=SETTINGS.schedule_timezone,
    default_status=SCHEDULE_STATUS,
    description="Run every asset check against the stores (SHOP_SYNC_VALIDATION_CRON).",
)

# Builds the day that just ended, in the partitions' time zone (UTC), at SHOP_SYNC_WAREHOUSE_BUILD_TIME.
warehouse_build_schedule = dg.build_schedule_from_partitioned_job(
    warehouse_build,
    name="warehouse_build_schedule",
    hour_of_day=SETTINGS.warehouse_build_hour,
    minute_of_hour=SETTINGS.warehouse_build_minute,
    default_status=SCHEDULE_STATUS,
    description="Load yesterday's orders and rebuild yesterday's analytics tables.",
)

ALL_SCHEDULES = [
    product_sync_incremental_schedule,
    full_reconcile_schedule,
    validate_schedule,
    warehouse_build_schedule,
]
