"""Faults: a store that cannot be reached at start fails the run within the configured timeout, naming
the store and writing nothing; a PostgreSQL restart in the middle of a sync is retried to convergence."""

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest
import sqlalchemy as sa
from bson import ObjectId
from sqlalchemy.pool import NullPool

from dev.stores import free_port
from etl_assets.assets.products import cart_db_product
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets_tests.safety.convergence import (
    catalog_truth,
    product_problems,
    reset_product_copy,
    seed_catalog,
)
from etl_assets_tests.safety.single_attempt import run_once

PASSWORD = "Fault-Secret-7f3a9c"  # in every broken URL: it must not surface in the error
TIMEOUT_S = max(MongoStoreResource.model_fields["timeout_s"].default,
                PostgresStoreResource.model_fields["timeout_s"].default)
# Time a failing run may take beyond the store timeout: loading the job, resources, the other stores, events.
MARGIN_S = 3.0


@dataclass(frozen=True)
class Outage:
    job: str
    env_var: str
    store: str
    how: str  # closed port, missing socket directory, or a listener that never answers


OUTAGES = [
    Outage("product_sync_incremental", "PRODUCT_MONGO_URI", "Product MongoDB", "closed port"),
    Outage("product_sync_incremental", "CART_PG_URL", "Cart PostgreSQL", "missing socket directory"),
    Outage("cart_sync", "ORDER_MONGO_URI", "Order MongoDB", "silent listener"),
    Outage("cart_sync", "CART_PG_URL", "Cart PostgreSQL", "silent listener"),
    Outage("cart_sync", "WAREHOUSE_PG_URL", "Warehouse PostgreSQL", "closed port"),
]


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never says a word,
    like a server hung or behind a black-holing firewall: only a timeout ends the wait."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def broken_url(outage: Outage, port: int, tmp_path) -> str:
    if outage.env_var.endswith("MONGO_URI"):
        return f"mongodb://etl:{PASSWORD}@127.0.0.1:{port}/?directConnection=true"
    if outage.how == "missing socket directory":
        return f"postgresql+psycopg2://etl:{PASSWORD}@/cart?host={tmp_path / 'no-such-socket-dir'}"
    return f"postgresql+psycopg2://etl:{PASSWORD}@127.0.0.1:{port}/cart"


def seed_sources(stores) -> None:
    stores.product_db["products"].insert_many(
        [{"_id": ObjectId(), "title": f"p{n}", "image": "i.png", "price": n} for n in range(20)]
        + [{"_id": ObjectId(), "title": "bad", "image": "i.png", "price": "n/a"}])
    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO product (id, title, price, image, content_hash) VALUES (:id, 't', 1, 'i', :hash)
        """), {"id": "a" * 24, "hash": "0" * 32})
        conn.execute(sa.text("""
            INSERT INTO cart (id, user_id, product_id, quantity) VALUES (gen_random_uuid(), 'u', :id, 1),
                                                                     (gen_random_uuid(), 'u', :id, 0)
        """), {"id": "a" * 24})


def written(stores) -> dict[str, int]:
    """What a sync writes: products, cart snapshots, quarantine rows and watermarks."""
    with stores.cart_engine.connect() as conn:
        products = conn.execute(sa.text("SELECT count(*) FROM product")).scalar_one()
    with stores.warehouse_engine.connect() as conn:
        quarantine = conn.execute(sa.text("SELECT count(*) FROM etl_quarantine")).scalar_one()
        watermarks = conn.execute(sa.text("SELECT count(*) FROM etl_sync_state")).scalar_one()
    return {"products": products, "snapshots": stores.order_db["carts"].count_documents({}),
            "quarantine": quarantine, "watermarks": watermarks}


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda o: f"{o.store} {o.how}")
def test_store_unreachable_at_start_fails_fast_naming_the_store(
    outage, stores, silent_listener, tmp_path, monkeypatch, request,
):
    seed_sources(stores)
    before = written(stores)
    port = silent_listener if outage.how == "silent listener" else free_port()
    for name, value in {**stores.env(), outage.env_var: broken_url(outage, port, tmp_path)}.items():
        monkeypatch.setenv(name, value)
    # One attempt of the job production launches, with its EnvVar resources: the retry policy would add
    # three more, with backoff (see single_attempt).
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        started = time.monotonic()
        result = run_once(outage.job, instance)
        elapsed = time.monotonic() - started
        entries = {entry.dagster_event.event_type_value: entry
                   for entry in instance.all_logs(result.run_id) if entry.dagster_event}
        step_elapsed = entries["STEP_FAILURE"].timestamp - entries["STEP_START"].timestamp
        error = entries["STEP_FAILURE"].dagster_event.step_failure_data.error.to_string()

    request.node.user_properties += [("step_elapsed_s", round(step_elapsed, 2)),
                                     ("run_elapsed_s", round(elapsed, 2))]
    assert not result.success
    assert elapsed < TIMEOUT_S + MARGIN_S, f"run {elapsed:.1f}s, its failing step {step_elapsed:.1f}s"
    assert f"{outage.store} is unavailable" in error, error
    assert PASSWORD not in error
    assert written(stores) == before


# ---------- a restart in the middle of a sync ----------

PRODUCTS, BATCH = 10_000, 100
RESTART_AFTER_ROWS = 2_000
# How a restart shows, depending on what the sync was doing: a dropped session, or no server to connect to.
CONNECTION_ERRORS = ("psycopg2.OperationalError", "psycopg2.InterfaceError", "PostgreSQL is unavailable")


def postgres_is_up(url: str) -> bool:
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False


def restart_once_rows_land(local_stores, url: str, restarted: threading.Event) -> None:
    """Restart the server as soon as the running sync has written RESTART_AFTER_ROWS rows."""
    engine = sa.create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            fresh = conn.execute(sa.text(
                "SELECT count(*) FROM product WHERE synced_at > now() - interval '1 hour'")).scalar_one()
        if fresh >= RESTART_AFTER_ROWS:
            local_stores.postgres.restart()
            restarted.set()
            return
        time.sleep(0.02)


def test_postgres_restart_mid_sync_is_retried_to_convergence(stores, local_stores):
    seed_catalog(stores.product_db, PRODUCTS)
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS)
    restarted = threading.Event()
    restarter = threading.Thread(target=restart_once_rows_land,
                                 args=(local_stores, stores.cart_url, restarted))
    restarter.start()
    try:
        result = dg.materialize(
            [cart_db_product], resources=stores.resources(), raise_on_error=False,
            run_config={"ops": {"cart_db__product": {"config": {"mode": "full", "batch_size": BATCH}}}},
        )
    finally:
        restarter.join()
        # The server is shared by the session: whatever happened, leave it running.
        if not postgres_is_up(stores.cart_url):
            local_stores.postgres.restart()
    # Pooled connections of the test's own engines died with the old server.
    stores.cart_engine.dispose()
    stores.warehouse_engine.dispose()

    assert restarted.is_set(), "the sync finished before the restart"
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries, "the restart did not interrupt the sync"
    first_error = retries[0].event_specific_data.error.to_string()
    assert any(sign in first_error for sign in CONNECTION_ERRORS), first_error
    assert result.success
    problems = product_problems(catalog_truth(stores.product_db), stores.cart_engine, stores.warehouse_engine)
    assert not problems, "\n".join(problems)
