"""The Helm values against the official chart's schemas, the extra manifests against Kubernetes' own
schema, and the agreements between values, dagster.yaml, the secrets, the NetworkPolicy and the image."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import kubernetes.client
import kubernetes_validate
import pytest
import sqlalchemy as sa
import yaml
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_k8s.models import k8s_snake_case_dict
from packaging.requirements import Requirement
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from etl_assets.k8s import SYNC_TARGETS, TARGET_TAG
from etl_assets.migrations import HISTORIES
from etl_assets.resources import build_resources
from etl_assets_tests.chart_instance import (
    INSTANCE_CONFIG_MAP,
    RELEASE,
    ChartRenderError,
    helm_merge,
    instance_config_errors,
    render_instance,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
HELM_VALUES = REPO_ROOT / "helm-values"
CHART_SCHEMA = HELM_VALUES / "chart-schema" / "dagster-helm-values.schema.json"
SUBCHART_SCHEMA = HELM_VALUES / "chart-schema" / "dagster-user-deployments-values.schema.json"
MANIFESTS = sorted((HELM_VALUES / "manifests").glob("*.yaml"))
# The oldest Kubernetes the deployment supports, and the newest one kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
STORE_ACCESS_LABEL = {"shop-sync/store-access": "true"}
OVERLAYS = sorted(path.name for path in HELM_VALUES.glob("values-*.yaml"))
# What a cluster receives: values.yaml alone (production), and values.yaml with each overlay.
DEPLOYED_VALUES = {"values.yaml": ["values.yaml"]} | {
    f"values.yaml + {overlay}": ["values.yaml", overlay] for overlay in OVERLAYS}
VALUES_FILES = DEPLOYED_VALUES | {f"{overlay} alone": [overlay] for overlay in OVERLAYS}


def validate_strictly(manifest: dict[str, Any]) -> None:
    """Kubernetes' OpenAPI schema, rejecting unknown fields, for every supported version."""
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def values_of(*files: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in files:
        merged = helm_merge(merged, load_yaml(HELM_VALUES / name))
    return merged


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return values_of("values.yaml")


@pytest.fixture(scope="module")
def instance_yaml() -> dict[str, Any]:
    return load_yaml(REPO_ROOT / "dagster.yaml")


@pytest.fixture(scope="module")
def user_deployment(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


# --- the chart's JSON schemas, offline ---------------------------------------------------------


def remote_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("http"):
            yield ref
        for child in node.values():
            yield from remote_refs(child)
    elif isinstance(node, list):
        for child in node:
            yield from remote_refs(child)


def offline_validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator whose remote Kubernetes $refs resolve to permissive empty schemas.

    Each ref carries a JSON pointer, so every URL is served as one document with `{}` at every
    pointer the schema uses."""
    documents: dict[str, dict[str, Any]] = defaultdict(dict)
    for ref in remote_refs(schema):
        url, _, pointer = ref.partition("#")
        node = documents[url]
        for part in filter(None, pointer.split("/")):
            node = node.setdefault(part, {})
    registry = Registry().with_resources(
        (url, Resource.from_contents(document, default_specification=DRAFT202012))
        for url, document in documents.items()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def chart_defaults_supply(error: jsonschema.ValidationError) -> bool:
    """True for an error Helm would not raise: a key our overrides leave to the chart's defaults.

    Under runLauncher nothing is excused, because its `type` decides which config block must exist;
    nor inside a list, because Helm replaces a list whole and no default reaches its items."""
    path = list(error.absolute_path)
    if path[:1] == ["runLauncher"] or any(isinstance(part, int) for part in path):
        return False
    if error.validator == "required":
        return True
    if error.validator in ("anyOf", "oneOf"):
        branches: dict[Any, list[jsonschema.ValidationError]] = defaultdict(list)
        for sub_error in error.context or []:
            branches[sub_error.relative_schema_path[0]].append(sub_error)
        return any(all(chart_defaults_supply(e) for e in branch) for branch in branches.values())
    return False


def override_errors(schema_path: Path, document: dict[str, Any]) -> list[str]:
    validator = offline_validator(json.loads(schema_path.read_text()))
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
        if not chart_defaults_supply(error)
    ]


def subchart_values(values: dict[str, Any]) -> dict[str, Any]:
    """What the dagster-user-deployments subchart receives: its own section plus `global`."""
    return {**values["dagster-user-deployments"], "global": values["global"]}


@pytest.mark.parametrize("files", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_values_pass_the_chart_schema(files: list[str]) -> None:
    assert override_errors(CHART_SCHEMA, values_of(*files)) == []


@pytest.mark.parametrize("files", DEPLOYED_VALUES.values(), ids=DEPLOYED_VALUES.keys())
def test_values_pass_the_user_deployments_subchart_schema(files: list[str]) -> None:
    assert override_errors(SUBCHART_SCHEMA, subchart_values(values_of(*files))) == []


def test_run_launcher_keys_are_ones_the_chart_accepts(values: dict[str, Any]) -> None:
    definitions = json.loads(CHART_SCHEMA.read_text())["$defs"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(launcher) <= set(definitions["K8sRunLauncherConfig"]["properties"])
    assert set(launcher["runK8sConfig"]) <= set(definitions["RunK8sConfig"]["properties"])


def break_values(values: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    broken = json.loads(json.dumps(values))
    *parents, leaf = path.split(".")
    node = broken
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return broken


@pytest.mark.parametrize(
    ("schema_path", "path", "value"),
    [
        (CHART_SCHEMA, "runLauncher.config.k8sRunLauncher.serviceAccountName", "not-a-launcher-key"),
        (CHART_SCHEMA, "runLauncher.config.k8sRunLauncher.imagePullPolicy", None),
        (CHART_SCHEMA, "runLauncher.type", "KubernetesRunLauncher"),
        (CHART_SCHEMA, "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns", "six"),
        (CHART_SCHEMA, "concurrency.runs.maxConcurrentRuns", "six"),
        (CHART_SCHEMA, "concurrency.runs.max_concurrent_runs", 6),
        (CHART_SCHEMA, "concurrency.pools.defaultLimit", "one"),
        (CHART_SCHEMA, "dagster-user-deployments.deployments.0.port", "3030"),
        (CHART_SCHEMA, "telemetry.disabled", True),
        (SUBCHART_SCHEMA, "dagster-user-deployments.deployments.0.readinessProbe.enabled", None),
    ],
)
def test_the_schema_check_still_catches_mistakes(
    values: dict[str, Any], schema_path: Path, path: str, value: Any
) -> None:
    """Setting `required` aside must not hide real errors."""
    broken = break_values(values, path, value)
    document = subchart_values(broken) if schema_path == SUBCHART_SCHEMA else broken
    assert override_errors(schema_path, document) != []


# --- Kubernetes objects inside the values ------------------------------------------------------


def pod(name: str, container: dict[str, Any], **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "dagster", "image": "example/image:tag", **container}], **pod_spec},
    }


def without_enabled(probe: dict[str, Any]) -> dict[str, Any]:
    """A probe from the values as the chart renders it: `enabled` is the chart's switch, not Kubernetes'."""
    return {key: value for key, value in probe.items() if key != "enabled"}


def grpc_probe(settings: dict[str, Any], port: int) -> dict[str, Any]:
    """A user-deployment probe as the chart renders it, with its gRPC health check filled in."""
    rendered = without_enabled(settings)
    rendered.setdefault("exec", {"command": ["dagster", "api", "grpc-health-check", "-p", str(port)]})
    return rendered


@pytest.mark.parametrize("files", DEPLOYED_VALUES.values(), ids=DEPLOYED_VALUES.keys())
def test_kubernetes_fields_in_the_values_are_valid(files: list[str]) -> None:
    values = values_of(*files)
    webserver, daemon = values["dagsterWebserver"], values["dagsterDaemon"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_config = launcher["runK8sConfig"]
    pods = [
        pod(
            "webserver",
            {
                "ports": [{"name": "http", "containerPort": 80}],
                "resources": webserver["resources"],
                "readinessProbe": webserver["readinessProbe"],
                "livenessProbe": webserver["livenessProbe"],
                "startupProbe": without_enabled(webserver["startupProbe"]),
            },
        ),
        pod(
            "daemon",
            {
                "resources": daemon["resources"],
                "livenessProbe": daemon["livenessProbe"],
                "startupProbe": without_enabled(daemon["startupProbe"]),
            },
        ),
        pod(
            "user-deployment",
            {
                "resources": deployment["resources"],
                "securityContext": deployment["securityContext"],
                "envFrom": [{"secretRef": secret} for secret in deployment["envSecrets"]],
                "volumeMounts": deployment["volumeMounts"],
                "readinessProbe": grpc_probe(deployment["readinessProbe"], deployment["port"]),
                "livenessProbe": grpc_probe(deployment["livenessProbe"], deployment["port"]),
                "startupProbe": grpc_probe(deployment["startupProbe"], deployment["port"]),
            },
            securityContext=deployment["podSecurityContext"],
            volumes=deployment["volumes"],
        ),
        pod(
            "run-default",
            {**run_config["containerConfig"], "volumeMounts": launcher["volumeMounts"]},
            **run_config["podSpecConfig"],
            volumes=launcher["volumes"],
        ),
    ]
    for manifest in pods:
        validate_strictly(manifest)


# --- values and dagster.yaml describe the same instance ---------------------------------------


def snake_keys(settings: dict[str, Any]) -> dict[str, Any]:
    """The chart's camelCase setting names as dagster.yaml spells them."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in settings.items()}


def normalised_k8s_config(config: dict[str, Any]) -> dict[str, Any]:
    """Raw Kubernetes config (either case) in the form dagster-k8s itself applies it."""
    return UserDefinedDagsterK8sConfig.from_dict(snake_keys(config)).to_dict()


def test_run_launcher_matches_dagster_yaml(values: dict[str, Any], instance_yaml: dict[str, Any]) -> None:
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    ours = instance_yaml["run_launcher"]["config"]
    assert instance_yaml["run_launcher"]["class"] == values["runLauncher"]["type"]
    assert chart["jobNamespace"] == ours["job_namespace"]
    assert chart["imagePullPolicy"] == ours["image_pull_policy"]
    assert chart["loadInclusterConfig"] == ours["load_incluster_config"]
    assert chart["failPodOnRunFailure"] == ours["fail_pod_on_run_failure"]
    assert chart["labels"] == ours["labels"] == STORE_ACCESS_LABEL
    assert values["global"]["serviceAccountName"] == ours["service_account_name"]
    assert values["global"]["dagsterHome"] == ours["dagster_home"]
    assert ours["instance_config_map"] == INSTANCE_CONFIG_MAP
    # dagster.yaml's runs also need the Dagster database URL; the chart passes its password instead.
    assert [secret["name"] for secret in chart["envSecrets"]] == ours["env_secrets"][:-1]
    assert [k8s_snake_case_dict(kubernetes.client.V1Volume, v) for v in chart["volumes"]] == [
        k8s_snake_case_dict(kubernetes.client.V1Volume, v) for v in ours["volumes"]
    ]
    assert [k8s_snake_case_dict(kubernetes.client.V1VolumeMount, m) for m in chart["volumeMounts"]] == [
        k8s_snake_case_dict(kubernetes.client.V1VolumeMount, m) for m in ours["volume_mounts"]
    ]
    assert normalised_k8s_config(chart["runK8sConfig"]) == normalised_k8s_config(ours["run_k8s_config"])


# --- the instance the chart renders, loaded by Dagster ------------------------------------------

# Blocks only the chart renders: storage from postgresql.* with the password Secret (dagster.yaml reads
# one URL instead), and the daemon scheduler, which is Dagster's default when dagster.yaml leaves it out.
CHART_ONLY_BLOCKS = {"scheduler", "schedule_storage", "run_storage", "event_log_storage"}
# The run launcher differs by what each passes the run pods for the Dagster database (the chart: its
# password Secret; dagster.yaml: the URL Secret); test_run_launcher_matches_dagster_yaml compares the rest.
COMPARED_APART = {"run_launcher"}


@pytest.mark.parametrize("files", DEPLOYED_VALUES.values(), ids=DEPLOYED_VALUES.keys())
def test_rendered_instance_loads_in_dagster(files: list[str]) -> None:
    assert instance_config_errors(render_instance(values_of(*files))) == []


@pytest.mark.parametrize(
    ("overlay", "rejected_by"),
    [
        # Run limits in both places: the chart's own `fail`.
        ({"dagsterDaemon": {"runCoordinator": {"config": {"queuedRunCoordinator": {"maxConcurrentRuns": 4}}}}},
         "Cannot set both concurrency.runs.maxConcurrentRuns"),
        ({"dagsterDaemon": {"runCoordinator": {"config": {"queuedRunCoordinator": {"tagConcurrencyLimits": [
            {"key": "shop-sync/target", "value": "cart_db", "limit": 1}]}}}}},
         "Cannot set both concurrency.runs.tagConcurrencyLimits"),
        # The limits through additionalInstanceConfig, as these values had them: with the chart's section
        # disabled it prints `max_concurrent_runs: -1`, which Dagster refuses beside `concurrency.runs`.
        ({"concurrency": {"enabled": False}, "additionalInstanceConfig": {"concurrency": {"runs": {
            "max_concurrent_runs": 6}}}},
         "in `run_coordinator` which is incompatible with the `concurrency > runs` config"),
        # ... and with it enabled, the ConfigMap would hold `concurrency` twice.
        ({"additionalInstanceConfig": {"concurrency": {"runs": {"max_concurrent_runs": 6}}}},
         "additionalInstanceConfig repeats `concurrency`"),
        # Dagster's own limits on a pool.
        ({"concurrency": {"pools": {"defaultLimit": -1}}}, "for `pools > default_limit`"),
        ({"concurrency": {"pools": {"granularity": "step"}}}, "for `granularity`"),
    ],
    ids=["max runs twice", "tag limits twice", "limits in additionalInstanceConfig",
         "concurrency twice", "negative pool limit", "unknown granularity"],
)
def test_a_conflicting_overlay_is_rejected(values: dict[str, Any], overlay: dict[str, Any], rejected_by: str) -> None:
    try:
        errors = instance_config_errors(render_instance(helm_merge(values, overlay)))
    except ChartRenderError as error:
        errors = [str(error)]
    assert any(rejected_by in error for error in errors), errors


@pytest.mark.parametrize("files", DEPLOYED_VALUES.values(), ids=DEPLOYED_VALUES.keys())
def test_run_queue_keeps_every_sync_target_to_one_run(files: list[str]) -> None:
    instance = render_instance(values_of(*files))
    assert "max_concurrent_runs" not in instance["run_coordinator"].get("config", {})
    concurrency = instance["concurrency"]
    limits = {(limit["key"], limit["value"]): limit["limit"]
              for limit in concurrency["runs"]["tag_concurrency_limits"]}
    assert limits == {(TARGET_TAG, target): 1 for target in SYNC_TARGETS}
    assert concurrency["runs"]["max_concurrent_runs"] > len(SYNC_TARGETS), "room for validation beside syncs"
    assert concurrency["pools"]["default_limit"] == 1


def test_rendered_instance_matches_dagster_yaml_key_for_key(
    values: dict[str, Any], instance_yaml: dict[str, Any]
) -> None:
    rendered = render_instance(values)
    assert set(rendered) - CHART_ONLY_BLOCKS == set(instance_yaml) - {"storage"}
    for key in set(instance_yaml) - {"storage"} - COMPARED_APART:
        assert rendered[key] == instance_yaml[key], key


def test_rendered_storage_is_the_external_postgres_with_psycopg2(values: dict[str, Any]) -> None:
    rendered = render_instance(values)
    postgresql = values["postgresql"]
    for kind in ("run", "event_log", "schedule"):
        postgres_db = rendered[f"{kind}_storage"]["config"]["postgres_db"]
        assert (postgres_db["hostname"], postgres_db["port"], postgres_db["db_name"], postgres_db["scheme"]) == (
            postgresql["postgresqlHost"], 5432, postgresql["postgresqlDatabase"], "postgresql+psycopg2")


def test_dagster_database_is_external_and_reached_with_psycopg2(values: dict[str, Any]) -> None:
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in postgresql, "the password comes from global.postgresqlSecretName"
    assert postgresql["postgresqlScheme"] == "postgresql+psycopg2"
    url = sa.engine.make_url(secret_templates()["shop-sync-dagster-pg-url"]["DAGSTER_PG_URL"])
    assert (url.drivername, url.host, url.port, url.database, url.username) == (
        postgresql["postgresqlScheme"],
        postgresql["postgresqlHost"],
        postgresql["service"]["port"],
        postgresql["postgresqlDatabase"],
        postgresql["postgresqlUsername"],
    )


# --- extra manifests ---------------------------------------------------------------------------


def manifest_documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifest_documents() if doc["kind"] == kind]


def secret_templates() -> dict[str, dict[str, str]]:
    return {secret["metadata"]["name"]: secret["stringData"] for secret in manifests_of_kind("Secret")}


@pytest.mark.parametrize(
    "manifest", manifest_documents(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}"
)
def test_manifest_is_valid_kubernetes(manifest: dict[str, Any]) -> None:
    validate_strictly(manifest)
    assert manifest["metadata"]["namespace"] == "shop-sync"


def test_secret_templates_hold_placeholders_for_every_key_read(
    values: dict[str, Any], instance_yaml: dict[str, Any], user_deployment: dict[str, Any]
) -> None:
    templates = secret_templates()
    store_env_vars = {
        value.env_var_name
        for resource in build_resources().values()
        for value in (getattr(resource, field) for field in type(resource).model_fields)
        if isinstance(value, dg.EnvVar)
    }
    assert set(templates["shop-sync-stores"]) == store_env_vars
    # The migration roles only in their own Secret, which no run, step or code-server pod receives.
    assert set(templates["shop-sync-migrate"]) == {history.migrate_url_env for history in HISTORIES.values()}
    assert set(templates[values["global"]["postgresqlSecretName"]]) == {"postgresql-password"}
    for secret in templates.values():
        assert all("REPLACE_ME" in value for value in secret.values()), "templates never carry a real value"

    referenced = {
        values["global"]["postgresqlSecretName"],
        *(secret["name"] for secret in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]),
        *(secret["name"] for secret in user_deployment["envSecrets"]),
        *instance_yaml["run_launcher"]["config"]["env_secrets"],
        *(source["secretRef"]["name"] for job in manifests_of_kind("Job")
          for container in job["spec"]["template"]["spec"]["containers"] for source in container["envFrom"]),
    }
    assert referenced == set(templates)


