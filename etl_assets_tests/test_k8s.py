"""The Kubernetes Jobs dagster-k8s would create for shop-sync's runs and steps.

Every manifest is built by dagster-k8s's own launch code from the instance in dagster.yaml; only the
final Kubernetes API call is captured, and the captured body is validated against the Kubernetes
OpenAPI schema with kubernetes-validate in strict mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.assets.job.asset_job import is_reserved_asset_job_name
from dagster._core.definitions.reconstruct import reconstructable
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceRequestContext
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY
from kubernetes.client import ApiClient

from dev.stores import LocalStores
from etl_assets.definitions import defs
from etl_assets.k8s import (
    K8S_CONFIG_TAG,
    PROFILE_TAG,
    PROFILES,
    profile_tags,
    step_isolated_executor,
    step_op_tags,
)
from etl_assets_tests.test_helm_values import validate_strictly
from etl_assets_tests.test_instance import production_instance

CODE_LOCATION_MODULE = "etl_assets.definitions"
STEP_PODS = 4
# What the user-code server reports as its image (DAGSTER_CURRENT_IMAGE); runs inherit it.
IMAGE = "registry.example.com/shop-sync:test"
NAMESPACE = "shop-sync"
STORE_SECRETS = ["shop-sync-stores", "shop-sync-dagster-pg-url"]

JOB_NAMES = sorted(
    job.name for job in defs.resolve_all_job_defs() if not is_reserved_asset_job_name(job.name)
)


@pytest.fixture(scope="module")
def instance(
    local_stores: LocalStores, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dg.DagsterInstance]:
    with production_instance(
        tmp_path_factory.mktemp("dagster_home"), local_stores.postgres.url("dagster")
    ) as live:
        yield live


@pytest.fixture(scope="module")
def workspace(instance: dg.DagsterInstance, local_stores: LocalStores) -> Iterator[WorkspaceRequestContext]:
    """The code location in-process, with the store settings its server gets from shop-sync-stores:
    it resolves the resources' config when it plans a run."""
    origin = LoadableTargetOrigin(module_name=CODE_LOCATION_MODULE)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in local_stores.env().items():
            patch.setenv(name, value)
        with in_process_test_workspace(instance, origin, container_image=IMAGE) as context:
            yield context


class CapturedJobs:
    """Stands in for BatchV1Api.create_namespaced_job and keeps what it was given."""

    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    def create_namespaced_job(self, body: Any, namespace: str, **_: Any) -> None:
        self.created.append((namespace, ApiClient().sanitize_for_serialization(body)))

    def only(self) -> tuple[str, dict[str, Any]]:
        assert len(self.created) == 1, self.created
        return self.created[0]


