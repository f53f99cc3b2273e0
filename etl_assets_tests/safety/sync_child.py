"""One full sync in its own process, for the crash test to SIGKILL at a chosen point.

    python -m etl_assets_tests.safety.sync_child {products|carts|range:INDEX} BATCH_SIZE [HOLD_AFTER]

Store locations come from the environment, as in production (CART_PG_URL, WAREHOUSE_PG_URL,
PRODUCT_MONGO_URI/_DB, ORDER_MONGO_URI/_DB). Prints "ready" once connected, one line per batch as the
sync reports progress, and "done" when the sync returned; the parent counts lines to place its kill.
With HOLD_AFTER the child stops after that many batches and waits to be killed, so that a kill lands
mid-pass however fast the sync runs.
"""

import os
import sys
import time

from etl_assets.resources import CART_DB, ORDER_DB, PRODUCT_DB, WAREHOUSE
from etl_assets.sync.carts import sync_carts
from etl_assets.sync.product_ranges import sync_range
from etl_assets.sync.products import sync_products
from etl_assets.sync.stores import mongo_database, postgres_engine

TIMEOUT_S = 10.0


def say(line: str) -> None:
    print(line, flush=True)


def progress_holding_after(batches: int):
    said = 0

    def progress(line: str) -> None:
        nonlocal said
        say(line)
        said += 1
        if said == batches:
            time.sleep(3600)

    return progress


def main() -> None:
    which, batch_size = sys.argv[1], int(sys.argv[2])
    hold_after = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    env = os.environ
    cart_db = postgres_engine(env["CART_PG_URL"], store=CART_DB, timeout_s=TIMEOUT_S)
    warehouse = postgres_engine(env["WAREHOUSE_PG_URL"], store=WAREHOUSE, timeout_s=TIMEOUT_S)
    options = {"mode": "full", "batch_size": batch_size, "run_id": f"crash-child-{os.getpid()}",
               "progress": progress_holding_after(hold_after) if hold_after else say}
    if which == "products" or which.startswith("range:"):
        product_db = mongo_database(env["PRODUCT_MONGO_URI"], env["PRODUCT_MONGO_DB"], store=PRODUCT_DB,
                                    timeout_s=TIMEOUT_S)
        say("ready")
        if which == "products":
            sync_products(product_db, cart_db, warehouse, **options)
        else:  # one range of the current fan-out plan
            options.pop("mode")
            sync_range(product_db, cart_db, warehouse, int(which.split(":")[1]), **options)
    else:
        order_db = mongo_database(env["ORDER_MONGO_URI"], env["ORDER_MONGO_DB"], store=ORDER_DB,
                                  timeout_s=TIMEOUT_S)
        say("ready")
        sync_carts(cart_db, order_db, warehouse, **options)
    say("done")


if __name__ == "__main__":
    main()
