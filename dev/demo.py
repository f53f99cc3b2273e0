"""The demo: load demo data into the local stores, materialize every asset, run every asset check,
and print what landed where.

    set -a; . .local/env; set +a; export DAGSTER_HOME=$PWD/.local/dagster_home
    python -m dev.demo [--root .local]

Runs go through the instance in DAGSTER_HOME, so `make ui` shows them. Running the demo again
reuses the stores and converges: every record has a fixed id.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from dev import demo_data
from etl_assets.assets.carts import order_db_carts
from etl_assets.assets.orders import warehouse_orders
from etl_assets.assets.products import cart_db_product
from etl_assets.jobs import sync_run_config
from etl_assets.resources import CART_DB, ORDER_DB, PRODUCT_DB, WAREHOUSE
from etl_assets.sync.carts import DELETED_AT
from etl_assets.sync.orders import day_window
from etl_assets.sync.stores import mongo_database, postgres_engine

REQUIRED_ENV = ("PRODUCT_MONGO_URI", "PRODUCT_MONGO_DB", "ORDER_MONGO_URI", "ORDER_MONGO_DB", "CART_PG_URL",
                "WAREHOUSE_PG_URL", "DAGSTER_HOME")
DEMO_TAGS = {"shop-sync/demo": "true"}
# Step events stay in the instance for the UI; the terminal only gets warnings and the summary.
QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# What a step raises when a blocking check on its asset failed: the data is at fault, not the demo.
BLOCKING_CHECK_FAILED = "DagsterAssetCheckFailedError"
ORDERS = warehouse_orders.key
PRODUCT_COPY = cart_db_product.key
CART_SNAPSHOTS = order_db_carts.key


@dataclass
class RunOutcome:
    """One Dagster run the demo launched."""

    label: str
    partition_key: str | None
    run_id: str
    success: bool
    duration_s: float
    failures: list[str] = field(default_factory=list)
    blocked_by_checks: bool = False  # the steps failed only because blocking checks failed
    check_evaluations: list[dg.AssetCheckEvaluation] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        """Failed for a reason other than what a check found in the data."""
        return not self.success and not self.blocked_by_checks

    @property
    def status(self) -> str:
        return "ok" if self.success else "BLOCKED" if self.blocked_by_checks else "FAILED"


class DemoRunner:
    """Launches runs of the implicit asset job (what the UI's Materialize button runs) on one instance."""

    def __init__(self, definitions: dg.Definitions, instance: dg.DagsterInstance):
        self.instance = instance
        self.asset_graph = definitions.resolve_asset_graph()
        self.job = definitions.resolve_implicit_global_asset_job_def()
        self.outcomes: list[RunOutcome] = []

    def run(self, label: str, asset_keys: Sequence[dg.AssetKey] = (), *, partition_key: str | None = None,
            run_config: Mapping[str, Any] | None = None,
            check_keys: Sequence[dg.AssetCheckKey] = ()) -> RunOutcome:
        """Execute the assets (with their checks) or, given only check keys, just those checks."""
        started = time.monotonic()
        job = self.job.get_subset(asset_check_selection=set(check_keys)) if check_keys else self.job
        result = job.execute_in_process(
            run_config={**QUIET_LOGGERS, **(run_config or {})},
            instance=self.instance,
            partition_key=partition_key,
            asset_selection=list(asset_keys) or None,
            raise_on_error=False,
            tags=DEMO_TAGS,
        )
        failed_steps = result.get_step_failure_events()
        outcome = RunOutcome(
            label=label,
            partition_key=partition_key,
            run_id=result.run_id,
            success=result.success,
            duration_s=round(time.monotonic() - started, 1),
            failures=[f"{event.step_key}: {_first_line(event.step_failure_data.error)}" for event in failed_steps],
            blocked_by_checks=bool(failed_steps) and all(
                event.step_failure_data.error.cls_name == BLOCKING_CHECK_FAILED for event in failed_steps),
            check_evaluations=list(result.get_asset_check_evaluations()),
        )
        self.outcomes.append(outcome)
        print(f"  {outcome.status:<7} {label}  ({outcome.duration_s}s, run {outcome.run_id[:8]})")
        for failure in outcome.failures:
            print(f"         {failure}")
        return outcome

    def unpartitioned_asset_keys(self) -> list[dg.AssetKey]:
        executable = self.asset_graph.executable_asset_keys
        return [key for key in self.asset_graph.toposorted_asset_keys
                if key in executable and not self.asset_graph.get(key).is_partitioned]

    def partitioned_asset_keys(self) -> dict[dg.PartitionsDefinition, list[dg.AssetKey]]:
        by_partitions: dict[dg.PartitionsDefinition, list[dg.AssetKey]] = defaultdict(list)
        for key in self.asset_graph.toposorted_asset_keys:
            node = self.asset_graph.get(key)
            if node.is_executable and node.is_partitioned:
                by_partitions[node.partitions_def].append(key)
        return by_partitions

    def unevaluated_check_keys(self) -> list[dg.AssetCheckKey]:
        """Checks no run evaluated yet whose asset has no partitions, so they can run on their own."""
        evaluated = {e.asset_check_key for o in self.outcomes for e in o.check_evaluations}
        return sorted((key for key in self.asset_graph.asset_check_keys
                       if key not in evaluated and not self.asset_graph.get(key.asset_key).is_partitioned),
                      key=lambda key: key.to_user_string())


def _first_line(error: Any) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0][:300] if message.strip() else type(error).__name__


