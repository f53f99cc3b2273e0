"""One writer of the overlap test in its own process, materialized again each time the parent asks.

    python -m etl_assets_tests.safety.overlap_child {products|carts|orders} DAY

Store locations come from the environment, as in production and in sync_child. The child prints "ready"
once Dagster is imported; then each line it reads on stdin materializes its asset once, through
Dagster's own step execution (resources, config, the asset's whole body), and it answers "done" or
"failed <error>" (a step that had to be retried counts as failed). It exits at the end of its input. PostgreSQL statements time out after
STATEMENT_TIMEOUT_S, so a wait that would otherwise last the production timeout (600 s) fails fast.
"""

import os
import sys

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from etl_assets.assets.carts import order_db_carts
from etl_assets.assets.orders import warehouse_orders
from etl_assets.assets.products import cart_db_product
from etl_assets.resources import build_resources

STATEMENT_TIMEOUT_S = 3.0
ORDER_BATCH_SIZE = 25  # many batches, each quarantining one order: a long day load that writes throughout

WRITERS = {
    "products": (cart_db_product, {"cart_db__product": {"config": {"mode": "incremental"}}}),
    "carts": (order_db_carts, {"order_db__carts": {"config": {"mode": "full"}}}),
    "orders": (warehouse_orders, {"warehouse__orders": {"config": {"batch_size": ORDER_BATCH_SIZE}}}),
}


def say(line: str) -> None:
    print(line, flush=True)


def root_cause(error: SerializableErrorInfo) -> str:
    """The first line of the error that started it all (a retry request wraps the step's own error)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip().splitlines()[0]


def store_resources() -> dict[str, dg.ConfigurableResource]:
    """The production resource set, with PostgreSQL statements timing out after STATEMENT_TIMEOUT_S."""
    resources = build_resources(os.environ)
    for name in ("cart_db", "warehouse"):
        store = resources[name]
        resources[name] = type(store)(**{**store.model_dump(), "statement_timeout_s": STATEMENT_TIMEOUT_S})
    return resources


def main() -> None:
    which, day = sys.argv[1], sys.argv[2]
    asset, ops_config = WRITERS[which]
    partition_key = day if which == "orders" else None
    with dg.DagsterInstance.ephemeral() as instance:
        say("ready")
        for _ in sys.stdin:
            result = dg.materialize([asset], resources=store_resources(), instance=instance,
                                    run_config={"ops": ops_config}, partition_key=partition_key,
                                    raise_on_error=False)
            # A retried step counts as a failure too: its first attempt was aborted or timed out.
            errors = [root_cause(event.event_specific_data.error) for event in result.all_events
                      if event.is_step_failure or event.is_step_up_for_retry]
            say("done" if result.success and not errors else f"failed {' | '.join(errors)}".replace("\n", " "))


if __name__ == "__main__":
    main()
