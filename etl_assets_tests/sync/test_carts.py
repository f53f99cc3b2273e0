"""The cart snapshot sync against real stores, plus its pure helpers without any server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from bson import Decimal128

from etl_assets.sync.carts import (
    COMPARED_FIELDS,
    READ_AT,
    SOURCE,
    SYNC_NAME,
    CartWriteError,
    bson_time,
    build_snapshot,
    cart_total,
    check_batch,
    classify,
    ensure_indexes,
    sync_carts,
    write_snapshots,
)
from etl_assets.sync.state import load_watermark

PRODUCT_A = "a" * 24
PRODUCT_B = "b" * 24
CREATED = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)


# ---------- seeding the cart database ----------

def add_product(engine: sa.Engine, product_id: str, *, price: str = "19.99", active: bool = True) -> None:
    """A product synced a day ago, so it is outside any incremental window of a fresh watermark."""
    with engine.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO product (id, title, price, image, seller_id, quantity, content_hash, is_active, synced_at)
            VALUES (:id, :title, :price, :image, 'seller-1', 7, :hash, :active, now() - interval '1 day')
        """), {"id": product_id, "title": f"Product {product_id[:4]}", "price": price,
               "image": f"https://img.example/{product_id}.jpg", "hash": "0" * 32, "active": active})


def add_cart(engine: sa.Engine, product_id: str, *, quantity: int = 1, version: int = 1, user_id: str = "user-1",
             created_at: datetime | str | None = None, updated_at: datetime | str | None = None,
             bypass_foreign_key: bool = False) -> str:
    """A cart created two days and last updated a day ago, unless given its times. `bypass_foreign_key`
    inserts it as legacy data would, productless."""
    cart_id = str(uuid.uuid4())
    with engine.begin() as conn:
        if bypass_foreign_key:
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text("""
            INSERT INTO cart (id, user_id, product_id, quantity, version, created_at, updated_at)
            VALUES (:id, :user_id, :product_id, :quantity, :version,
                    coalesce(CAST(:created_at AS timestamptz), now() - interval '2 days'),
                    coalesce(CAST(:updated_at AS timestamptz), now() - interval '1 day'))
        """), {"id": cart_id, "user_id": user_id, "product_id": product_id, "quantity": quantity,
               "version": version, "created_at": created_at, "updated_at": updated_at})
    return cart_id


def update_cart(engine: sa.Engine, cart_id: str, **values: int) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE cart SET {assignments}, updated_at = now() WHERE id = :id"),  # noqa: S608
                     {"id": cart_id, **values})


def update_product(engine: sa.Engine, product_id: str, **values: object) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE product SET {assignments}, synced_at = now() WHERE id = :id"),  # noqa: S608
                     {"id": product_id, **values})


def run(stores, mode: str = "incremental", **options):
    return sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine, mode=mode,
                      run_id="test-run", **options)


def snapshot(stores, cart_id: str) -> dict:
    return stores.order_db["carts"].find_one({"cartId": cart_id}, {"_id": 0})


def open_quarantine(stores) -> dict[str, str]:
    with stores.warehouse_engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT record_id, reason FROM etl_quarantine WHERE source = :s AND resolved_at IS NULL"
        ), {"s": SOURCE})
        return dict(rows.tuples().all())


def joined_row(**overrides) -> dict:
    """A joined cart/product row as the page query returns it."""
    return {
        "cart_id": "0b5c6a57-6c4e-4f44-9d0e-2a7d53e0c0f1", "user_id": "user-1", "product_id": PRODUCT_A,
        "quantity": 3, "version": 2, "created_at": CREATED, "updated_at": CREATED + timedelta(hours=1),
        "product_found": True, "product_active": True, "product_title": "Phone",
        "product_price": Decimal("19.99"), "product_image": "https://img.example/p.jpg", "seller_id": None,
        "product_quantity": 4, "read_at": CREATED + timedelta(days=1), **overrides,
    }


# ---------- pure helpers ----------

def test_cart_total_is_exact_to_the_cent():
    assert cart_total(Decimal("19.99"), 3) == 59.97
    assert cart_total(Decimal("0.10"), 3) == 0.3  # 0.1 * 3 in floats is 0.30000000000000004
    assert cart_total(Decimal("33.33"), 3) == 99.99


