"""The writers overlap (issue 12 §2): the product sync, the cart sync and a warehouse day load run at
once, each in its own process, against the same stores, ROUNDS times. None may deadlock, time out or be
retried, and each round must leave the stores exactly as the three writers run one after the other do.

The run queue allows this overlap (the three have different targets and pools) and `cart_changes` fires
every 30 s, so production meets it. Each writer materializes its real asset through Dagster
(overlap_child), with a short statement timeout so that a wait nobody can break fails in seconds. The
product and cart syncs start at a different offset into the day load each round, to meet it at every
stage: before its transaction, while it holds the day's rows and writes quarantine rows, and after.
"""

import os
import select
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa
from bson import ObjectId

from etl_assets.sync import carts, products
from etl_assets.sync.state import save_watermark
from etl_assets_tests.checks.seed import order_doc
from etl_assets_tests.safety.convergence import seed_carts, seed_catalog

ROUNDS = 20
DAY = date(2026, 6, 2)
PRODUCTS = 300  # catalog products, all newer than the product sync's watermark
CARTS = 300  # carts on the cart database's own products, which the product sync does not touch
ORDERS = 800  # the day's orders; every INVALID_ORDER_EVERY-th one has a subtotal that does not add up
INVALID_ORDER_EVERY = 25
START_OFFSETS_S = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8)  # product and cart syncs start this long after the day load
ROUND_TIMEOUT_S = 60  # far beyond a round's few seconds, far below the production statement timeout
WRITERS = ("orders", "products", "carts")


def seed(stores) -> None:
    seed_catalog(stores.product_db, PRODUCTS)
    seed_carts(stores.cart_engine, CARTS)
    items = [("ca27" + "0" * 19 + "1", 2, 3.5), ("ca27" + "0" * 19 + "2", 1, 10.0)]
    stores.order_db["orders"].insert_many([
        order_doc(ObjectId(f"{n:024x}"), items, day=DAY, **({"subtotal": 1.0} if n % INVALID_ORDER_EVERY == 0 else {}))
        for n in range(1, ORDERS + 1)
    ])


def reset(stores) -> None:
    """The targets as before the first round: the copy holds only the cart database's own products, no
    snapshots, an empty warehouse, and a product-sync watermark older than the catalog (an incremental
    sync, which inserts and updates but deactivates nothing the cart sync reads)."""
    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM product WHERE id NOT LIKE 'ca27%'"))
    stores.order_db.drop_collection(carts.COLLECTION)
    with stores.warehouse_engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE orders, order_items, etl_quarantine, etl_sync_state")
    save_watermark(stores.warehouse_engine, products.SYNC_NAME,
                   {"updated_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat()}, "overlap-test")


def outcome(stores) -> dict[str, list]:
    """What the three writers leave behind, in a form that compares equal across runs."""
    with stores.cart_engine.connect() as conn:
        copy = conn.execute(sa.text("SELECT id, content_hash, is_active FROM product ORDER BY id")).all()
    # Without the time each cart was read, which differs from run to run whatever the order.
    snapshots = sorted(stores.order_db[carts.COLLECTION].find({}, {"_id": 0, carts.READ_AT: 0}),
                       key=lambda doc: doc["cartId"])
    with stores.warehouse_engine.connect() as conn:
        day_orders = conn.execute(sa.text("SELECT * FROM orders ORDER BY order_id")).all()
        day_items = conn.execute(sa.text("SELECT * FROM order_items ORDER BY order_id, line_no")).all()
        quarantine = conn.execute(sa.text("""
            SELECT source, record_id, reason FROM etl_quarantine WHERE resolved_at IS NULL ORDER BY 1, 2
        """)).all()
        synced = conn.execute(sa.text("SELECT sync_name FROM etl_sync_state ORDER BY 1")).scalars().all()
    return {"product copy": copy, "cart snapshots": snapshots, "orders": day_orders, "order items": day_items,
            "open quarantine": quarantine, "sync state": synced}


class Writer:
    """A long-lived overlap_child process; `start` asks it for one materialization, `result` waits for it."""

    def __init__(self, which: str, env: dict[str, str], log: Path):
        self.which = which
        self.process = subprocess.Popen(
            [sys.executable, "-m", "etl_assets_tests.safety.overlap_child", which, DAY.isoformat()],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        )
        assert self.read() == "ready", f"{which} writer did not start; see {log}"

    def read(self, timeout_s: float = ROUND_TIMEOUT_S) -> str:
        """The child's next line; a child that says nothing for `timeout_s` is hung and is killed."""
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            self.process.kill()
            return f"hung for {timeout_s} s"
        return self.process.stdout.readline().strip()

    def start(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> str:
        return self.read() or f"exited with {self.process.wait()}"

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_round(writers: dict[str, Writer], offset_s: float | None) -> dict[str, str]:
    """One round: the writers one after the other when `offset_s` is None, else the day load and, after
    `offset_s`, the product and cart syncs together. Returns each writer's answer."""
    answers = {}
    if offset_s is None:
        for which in WRITERS:
            writers[which].start()
            answers[which] = writers[which].result()
        return answers
    writers["orders"].start()
    time.sleep(offset_s)
    writers["products"].start()
    writers["carts"].start()
    for which in WRITERS:
        answers[which] = writers[which].result()
    return answers


def test_syncs_and_a_day_load_overlap_without_deadlock(stores, tmp_path):
    seed(stores)
    env = {**os.environ, **stores.env()}
    writers = {which: Writer(which, env, tmp_path / f"{which}.log") for which in WRITERS}
    try:
        reset(stores)
        assert run_round(writers, None) == dict.fromkeys(WRITERS, "done")
        sequential = outcome(stores)
        assert len(sequential["orders"]) == ORDERS - ORDERS // INVALID_ORDER_EVERY

        results = []
        for round_no in range(ROUNDS):
            reset(stores)
            offset = START_OFFSETS_S[round_no % len(START_OFFSETS_S)]
            started = time.monotonic()
            answers = run_round(writers, offset)
            elapsed = round(time.monotonic() - started, 2)
            differs = [name for name, rows in outcome(stores).items() if rows != sequential[name]]
            results.append((round_no, offset, elapsed, answers, differs))
            print(f"round {round_no:2d}: offset {offset:.2f} s, {elapsed:5.2f} s, {answers}, differs: {differs}")
            assert answers == dict.fromkeys(WRITERS, "done") and not differs, results[-1]
    finally:
        for writer in writers.values():
            writer.stop()
