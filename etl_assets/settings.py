"""Every SHOP_SYNC_* setting, read once from the environment: automation (sensor intervals, cron
strings, time zones), the product sync's mass-deactivation guard and the freshness checks' windows.

Every variable is optional; the defaults are production's. docs/automation.md lists them. Store
connections and the alert webhook URL are resources configured through dg.EnvVar instead (resources.py,
alerts.py), so their values never appear in the UI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from etl_assets.sync.guard import DEFAULT_FLOOR, DEFAULT_MAX_SHARE, DeactivationGuard

PREFIX = "SHOP_SYNC_"
ALERT_WEBHOOK_URL_ENV = "ALERT_WEBHOOK_URL"


class SettingsError(ValueError):
    """An automation setting in the environment has a value that cannot be used."""


@dataclass(frozen=True)
class AutomationSettings:
    # "running": the change sensors and the schedules start with the deployment; "stopped": someone
    # turns them on in the UI. The alert sensors are always running.
    automation_default: str = "running"
    product_sensor_interval_s: int = 30
    # Read the catalog's change stream (resume token in the sensor cursor) instead of polling updatedAt.
    product_change_stream: bool = False
    cart_sensor_interval_s: int = 30
    order_sensor_interval_s: int = 60
    # Days of orders, up to the last ended day, that order_changes and the nightly sweep keep in step
    # with the source; older days change in the warehouse only by a backfill.
    order_lookback_days: int = 35
    alert_sensor_interval_s: int = 30
    schedule_timezone: str = "UTC"
    product_sync_cron: str = "*/15 * * * *"
    full_reconcile_cron: str = "0 2 * * *"
    validation_cron: str = "0 * * * *"
    # The daily warehouse schedule builds yesterday's partition at this time of day, in the partitions'
    # own time zone (UTC): a daily partitioned schedule takes no cron string of its own.
    warehouse_build_hour: int = 0
    warehouse_build_minute: int = 30
    # Whether ALERT_WEBHOOK_URL is set; its value is read only through dg.EnvVar (alerts.py).
    alert_webhook_configured: bool = False
    # Base URL of the Dagster UI, for links in alerts (e.g. https://dagster.example.com); optional.
    ui_base_url: str | None = None
    # product_sync_fanout: the _id ranges a full product sync is split into, each its own step, and
    # whether those steps run as Kubernetes Jobs (k8s_job_executor) or as local processes.
    product_sync_ranges: int = 2
    fanout_on_kubernetes: bool = False
    # A full product sync refuses to deactivate more than this share of the active rows (0..1), or
    # more than the floor when that is larger; the check active_rows_did_not_drop uses the same limit.
    max_deactivation_share: float = DEFAULT_MAX_SHARE
    deactivation_floor: int = DEFAULT_FLOOR
    # The freshness checks' windows (checks/freshness.py): the incremental product sync runs every 15
    # minutes; the nightly full reconcile rebuilds the cart snapshots at least once a day.
    product_copy_freshness: timedelta = timedelta(minutes=60)
    cart_snapshots_freshness: timedelta = timedelta(minutes=25 * 60)

    def deactivation_guard(self, *, allow_mass_deactivation: bool = False) -> DeactivationGuard:
        return DeactivationGuard(self.max_deactivation_share, self.deactivation_floor, allow_mass_deactivation)

    @property
    def automation_running(self) -> bool:
        return self.automation_default == "running"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AutomationSettings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def text(name: str, default: str) -> str:
            return env.get(PREFIX + name.upper(), default).strip() or default

        def positive_int(name: str, default: int, what: str = "integer") -> int:
            raw = text(name, str(default))
            if not raw.isdigit() or int(raw) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be a positive {what}, not {raw!r}")
            return int(raw)

        def minutes(name: str, default: timedelta) -> timedelta:
            return timedelta(minutes=positive_int(name, default // timedelta(minutes=1), "number of minutes"))

        def flag(name: str, default: bool) -> bool:
            raw = text(name, "true" if default else "false").lower()
            if raw not in ("true", "false", "1", "0", "yes", "no"):
                raise SettingsError(f"{PREFIX}{name.upper()} must be true or false, not {raw!r}")
            return raw in ("true", "1", "yes")

        def share(name: str, default: float) -> float:
            raw = text(name, str(default))
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not 0 <= value <= 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be a fraction between 0 and 1, not {raw!r}")
            return value

        def count(name: str, default: int) -> int:
            raw = text(name, str(default))
            if not raw.isdigit():
                raise SettingsError(f"{PREFIX}{name.upper()} must be a whole number ≥ 0, not {raw!r}")
            return int(raw)

        automation_default = text("automation_default", defaults.automation_default).lower()
        if automation_default not in ("running", "stopped"):
            raise SettingsError(f"{PREFIX}AUTOMATION_DEFAULT must be running or stopped, not {automation_default!r}")
        build_time = text("warehouse_build_time", f"{defaults.warehouse_build_hour:02d}:"
                                                  f"{defaults.warehouse_build_minute:02d}")
        hour, _, minute = build_time.partition(":")
        if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise SettingsError(f"{PREFIX}WAREHOUSE_BUILD_TIME must be HH:MM, not {build_time!r}")
        return cls(
            automation_default=automation_default,
            product_sensor_interval_s=positive_int("product_sensor_interval_s", defaults.product_sensor_interval_s),
            product_change_stream=flag("product_change_stream", defaults.product_change_stream),
            cart_sensor_interval_s=positive_int("cart_sensor_interval_s", defaults.cart_sensor_interval_s),
            order_sensor_interval_s=positive_int("order_sensor_interval_s", defaults.order_sensor_interval_s),
            order_lookback_days=positive_int("order_lookback_days", defaults.order_lookback_days),
            alert_sensor_interval_s=positive_int("alert_sensor_interval_s", defaults.alert_sensor_interval_s),
            schedule_timezone=text("schedule_timezone", defaults.schedule_timezone),
            product_sync_cron=text("product_sync_cron", defaults.product_sync_cron),
            full_reconcile_cron=text("full_reconcile_cron", defaults.full_reconcile_cron),
            validation_cron=text("validation_cron", defaults.validation_cron),
            warehouse_build_hour=int(hour),
            warehouse_build_minute=int(minute),
            alert_webhook_configured=bool(env.get(ALERT_WEBHOOK_URL_ENV, "").strip()),
            ui_base_url=text("ui_base_url", "").rstrip("/") or None,
            product_sync_ranges=positive_int("product_sync_ranges", defaults.product_sync_ranges),
            fanout_on_kubernetes=flag("fanout_on_kubernetes", defaults.fanout_on_kubernetes),
            max_deactivation_share=share("max_deactivation_share", defaults.max_deactivation_share),
            deactivation_floor=count("deactivation_floor", defaults.deactivation_floor),
            product_copy_freshness=minutes("product_copy_freshness_minutes", defaults.product_copy_freshness),
            cart_snapshots_freshness=minutes("cart_snapshots_freshness_minutes", defaults.cart_snapshots_freshness),
        )


SETTINGS = AutomationSettings.from_env()