def run_demo(definitions: dg.Definitions, instance: dg.DagsterInstance, env: Mapping[str, str]) -> DemoRunner:
    """Load the demo data and execute every asset and check, in the order the services would act."""
    runner = DemoRunner(definitions, instance)
    full_product_sync = sync_run_config("full", PRODUCT_COPY)

    print("Loading Product MongoDB products and Order MongoDB orders ...")
    print(f"  new: {demo_data.load_sources(env)}")
    if runner.run("product sync (full)", [PRODUCT_COPY], run_config=full_product_sync).broken:
        print("The carts need the product copy; stopping here.")
        return runner

    print("Loading Cart PostgreSQL carts (now that the cart database knows the products) ...")
    print(f"  inserted or changed: {demo_data.load_carts(env)}")
    deleted = demo_data.delete_retired_product(env)
    print(f"Deleted product {demo_data.RETIRED_PRODUCT_ID} from Product MongoDB ({deleted} document); "
          "a full product sync deactivates its copy")
    runner.run("product sync (full) after the deletion", [PRODUCT_COPY], run_config=full_product_sync)

    others = [key for key in runner.unpartitioned_asset_keys() if key != PRODUCT_COPY]
    if others:
        runner.run(", ".join(key.to_user_string() for key in others), others)

    deleted = demo_data.delete_cart(env)
    print(f"Deleted cart {demo_data.DELETED_CART_ID} from Cart PostgreSQL ({deleted} row); the cart sync "
          "(what cart_changes launches) marks its snapshot deletedAt")
    runner.run("cart sync after the deletion", [CART_SNAPSHOTS])

    for partitions_def, keys in runner.partitioned_asset_keys().items():
        partition_keys = partitions_def.get_partition_keys()[-demo_data.HISTORY_DAYS:]
        names = ", ".join(key.to_user_string() for key in keys)
        print(f"Materializing {names} for {len(partition_keys)} partitions ...")
        for partition_key in partition_keys:
            runner.run(partition_key, keys, partition_key=partition_key)

    late_payment(runner, definitions, instance, env)

    remaining_checks = runner.unevaluated_check_keys()
    if remaining_checks:
        runner.run(f"{len(remaining_checks)} checks not run with their assets", check_keys=remaining_checks)
    return runner


def late_payment(runner: DemoRunner, definitions: dg.Definitions, instance: dg.DagsterInstance,
                 env: Mapping[str, str]) -> None:
    """Pay yesterday's 23:40 order after its day was built, then run the automation: one order_changes
    tick, evaluated as the daemon would, and the warehouse_build run of each day it requests."""
    paid_at = demo_data.pay_late_order(env)
    print(f"Paid order {demo_data.LATE_PAYMENT_ORDER_ID} at {paid_at:%H:%M} UTC, after its day was built; "
          "order_changes ticks ...")
    with dg.build_sensor_context(instance=instance, definitions=definitions,
                                 resources=definitions.resources) as context:
        tick = definitions.resolve_sensor_def("order_changes").evaluate_tick(context)
    keys = next(keys for keys in runner.partitioned_asset_keys().values() if ORDERS in keys)
    for request in tick.run_requests:
        runner.run(f"{request.partition_key} (requested by order_changes)", keys, partition_key=request.partition_key)


