"""Every named job bounds its step processes itself, so a run's memory does not depend on the node."""

from __future__ import annotations

import multiprocessing

import dagster as dg
import pytest
from dagster._core.definitions.assets.job.asset_job import is_reserved_asset_job_name
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.multiprocess import MultiprocessExecutor
from dagster._core.system_config.objects import ResolvedRunConfig

from etl_assets.definitions import defs
from etl_assets.jobs import RECONCILE_STEP_PROCESSES
from etl_assets.settings import SETTINGS

STORE_VARIABLES = ("PRODUCT_MONGO_URI", "PRODUCT_MONGO_DB", "ORDER_MONGO_URI", "ORDER_MONGO_DB", "CART_PG_URL",
                   "WAREHOUSE_PG_URL")
JOB_NAMES = sorted(job.name for job in defs.resolve_all_job_defs() if not is_reserved_asset_job_name(job.name))
# Step processes each job may start beside its run process; the profiles in k8s.py are sized for them.
EXPECTED_STEP_PROCESSES = {
    "product_sync_incremental": 0,
    "cart_sync": 0,
    "full_reconcile": RECONCILE_STEP_PROCESSES,
    "validate": 0,
    "warehouse_build": 0,
    "product_sync_fanout": SETTINGS.product_sync_ranges,
}


def step_processes_at_most(job_name: str) -> int:
    """How many step processes the run worker of `job_name` may start at once, with the job's own run
    config: the executor built exactly as the run worker builds it."""
    job = defs.resolve_job_def(job_name)
    executor_config = ResolvedRunConfig.build(job, job.run_config or {}).execution.execution_engine_config
    with dg.instance_for_test() as instance:
        executor = job.executor_def.executor_creation_fn(InitExecutorContext(
            job=dg.reconstructable(_placeholder_job), executor_def=job.executor_def,
            executor_config=executor_config, instance=instance))
    if isinstance(executor, InProcessExecutor):
        return 0
    assert isinstance(executor, MultiprocessExecutor), f"{job_name} runs on {type(executor).__name__}"
    return executor._max_concurrent


@dg.op
def _noop() -> None:
    pass


@dg.job
def _placeholder_job() -> None:
    """The executor creation needs a reconstructable job; which one does not matter."""
    _noop()


def test_every_named_job_is_listed():
    assert set(JOB_NAMES) == set(EXPECTED_STEP_PROCESSES)


@pytest.mark.parametrize("job_name", JOB_NAMES)
def test_step_processes_do_not_depend_on_the_node(job_name: str, monkeypatch: pytest.MonkeyPatch):
    """Dagster's default executor starts multiprocessing.cpu_count() step processes: on a 64-core node,
    64 imports of the code location in one pod. Every job must give the same bound on any node."""
    monkeypatch.delenv("DAGSTER_MULTIPROCESS_EXECUTOR_MAX_CONCURRENT", raising=False)
    for variable in STORE_VARIABLES:  # resolving a run's config reads them; nothing connects
        monkeypatch.setenv(variable, "unused")
    on_node = {}
    for cpus in (2, 64):
        monkeypatch.setattr(multiprocessing, "cpu_count", lambda cpus=cpus: cpus)
        on_node[cpus] = step_processes_at_most(job_name)
    assert on_node[2] == on_node[64] == EXPECTED_STEP_PROCESSES[job_name]