def test_migrate_job_runs_the_migrate_command_with_the_code_image_and_its_hardening(
    user_deployment: dict[str, Any],
) -> None:
    (job,) = manifests_of_kind("Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = user_deployment["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}", "the image of the release it migrates"
    program, flag, module, *targets = container["command"]
    assert (program, flag, module) == ("python", "-m", "etl_assets.migrate")
    assert importlib.util.find_spec(module) is not None and set(targets) <= {*HISTORIES, "all"}
    assert [source["secretRef"]["name"] for source in container["envFrom"]] == ["shop-sync-migrate"]
    # The same non-root, read-only-root-filesystem hardening as the code server.
    assert pod["securityContext"] == user_deployment["podSecurityContext"]
    assert container["securityContext"] == user_deployment["securityContext"]
    assert container["volumeMounts"] == user_deployment["volumeMounts"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert job["spec"]["template"]["metadata"]["labels"].items() >= STORE_ACCESS_LABEL.items()


def test_network_policy_applies_to_every_pod_with_store_credentials(
    values: dict[str, Any], instance_yaml: dict[str, Any], user_deployment: dict[str, Any]
) -> None:
    policies = {policy["metadata"]["name"]: policy["spec"] for policy in manifests_of_kind("NetworkPolicy")}
    store_egress = policies["shop-sync-store-egress"]
    assert store_egress["podSelector"]["matchLabels"] == STORE_ACCESS_LABEL
    assert user_deployment["labels"] == STORE_ACCESS_LABEL
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["labels"] == STORE_ACCESS_LABEL
    assert instance_yaml["run_launcher"]["config"]["labels"] == STORE_ACCESS_LABEL
    assert store_egress["policyTypes"] == ["Egress"]

    ports = sorted(port["port"] for rule in store_egress["egress"] for port in rule["ports"])
    # DNS over UDP and TCP, two MongoDB stores, and three PostgreSQL databases (cart, warehouse, Dagster).
    assert ports == [53, 53, 5432, 5432, 5432, 27017, 27017]

    api_egress = policies["shop-sync-run-worker-api-egress"]
    assert api_egress["podSelector"]["matchLabels"] == {
        **STORE_ACCESS_LABEL,
        "app.kubernetes.io/component": "run_worker",
    }


def test_disruption_budget_leaves_room_for_node_drains(values: dict[str, Any]) -> None:
    (budget,) = manifests_of_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "dagster",
        "app.kubernetes.io/instance": RELEASE,
        "component": "dagster-webserver",
    }
    assert budget["spec"]["minAvailable"] < values["dagsterWebserver"]["replicaCount"]