def late_payment_lines(env: Mapping[str, str]) -> list[str]:
    """What the warehouse holds for the order paid after its day was built."""
    warehouse = postgres_engine(env["WAREHOUSE_PG_URL"], store=WAREHOUSE, timeout_s=5)
    try:
        with warehouse.connect() as conn:
            order = conn.execute(sa.text(
                "SELECT created_at, order_day, payment_status, paid_at FROM orders WHERE order_id = :id"),
                {"id": str(demo_data.LATE_PAYMENT_ORDER_ID)}).one_or_none()
            sales = conn.execute(sa.text(
                "SELECT orders, paid_orders, paid_revenue FROM daily_sales WHERE day = :day"),
                {"day": order.order_day}).one_or_none() if order else None
    finally:
        warehouse.dispose()
    if order is None:
        return ["Late payment: the order is not in the warehouse"]
    paid = f"{order.payment_status}, paid_at {order.paid_at:%Y-%m-%d %H:%M} UTC" if order.paid_at else order.payment_status
    day = (f"daily_sales {order.order_day}: {sales.paid_orders} of {sales.orders} orders paid, "
           f"paid revenue {sales.paid_revenue}" if sales else f"daily_sales {order.order_day}: not built")
    return [f"Late payment (order {demo_data.LATE_PAYMENT_ORDER_ID}, created {order.created_at:%Y-%m-%d %H:%M} UTC, "
            f"paid after its day was built): the warehouse says {paid}", f"  {day}"]


def _count_table(conn: sa.Connection, name: str) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()


def store_lines(env: Mapping[str, str]) -> list[str]:
    """Row counts of every store, as summary lines."""
    product_db = mongo_database(env["PRODUCT_MONGO_URI"], env["PRODUCT_MONGO_DB"], store=PRODUCT_DB, timeout_s=5)
    order_db = mongo_database(env["ORDER_MONGO_URI"], env["ORDER_MONGO_DB"], store=ORDER_DB, timeout_s=5)
    cart_db = postgres_engine(env["CART_PG_URL"], store=CART_DB, timeout_s=5)
    warehouse = postgres_engine(env["WAREHOUSE_PG_URL"], store=WAREHOUSE, timeout_s=5)
    try:
        with cart_db.connect() as conn:
            activity = dict(conn.execute(sa.text("SELECT is_active, count(*) FROM product GROUP BY is_active")).all())
            carts = _count_table(conn, "cart")
        with warehouse.connect() as conn:
            tables = conn.execute(sa.text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_name NOT LIKE 'etl\\_%' ORDER BY table_name"
            )).scalars().all()
            warehouse_rows = {table: _count_table(conn, table) for table in tables}
        lines = [
            "Stores",
            f"  Product MongoDB  products: {product_db['products'].count_documents({})}",
            f"  Cart PostgreSQL  product: {activity.get(True, 0)} active, {activity.get(False, 0)} inactive; "
            f"cart: {carts}",
            f"  Order MongoDB    carts (snapshots): {order_db['carts'].count_documents({})}; "
            f"orders: {order_db['orders'].count_documents({})}",
            "  Warehouse        " + ", ".join(f"{table}: {rows}" for table, rows in warehouse_rows.items()),
        ]
        planted = Counter(bad.source for bad in demo_data.BAD_RECORDS if bad.quarantined)
        flagged = Counter(bad.defect for bad in demo_data.BAD_RECORDS if not bad.quarantined)
        lines += ["", "Quarantine (open records; the demo planted "
                  + ", ".join(f"{count} in {source}" for source, count in planted.items())
                  + "".join(f"; {count} more ({defect}) load, and a check flags them"
                            for defect, count in flagged.items()) + ")"]
        with warehouse.connect() as conn:
            quarantined = conn.execute(sa.text("""
                SELECT source, count(*), (array_agg(record_id || ': ' || reason ORDER BY record_id))[1]
                FROM etl_quarantine WHERE resolved_at IS NULL GROUP BY source ORDER BY source
            """)).all()
        lines += [f"  {source}: {count}, e.g. {sample}" for source, count, sample in quarantined] or ["  none"]
        return lines
    finally:
        product_db.client.close()
        order_db.client.close()
        cart_db.dispose()
        warehouse.dispose()


