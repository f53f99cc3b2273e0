"""The change sensors, evaluated as the daemon would (resolved from the real Definitions) against real
stores: the cursor advances, nothing changed is a skip, and the same watermark gives the same run_key.
order_changes is tested with the warehouse builds it requests in test_order_changes.py."""

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from bson import ObjectId

from etl_assets import sensors
from etl_assets.definitions import defs
from etl_assets.settings import SETTINGS


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def tick(name: str, stores, instance: dg.DagsterInstance, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                 resources=stores.resources()) as context:
        return defs.resolve_sensor_def(name).evaluate_tick(context)


def run_keys(data) -> list[str]:
    return [request.run_key for request in data.run_requests]


def product(updated_at: datetime, title: str = "Lamp") -> dict:
    return {"_id": ObjectId(), "title": title, "image": "lamp.png", "price": 10, "updatedAt": updated_at}


def test_product_changes_polls_updated_at_past_the_cursor(stores, instance):
    empty = tick("product_changes", stores, instance)
    assert empty.skip_message and not empty.run_requests

    t1 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    stores.product_db.products.insert_many([product(t1 - timedelta(minutes=5)), product(t1)])
    first = tick("product_changes", stores, instance, empty.cursor)
    assert run_keys(first) == [f"product-changes-{t1.isoformat()}"]
    assert first.run_requests[0].tags["shop-sync/changed-products"] == "2"
    assert json.loads(first.cursor) == {"updated_at": t1.isoformat()}
    # A tick evaluated again from the same cursor (a daemon restart) asks for the same run.
    assert run_keys(tick("product_changes", stores, instance, empty.cursor)) == run_keys(first)

    unchanged = tick("product_changes", stores, instance, first.cursor)
    assert not unchanged.run_requests and t1.isoformat() in unchanged.skip_message

    t2 = t1 + timedelta(seconds=1)
    stores.product_db.products.update_one({"updatedAt": t1}, {"$set": {"price": 12, "updatedAt": t2}})
    changed = tick("product_changes", stores, instance, first.cursor)
    assert run_keys(changed) == [f"product-changes-{t2.isoformat()}"]
    assert changed.run_requests[0].tags["shop-sync/changed-products"] == "1"
    assert json.loads(changed.cursor)["updated_at"] == t2.isoformat()


def test_a_product_dated_in_the_future_does_not_move_the_cursor_past_now(stores, instance):
    future = datetime(2099, 1, 1, tzinfo=UTC)
    stores.product_db.products.insert_one(product(future))
    empty = tick("product_changes", stores, instance)
    assert empty.skip_message and not empty.run_requests

    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    stores.product_db.products.insert_one(product(recent))
    first = tick("product_changes", stores, instance, empty.cursor)
    assert json.loads(first.cursor) == {"updated_at": recent.isoformat()}
    later = recent + timedelta(seconds=30)
    stores.product_db.products.update_one({"updatedAt": recent}, {"$set": {"updatedAt": later}})
    assert run_keys(tick("product_changes", stores, instance, first.cursor)) == [
        f"product-changes-{later.isoformat()}"]


def test_product_changes_notices_a_product_inserted_without_updated_at(stores, instance):
    stores.product_db.products.insert_one(product(datetime(2026, 11, 20, 9, 0, tzinfo=UTC)))
    first = tick("product_changes", stores, instance)
    assert len(first.run_requests) == 1

    imported = {"_id": ObjectId(), "title": "Imported lamp", "image": "lamp.png", "price": 10}  # no updatedAt
    stores.product_db.products.insert_one(imported)
    noticed = tick("product_changes", stores, instance, first.cursor)
    assert len(noticed.run_requests) == 1 and run_keys(noticed) != run_keys(first)
    assert noticed.run_requests[0].tags["shop-sync/changed-products"] == "1"
    assert json.loads(noticed.cursor)["created_id"] == str(imported["_id"])
    assert run_keys(tick("product_changes", stores, instance, first.cursor)) == run_keys(noticed)
    assert not tick("product_changes", stores, instance, noticed.cursor).run_requests