# --- the image ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    logical_lines = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    return [
        tuple(line.split(maxsplit=1)) for line in logical_lines if line.strip() and not line.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_image_serves_the_code_location_the_chart_expects(user_deployment: dict[str, Any]) -> None:
    stage = dict(final_stage())
    port = user_deployment["port"]
    chart_command = [
        "dagster",
        "api",
        "grpc",
        "-h",
        "0.0.0.0",
        "-p",
        str(port),
        *user_deployment["dagsterApiGrpcArgs"],
    ]
    assert json.loads(stage["CMD"]) == chart_command
    assert stage["EXPOSE"] == str(port)

    module = user_deployment["dagsterApiGrpcArgs"][user_deployment["dagsterApiGrpcArgs"].index("-m") + 1]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert module == pyproject["tool"]["dagster"]["module_name"]
    assert importlib.util.find_spec(module) is not None


def test_image_runs_as_the_non_root_user_the_pods_require(
    user_deployment: dict[str, Any], instance_yaml: dict[str, Any]
) -> None:
    stage = final_stage()
    assert stage[0][1].startswith("python:3.11-slim")
    user, _, group = dict(stage)["USER"].partition(":")
    run_pod = instance_yaml["run_launcher"]["config"]["run_k8s_config"]["pod_spec_config"]["security_context"]
    assert int(user) == user_deployment["podSecurityContext"]["runAsUser"] == run_pod["run_as_user"] != 0
    assert int(group) == user_deployment["podSecurityContext"]["runAsGroup"] == run_pod["run_as_group"]


