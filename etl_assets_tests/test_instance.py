"""dagster.yaml and the local instance template, loaded as real Dagster instances: production storage
against a real PostgreSQL, the K8sRunLauncher as configured, and the run queue that keeps syncs apart."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kubernetes.config
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRun
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.test_utils import create_run_for_test
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from dev.stores import LocalStores
from etl_assets.k8s import PROFILES, SYNC_TARGETS, TARGET_TAG, profile_tags

REPO_ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_INSTANCE = REPO_ROOT / "dagster.yaml"
LOCAL_INSTANCE = REPO_ROOT / "dev" / "dagster_local.yaml"


@contextmanager
def production_instance(dagster_home: Path, dagster_pg_url: str) -> Iterator[DagsterInstance]:
    """dagster.yaml as a live instance whose storage is the PostgreSQL at `dagster_pg_url`.

    The K8sRunLauncher loads in-cluster credentials when it is built; outside a cluster that load is
    skipped. Nothing here reaches a Kubernetes API: callers capture the one call that would.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PRODUCTION_INSTANCE, dagster_home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_PG_URL", dagster_pg_url)
        patch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
        instance = DagsterInstance.from_config(str(dagster_home))
        try:
            yield instance
        finally:
            instance.dispose()


@pytest.fixture(scope="module")
def production(
    local_stores: LocalStores, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagsterInstance]:
    with production_instance(
        tmp_path_factory.mktemp("dagster_home"), local_stores.postgres.url("dagster")
    ) as instance:
        yield instance


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterInstance]:
    dagster_home = tmp_path_factory.mktemp("local_dagster_home")
    shutil.copy(LOCAL_INSTANCE, dagster_home / "dagster.yaml")
    instance = DagsterInstance.from_config(str(dagster_home))
    yield instance
    instance.dispose()


def test_production_storage_is_postgres_and_keeps_runs_and_events(
    production: DagsterInstance, local_stores: LocalStores, tmp_path: Path
) -> None:
    assert isinstance(production.run_storage, PostgresRunStorage)
    assert isinstance(production.event_log_storage, PostgresEventLogStorage)
    assert isinstance(production.schedule_storage, PostgresScheduleStorage)
    assert sa.engine.make_url(production.run_storage.postgres_url).drivername == "postgresql+psycopg2"

    run = create_run_for_test(
        production, job_name="instance_round_trip", tags=profile_tags("small", "cart_db")
    )
    # Storing an event sends NOTIFY to the event log watchers: the call psycopg 3 breaks on.
    production.report_engine_event("written through dagster.yaml's storage", run)

    with production_instance(tmp_path / "other_home", local_stores.postgres.url("dagster")) as reader:
        stored = reader.get_run_by_id(run.run_id)
        assert stored is not None
        assert stored.tags[TARGET_TAG] == "cart_db"
        messages = [entry.message for entry in reader.all_logs(run.run_id)]
        assert "written through dagster.yaml's storage" in messages


def test_production_launcher_is_k8s_as_written(production: DagsterInstance) -> None:
    launcher = production.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == "shop-sync"
    assert launcher.env_secrets == ["shop-sync-stores", "shop-sync-dagster-pg-url"]
    assert launcher.service_account_name == "shop-sync-dagster"
    assert launcher.image_pull_policy == "IfNotPresent"
    assert launcher.job_image is None, "runs take the image of the code location that defined the job"
    assert launcher.fail_pod_on_run_failure is True
    assert launcher.labels == {"shop-sync/store-access": "true"}
    default_container = launcher.run_k8s_config["container_config"]
    assert default_container["resources"] == PROFILES["small"].resources()
    assert default_container["security_context"]["read_only_root_filesystem"] is True
    assert launcher.run_k8s_config["pod_spec_config"]["security_context"]["run_as_non_root"] is True


def test_production_run_monitoring_retries_retention_and_logs(production: DagsterInstance) -> None:
    monitoring = production.run_monitoring_settings
    assert monitoring["enabled"] is True
    assert monitoring["start_timeout_seconds"] > 0
    assert monitoring["cancel_timeout_seconds"] > 0
    assert monitoring["max_resume_run_attempts"] > 0
    assert production.run_monitoring_max_resume_run_attempts == monitoring["max_resume_run_attempts"]

    assert production.run_retries_enabled
    assert production.run_retries_max_retries >= 1

    sensor_retention = production.get_tick_retention_settings(InstigatorType.SENSOR)
    assert sensor_retention[TickStatus.SKIPPED] < sensor_retention[TickStatus.FAILURE]
    assert production.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.SUCCESS] > 0

    assert production.telemetry_enabled is False
    assert isinstance(production.compute_log_manager, NoOpComputeLogManager)
    assert "etl_assets" in production.managed_python_loggers


def test_local_instance_is_sqlite_with_the_default_launcher(local: DagsterInstance) -> None:
    assert isinstance(local.run_storage, SqliteRunStorage)
    assert isinstance(local.run_launcher, DefaultRunLauncher)
    assert local.run_retries_enabled
    assert local.telemetry_enabled is False


@pytest.mark.parametrize("instance_name", ["production", "local"])
def test_run_queue_limits_each_sync_target_to_one_run(
    instance_name: str, request: pytest.FixtureRequest
) -> None:
    instance: DagsterInstance = request.getfixturevalue(instance_name)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    limits = {(limit["key"], limit["value"]): limit["limit"] for limit in queue.tag_concurrency_limits}
    assert limits == {(TARGET_TAG, target): 1 for target in SYNC_TARGETS}
    assert queue.max_concurrent_runs > len(SYNC_TARGETS), "every target can sync while validation runs"
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1, "one step per store pool"


@pytest.mark.parametrize("instance_name", ["production", "local"])
@pytest.mark.parametrize("target", SYNC_TARGETS)
def test_queue_holds_a_second_sync_into_the_same_target(
    instance_name: str, target: str, request: pytest.FixtureRequest
) -> None:
    instance: DagsterInstance = request.getfixturevalue(instance_name)
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    running = DagsterRun(job_name="running_sync", tags=profile_tags("small", target))
    counter = TagConcurrencyLimitsCounter(list(queue.tag_concurrency_limits), [running])

    assert counter.is_blocked(DagsterRun(job_name="same_target", tags=profile_tags("large", target)))
    for other_target in set(SYNC_TARGETS) - {target}:
        assert not counter.is_blocked(
            DagsterRun(job_name="other_target", tags=profile_tags("small", other_target))
        )
    assert not counter.is_blocked(DagsterRun(job_name="validation", tags=profile_tags("small")))