def test_bson_time_is_utc_milliseconds():
    plus_two = timezone(timedelta(hours=2))
    assert bson_time(datetime(2026, 1, 1, 12, 0, 0, 123_456, tzinfo=plus_two)) == datetime(
        2026, 1, 1, 10, 0, 0, 123_000, tzinfo=UTC)
    assert bson_time(datetime(2026, 1, 1, 12)).tzinfo == UTC


def test_build_snapshot_maps_every_contract_field():
    assert build_snapshot(joined_row()) == {
        "cartId": "0b5c6a57-6c4e-4f44-9d0e-2a7d53e0c0f1", "userId": "user-1", "productId": PRODUCT_A,
        "productTitle": "Phone", "productPrice": 19.99, "productImage": "https://img.example/p.jpg",
        "sellerId": None, "productQuantity": 4, "cartQuantity": 3, "total": 59.97, "version": 2,
        "createdAt": datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC),
        "updatedAt": datetime(2026, 1, 2, 4, 4, 5, 678_000, tzinfo=UTC),
        "sourceReadAt": datetime(2026, 1, 3, 3, 4, 5, 678_000, tzinfo=UTC),
    }


def test_check_batch_names_the_cart_and_every_cause():
    ids = [str(uuid.UUID(int=n)) for n in range(1, 6)]
    rows = [
        joined_row(cart_id=ids[0]),
        joined_row(cart_id=ids[1], quantity=0, version=0),
        joined_row(cart_id=ids[2], product_found=False, product_active=None, product_title=None,
                   product_price=None, product_image=None, product_quantity=None),
        joined_row(cart_id=ids[3], product_active=False),
        joined_row(cart_id=ids[4], product_title=""),
    ]
    batch = check_batch(rows)
    assert [s["cartId"] for s in batch.snapshots] == [ids[0]]
    reasons = {r.record_id: r.reason for r in batch.rejections}
    assert set(reasons) == set(ids[1:])
    assert all(reasons[i].startswith(f"cart {i}: ") for i in ids[1:])
    assert "quantity: greater_than_or_equal_to(1) (value '0')" in reasons[ids[1]]
    assert "version: greater_than_or_equal_to(1) (value '0')" in reasons[ids[1]]
    assert f"product {PRODUCT_A} does not exist" in reasons[ids[2]]
    assert f"product {PRODUCT_A} is inactive" in reasons[ids[3]]
    assert "productTitle: str_length" in reasons[ids[4]]
    assert batch.rejections[0].payload["product_price"] == "19.99"


def test_classify_compares_read_times_then_content():
    new = build_snapshot(joined_row())
    assert classify(new, None) == "insert"
    assert classify(new, dict(new)) == "unchanged"
    assert classify(new, {**new, "createdAt": CREATED - timedelta(days=1)}) == "unchanged"
    # Only the content counts: a snapshot read earlier or by an older sync (no read time) is as good.
    assert classify(new, {**new, "sourceReadAt": CREATED}) == "unchanged"
    assert classify(new, {k: v for k, v in new.items() if k != "sourceReadAt"}) == "unchanged"
    assert classify(new, {**new, "total": 1.0}) == "update"
    assert classify(new, {**new, "version": 1}) == "update"
    assert classify(new, {**new, "version": 3}) == "reset"  # the row's version went down: it wins
    assert classify(new, {**new, "deletedAt": CREATED}) == "reappear"
    assert classify(new, {**new, "total": 1.0, "sourceReadAt": new["sourceReadAt"] + timedelta(seconds=1)}) == "stale"
    assert classify(new, {**new, "productPrice": Decimal128("19.99")}) == "update"
    naive = {**new, "updatedAt": new["updatedAt"].replace(tzinfo=None)}
    assert classify(new, naive) == "unchanged"


# ---------- against the stores ----------