def deleted_cart_lines(env: Mapping[str, str]) -> list[str]:
    """The deleted cart's snapshot, and the newest cart_funnel day against the cart rows it counts."""
    order_db = mongo_database(env["ORDER_MONGO_URI"], env["ORDER_MONGO_DB"], store=ORDER_DB, timeout_s=5)
    cart_db = postgres_engine(env["CART_PG_URL"], store=CART_DB, timeout_s=5)
    warehouse = postgres_engine(env["WAREHOUSE_PG_URL"], store=WAREHOUSE, timeout_s=5)
    try:
        snapshot = order_db["carts"].find_one({"cartId": demo_data.DELETED_CART_ID}) or {}
        lines = ["Deleted cart",
                 f"  {demo_data.DELETED_CART_ID}: deleted from Cart PostgreSQL; its snapshot "
                 + (f"is marked deletedAt {snapshot[DELETED_AT]:%Y-%m-%d %H:%M:%S} UTC" if snapshot.get(DELETED_AT)
                    else "is NOT marked")]
        with warehouse.connect() as conn:
            funnel = conn.execute(sa.text(
                "SELECT day, active_carts + abandoned_carts + converted_carts AS carts FROM cart_funnel "
                "ORDER BY day DESC LIMIT 1")).one_or_none()
        if funnel is None:
            return [*lines, "  cart_funnel: no day built"]
        _, end_of_day = day_window(funnel.day)
        with cart_db.connect() as conn:
            carts = conn.execute(sa.text("SELECT count(*) FROM cart WHERE created_at < :end_of_day"),
                                 {"end_of_day": end_of_day}).scalar_one()
            deleted = conn.execute(sa.text("SELECT count(*) FROM cart WHERE id = CAST(:id AS uuid)"),
                                   {"id": demo_data.DELETED_CART_ID}).scalar_one()
        verdict = "leaves the deleted cart out" if funnel.carts == carts and not deleted else \
            "does NOT match the cart rows"
        lines.append(f"  cart_funnel {funnel.day}: {funnel.carts} carts = cart rows created by then ({carts}, "
                     f"whatever their product): the funnel {verdict}")
        return lines
    finally:
        order_db.client.close()
        cart_db.dispose()
        warehouse.dispose()


def check_lines(runner: DemoRunner) -> list[str]:
    """Every asset check's latest result per partition (later runs replace earlier ones), one line per check."""
    latest: dict[dg.AssetCheckKey, dict[str | None, dg.AssetCheckEvaluation]] = defaultdict(dict)
    for outcome in runner.outcomes:
        for evaluation in outcome.check_evaluations:
            latest[evaluation.asset_check_key][evaluation.partition or outcome.partition_key] = evaluation
    lines = ["Asset checks"] if runner.asset_graph.asset_check_keys else ["Asset checks: none defined"]
    for key in sorted(runner.asset_graph.asset_check_keys, key=lambda k: k.to_user_string()):
        name = f"{key.asset_key.to_user_string()} · {key.name}"
        evaluations = list(latest.get(key, {}).values())
        if not evaluations:
            lines.append(f"  NOT RUN  {name}")
            continue
        failed = [e for e in evaluations if not e.passed]
        verdict = "failed " if failed else "passed "
        tally = f" ({len(evaluations) - len(failed)}/{len(evaluations)} partitions passed)" if len(evaluations) > 1 else ""
        shown = failed[0] if failed else evaluations[0]
        description = f": {shown.description}" if failed and shown.description else ""
        lines.append(f"  {verdict} {name}  [{shown.severity.value}]{tally}{description}")
    return lines


def run_lines(runner: DemoRunner) -> list[str]:
    failed = [o for o in runner.outcomes if not o.success]
    lines = [f"Runs: {len(runner.outcomes)}, {len(failed)} failed (see them with `make ui`)"]
    for outcome in failed:
        reason = " (a blocking check failed)" if outcome.blocked_by_checks else ""
        lines.append(f"  {outcome.status} {outcome.label}{reason}, run {outcome.run_id}")
        lines += [f"    {failure}" for failure in outcome.failures]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(".local"), help="where demo-summary.txt goes")
    args = parser.parse_args(argv)
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print(f"missing environment: {', '.join(missing)}; run `make demo`, or source .local/env and set "
              "DAGSTER_HOME (see the README)", file=sys.stderr)
        return 2

    # Beta and preview APIs (observable sources, backfill policies) warn on import; the demo's output
    # is its summary.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from etl_assets.definitions import defs

    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        runner = run_demo(defs, instance, os.environ)
    lines = [
        f"shop-sync demo, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {time.monotonic() - started:.0f}s",
        "",
        *store_lines(os.environ),
        "",
        *deleted_cart_lines(os.environ),
        "",
        *late_payment_lines(os.environ),
        "",
        *check_lines(runner),
        "",
        *run_lines(runner),
    ]
    summary = "\n".join(lines) + "\n"
    print("\n" + summary)
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "demo-summary.txt").write_text(summary)
    print(f"summary written to {args.root / 'demo-summary.txt'}")
    return 1 if any(outcome.broken for outcome in runner.outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