def test_image_installs_the_package_without_extras() -> None:
    installs = [
        arguments
        for keyword, arguments in dockerfile_instructions()
        if keyword == "RUN" and "pip install" in arguments
    ]
    assert installs == ["pip install ."]
    patterns = [
        line
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context is an allow-list"
    assert [pattern for pattern in patterns if pattern.startswith("!")] == ["!pyproject.toml", "!etl_assets/"]


def canonical_name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def runtime_distributions() -> set[str]:
    """The project's distribution and everything it needs without its own extras (but with the
    extras it asks of its dependencies, such as pandera[polars])."""
    seen: set[tuple[str, frozenset[str]]] = set()
    pending: list[tuple[str, frozenset[str]]] = [("shop-sync", frozenset())]
    while pending:
        name, extras = pending.pop()
        if (canonical_name(name), extras) in seen:
            continue
        seen.add((canonical_name(name), extras))
        for requirement in map(Requirement, importlib.metadata.requires(name) or []):
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras}
            )
            if wanted:
                pending.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen}


# python -m venv on Python 3.11 puts these two in the image's virtual environment as well.
VENV_SEED_DISTRIBUTIONS = {"pip", "setuptools"}
# Run in a fresh interpreter in which every module of a distribution the image lacks fails to import,
# as it would there. Optional imports (try/except ImportError) keep working, as they would there.
WITHOUT_MODULES = """
import sys
from importlib.abc import MetaPathFinder

ABSENT = set(sys.argv[1].split(","))


class NotInTheImage(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} in the image", name=name)
        return None


sys.meta_path.insert(0, NotInTheImage())
import etl_assets.definitions
"""


def test_code_location_loads_with_only_what_the_image_installs() -> None:
    """The image has no dev or bench extras: loading the definitions must not need them."""
    in_image = runtime_distributions() | VENV_SEED_DISTRIBUTIONS
    absent = sorted(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if not {canonical_name(distribution) for distribution in distributions} & in_image
    )
    loaded = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODULES, ",".join(absent)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert loaded.returncode == 0, loaded.stderr