def test_full_sync_into_empty_target_then_reruns_change_nothing(stores):
    add_product(stores.cart_engine, PRODUCT_A, price="19.99")
    cart_ids = [add_cart(stores.cart_engine, PRODUCT_A, quantity=n) for n in range(1, 6)]
    messages: list[str] = []

    report = run(stores, "full", batch_size=2, progress=messages.append)

    assert (report.read, report.inserted, report.updated, report.batches) == (5, 5, 0, 3)
    assert (report.quarantined, report.stale_skipped, report.mode) == (0, 0, "full")
    assert len(messages) == 3 and messages[-1].startswith("cart sync batch 3: read 5, inserted 5")
    doc = snapshot(stores, cart_ids[2])
    assert doc["total"] == 59.97 and doc["cartQuantity"] == 3 and doc["productPrice"] == 19.99
    assert doc["productQuantity"] == 7 and doc["sellerId"] == "seller-1" and doc["version"] == 1
    assert doc["createdAt"] < doc["updatedAt"]
    index = stores.order_db["carts"].index_information()["cartId_unique"]
    assert index["unique"] and index["key"] == [("cartId", 1)]
    assert load_watermark(stores.warehouse_engine, SYNC_NAME) == report.watermark_after

    again = run(stores, "full", batch_size=2)
    assert (again.read, again.inserted, again.updated, again.unchanged) == (5, 0, 0, 5)
    incremental = run(stores, "incremental")
    assert (incremental.mode, incremental.read, incremental.batches) == ("incremental", 0, 0)
    assert stores.order_db["carts"].count_documents({}) == 5


def test_incremental_picks_up_a_cart_update(stores):
    add_product(stores.cart_engine, PRODUCT_A, price="10.50")
    changed, _ = add_cart(stores.cart_engine, PRODUCT_A), add_cart(stores.cart_engine, PRODUCT_A)
    first = run(stores, "full")
    update_cart(stores.cart_engine, changed, quantity=4, version=2)

    report = run(stores, "incremental")

    assert (report.read, report.updated, report.inserted) == (1, 1, 0)
    assert report.watermark_before == first.watermark_after
    doc = snapshot(stores, changed)
    assert (doc["cartQuantity"], doc["version"], doc["total"]) == (4, 2, 42.0)


def test_incremental_picks_up_a_product_price_change(stores):
    add_product(stores.cart_engine, PRODUCT_A, price="10.00")
    add_product(stores.cart_engine, PRODUCT_B, price="5.00")
    on_a = [add_cart(stores.cart_engine, PRODUCT_A, quantity=2) for _ in range(2)]
    on_b = add_cart(stores.cart_engine, PRODUCT_B, quantity=2)
    run(stores, "full")
    before = snapshot(stores, on_a[0])
    update_product(stores.cart_engine, PRODUCT_A, price=Decimal("12.34"))

    report = run(stores, "incremental")

    assert (report.read, report.updated) == (2, 2)
    after = snapshot(stores, on_a[0])
    assert (after["productPrice"], after["total"]) == (12.34, 24.68)
    assert after["updatedAt"] == before["updatedAt"]  # the cart itself did not change
    assert snapshot(stores, on_b)["total"] == 10.0


def restore_cart(engine: sa.Engine, cart_id: str, **values: object) -> None:
    """Write the cart's row as a restore from backup would: every column given, updated_at included, so
    the row may carry a lower version and an older updated_at than the last one synced."""
    columns = ", ".join(values)
    placeholders = ", ".join(f":{column}" for column in values)
    updates = ", ".join(f"{column} = excluded.{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO cart (id, {columns}) VALUES (:id, {placeholders}) "  # noqa: S608
                             f"ON CONFLICT (id) DO UPDATE SET {updates}"), {"id": cart_id, **values})


def cart_row(engine: sa.Engine, cart_id: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT user_id, product_id, quantity, version, created_at, updated_at "
                                         "FROM cart WHERE id = :id"), {"id": cart_id}).one()._mapping)


