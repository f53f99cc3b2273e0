"""The `dagster.yaml` the official Helm chart renders into its instance ConfigMap, emulated in Python for
the keys our values set, and checked the way a Dagster pod loads it.

Helm is not installed where the tests run, so `render_instance` follows the chart's templates
(`templates/configmap-instance.yaml` and `templates/helpers/instance/*.tpl` of the 1.13 chart) block by
block, with the rules for run limits written down in ../shared/contracts/README.md:

- storage: run, event log and schedule storage on `postgres_db` built from `postgresql.*`, the password
  from DAGSTER_PG_PASSWORD (the chart's env var for `global.postgresqlSecretName`);
- run launcher: `K8sRunLauncher` from `runLauncher.config.k8sRunLauncher`, plus what the chart adds
  (service account, DAGSTER_HOME, the instance ConfigMap, the password Secret);
- run coordinator: `QueuedRunCoordinator` with a `config` block whenever `queuedRunCoordinator` has a
  value; inside it `max_concurrent_runs` from `maxConcurrentRuns`, or -1 when that is unset and
  `concurrency.enabled` is false;
- concurrency: when `concurrency.enabled`, a top-level block with `pools` and `runs`, each key only when
  set; the render fails when both places set run limits (Helm's `fail`);
- run monitoring, run retries, sensors, schedules (daemon settings), telemetry, retention, python logs,
  compute logs;
- `additionalInstanceConfig`, appended as it is after every block above.

Values are merged onto `CHART_DEFAULTS`, the chart's own defaults for the keys read here, as Helm merges
them. `instance_config_errors` then loads the rendered file with Dagster's own instance validation
(`dagster_instance_config`, what `DagsterInstance.from_config` calls first) and each configurable class's
own config schema, without connecting to PostgreSQL or Kubernetes.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer

RELEASE = "dagster"
NAMESPACE = "shop-sync"
# The chart's fullname for release "dagster" is "dagster"; its instance ConfigMap is <fullname>-instance.
INSTANCE_CONFIG_MAP = f"{RELEASE}-instance"

# The chart's values.yaml defaults for the keys rendered below (helm/dagster/values.yaml, 1.13 line).
CHART_DEFAULTS: dict[str, Any] = {
    "global": {"dagsterHome": "/opt/dagster/dagster_home", "serviceAccountName": ""},
    "serviceAccount": {"create": True, "name": ""},
    "postgresql": {"postgresqlParams": {}, "postgresqlScheme": "", "service": {"port": 5432}},
    "scheduler": {"type": "DagsterDaemonScheduler"},
    "runLauncher": {"type": "K8sRunLauncher"},
    "computeLogManager": {"type": "NoOpComputeLogManager"},
    "pythonLogs": {},
    "dagsterDaemon": {
        "enabled": True,
        "runCoordinator": {
            "enabled": True,
            "type": "QueuedRunCoordinator",
            "config": {"queuedRunCoordinator": {
                "maxConcurrentRuns": None, "tagConcurrencyLimits": [], "dequeueIntervalSeconds": None,
                "dequeueUseThreads": True, "dequeueNumWorkers": 4,
            }},
        },
        "runMonitoring": {
            "enabled": True, "startTimeoutSeconds": 300, "maxResumeRunAttempts": 0,
            "pollIntervalSeconds": 120, "freeSlotsAfterRunEndSeconds": 0,
        },
        "runRetries": {"enabled": True, "maxRetries": 0},
        "sensors": {"useThreads": True, "numWorkers": 4},
        "schedules": {"useThreads": True, "numWorkers": 4},
    },
    "concurrency": {
        "enabled": False,
        "pools": {"defaultLimit": None, "granularity": None, "opGranularityRunBuffer": None},
        "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": []},
    },
    "telemetry": {"enabled": True},
    "retention": {
        "enabled": False,
        "schedule": {"purgeAfterDays": -1},
        "sensor": {"purgeAfterDays": {"failure": -1, "skipped": 7, "started": -1, "success": -1}},
    },
    "additionalInstanceConfig": {},
}


class ChartRenderError(Exception):
    """What `helm template` would stop with (the chart's `fail`), or a rendered file that is not YAML."""


def helm_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """How Helm combines defaults and -f files: maps merge key by key, anything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        both_maps = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = helm_merge(merged[key], value) if both_maps else copy.deepcopy(value)
    return merged


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _set(settings: dict[str, Any], *names: str) -> dict[str, Any]:
    """The named camelCase settings that the templates test with `if` (Go's truthiness: nil, false, 0,
    "" and empty lists or maps are left out), under their snake_case instance names."""
    return {_snake(name): settings[name] for name in names if settings.get(name)}


def _not_nil(settings: dict[str, Any], *names: str) -> dict[str, Any]:
    """The same for settings tested with `not (kindIs "invalid" ...)`: only nil is left out, 0 is kept."""
    return {_snake(name): settings[name] for name in names if settings.get(name) is not None}


def _storage(values: dict[str, Any]) -> dict[str, Any]:
    postgresql = values["postgresql"]
    postgres_db = {
        "username": postgresql["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": postgresql["postgresqlHost"],
        "db_name": postgresql["postgresqlDatabase"],
        "port": postgresql["service"]["port"],
        "params": postgresql["postgresqlParams"],
    }
    if postgresql["postgresqlScheme"]:
        postgres_db["scheme"] = postgresql["postgresqlScheme"]
    return {
        f"{kind}_storage": {"module": module, "class": cls, "config": {"postgres_db": postgres_db}}
        for kind, module, cls in (
            ("schedule", "dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
            ("run", "dagster_postgres.run_storage", "PostgresRunStorage"),
            ("event_log", "dagster_postgres.event_log", "PostgresEventLogStorage"),
        )
    }


def _run_launcher(values: dict[str, Any]) -> dict[str, Any]:
    if values["runLauncher"]["type"] != "K8sRunLauncher":
        raise ChartRenderError(f"this emulation renders only K8sRunLauncher, not {values['runLauncher']['type']}")
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    service_account = values["global"]["serviceAccountName"] or values["serviceAccount"]["name"] or RELEASE
    config: dict[str, Any] = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        **_set(launcher, "kubeconfigFile"),
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": service_account,
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": INSTANCE_CONFIG_MAP,
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if "image" in launcher:
        image = launcher["image"]
        config["job_image"] = f"{image['repository']}:{image['tag']}"
    for name in ("envConfigMaps", "envSecrets"):
        if launcher.get(name):
            config[_snake(name)] = [source["name"] for source in launcher[name] if "name" in source]
    for name in ("envVars", "volumeMounts", "volumes", "labels", "resources"):
        if launcher.get(name):
            config[_snake(name)] = launcher[name]
    if launcher.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    for name in ("schedulerName", "securityContext"):
        if launcher.get(name):
            config[_snake(name)] = launcher[name]
    if launcher.get("runK8sConfig"):
        run_k8s_config = launcher["runK8sConfig"]
        config["run_k8s_config"] = {_snake(name): value for name, value in run_k8s_config.items() if value}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _run_coordinator(values: dict[str, Any]) -> dict[str, Any]:
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator: dict[str, Any] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    if not any(queued.values()):  # `compact` drops every empty value, 0 and false included
        return coordinator
    config: dict[str, Any] = {}
    if queued.get("maxConcurrentRuns") is not None:
        config["max_concurrent_runs"] = queued["maxConcurrentRuns"]
    elif not values["concurrency"]["enabled"]:
        # The chart's guard against Helm reading 0 as unset: "no limit" is written out as -1.
        config["max_concurrent_runs"] = -1
    config.update(_set(queued, "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers"))
    if queued.get("dequeueUseThreads"):
        config["dequeue_use_threads"] = True
    if queued.get("blockOpConcurrencyLimitedRuns"):
        block = queued["blockOpConcurrencyLimitedRuns"]
        config["block_op_concurrency_limited_runs"] = {
            "enabled": block["enabled"], "op_concurrency_slot_buffer": block["opConcurrencySlotBuffer"]}
    return {**coordinator, "config": config}


def _concurrency(values: dict[str, Any]) -> dict[str, Any]:
    concurrency = values["concurrency"]
    pools, runs = concurrency["pools"], concurrency["runs"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    if coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator":
        queued = coordinator["config"]["queuedRunCoordinator"]
        if runs.get("maxConcurrentRuns") is not None and queued.get("maxConcurrentRuns") is not None:
            raise ChartRenderError(
                "Cannot set both concurrency.runs.maxConcurrentRuns and "
                "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns")
        if runs.get("tagConcurrencyLimits") and queued.get("tagConcurrencyLimits"):
            raise ChartRenderError(
                "Cannot set both concurrency.runs.tagConcurrencyLimits and "
                "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits")
        block = queued.get("blockOpConcurrencyLimitedRuns") or {}
        if pools.get("opGranularityRunBuffer") is not None and block.get("opConcurrencySlotBuffer") is not None:
            raise ChartRenderError(
                "Cannot set both concurrency.pools.opGranularityRunBuffer and "
                "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.blockOpConcurrencyLimitedRuns"
                ".opConcurrencySlotBuffer")
    rendered: dict[str, Any] = {}
    if pools_config := {**_not_nil(pools, "defaultLimit"), **_set(pools, "granularity"),
                        **_not_nil(pools, "opGranularityRunBuffer")}:
        rendered["pools"] = pools_config
    if runs_config := {**_not_nil(runs, "maxConcurrentRuns"), **_set(runs, "tagConcurrencyLimits")}:
        rendered["runs"] = runs_config
    return rendered


def _daemon_settings(daemon: dict[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    monitoring = daemon["runMonitoring"]
    if monitoring["enabled"]:
        rendered["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            **_not_nil(monitoring, "cancelTimeoutSeconds", "maxResumeRunAttempts"),
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        }
    retries = daemon["runRetries"]
    if retries["enabled"]:
        rendered["run_retries"] = {"enabled": True, **({"max_retries": retries["maxRetries"]}
                                                        if retries.get("maxRetries") else {})}
    for name in ("sensors", "schedules"):
        if daemon[name]["useThreads"]:
            rendered[name] = {"use_threads": True, **{
                _snake(key): daemon[name][key] for key in ("numWorkers", "numSubmitWorkers") if daemon[name].get(key)}}
    return rendered


def _retention(retention: dict[str, Any]) -> dict[str, Any]:
    if not retention["enabled"]:
        return {}
    rendered = {}
    for name, key in (("sensor", "sensor"), ("schedule", "schedule"), ("autoMaterialize", "auto_materialize")):
        if retention.get(name):
            rendered[key] = {"purge_after_days": retention[name]["purgeAfterDays"]}
    return {"retention": rendered}


def render_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The instance the chart renders from `values` (already merged from the -f files)."""
    values = helm_merge(CHART_DEFAULTS, values)
    if values["scheduler"]["type"] != "DagsterDaemonScheduler":
        raise ChartRenderError("this emulation renders only the DagsterDaemonScheduler")
    daemon = values["dagsterDaemon"]
    instance: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        **_storage(values),
        "run_launcher": _run_launcher(values),
    }
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        if daemon["runCoordinator"]["type"] != "QueuedRunCoordinator":
            raise ChartRenderError("this emulation renders only the QueuedRunCoordinator")
        instance["run_coordinator"] = _run_coordinator(values)
    if values["computeLogManager"]["type"] != "NoOpComputeLogManager":
        raise ChartRenderError("this emulation renders only the NoOpComputeLogManager")
    instance["compute_logs"] = {
        "module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
    if python_logs := _set(values["pythonLogs"], "pythonLogLevel", "dagsterHandlerConfig", "managedPythonLoggers"):
        instance["python_logs"] = python_logs
    if daemon["enabled"]:
        instance.update(_daemon_settings(daemon))
    instance["telemetry"] = {"enabled": values["telemetry"]["enabled"]}
    instance.update(_retention(values["retention"]))
    if values["concurrency"]["enabled"]:
        instance["concurrency"] = _concurrency(values)
    for key, value in values["additionalInstanceConfig"].items():
        if key in instance:
            # Appended text: the ConfigMap would hold the key twice, and which one a reader keeps is
            # the reader's choice.
            raise ChartRenderError(f"additionalInstanceConfig repeats `{key}`, which the chart renders itself")
        instance[key] = value
    return instance


def configurable_class_errors(instance: dict[str, Any]) -> list[str]:
    """Each module/class block's config against that class's own config schema, as Dagster checks it
    when it builds the instance. Environment variables are not read here; only their shape is checked."""
    errors = []
    for key, block in instance.items():
        if not (isinstance(block, dict) and {"module", "class"} <= set(block)):
            continue
        cls = class_from_code_pointer(block["module"], block["class"])
        result = process_config(cls.config_type(), _without_env_lookups(block.get("config") or {}))
        errors += [f"{key}: {error.message}" for error in result.errors or []]
    return errors


def _without_env_lookups(config: Any) -> Any:
    """`{env: NAME}` replaced by a string placeholder, so no variable has to be set."""
    if isinstance(config, dict):
        if set(config) == {"env"}:
            return f"<{config['env']}>"
        return {key: _without_env_lookups(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_without_env_lookups(item) for item in config]
    return config


def instance_config_errors(instance: dict[str, Any]) -> list[str]:
    """Errors Dagster raises when a pod loads this instance: the instance schema, the run queue rules,
    then every configurable class's config. Empty when the instance loads."""
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        try:
            dagster_instance_config(home)
        except DagsterInvalidConfigError as error:
            return [str(error)]
    return configurable_class_errors(instance)
