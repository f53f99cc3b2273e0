"""Each schedule's tick, evaluated from the real Definitions, and the settings that configure them."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from etl_assets.alerts import alert_sensors
from etl_assets.definitions import defs
from etl_assets.schedules import all_schedules
from etl_assets.sensors import change_sensors
from etl_assets.settings import SETTINGS, AutomationSettings, SettingsError

SCHEDULE_NAMES = [schedule.name for schedule in all_schedules]
SENSOR_NAMES = [sensor.name for sensor in [*change_sensors, *alert_sensors]]


def evaluate(schedule_name: str, at: datetime) -> dg.RunRequest:
    schedule = defs.resolve_schedule_def(schedule_name)
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=at))
    assert len(data.run_requests) == 1, data.skip_message
    return data.run_requests[0]


def job_modes(job_name: str) -> dict[str, str]:
    """The sync mode each asset of a job runs in with the job's own config (schedules add none)."""
    ops = defs.resolve_job_def(job_name).run_config["ops"]
    return {op: config["config"]["mode"] for op, config in ops.items()}


@pytest.mark.parametrize(("schedule_name", "job_name", "cron", "at"), [
    ("product_sync_incremental_schedule", "product_sync_incremental", SETTINGS.product_sync_cron,
     datetime(2026, 11, 23, 10, 15, tzinfo=UTC)),
    ("full_reconcile_schedule", "full_reconcile", SETTINGS.full_reconcile_cron,
     datetime(2026, 11, 23, 2, 0, tzinfo=UTC)),
    ("validate_schedule", "validate", SETTINGS.validation_cron, datetime(2026, 11, 23, 11, 0, tzinfo=UTC)),
])
def test_schedules_request_their_job_with_the_job_config(schedule_name, job_name, cron, at):
    schedule = defs.resolve_schedule_def(schedule_name)
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (
        job_name, cron, SETTINGS.schedule_timezone)
    request = evaluate(schedule_name, at)
    assert request.run_config == {}
    assert request.tags["dagster/schedule_name"] == schedule_name


def test_sync_schedules_run_incremental_and_full_modes():
    assert job_modes("product_sync_incremental") == {"cart_db__product": "incremental"}
    assert job_modes("full_reconcile") == {"cart_db__product": "full", "order_db__carts": "full"}


def test_warehouse_schedule_runs_in_the_partitions_time_zone():
    # What it requests (yesterday and the sweep) is tested against real stores in test_order_changes.py.
    schedule = defs.resolve_schedule_def("warehouse_build_schedule")
    assert schedule.cron_schedule == f"{SETTINGS.warehouse_build_minute} {SETTINGS.warehouse_build_hour} * * *"
    assert (schedule.job_name, schedule.execution_timezone) == ("warehouse_build", "UTC")


def test_defaults():
    defaults = AutomationSettings.from_env({})
    assert defaults == AutomationSettings()
    assert (defaults.product_sync_cron, defaults.full_reconcile_cron, defaults.validation_cron) == (
        "*/15 * * * *", "0 2 * * *", "0 * * * *")
    assert defaults.schedule_timezone == "UTC" and defaults.automation_running
    assert (defaults.warehouse_build_hour, defaults.warehouse_build_minute) == (0, 30)
    assert (defaults.max_deactivation_share, defaults.deactivation_floor) == (0.05, 10)
    assert defaults.order_lookback_days == 35


def test_the_deactivation_guard_comes_from_the_environment():
    settings = AutomationSettings.from_env({"SHOP_SYNC_MAX_DEACTIVATION_SHARE": "0.2",
                                            "SHOP_SYNC_DEACTIVATION_FLOOR": "3"})
    guard = settings.deactivation_guard()
    assert (guard.limit(100), guard.limit(10), guard.allow_mass_deactivation) == (20, 3, False)
    assert settings.deactivation_guard(allow_mass_deactivation=True).allow_mass_deactivation


@pytest.mark.parametrize(("name", "value"), [
    ("SHOP_SYNC_PRODUCT_SENSOR_INTERVAL_S", "0"),
    ("SHOP_SYNC_CART_SENSOR_INTERVAL_S", "soon"),
    ("SHOP_SYNC_AUTOMATION_DEFAULT", "on"),
    ("SHOP_SYNC_WAREHOUSE_BUILD_TIME", "25:00"),
    ("SHOP_SYNC_PRODUCT_CHANGE_STREAM", "maybe"),
    ("SHOP_SYNC_MAX_DEACTIVATION_SHARE", "5%"),
    ("SHOP_SYNC_MAX_DEACTIVATION_SHARE", "1.5"),
    ("SHOP_SYNC_DEACTIVATION_FLOOR", "-1"),
    ("SHOP_SYNC_ORDER_LOOKBACK_DAYS", "0"),
])
def test_unusable_settings_name_their_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        AutomationSettings.from_env({name: value})


def test_environment_configures_every_schedule_and_sensor():
    """A fresh interpreter, as the code server starts, with every knob set."""
    env = {
        **os.environ,
        "SHOP_SYNC_AUTOMATION_DEFAULT": "stopped",
        "SHOP_SYNC_PRODUCT_SENSOR_INTERVAL_S": "5",
        "SHOP_SYNC_ORDER_SENSOR_INTERVAL_S": "120",
        "SHOP_SYNC_SCHEDULE_TIMEZONE": "Europe/Berlin",
        "SHOP_SYNC_PRODUCT_SYNC_CRON": "*/5 * * * *",
        "SHOP_SYNC_FULL_RECONCILE_CRON": "30 3 * * *",
        "SHOP_SYNC_VALIDATION_CRON": "15 * * * *",
        "SHOP_SYNC_WAREHOUSE_BUILD_TIME": "04:45",
    }
    script = (
        "import json\n"
        "from etl_assets.definitions import defs\n"
        "repo = defs.get_repository_def()\n"
        "print(json.dumps({\n"
        "  'schedules': {s.name: [s.cron_schedule, s.execution_timezone, s.default_status.value]\n"
        "                for s in repo.schedule_defs},\n"
        "  'sensors': {s.name: [s.minimum_interval_seconds, s.default_status.value] for s in repo.sensor_defs},\n"
        "}))\n"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    # Only what etl_assets/schedules.py, sensors.py and alerts.py define; other modules may add their own.
    assert {name: loaded["schedules"].get(name) for name in SCHEDULE_NAMES} == {
        "product_sync_incremental_schedule": ["*/5 * * * *", "Europe/Berlin", "STOPPED"],
        "full_reconcile_schedule": ["30 3 * * *", "Europe/Berlin", "STOPPED"],
        "validate_schedule": ["15 * * * *", "Europe/Berlin", "STOPPED"],
        "warehouse_build_schedule": ["45 4 * * *", "UTC", "STOPPED"],
    }
    assert {name: loaded["sensors"].get(name) for name in SENSOR_NAMES} == {
        "product_changes": [5, "STOPPED"],
        "cart_changes": [30, "STOPPED"],
        "order_changes": [120, "STOPPED"],
        "alert_on_run_failure": [30, "RUNNING"],
        "alert_on_failed_checks": [30, "RUNNING"],
    }