def delete_cart(engine: sa.Engine, cart_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM cart WHERE id = :id"), {"id": cart_id})


def cart_db_now(engine: sa.Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT now()")).scalar_one()


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_a_deleted_cart_has_its_snapshot_marked_not_removed(stores, mode):
    add_product(stores.cart_engine, PRODUCT_A)
    kept = add_cart(stores.cart_engine, PRODUCT_A)
    gone = add_cart(stores.cart_engine, PRODUCT_A, quantity=4)
    run(stores, "full")
    before_delete = cart_db_now(stores.cart_engine)
    delete_cart(stores.cart_engine, gone)

    report = run(stores, mode)

    assert (report.marked_deleted, report.marked_deleted_ids) == (1, [gone])
    doc = snapshot(stores, gone)
    assert doc["cartQuantity"] == 4  # the content stays as it was last seen
    assert bson_time(before_delete) <= doc["deletedAt"] <= datetime.now(UTC)
    assert "deletedAt" not in snapshot(stores, kept)

    again = run(stores, mode)
    assert again.marked_deleted == 0
    assert snapshot(stores, gone)["deletedAt"] == doc["deletedAt"]


def test_an_incremental_run_that_changed_carts_and_deleted_none_compares_no_keys(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    changed = add_cart(stores.cart_engine, PRODUCT_A)
    add_cart(stores.cart_engine, PRODUCT_A)
    orphan = add_cart(stores.cart_engine, PRODUCT_B, bypass_foreign_key=True)  # quarantined, no snapshot
    gone = add_cart(stores.cart_engine, PRODUCT_A)
    run(stores, "full")
    delete_cart(stores.cart_engine, gone)
    assert run(stores, "incremental").compared_keys  # marks `gone`
    update_cart(stores.cart_engine, changed, quantity=6)
    new = add_cart(stores.cart_engine, PRODUCT_A)
    update_cart(stores.cart_engine, new, quantity=2)

    report = run(stores, "incremental")

    assert (report.compared_keys, report.updated, report.inserted, report.marked_deleted) == (False, 1, 1, 0)
    assert snapshot(stores, new)["cartQuantity"] == 2 and snapshot(stores, orphan) is None
    assert "deletedAt" in snapshot(stores, gone)


def test_a_deletion_and_a_new_cart_in_the_same_interval_are_both_synced(stores):
    """The same number of carts as the last run saw: the new cart's snapshot is counted after it is
    written, so the deleted one's live snapshot still makes the counts differ."""
    add_product(stores.cart_engine, PRODUCT_A)
    kept = add_cart(stores.cart_engine, PRODUCT_A)
    gone = add_cart(stores.cart_engine, PRODUCT_A)
    run(stores, "full")
    delete_cart(stores.cart_engine, gone)
    new = add_cart(stores.cart_engine, PRODUCT_A)
    update_cart(stores.cart_engine, new, quantity=3)

    report = run(stores, "incremental")

    assert report.compared_keys
    assert (report.inserted, report.marked_deleted, report.marked_deleted_ids) == (1, 1, [gone])
    assert "deletedAt" in snapshot(stores, gone)
    assert "deletedAt" not in snapshot(stores, kept) and "deletedAt" not in snapshot(stores, new)
    assert run(stores, "incremental").compared_keys is False


def test_a_quarantined_cart_without_a_snapshot_does_not_hide_a_deletion(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    gone = add_cart(stores.cart_engine, PRODUCT_A)
    add_cart(stores.cart_engine, PRODUCT_B, bypass_foreign_key=True)  # one cart, no snapshot
    run(stores, "full")
    delete_cart(stores.cart_engine, gone)  # one live snapshot, no cart

    report = run(stores, "incremental")

    assert (report.compared_keys, report.marked_deleted_ids) == (True, [gone])


def test_a_dry_run_counts_deleted_carts_and_marks_nothing(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    gone = add_cart(stores.cart_engine, PRODUCT_A)
    run(stores, "full")
    delete_cart(stores.cart_engine, gone)

    planned = run(stores, "incremental", dry_run=True)

    assert (planned.marked_deleted, planned.marked_deleted_ids) == (1, [gone])
    assert "deletedAt" not in snapshot(stores, gone)


def test_a_cart_that_reappears_clears_the_mark(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    cart_id = add_cart(stores.cart_engine, PRODUCT_A, quantity=2)
    run(stores, "full")
    backup = cart_row(stores.cart_engine, cart_id)
    delete_cart(stores.cart_engine, cart_id)
    run(stores, "incremental")
    assert "deletedAt" in snapshot(stores, cart_id)

    # Restored from a backup: the same id, updated_at older than the watermark, another quantity.
    restore_cart(stores.cart_engine, cart_id, **{**backup, "quantity": 5})
    report = run(stores, "incremental")

    assert (report.reappeared, report.updated, report.marked_deleted) == (1, 1, 0)
    doc = snapshot(stores, cart_id)
    assert "deletedAt" not in doc
    assert (doc["cartQuantity"], doc["total"]) == (5, 99.95)
    assert run(stores, "incremental").updated == 0


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_a_cart_whose_version_went_down_converges_to_its_row(stores, mode):
    add_product(stores.cart_engine, PRODUCT_A)
    cart_id = add_cart(stores.cart_engine, PRODUCT_A, quantity=1, version=3)
    untouched = add_cart(stores.cart_engine, PRODUCT_A, quantity=1, version=3)
    run(stores, "full")
    # A restore from backup: version 2, another quantity, the old updated_at (older than the watermark).
    restore_cart(stores.cart_engine, cart_id, **{**cart_row(stores.cart_engine, cart_id), "version": 2,
                                                 "quantity": 9})

    report = run(stores, mode)

    assert report.compared_keys  # the versions' sums differ
    assert (report.version_resets, report.version_reset_ids, report.updated) == (1, [cart_id], 1)
    assert report.stale_skipped == 0
    doc = snapshot(stores, cart_id)
    assert (doc["version"], doc["cartQuantity"], doc["total"]) == (2, 9, 179.91)
    assert snapshot(stores, untouched)["version"] == 3
    again = run(stores, mode)
    assert (again.version_resets, again.updated) == (0, 0)


def test_a_snapshot_built_from_an_older_read_never_overwrites_a_newer_one(stores):
    """The write-time guard, for a snapshot of a later read that lands after the comparison."""
    carts = stores.order_db["carts"]
    ensure_indexes(stores.order_db)
    ensure_indexes(stores.order_db)  # idempotent
    read_first = datetime(2026, 1, 5, 12, tzinfo=UTC)
    newer = build_snapshot(joined_row(version=5, quantity=1, read_at=read_first + timedelta(seconds=1)))
    write_snapshots(carts, [newer])
    older_read = build_snapshot(joined_row(version=6, quantity=8, read_at=read_first))
    fresh = build_snapshot(joined_row(cart_id=str(uuid.uuid4()), read_at=read_first))

    counts = write_snapshots(carts, [older_read, fresh])

    assert (counts.stale_skipped, counts.inserted, counts.updated) == (1, 1, 0)
    assert counts.skipped_ids == [newer["cartId"]]
    assert carts.find_one({"cartId": newer["cartId"]})["cartQuantity"] == 1
    assert carts.count_documents({}) == 2

    # A later read wins whatever its version: the row is the truth.
    lower = build_snapshot(joined_row(version=4, quantity=7, read_at=read_first + timedelta(seconds=2)))
    assert write_snapshots(carts, [lower]).updated == 1
    assert carts.find_one({"cartId": newer["cartId"]})["cartQuantity"] == 7


def test_a_new_snapshot_that_a_concurrent_sync_wrote_first_is_guarded_like_any_other(stores):
    """A cart without a stored snapshot is inserted plainly (the cold sync's fast path). When another
    sync wrote its snapshot in between, the insert collides and becomes a guarded upsert: a later read
    than ours stays, an earlier one is replaced."""
    carts = stores.order_db["carts"]
    ensure_indexes(stores.order_db)
    read_at = datetime(2026, 1, 5, 12, tzinfo=UTC)
    later_id, earlier_id, new_id = (str(uuid.uuid4()) for _ in range(3))
    write_snapshots(carts, [
        build_snapshot(joined_row(cart_id=later_id, quantity=1, read_at=read_at + timedelta(seconds=1))),
        build_snapshot(joined_row(cart_id=earlier_id, quantity=1, read_at=read_at - timedelta(seconds=1))),
    ])
    ours = [build_snapshot(joined_row(cart_id=cart_id, quantity=5, read_at=read_at))
            for cart_id in (later_id, earlier_id, new_id)]

    counts = write_snapshots(carts, ours, new_ids={later_id, earlier_id, new_id})

    assert (counts.inserted, counts.updated, counts.stale_skipped) == (1, 1, 1)
    assert counts.skipped_ids == [later_id]
    assert {doc["cartId"]: doc["cartQuantity"] for doc in carts.find()} == {later_id: 1, earlier_id: 5, new_id: 5}
    # An insert writes what the upsert writes: the snapshot's fields, its read time and createdAt.
    assert set(carts.find_one({"cartId": new_id}, {"_id": 0})) == {*COMPARED_FIELDS, READ_AT, "createdAt"}


def test_any_other_write_error_fails_the_run_and_keeps_the_watermark(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    add_cart(stores.cart_engine, PRODUCT_A)
    add_cart(stores.cart_engine, PRODUCT_A)
    # Another unique index makes the second cart of the same user collide: not a version guard.
    stores.order_db["carts"].create_index("userId", unique=True)

    with pytest.raises(CartWriteError, match="code 11000"):
        run(stores, "full")

    assert load_watermark(stores.warehouse_engine, SYNC_NAME) is None


def test_a_cart_without_its_product_is_quarantined_until_the_product_arrives(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    add_cart(stores.cart_engine, PRODUCT_A)
    orphan = add_cart(stores.cart_engine, PRODUCT_B, bypass_foreign_key=True)

    report = run(stores, "full")

    assert (report.read, report.inserted, report.quarantined) == (2, 1, 1)
    assert open_quarantine(stores) == {orphan: f"cart {orphan}: product {PRODUCT_B} does not exist in "
                                               "cart_db.product"}
    assert snapshot(stores, orphan) is None

    add_product(stores.cart_engine, PRODUCT_B)
    update_product(stores.cart_engine, PRODUCT_B, price=Decimal("3.00"))
    fixed = run(stores, "incremental")

    assert (fixed.read, fixed.inserted, fixed.resolved, fixed.quarantined) == (1, 1, 1, 0)
    assert open_quarantine(stores) == {}
    assert snapshot(stores, orphan)["total"] == 3.0


def test_inactive_product_and_invalid_cart_are_quarantined_then_resolved(stores):
    add_product(stores.cart_engine, PRODUCT_A, active=False)
    add_product(stores.cart_engine, PRODUCT_B)
    on_inactive = add_cart(stores.cart_engine, PRODUCT_A)
    invalid = add_cart(stores.cart_engine, PRODUCT_B, quantity=0, version=0)

    report = run(stores, "full")

    assert (report.quarantined, report.inserted) == (2, 0)
    reasons = open_quarantine(stores)
    assert reasons[on_inactive] == f"cart {on_inactive}: product {PRODUCT_A} is inactive in cart_db.product"
    assert reasons[invalid].startswith(f"cart {invalid}: quantity: greater_than_or_equal_to(1) (value '0')")
    assert "version: greater_than_or_equal_to(1) (value '0')" in reasons[invalid]
    assert stores.order_db["carts"].count_documents({}) == 0

    update_product(stores.cart_engine, PRODUCT_A, is_active=True)
    update_cart(stores.cart_engine, invalid, quantity=2, version=1)
    fixed = run(stores, "incremental")

    assert (fixed.read, fixed.inserted, fixed.resolved, fixed.quarantined) == (2, 2, 2, 0)
    assert open_quarantine(stores) == {}


def test_a_full_pass_resolves_quarantined_carts_that_are_gone(stores):
    orphan = add_cart(stores.cart_engine, PRODUCT_B, bypass_foreign_key=True)
    run(stores, "full")
    assert list(open_quarantine(stores)) == [orphan]
    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM cart WHERE id = :id"), {"id": orphan})

    report = run(stores, "full")

    assert (report.read, report.resolved) == (0, 1)
    assert open_quarantine(stores) == {}


def test_dry_run_reports_what_would_change_and_writes_nothing(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    cart_ids = [add_cart(stores.cart_engine, PRODUCT_A) for _ in range(3)]
    add_cart(stores.cart_engine, PRODUCT_A, quantity=0)

    report = run(stores, "full", dry_run=True)

    assert (report.dry_run, report.read, report.inserted, report.quarantined) == (True, 4, 3, 1)
    assert report.watermark_after is not None
    assert "carts" not in stores.order_db.list_collection_names()
    assert open_quarantine(stores) == {}
    assert load_watermark(stores.warehouse_engine, SYNC_NAME) is None

    run(stores, "full")
    update_cart(stores.cart_engine, cart_ids[0], quantity=5, version=2)
    planned = run(stores, "incremental", dry_run=True)

    assert (planned.read, planned.updated, planned.inserted) == (1, 1, 0)
    assert snapshot(stores, cart_ids[0])["cartQuantity"] == 1


def test_bad_arguments_are_refused(stores):
    with pytest.raises(ValueError, match="mode"):
        run(stores, "everything")
    with pytest.raises(ValueError, match="batch_size"):
        run(stores, "full", batch_size=0)
