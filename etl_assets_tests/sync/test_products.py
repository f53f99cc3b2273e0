"""Product sync against real stores: inserts, updates, deactivation, dry runs, quarantine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bson
import pytest
import sqlalchemy as sa
from bson import Decimal128, ObjectId
from pymongo import MongoClient, monitoring

from etl_assets.sync import products as products_module
from etl_assets.sync.guard import DeactivationGuard, MassDeactivationRefused
from etl_assets.sync.product_transform import InvalidProduct, flatten_product, row_hashes, transform_batch
from etl_assets.sync.products import PRODUCT_TABLE_COLUMNS, BatchResult, ProductLoader, sync_products
from etl_assets.sync.warehouse import table_columns


def product(n: int, **fields) -> dict:
    doc = {
        "_id": ObjectId(f"{n:024x}"),
        "title": f"Product {n}",
        "image": f"https://img.example/{n}.png",
        "price": 10 + n,
        "sellerId": f"seller-{n % 7}",
        "category": "book",
        "quantity": 3,
        "tags": ["a"],
        "updatedAt": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n),
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not ...}


def copy_rows(stores) -> dict[str, dict]:
    with stores.cart_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, title, price, content_hash, is_active, synced_at FROM product"))
        return {r.id: r._asdict() for r in rows}


def run(stores, **kwargs):
    kwargs.setdefault("run_id", "test-run")
    return sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine, **kwargs)


def test_flatten_applies_contract_defaults():
    row = flatten_product({"_id": ObjectId("0" * 24), "title": "t", "image": "i", "price": Decimal128("1.005")})
    assert row["price"] == 1.01
    assert (row["category"], row["rating"], row["quantity"], row["tags_json"]) == ("other", 4.5, 5, "[]")
    assert row["source_updated_at"] is None


@pytest.mark.parametrize(("fields", "reason"), [
    ({"price": "12"}, "price: expected a number, got str"),
    ({"price": float("nan")}, "price: not a finite number"),
    ({"title": None}, "title: required field missing"),
    ({"tags": ["ok", ["nested"]]}, "tags: expected a list of strings"),
    ({"quantity": 2.5}, "quantity: expected an integer"),
])
def test_flatten_rejects_uncoercible_fields(fields, reason):
    with pytest.raises(InvalidProduct, match=reason):
        flatten_product(product(1, **fields))


def test_hash_ignores_timestamps_but_not_content():
    a = flatten_product(product(1))
    b = flatten_product(product(1, updatedAt=datetime(2030, 1, 1, tzinfo=UTC)))
    c = flatten_product(product(1, price=99))
    hash_a, hash_b, hash_c = row_hashes([a, b, c])
    assert hash_a == hash_b != hash_c


def test_transform_splits_schema_failures_with_reasons():
    docs = [product(1), product(2, price=-5), product(3, category="toys"), {"_id": "x"}]
    batch = transform_batch([bson.encode(doc) for doc in docs])
    assert batch.valid["id"].to_list() == [f"{1:024x}"]
    reasons = {r.record_id: r.reason for r in batch.rejections}
    assert "price: greater_than_or_equal_to(0)" in reasons[f"{2:024x}"]
    assert "category: isin" in reasons[f"{3:024x}"]
    assert reasons["str:'x'"].startswith("_id: expected an ObjectId")


def test_the_declared_product_columns_are_the_migrated_tables(stores):
    declared = ", ".join(f"{column.name} {column.sql_type}" for column in PRODUCT_TABLE_COLUMNS)
    with stores.cart_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE declared_product ({declared})")

    def names_and_types(table: str) -> list[tuple[str, str]]:
        return [(name, sql_type) for name, sql_type, _ in table_columns(stores.cart_engine, table)]

    assert names_and_types("declared_product") == names_and_types("product"), (
        "PRODUCT_TABLE_COLUMNS (etl_assets/sync/products.py) no longer matches the migrated `product` table")


def test_full_sync_into_empty_target_then_nothing_changes(stores):
    stores.product_db.products.insert_many([product(n) for n in range(1, 26)])
    first = run(stores, mode="full", batch_size=7)
    assert (first.read, first.inserted, first.updated, first.batches) == (25, 25, 0, 4)
    before = copy_rows(stores)
    assert len(before) == 25 and all(r["is_active"] for r in before.values())

    second = run(stores, mode="full", batch_size=7)
    assert (second.inserted, second.updated, second.deactivated, second.unchanged) == (0, 0, 0, 25)
    assert copy_rows(stores) == before  # not even synced_at moved
    with stores.cart_engine.connect() as conn:  # nor locked: a row lock would be a write too
        assert conn.execute(sa.text("SELECT count(*) FROM product WHERE xmax <> '0'")).scalar() == 0


def test_first_load_inserts_plainly_and_upserts_once_a_row_appears_meanwhile(stores):
    frame = transform_batch([bson.encode(product(n)) for n in (1, 2, 3)]).valid
    with ProductLoader(stores.cart_engine, dry_run=False) as loader:
        assert loader.straight_copies  # the copy is empty
        assert loader.load(frame.head(1), remember_seen=True) == BatchResult(inserted=1, updated=0)
        assert loader.straight_copies
        with stores.cart_engine.begin() as conn:  # another writer got product 2 in first
            conn.execute(sa.text("INSERT INTO product (id, title, price, image, content_hash, is_active, synced_at) "
                                 "VALUES (:id, 'meanwhile', 1, 'img', repeat('0', 32), true, now())"),
                         {"id": f"{2:024x}"})
        assert loader.load(frame, remember_seen=True) == BatchResult(inserted=1, updated=1)
        assert not loader.straight_copies
        assert loader.deactivate_unseen() == 0
    rows = copy_rows(stores)
    assert sorted(rows) == [f"{n:024x}" for n in (1, 2, 3)]
    assert rows[f"{2:024x}"]["title"] == "Product 2"


def test_first_load_deactivates_a_row_another_writer_added_meanwhile(stores):
    frame = transform_batch([bson.encode(product(n)) for n in (1, 2)]).valid
    with ProductLoader(stores.cart_engine, dry_run=False) as loader:
        assert loader.load(frame.head(1), remember_seen=True) == BatchResult(inserted=1, updated=0)
        with stores.cart_engine.begin() as conn:  # a row the catalog does not hold
            conn.execute(sa.text("INSERT INTO product (id, title, price, image, content_hash) "
                                 "VALUES (:id, 'stray', 1, 'img', repeat('0', 32))"), {"id": f"{9:024x}"})
        assert loader.load(frame.tail(1), remember_seen=True) == BatchResult(inserted=1, updated=0)
        assert loader.straight_copies
        assert loader.deactivate_unseen() == 1
    rows = copy_rows(stores)
    assert {id_: row["is_active"] for id_, row in rows.items()} == {
        f"{1:024x}": True, f"{2:024x}": True, f"{9:024x}": False}


def test_a_copy_with_rows_is_always_upserted(stores):
    stores.product_db.products.insert_many([product(1)])
    run(stores, mode="full")
    with ProductLoader(stores.cart_engine, dry_run=False) as loader:
        assert not loader.straight_copies
    with ProductLoader(stores.cart_engine, dry_run=True) as loader:
        assert not loader.straight_copies


def test_full_sync_fixes_price_drift_and_reactivates(stores):
    stores.product_db.products.insert_many([product(n) for n in range(1, 6)])
    run(stores, mode="full")
    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("UPDATE product SET price = 0.5 WHERE id = :id"), {"id": f"{2:024x}"})
        conn.execute(sa.text("UPDATE product SET content_hash = 'x' WHERE id = :id"), {"id": f"{3:024x}"})
        conn.execute(sa.text("UPDATE product SET is_active = false WHERE id = :id"), {"id": f"{4:024x}"})
    report = run(stores, mode="full")
    assert report.updated == 3  # price edited in the copy, a damaged hash, a wrongly inactive row
    rows = copy_rows(stores)
    assert float(rows[f"{2:024x}"]["price"]) == 12
    assert rows[f"{4:024x}"]["is_active"]


def test_deactivation_after_source_delete(stores):
    stores.product_db.products.insert_many([product(n) for n in range(1, 11)])
    run(stores, mode="full", batch_size=3)
    stores.product_db.products.delete_many({"_id": {"$in": [ObjectId(f"{n:024x}") for n in (1, 5, 10)]}})
    report = run(stores, mode="full", batch_size=3)
    assert report.deactivated == 3
    rows = copy_rows(stores)
    assert len(rows) == 10  # never deleted
    assert {i for i, r in rows.items() if not r["is_active"]} == {f"{n:024x}" for n in (1, 5, 10)}

    stores.product_db.products.delete_many({})  # the catalog really emptied: only with the override
    assert run(stores, mode="full", guard=DeactivationGuard(allow_mass_deactivation=True)).deactivated == 7
    assert not any(r["is_active"] for r in copy_rows(stores).values())


def test_incremental_sync_reads_only_changes_after_watermark(stores):
    stores.product_db.products.insert_many([product(n) for n in range(1, 101)])
    run(stores, mode="full")
    later = datetime(2026, 11, 20, tzinfo=UTC)
    stores.product_db.products.update_one({"_id": ObjectId(f"{7:024x}")},
                                          {"$set": {"price": 777, "updatedAt": later}})
    stores.product_db.products.insert_one(product(500, updatedAt=later + timedelta(seconds=1)))
    report = run(stores, mode="incremental")
    assert report.mode == "incremental"
    # 2 changes, plus products 99 and 100 re-read inside the watermark look-back and left untouched
    assert (report.read, report.inserted, report.updated, report.unchanged) == (4, 1, 1, 2)
    assert report.watermark_after["updated_at"] == (later + timedelta(seconds=1)).isoformat()
    assert float(copy_rows(stores)[f"{7:024x}"]["price"]) == 777


def test_a_product_dated_in_the_future_does_not_hide_later_changes(stores):
    future = datetime(2099, 1, 1, tzinfo=UTC)
    stores.product_db.products.insert_many([product(1, updatedAt=future), product(2)])
    before = datetime.now(UTC)
    full = run(stores, mode="full")
    assert before <= datetime.fromisoformat(full.watermark_after["updated_at"]) <= datetime.now(UTC)

    stores.product_db.products.update_one({"_id": ObjectId(f"{2:024x}")},
                                          {"$set": {"price": 222, "updatedAt": datetime.now(UTC)}})
    report = run(stores, mode="incremental")
    # The change, plus the future-dated product, which every incremental sync re-reads and leaves alone.
    assert (report.read, report.updated, report.unchanged) == (2, 1, 1)
    assert float(copy_rows(stores)[f"{2:024x}"]["price"]) == 222


def test_dry_run_writes_nothing(stores):
    stores.product_db.products.insert_many([product(n) for n in range(1, 11)] + [product(11, price=-1)])
    report = run(stores, mode="full", dry_run=True)
    assert (report.inserted, report.quarantined) == (10, 1)
    assert copy_rows(stores) == {}
    with stores.warehouse_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM etl_quarantine")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM etl_sync_state")).scalar() == 0


def test_invalid_records_are_quarantined_then_resolved(stores):
    stores.product_db.products.insert_many([product(1), product(2, price="cheap"), product(3, title="")])
    report = run(stores, mode="full")
    assert (report.inserted, report.quarantined) == (1, 2)
    with stores.warehouse_engine.connect() as conn:
        open_rows = dict(conn.execute(sa.text(
            "SELECT record_id, reason FROM etl_quarantine WHERE resolved_at IS NULL")).all())
    assert open_rows[f"{2:024x}"].startswith("price: expected a number, got str 'cheap'")
    assert "title: str_length" in open_rows[f"{3:024x}"]

    stores.product_db.products.update_one({"_id": ObjectId(f"{2:024x}")}, {"$set": {"price": 5}})
    report = run(stores, mode="full")
    assert (report.inserted, report.quarantined, report.resolved) == (1, 1, 1)
    assert len(copy_rows(stores)) + report.quarantined == stores.product_db.products.count_documents({})


def test_full_sync_applies_source_content_even_when_updated_at_went_back(stores):
    stores.product_db.products.insert_one(product(1))
    run(stores, mode="full")
    restored = datetime(2020, 1, 1, tzinfo=UTC)  # e.g. the catalog restored from an old backup
    stores.product_db.products.update_one({"_id": ObjectId(f"{1:024x}")},
                                          {"$set": {"price": 1234, "updatedAt": restored}})
    assert run(stores, mode="full").updated == 1
    assert float(copy_rows(stores)[f"{1:024x}"]["price"]) == 1234


def test_a_full_sync_through_several_routers_reads_every_batch(stores, routers):
    routers.insert(stores.product_db_name, "products", [product(n) for n in range(1, 26)])
    client = routers.client()
    try:
        report = sync_products(client[stores.product_db_name], stores.cart_engine, stores.warehouse_engine,
                               mode="full", batch_size=4, run_id="test-run")
    finally:
        client.close()
    assert (report.read, report.inserted, report.batches) == (25, 25, 7)
    assert len(copy_rows(stores)) == 25


class FindCommands(monitoring.CommandListener):
    def __init__(self):
        self.finds: list[dict] = []

    def started(self, event):
        if event.command_name == "find":
            self.finds.append({key: event.command[key] for key in ("find", "filter", "sort") if key in event.command})

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_products_inserted_without_updated_at_arrive_incrementally(stores):
    products = stores.product_db.products
    products.create_index([("updatedAt", 1), ("_id", 1)])  # the product service's index
    legacy = product(20, updatedAt=...)  # an old document without updatedAt, before the full sync
    products.insert_many([product(n) for n in range(1, 4)] + [legacy])
    full = run(stores, mode="full")
    imported = [product(10, _id=ObjectId(), updatedAt=...), product(11, _id=ObjectId(), updatedAt=None)]
    products.insert_many(imported)

    listener = FindCommands()
    client = MongoClient(stores.local.mongo.uri, tz_aware=True, event_listeners=[listener])
    try:
        report = sync_products(client[stores.product_db_name], stores.cart_engine, stores.warehouse_engine,
                               run_id="test-run")
    finally:
        client.close()
    assert report.mode == "incremental"
    # The two imports; products 2 and 3 re-read inside the updatedAt look-back; the legacy one not at all.
    assert (report.read, report.inserted, report.unchanged) == (4, 2, 2)
    assert {str(doc["_id"]) for doc in imported} <= copy_rows(stores).keys()
    assert datetime.fromisoformat(report.watermark_after["created_at"]) >= datetime.fromisoformat(
        full.watermark_after["created_at"])
    # Both reads are index scans on the real server, never a collection scan.
    assert len(listener.finds) == 2
    for find in listener.finds:
        plan = str(stores.product_db.command("explain", find)["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, plan

    again = run(stores, mode="incremental")  # the imports are inside the look-back: re-read, unchanged
    assert (again.inserted, again.updated) == (0, 0)


# ---------- stale beats missing, and the mass-deactivation guard (issue 12 §1) ----------

CATALOG = 500


def seed_catalog_of(stores, count: int = CATALOG, *extra: dict) -> None:
    stores.product_db.products.insert_many([product(n) for n in range(1, count + 1)] + list(extra))


def open_quarantine(stores) -> dict[str, str]:
    with stores.warehouse_engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT record_id, reason FROM etl_quarantine WHERE resolved_at IS NULL")).all())


def watermark(stores):
    with stores.warehouse_engine.connect() as conn:
        return conn.execute(sa.text("SELECT watermark FROM etl_sync_state")).scalar_one()


def active_ids(stores) -> set[str]:
    return {i for i, r in copy_rows(stores).items() if r["is_active"]}


def test_an_empty_source_is_refused_before_anything_is_deactivated(stores):
    """PRODUCT_MONGO_DB names a database that does not exist: the full sync reads 0 documents."""
    seed_catalog_of(stores, CATALOG, product(CATALOG + 1, price=-1))
    run(stores, mode="full")
    before_rows, before_quarantine, before_watermark = copy_rows(stores), open_quarantine(stores), watermark(stores)
    assert len(active_ids(stores)) == CATALOG and len(before_quarantine) == 1

    typo = stores.mongo[f"{stores.product_db_name}_typo"]
    with pytest.raises(MassDeactivationRefused) as refused:
        sync_products(typo, stores.cart_engine, stores.warehouse_engine, mode="full", run_id="typo")
    assert (refused.value.deactivating, refused.value.active, refused.value.read) == (CATALOG, CATALOG, 0)
    message = str(refused.value)
    assert f"refused to deactivate {CATALOG} of {CATALOG} active products" in message
    assert "read 0 documents" in message and "Nothing was deactivated" in message

    assert copy_rows(stores) == before_rows  # not one row touched, not even synced_at
    assert open_quarantine(stores) == before_quarantine  # nothing resolved
    assert watermark(stores) == before_watermark


def test_a_drifted_source_keeps_the_last_good_rows_active(stores):
    """The product service renamed `image` to `imageUrl` in every document."""
    seed_catalog_of(stores)
    run(stores, mode="full")
    before = copy_rows(stores)
    stores.product_db.products.update_many({}, {"$rename": {"image": "imageUrl"}})

    report = run(stores, mode="full")
    assert copy_rows(stores) == before  # stale beats missing: every last good row stays, active
    assert (report.inserted, report.updated, report.deactivated) == (0, 0, 0)
    assert (report.read, report.quarantined, report.stale_invalid) == (CATALOG, CATALOG, CATALOG)
    quarantine = open_quarantine(stores)
    assert len(quarantine) == CATALOG
    assert set(quarantine.values()) == {"image: required field missing"}

    # The incremental sync keeps them too, and still counts them.
    stores.product_db.products.update_one({"_id": ObjectId(f"{7:024x}")},
                                          {"$set": {"updatedAt": datetime(2026, 12, 1, tzinfo=UTC)}})
    assert run(stores, mode="incremental").stale_invalid >= 1
    assert copy_rows(stores) == before

    # Fixed at the source: each row is updated where it differs, and its quarantine row resolved.
    stores.product_db.products.update_many({}, {"$rename": {"imageUrl": "image"}})
    stores.product_db.products.update_one({"_id": ObjectId(f"{3:024x}")}, {"$set": {"image": "new.png"}})
    fixed = run(stores, mode="full")
    assert (fixed.updated, fixed.stale_invalid, fixed.deactivated) == (1, 0, 0)
    assert open_quarantine(stores) == {}


def test_the_guard_allows_a_few_deactivations_refuses_many_and_yields_to_the_override(stores):
    seed_catalog_of(stores, 300)  # limit: 5% of 300 = 15
    run(stores, mode="full")
    stores.product_db.products.delete_many({"_id": {"$in": [ObjectId(f"{n:024x}") for n in range(1, 16)]}})
    assert run(stores, mode="full").deactivated == 15

    gone = [ObjectId(f"{n:024x}") for n in range(16, 41)]  # 25 of the 285 still active: limit 14
    stores.product_db.products.update_many({"_id": {"$in": gone[:3]}}, {"$set": {"price": -1}})
    run(stores, mode="full")  # 3 quarantined, kept active
    stores.product_db.products.delete_many({"_id": {"$in": gone}})
    with pytest.raises(MassDeactivationRefused, match=r"refused to deactivate 25 of 285 active products .*"
                                                      r"limit of 14: 5% of the active rows, at least 10;"):
        run(stores, mode="full")
    assert len(active_ids(stores)) == 285 and len(open_quarantine(stores)) == 3

    dry = run(stores, mode="full", dry_run=True)  # the same numbers, without failing
    assert (dry.deactivated, dry.active_before, dry.deactivation_limit, dry.deactivation_refused) == (25, 285, 14, True)
    assert len(active_ids(stores)) == 285

    allowed = run(stores, mode="full", guard=DeactivationGuard(allow_mass_deactivation=True))
    assert (allowed.deactivated, allowed.deactivation_refused) == (25, False)
    assert len(active_ids(stores)) == 260
    assert open_quarantine(stores) == {}  # gone from a source that passed the guard: resolved


def test_the_guard_share_and_floor_are_configurable(stores):
    seed_catalog_of(stores, 20)
    run(stores, mode="full")
    stores.product_db.products.delete_many({"_id": {"$in": [ObjectId(f"{n:024x}") for n in range(1, 4)]}})
    with pytest.raises(MassDeactivationRefused, match="limit of 2: "):
        run(stores, mode="full", guard=DeactivationGuard(max_share=0.1, floor=1))
    assert run(stores, mode="full").deactivated == 3  # the default floor of 10 lets a small demo shrink


def test_the_deactivation_counts_use_an_anti_join(stores):
    """After a full pass the sync counts the active rows it did not see. Written as NOT EXISTS inside an
    aggregate's FILTER, PostgreSQL runs the subquery once per row over the unindexed temp table of seen
    ids (minutes at 200,000 products); in WHERE it is one hash anti-join."""
    with ProductLoader(stores.cart_engine, dry_run=False) as loader, loader.conn.cursor() as cur:
        cur.execute(f"EXPLAIN {products_module._COUNT_ACTIVE_AND_UNSEEN}")
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "Anti Join" in plan and "SubPlan" not in plan, plan
