"""Named Kubernetes resource profiles, turned into the tags dagster-k8s reads.

A job carries `profile_tags(...)`: its run pod gets the profile's requests and limits through the
`dagster-k8s/config` tag, and the run queue reads `shop-sync/target` to keep two syncs into the same
store apart. dagster-k8s deep-merges the tag onto the instance's `run_k8s_config`, so a profile only
states resources; the security context, volumes and annotations come from the instance.

A job that needs a pod per step (product_sync_fanout on Kubernetes) uses `step_isolated_executor`; its
run-level tags do not reach the step pods, so ops that need more than the instance default carry
`step_op_tags(...)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import dagster as dg

# dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY, spelled out (test_k8s checks they agree): importing
# dagster_k8s loads the whole Kubernetes client, a second and tens of MiB (docs/benchmark.md) in every
# process that loads the code location, though only a run that starts step pods uses it.
K8S_CONFIG_TAG = "dagster-k8s/config"
PROFILE_TAG = "shop-sync/profile"
TARGET_TAG = "shop-sync/target"

# The stores a sync writes. Each names both a run-queue target (a job's TARGET_TAG) and the pool of the
# assets that write that store: the queue keeps two sync runs apart, the pool two steps of any runs.
CART_DB_TARGET = "cart_db"
ORDER_DB_CARTS_TARGET = "order_db_carts"
WAREHOUSE_TARGET = "warehouse"
# Every value must have a tag concurrency limit in dagster.yaml and helm-values/values.yaml, or two
# syncs into that store could run at once; test_instance checks both.
SYNC_TARGETS = (CART_DB_TARGET, ORDER_DB_CARTS_TARGET, WAREHOUSE_TARGET)


@dataclass(frozen=True)
class ResourceProfile:
    """Requests and limits of one Kubernetes container, in Kubernetes quantity notation."""

    requests_cpu: str
    requests_memory: str
    limits_cpu: str
    limits_memory: str

    def resources(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.requests_cpu, "memory": self.requests_memory},
            "limits": {"cpu": self.limits_cpu, "memory": self.limits_memory},
        }


# Each limit is at least 1.5x the peak memory `make bench` measured for a whole run of the jobs that use
# it: run process and step processes together. The peaks are in docs/benchmark.md, the sizing in
# docs/kubernetes.md ("How the profiles are sized"). A run's peak does not grow with the catalog: the
# syncs stream.
PROFILES: dict[str, ResourceProfile] = {
    # The pod the old sync service ran in; dagster.yaml's run_k8s_config uses the same figures as the
    # default for every run: product_sync_incremental and cart_sync.
    "small": ResourceProfile(
        requests_cpu="100m", requests_memory="256Mi", limits_cpu="500m", limits_memory="512Mi"
    ),
    # Jobs whose steps run one after another in the run process: the memory each step leaves behind
    # stays with the process: validate and warehouse_build.
    "medium": ResourceProfile(
        requests_cpu="250m", requests_memory="768Mi", limits_cpu="1", limits_memory="1280Mi"
    ),
    # The nightly full reconcile (a run process and up to two step processes) and the range steps of
    # product_sync_fanout.
    "large": ResourceProfile(requests_cpu="1", requests_memory="1Gi", limits_cpu="2", limits_memory="2Gi"),
}


def k8s_config(profile: str) -> dict:
    """The `dagster-k8s/config` value of a profile, before JSON encoding."""
    if profile not in PROFILES:
        raise ValueError(f"unknown resource profile {profile!r}; known: {sorted(PROFILES)}")
    return {"container_config": {"resources": PROFILES[profile].resources()}}


def profile_tags(profile: str, target: str | None = None) -> dict[str, str]:
    """Run tags for a job: its pod resources, its profile name and, for a sync, the store it writes."""
    tags = {K8S_CONFIG_TAG: json.dumps(k8s_config(profile)), PROFILE_TAG: profile}
    if target is not None:
        if target not in SYNC_TARGETS:
            raise ValueError(f"unknown sync target {target!r}; the run queue limits only {SYNC_TARGETS}")
        tags[TARGET_TAG] = target
    return tags


def step_op_tags(profile: str) -> dict[str, str]:
    """Op (or asset `op_tags`) tags giving one step's pod a profile under `step_isolated_executor`."""
    return {K8S_CONFIG_TAG: json.dumps(k8s_config(profile))}


def step_isolated_executor(max_concurrent: int) -> dg.ExecutorDefinition:
    """k8s_job_executor bounded to `max_concurrent` step pods per run. Namespace, image, secrets, service
    account and the default resources come from the instance's K8sRunLauncher."""
    from dagster_k8s import k8s_job_executor  # here, not at import: see K8S_CONFIG_TAG

    return k8s_job_executor.configured({"max_concurrent": max_concurrent},
                                       name=f"step_isolated_k8s_executor_{max_concurrent}")
