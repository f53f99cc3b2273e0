"""Crash safety: a full sync SIGKILLed at seeded random points converges when it is simply run again.

KILL_POINTS (default 5) sets the number of kill points per sync and KILL_SEED picks them. The points
are spread over the whole run: the i-th lies in the i-th of KILL_POINTS equal slices of the run's
batches, at a random batch and a random moment within it. Every point starts from the same target
(for the product sync: a messy stale copy, and apart from it an empty one), kills the sync in a child
process, reruns it here and checks convergence from scratch.
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from etl_assets.sync.carts import sync_carts
from etl_assets.sync.products import sync_products
from etl_assets_tests.safety.convergence import (
    cart_problems,
    catalog_truth,
    product_problems,
    reset_product_copy,
    reset_snapshots,
    seed_carts,
    seed_catalog,
)

KILL_POINTS = int(os.environ.get("KILL_POINTS", "5"))
KILL_SEED = int(os.environ.get("KILL_SEED", "20261123"))
PRODUCTS, PRODUCT_BATCH = 20_000, 250
CARTS, CART_BATCH = 600, 12
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Kill:
    position: float  # in batches: after int(position) progress lines, plus that fraction of a batch
    seconds_after_ready: float
    finished_first: bool  # the sync had already returned, so this point tested nothing


def kill_positions(batches: int, count: int, rng: random.Random) -> list[float]:
    return [batches * (i + rng.random()) / count for i in range(count)]


def _next_line(child: subprocess.Popen, stderr: IO[bytes]) -> str:
    line = child.stdout.readline()
    if not line:
        stderr.seek(0)
        raise AssertionError(f"the sync child exited early:\n{stderr.read().decode()[-3000:]}")
    return line.strip()


def run_and_kill(which: str, env: dict[str, str], batch_size: int, position: float,
                 batch_seconds: float, hold: bool = False) -> Kill:
    """Start a full sync in a child process and SIGKILL it at `position` (see Kill). With `hold` the
    child waits after int(position) batches, so the kill cannot come too late."""
    hold_after = [str(int(position))] if hold else []
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "etl_assets_tests.safety.sync_child", which, str(batch_size), *hold_after],
            cwd=REPO_ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
        try:
            assert _next_line(child, stderr) == "ready"
            ready = time.monotonic()
            for _ in range(int(position)):
                _next_line(child, stderr)
            time.sleep((position - int(position)) * batch_seconds)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        elapsed = time.monotonic() - ready
        finished = "done" in child.stdout.read().splitlines()
        child.stdout.close()
    return Kill(round(position, 2), round(elapsed, 2), finished)


@pytest.mark.parametrize("start", ["stale copy", "empty copy"])
def test_product_sync_killed_at_random_points_converges_on_rerun(stores, request, start):
    """From a stale copy the sync upserts; into an empty one (a first load) it copies straight in."""
    empty = start == "empty copy"
    seed_catalog(stores.product_db, PRODUCTS)
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS, empty=empty)

    def sync(run_id: str):
        return sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine,
                             mode="full", batch_size=PRODUCT_BATCH, run_id=run_id)

    # An uninterrupted run from the same start: it converges, and its pace places the kills.
    truth = catalog_truth(stores.product_db)
    reference = sync("reference")
    assert not product_problems(truth, stores.cart_engine, stores.warehouse_engine)
    kills = []
    for n, position in enumerate(kill_positions(reference.batches, KILL_POINTS, random.Random(KILL_SEED))):
        reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS, empty=empty)
        kills.append(run_and_kill("products", stores.env(), PRODUCT_BATCH, position,
                                  reference.duration_s / reference.batches))
        sync(f"rerun-{n}")
        problems = product_problems(truth, stores.cart_engine, stores.warehouse_engine)
        assert not problems, f"no convergence after {kills[-1]}:\n" + "\n".join(problems)

    request.node.user_properties.append(("product_kills", kills))
    assert not [kill for kill in kills if kill.finished_first], kills


def test_cart_sync_killed_at_random_points_converges_on_rerun(stores, request):
    seed_carts(stores.cart_engine, CARTS)
    reset_snapshots(stores.cart_engine, stores.order_db, stores.warehouse_engine)

    def sync(run_id: str):
        return sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine,
                          mode="full", batch_size=CART_BATCH, run_id=run_id)

    reference = sync("reference")
    assert not cart_problems(stores.cart_engine, stores.order_db, stores.warehouse_engine)
    kills = []
    positions = kill_positions(reference.batches, KILL_POINTS, random.Random(KILL_SEED + 1))
    for n, position in enumerate(positions):
        reset_snapshots(stores.cart_engine, stores.order_db, stores.warehouse_engine)
        kills.append(run_and_kill("carts", stores.env(), CART_BATCH, position,
                                  reference.duration_s / reference.batches))
        sync(f"rerun-{n}")
        problems = cart_problems(stores.cart_engine, stores.order_db, stores.warehouse_engine)
        assert not problems, f"no convergence after {kills[-1]}:\n" + "\n".join(problems)

    request.node.user_properties.append(("cart_kills", kills))
    assert not [kill for kill in kills if kill.finished_first], kills