@pytest.fixture
def change_stream(monkeypatch):
    monkeypatch.setattr(sensors, "SETTINGS", dataclasses.replace(SETTINGS, product_change_stream=True))


def test_product_changes_reads_the_change_stream_and_keeps_its_resume_token(stores, instance, change_stream):
    stores.product_db.products.insert_one(product(datetime(2026, 11, 20, 9, 0, tzinfo=UTC)))
    # No token yet: the stream opens and one poll catches up with what happened before it.
    catch_up = tick("product_changes", stores, instance)
    assert run_keys(catch_up) == ["product-changes-2026-11-20T09:00:00+00:00"]
    token = json.loads(catch_up.cursor)["resume_token"]
    assert token

    quiet = tick("product_changes", stores, instance, catch_up.cursor)
    assert not quiet.run_requests and quiet.skip_message

    stores.product_db.products.update_many({}, {"$set": {"title": "Desk lamp"}})
    stores.product_db.products.insert_one(product(datetime(2026, 11, 20, 9, 5, tzinfo=UTC)))
    changed = tick("product_changes", stores, instance, quiet.cursor)
    assert len(changed.run_requests) == 1
    assert changed.run_requests[0].run_key.startswith("product-changes-stream-")
    assert changed.run_requests[0].tags["shop-sync/changed-products"] == "2"
    assert json.loads(changed.cursor)["resume_token"] != token
    assert run_keys(tick("product_changes", stores, instance, quiet.cursor)) == run_keys(changed)
    assert not tick("product_changes", stores, instance, changed.cursor).run_requests


def test_product_changes_catches_up_when_the_resume_token_is_unusable(stores, instance, change_stream):
    stores.product_db.products.insert_one(product(datetime(2026, 11, 20, 9, 0, tzinfo=UTC)))
    stale = json.dumps({"updated_at": None, "resume_token": {"_data": "00"}})
    recovered = tick("product_changes", stores, instance, stale)
    assert run_keys(recovered) == ["product-changes-2026-11-20T09:00:00+00:00"]
    assert json.loads(recovered.cursor)["resume_token"] != {"_data": "00"}


def add_cart(stores, product_id: str, version: int = 1) -> str:
    cart_id = str(uuid.uuid4())
    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO cart (id, user_id, product_id, quantity, version) "
                             "VALUES (:id, 'u1', :product, 1, :version)"),
                     {"id": cart_id, "product": product_id, "version": version})
    return cart_id


def test_cart_changes_follow_updated_at_version_and_the_product_copy(stores, instance):
    empty = tick("cart_changes", stores, instance)
    assert empty.skip_message and not empty.run_requests

    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO product (id, title, price, image, content_hash) "
                             "VALUES ('p1', 'Lamp', 10, 'lamp.png', repeat('0', 32))"))
    cart_id = add_cart(stores, "p1")
    added = tick("cart_changes", stores, instance, empty.cursor)
    assert len(added.run_requests) == 1 and added.run_requests[0].run_key.startswith("cart-changes-")
    assert run_keys(tick("cart_changes", stores, instance, empty.cursor)) == run_keys(added)
    assert not tick("cart_changes", stores, instance, added.cursor).run_requests

    # Only the version moves (updated_at untouched): still a change.
    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("UPDATE cart SET version = version + 1 WHERE id = :id"), {"id": cart_id})
    bumped = tick("cart_changes", stores, instance, added.cursor)
    assert bumped.run_requests and run_keys(bumped) != run_keys(added)

    # The product sync rewrote the product the snapshot embeds.
    with stores.cart_engine.begin() as conn:
        conn.execute(sa.text("UPDATE product SET price = 11, synced_at = now() + interval '1 second'"))
    repriced = tick("cart_changes", stores, instance, bumped.cursor)
    assert repriced.run_requests and run_keys(repriced) != run_keys(bumped)
    assert not tick("cart_changes", stores, instance, repriced.cursor).run_requests
