"""`product_sync_fanout`: the full product sync spread over N disjoint `_id` ranges, each a step of its
own (sync/product_ranges.py does the work).

    plan_product_ranges ──► sync_product_range_0 … sync_product_range_{N-1} ──► finish_product_ranges

Locally the ranges run as step processes of the multiprocess executor; with
SHOP_SYNC_FANOUT_ON_KUBERNETES=true each is a Kubernetes Job of its own (k8s_job_executor) with the
`large` profile. The steps hand each other nothing but the warehouse's sync state, so no IO manager
has to be shared between pods. The last step reports the materialization of `cart_db/product`.
N is fixed when the code location loads (SHOP_SYNC_PRODUCT_SYNC_RANGES), because every range is a
step of the job's graph; docs/kubernetes.md says how to choose it.
"""


from datetime import UTC, datetime

import dagster as dg

from etl_assets.assets.common import STORE_RETRY, quarantine_metadata, report_metadata
from etl_assets.assets.products import (
    allow_mass_deactivation_field,
    cart_db_product,
    override_run_config,
    refused_deactivation,
)
from etl_assets.k8s import step_isolated_executor, step_op_tags
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.settings import SETTINGS
from etl_assets.sync.guard import MassDeactivationRefused
from etl_assets.sync.product_ranges import finish_ranges, plan_ranges, sync_range
from etl_assets.sync.products import BATCH_SIZE, SOURCE, active_rows


class RangeSyncConfig(dg.Config):
    batch_size: int = BATCH_SIZE


class FinishRangesConfig(dg.Config):
    allow_mass_deactivation: bool = allow_mass_deactivation_field()


def _plan_op(ranges: int, tags: dict[str, str]) -> dg.OpDefinition:
    @dg.op(name="plan_product_ranges", out=dg.Out(dg.Nothing), tags=tags, retry_policy=STORE_RETRY,
           description=f"Sample the catalog's _ids and store {ranges} ranges for this reconcile.")
    def plan_product_ranges(context: dg.OpExecutionContext, product_db: MongoStoreResource,
                            warehouse: PostgresStoreResource) -> None:
        plan = plan_ranges(product_db.db(), warehouse.engine(), ranges, run_id=context.run.run_id,
                           started_at=datetime.now(UTC))
        context.log.info(f"product sync ranges: split at {list(plan.split_points)}")

    return plan_product_ranges


def _range_op(index: int, tags: dict[str, str]) -> dg.OpDefinition:
    @dg.op(name=f"sync_product_range_{index}", ins={"planned": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing),
           tags=tags, retry_policy=STORE_RETRY,
           description=f"Full sync of the catalog's range {index}: upserts and quarantines; deactivates nothing.")
    def sync_product_range(context: dg.OpExecutionContext, config: RangeSyncConfig,
                           product_db: MongoStoreResource, cart_db: PostgresStoreResource,
                           warehouse: PostgresStoreResource) -> None:
        report = sync_range(product_db.db(), cart_db.engine(), warehouse.engine(), index,
                            run_id=context.run.run_id, batch_size=config.batch_size, progress=context.log.info)
        context.log.info(f"product sync range {index} done: {report.as_dict()}")

    return sync_product_range


def _finish_op(ranges: int, tags: dict[str, str]) -> dg.OpDefinition:
    @dg.op(name="finish_product_ranges", ins={f"range_{i}": dg.In(dg.Nothing) for i in range(ranges)},
           tags=tags, retry_policy=STORE_RETRY,
           description="Deactivate what no range saw, for the whole reconcile at once; move the watermark.")
    def finish_product_ranges(context: dg.OpExecutionContext, config: FinishRangesConfig,
                              cart_db: PostgresStoreResource, warehouse: PostgresStoreResource) -> None:
        guard = SETTINGS.deactivation_guard(allow_mass_deactivation=config.allow_mass_deactivation)
        try:
            report = finish_ranges(cart_db.engine(), warehouse.engine(), run_id=context.run.run_id, guard=guard)
        except MassDeactivationRefused as refused:
            raise refused_deactivation(context, refused, override_run_config(context.op_def.name)) from refused
        context.log_event(dg.AssetMaterialization(asset_key=cart_db_product.key, metadata={
            **report_metadata(report), "dagster/row_count": active_rows(cart_db.engine()),
            **quarantine_metadata(warehouse.engine(), SOURCE), "ranges": ranges,
        }))

    return finish_product_ranges


def product_sync_fanout_job(ranges: int, *, on_kubernetes: bool, tags: dict[str, str]) -> dg.JobDefinition:
    """The fanned-out full product sync with `ranges` range steps, at most `ranges` of them at once. No
    pool on the range steps: they write disjoint rows, and the run queue's `cart_db` target keeps
    every other product sync out while they run."""
    if on_kubernetes:
        executor = step_isolated_executor(max_concurrent=ranges)
        step_tags = step_op_tags("large")
    else:
        executor = dg.multiprocess_executor.configured({"max_concurrent": ranges}, name=f"multiprocess_max_{ranges}")
        step_tags = {}
    plan, finish = _plan_op(ranges, step_tags), _finish_op(ranges, step_tags)
    range_ops = [_range_op(index, step_tags) for index in range(ranges)]

    @dg.graph(name="product_sync_fanout")
    def fanout() -> None:
        planned = plan()
        finish(**{f"range_{op.name.rsplit('_', 1)[1]}": op(planned=planned) for op in range_ops})

    return fanout.to_job(
        executor_def=executor,
        description=f"Full product sync over {ranges} _id ranges, each its own step (process or pod); the "
        "mass deactivation is decided once, for the whole catalog.",
        tags=tags,
    )
