"""Production sync jobs, run with a single attempt per step.

execute_in_process and materialize always honour the assets' retry policy (3 more attempts with
exponential backoff), which would hide how long one attempt takes and slow every failing test down.
dg.execute_job runs the reconstructable job with its own executor (in-process for both jobs here),
whose config turns retries off.
"""

import dagster as dg

from etl_assets.assets.carts import order_db_carts
from etl_assets.assets.products import cart_db_product
from etl_assets.definitions import defs
from etl_assets.jobs import sync_run_config

NO_RETRIES = {"execution": {"config": {"retries": {"disabled": {}}}}}


def product_sync_job() -> dg.JobDefinition:
    return defs.resolve_job_def("product_sync_incremental")


def cart_sync_job() -> dg.JobDefinition:
    return defs.resolve_job_def("cart_sync")


JOBS = {
    "product_sync_incremental": (product_sync_job, cart_db_product.key),
    "cart_sync": (cart_sync_job, order_db_carts.key),
}


def run_once(job: str, instance: dg.DagsterInstance) -> dg.JobExecutionResult:
    """A full-mode run of `job` with the stores the environment names, as production configures them."""
    job_fn, asset_key = JOBS[job]
    return dg.execute_job(dg.reconstructable(job_fn), instance=instance, raise_on_error=False,
                          run_config={**sync_run_config("full", asset_key), **NO_RETRIES})
