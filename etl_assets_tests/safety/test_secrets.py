"""Secrets: with a password in every connection URL, no password reaches Dagster's event log, run
records, compute logs or metadata, nor the console, nor what the syncs write to the warehouse, whether
the run succeeds or fails on a wrong password."""

from pathlib import Path
from urllib.parse import quote

import dagster as dg
import sqlalchemy as sa
from bson import ObjectId

from etl_assets.definitions import defs
from etl_assets_tests.safety.conftest import ETL_ROLE
from etl_assets_tests.safety.single_attempt import run_once

WRONG_PASSWORD = "pw-wrong-Cart-Secret-5d1e"


def seed(stores) -> None:
    with stores.servers.mongo_root() as root:
        root[stores.product_db]["products"].insert_many(
            [{"_id": ObjectId(), "title": f"p{n}", "image": "i.png", "price": n} for n in range(10)]
            + [{"_id": ObjectId(), "title": "bad", "image": "i.png", "price": "n/a"}])


def set_env(env: dict[str, str], monkeypatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def dagster_records(home: Path) -> list[tuple[str, str]]:
    """Everything the instance stored, as (where, text): each event and run record, serialized, and
    every file under DAGSTER_HOME (the SQLite storages, the compute logs of every step)."""
    records = []
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            records.append((f"run {run.run_id}", dg.serialize_value(run)))
            records += [(f"event {entry.dagster_event_type} of {run.run_id}", dg.serialize_value(entry))
                        for entry in instance.all_logs(run.run_id)]
    records += [(str(path.relative_to(home)), path.read_bytes().decode("utf-8", "replace"))
                for path in home.rglob("*") if path.is_file()]
    return records


def test_passwords_reach_no_event_log_compute_log_or_metadata(secured_stores, tmp_path, monkeypatch, capfd):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    seed(secured_stores)
    env = secured_stores.env()

    # DAGSTER_HOME is the test's own directory, so the instance keeps every record and log on disk there.
    with dg.DagsterInstance.get() as instance:
        set_env(env, monkeypatch)
        synced = defs.resolve_job_def("full_reconcile").execute_in_process(instance=instance,
                                                                           raise_on_error=False)
        wrong_cart_url = secured_stores.servers.postgres.url(secured_stores.cart_db, ETL_ROLE, WRONG_PASSWORD)
        set_env({"CART_PG_URL": wrong_cart_url}, monkeypatch)
        refused = run_once("product_sync_incremental", instance)

    assert synced.success
    assert not refused.success
    materialization = synced.asset_materializations_for_node("cart_db__product")[0]
    assert "price: expected a number" in materialization.metadata["quarantine_sample"].value

    records = dagster_records(home)
    # What was searched holds what matters: the compute logs, the sync's log lines and the failure.
    compute_logs = [where for where, text in records if where.endswith((".out", ".err")) and text]
    assert compute_logs, "no compute logs were written, so none were searched"
    assert any("product sync done" in text for where, text in records if where in compute_logs)
    assert any("Cart PostgreSQL is unavailable: " in text and "password authentication failed" in text
               for _, text in records)
    console = capfd.readouterr()
    records += [("stdout", console.out), ("stderr", console.err)]
    warehouse = secured_stores.superuser_engine(secured_stores.warehouse_db)
    with warehouse.connect() as conn:
        for table in ("etl_quarantine", "etl_sync_state"):
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()  # noqa: S608 - fixed names
            records.append((f"warehouse {table}", repr(rows)))
    warehouse.dispose()

    passwords = [*secured_stores.passwords.values(), WRONG_PASSWORD]
    leaks = [(where, password[:6]) for where, text in records for password in passwords
             if password in text or quote(password, safe="") in text]
    assert not leaks, leaks