def launch(
    instance: dg.DagsterInstance,
    workspace: WorkspaceRequestContext,
    job_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, dict[str, Any], dg.DagsterRun]:
    """Create a run of `job_name` with the tags its definition gives runs, as the webserver and the daemon
    do, and launch it through the instance."""
    location = workspace.get_code_location(workspace.code_location_names[0])
    (repository,) = location.get_repositories().values()
    remote_job = repository.get_full_job(job_name)
    run = instance.create_run_for_job(
        defs.resolve_job_def(job_name),
        tags=remote_job.run_tags,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    captured = CapturedJobs()
    monkeypatch.setattr(instance.run_launcher._api_client, "batch_api", captured)
    instance.launch_run(run.run_id, workspace)
    namespace, manifest = captured.only()
    return namespace, manifest, run


def main_container(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


def assert_runs_with_shop_sync_settings(namespace: str, manifest: dict[str, Any]) -> None:
    """What every run and step pod needs, whatever its profile: the instance default survives."""
    assert namespace == NAMESPACE
    pod = manifest["spec"]["template"]
    container = main_container(manifest)
    assert container["image"] == IMAGE
    assert [source["secretRef"]["name"] for source in container["envFrom"]] == STORE_SECRETS
    assert pod["spec"]["serviceAccountName"] == "shop-sync-dagster"
    assert pod["metadata"]["labels"]["shop-sync/store-access"] == "true"
    assert pod["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    validate_strictly(manifest)


def test_every_job_has_a_resource_profile() -> None:
    for job_name in JOB_NAMES:
        assert defs.resolve_job_def(job_name).run_tags.get(PROFILE_TAG) in PROFILES, job_name


@pytest.mark.parametrize("job_name", JOB_NAMES)
def test_run_pod_of_every_job(
    job_name: str,
    instance: dg.DagsterInstance,
    workspace: WorkspaceRequestContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace, manifest, run = launch(instance, workspace, job_name, monkeypatch)

    assert_runs_with_shop_sync_settings(namespace, manifest)
    container = main_container(manifest)
    assert container["resources"] == PROFILES[run.tags[PROFILE_TAG]].resources()
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    assert manifest["metadata"]["labels"]["dagster/job"] == job_name


def test_profile_deep_merges_onto_the_instance_default(instance: dg.DagsterInstance) -> None:
    """dagster-k8s merges a run's dagster-k8s/config tag onto the launcher's run_k8s_config key by key
    (merge_behavior DEEP, its default): a tag replaces the leaves it names and keeps the rest."""
    launcher = instance.run_launcher

    def merged_container(tags: dict[str, str]) -> dict[str, Any]:
        run = dg.DagsterRun(job_name="merge_example", tags=tags)
        return dict(
            K8sContainerContext.create_for_run(
                run, launcher, include_run_tags=True
            ).run_k8s_config.container_config
        )

    large = merged_container(profile_tags("large"))
    assert large["resources"] == PROFILES["large"].resources()
    assert large["security_context"]["read_only_root_filesystem"] is True

    only_memory = {"container_config": {"resources": {"limits": {"memory": "1Gi"}}}}
    deep = merged_container({USER_DEFINED_K8S_CONFIG_KEY: json.dumps(only_memory)})
    assert deep["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }

    shallow = merged_container(
        {USER_DEFINED_K8S_CONFIG_KEY: json.dumps({**only_memory, "merge_behavior": "SHALLOW"})}
    )
    assert shallow["resources"] == {"limits": {"memory": "1Gi"}}, "SHALLOW replaces whole top-level keys"


@dg.op(tags=step_op_tags("large"))
def heavy_step() -> int:
    return 1


@dg.op
def light_step(value: int) -> int:
    return value


@dg.job(executor_def=step_isolated_executor(STEP_PODS), tags=profile_tags("small"))
def step_isolated_job() -> None:
    light_step(heavy_step())


def step_executor(instance: dg.DagsterInstance) -> StepDelegatingExecutor:
    """The executor exactly as a run worker of step_isolated_job would build it."""
    executor_config = ResolvedRunConfig.build(step_isolated_job, {}).execution.execution_engine_config
    executor_def = step_isolated_job.executor_def
    executor = executor_def.executor_creation_fn(
        InitExecutorContext(
            job=reconstructable(step_isolated_job),
            executor_def=executor_def,
            executor_config=executor_config,
            instance=instance,
        )
    )
    assert isinstance(executor, StepDelegatingExecutor)
    return executor


@pytest.mark.parametrize(("step_key", "profile"), [("heavy_step", "large"), ("light_step", "small")])
def test_step_pod_under_the_step_isolated_executor(
    step_key: str, profile: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job-level tags do not reach step pods: a step gets its op's profile or the instance default."""
    executor = step_executor(instance)
    assert executor._max_concurrent == STEP_PODS
    recon_job = reconstructable(step_isolated_job)
    origin = recon_job.get_python_origin()
    # The code location reports its image; a run worker passes it on to the steps it starts.
    origin = origin._replace(repository_origin=origin.repository_origin._replace(container_image=IMAGE))
    run = instance.create_run_for_job(
        step_isolated_job, job_code_origin=origin, tags=step_isolated_job.run_tags
    )
    plan = create_execution_plan(recon_job)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(
            job=recon_job, dagster_run=run, instance=instance, execution_plan=plan, raise_on_error=True
        ),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    step_context = StepHandlerContext(
        instance=instance,
        plan_context=plan_context,
        steps=plan.steps,
        execute_step_args=ExecuteStepArgs(origin, run.run_id, [step_key], instance_ref=instance.get_ref()),
        dagster_run=run,
    )
    step_handler = executor._step_handler
    captured = CapturedJobs()
    monkeypatch.setattr(step_handler._api_client, "batch_api", captured)

    list(step_handler.launch_step(step_context))

    namespace, manifest = captured.only()
    assert_runs_with_shop_sync_settings(namespace, manifest)
    container = main_container(manifest)
    assert container["resources"] == PROFILES[profile].resources()
    assert container["args"][:3] == ["dagster", "api", "execute_step"]
    assert manifest["metadata"]["labels"]["dagster/op"] == step_key


def test_the_profile_tag_is_dagster_k8s_own():
    assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY


def test_loading_the_code_location_does_not_import_the_kubernetes_client():
    """Every run process loads the code location; the Kubernetes client costs it about 1 s and 58 MiB,
    and only a run that starts step pods needs it."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, etl_assets.definitions; print(sorted(m for m in sys.modules "
                               "if m.split('.')[0] in ('dagster_k8s', 'kubernetes')))"],
        capture_output=True, text=True, check=True, timeout=120)
    assert loaded.stdout.strip() == "[]"
