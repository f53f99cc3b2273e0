"""The daily partitions every order asset and every warehouse table shares, and the days of them that
the automation keeps in step with the source."""

from datetime import date

import dagster as dg

from etl_assets.settings import SETTINGS
from etl_assets.sync.order_days import lookback_window

# The UTC day of an order's createdAt.
DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")

# A backfill launches one run per month of days instead of one per day: on the K8sRunLauncher each run
# is a pod, so a year costs 12 pods, not 365. The assets loop over `context.partition_keys` and replace
# each day in its own transaction, so a failed run keeps the days it finished and its retry redoes at
# most a month. A single run for the whole range would make every retry start over from the first day.
DAILY_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=31)


def order_window(last_day: date) -> tuple[date, date]:
    """The days whose warehouse rows order_changes, the nightly sweep and the coverage check keep in step
    with the source: SHOP_SYNC_ORDER_LOOKBACK_DAYS up to `last_day`, none before the first partition."""
    return lookback_window(last_day, SETTINGS.order_lookback_days, DAILY.start.date())


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days this run materializes: one for a daily run, up to a month in a backfill run."""
    return [date.fromisoformat(key) for key in context.partition_keys]
