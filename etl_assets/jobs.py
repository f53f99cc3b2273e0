"""Named jobs a person launches (`dagster job launch -j <name>` or the UI), each tagged with its
Kubernetes resource profile and the store it writes, which the run queue uses to keep syncs apart.

Every job names its executor, so that a run's memory does not depend on the node it lands on: Dagster's
default executor starts up to the node's CPU count of step processes, whatever the pod's limit, and
each of them imports the code location again (at a memory cost docs/benchmark.md gives). Jobs of one
step, or of small steps that may as well run one after another, run them in the run process itself
(`in_process_executor`: one process, the code loaded once). The nightly reconcile, whose product checks
can overlap with the cart sync, runs at most RECONCILE_STEP_PROCESSES step processes beside its run
process. `make bench` measures each job's whole-run peak (docs/benchmark.md), which sizes the profiles
in k8s.py (docs/kubernetes.md).
"""

from __future__ import annotations

import dagster as dg

from etl_assets.assets.carts import order_db_carts
from etl_assets.assets.orders import warehouse_orders
from etl_assets.assets.products import cart_db_product
from etl_assets.assets.warehouse import warehouse_assets
from etl_assets.checks.carts import carts_reference_active_products
from etl_assets.fanout import product_sync_fanout_job
from etl_assets.k8s import CART_DB_TARGET, ORDER_DB_CARTS_TARGET, WAREHOUSE_TARGET, profile_tags
from etl_assets.settings import SETTINGS

RUN_RETRIES = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}
# Set by the instance on a failed run that run_retries will launch again.
WILL_RETRY_TAG = "dagster/will_retry"
RECONCILE_STEP_PROCESSES = 2


def step_processes(max_concurrent: int) -> dg.ExecutorDefinition:
    """The multiprocess executor with at most `max_concurrent` step processes, whatever the node's CPUs."""
    return dg.multiprocess_executor.configured(
        {"max_concurrent": max_concurrent}, name=f"multiprocess_max_{max_concurrent}")


def sync_run_config(mode: str, *asset_keys: dg.AssetKey) -> dict:
    return {"ops": {key.to_python_identifier(): {"config": {"mode": mode}} for key in asset_keys}}


def incremental_sync_job(name: str, asset: dg.AssetsDefinition, target: str, description: str):
    """An incremental sync of one asset, without its checks, in the run process."""
    return dg.define_asset_job(
        name,
        executor_def=dg.in_process_executor,
        selection=dg.AssetSelection.assets(asset).without_checks(),
        config=sync_run_config("incremental", asset.key),
        description=description,
        tags={**profile_tags("small", target=target), **RUN_RETRIES},
    )


product_sync_incremental = incremental_sync_job(
    "product_sync_incremental", cart_db_product, CART_DB_TARGET,
    "Copy products changed since the watermark into the cart database.",
)
cart_sync = incremental_sync_job(
    "cart_sync", order_db_carts, ORDER_DB_CARTS_TARGET,
    "Refresh the Order MongoDB cart snapshots of carts (or their products) that changed.",
)

full_reconcile = dg.define_asset_job(
    "full_reconcile",
    executor_def=step_processes(RECONCILE_STEP_PROCESSES),
    # The carts' products_exist_and_active runs after the product sync: carts pointing at products a
    # full sync deactivated.
    selection=dg.AssetSelection.assets(cart_db_product, order_db_carts)
    | dg.AssetSelection.checks(carts_reference_active_products),
    config=sync_run_config("full", cart_db_product.key, order_db_carts.key),
    description="Full product sync and cart sync, with every check of both assets (a wiped copy fails "
    "in_sync_with_catalog and active_rows_did_not_drop) and the carts' products_exist_and_active.",
    tags={**profile_tags("large", target=CART_DB_TARGET), **RUN_RETRIES},
)

validate = dg.define_asset_job(
    "validate",
    executor_def=dg.in_process_executor,
    selection=dg.AssetSelection.all_asset_checks(),
    description="Run every asset check against the stores as they are (the old /api/etl/validate).",
    tags={**profile_tags("medium"), **RUN_RETRIES},
)

warehouse_build = dg.define_asset_job(
    "warehouse_build",
    executor_def=dg.in_process_executor,
    selection=dg.AssetSelection.assets(warehouse_orders, *warehouse_assets),
    description="Load one day of orders and rebuild that day's analytics tables.",
    tags={**profile_tags("medium", target=WAREHOUSE_TARGET), **RUN_RETRIES},
)

# Its step processes (locally) or step pods: one per range, all at once.
product_sync_fanout = product_sync_fanout_job(
    SETTINGS.product_sync_ranges, on_kubernetes=SETTINGS.fanout_on_kubernetes,
    tags={**profile_tags("large", target=CART_DB_TARGET), **RUN_RETRIES},
)

all_jobs = [product_sync_incremental, cart_sync, full_reconcile, validate, warehouse_build, product_sync_fanout]
