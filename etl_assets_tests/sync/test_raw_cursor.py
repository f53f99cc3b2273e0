"""The raw find cursor: against the real test server, and on hand-built replies."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import bson
import pytest
from bson import Int64, ObjectId, Timestamp
from pymongo import MongoClient, monitoring
from pymongo.collection import Collection
from pymongo.cursor import RawBatchCursor
from pymongo.message import _OpMsg

from dev.bench_steps import bson_documents
from etl_assets.sync.raw_cursor import MalformedReply, _cursor_reply, find_documents
from etl_assets.sync.stores import PRODUCT_DB, StoreUnavailableError


def doc(n: int, minutes: int) -> dict:
    return {"_id": ObjectId(f"{n:024x}"), "n": n, "updatedAt": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)}


def read(collection, query=None, **options):
    return find_documents(collection, query or {}, store=PRODUCT_DB, **options)


def test_batches_hold_every_document_as_its_own_bson(stores):
    docs = [doc(n, n) for n in range(25)]
    stores.product_db.items.insert_many(docs)
    batches = list(read(stores.product_db.items, batch_size=7))
    assert [len(batch) for batch in batches] == [7, 7, 7, 4]
    decoded = [bson.decode(document) for batch in batches for document in batch]
    assert sorted(d["n"] for d in decoded) == list(range(25))


@pytest.mark.parametrize("sort", [None, [("updatedAt", 1), ("_id", 1)]], ids=["natural order", "sorted"])
def test_batches_are_what_pymongos_raw_batches_hold(stores, sort):
    """The fast path equals the simple one: pymongo's find_raw_batches, each batch cut into documents."""
    stores.product_db.items.insert_many([doc(n, 100 - n // 3) for n in range(40)])
    query = {"n": {"$gte": 5}}
    raw_batches = stores.product_db.items.find_raw_batches(query, sort=sort, batch_size=6)
    simple = [[bytes(document) for document in bson_documents(raw)] for raw in raw_batches]
    assert list(read(stores.product_db.items, query, batch_size=6, sort=sort)) == simple


def test_the_pymongo_internal_the_cursor_overrides_is_unchanged():
    """_BatchCursor overrides a private method of pymongo's cursor and reads the reply through a private
    class; a pymongo upgrade that renames or changes either must fail here, not in a sync."""
    recheck = ("pymongo changed RawBatchCursor._unpack_response or _OpMsg.raw_command_response, which "
               "etl_assets/sync/raw_cursor.py relies on to cut each reply into documents: re-check "
               "_BatchCursor against pymongo's cursor (how it unpacks a reply, what it expects back), "
               "then run etl_assets_tests/sync/test_raw_cursor.py")
    expected = ["self", "response", "cursor_id", "codec_options", "user_fields", "legacy_response"]
    assert list(inspect.signature(RawBatchCursor._unpack_response).parameters) == expected, recheck
    assert callable(getattr(_OpMsg, "raw_command_response", None)), recheck


def test_filter_and_sort_reach_the_server(stores):
    # updatedAt runs backwards against n, with two ties broken by _id
    stores.product_db.items.insert_many([doc(n, 100 - n // 2) for n in range(10)])
    batches = read(stores.product_db.items, {"n": {"$gte": 4}}, batch_size=3, sort=[("updatedAt", 1), ("_id", 1)])
    assert [bson.decode(d)["n"] for batch in batches for d in batch] == [8, 9, 6, 7, 4, 5]


def test_an_empty_result_yields_no_batch(stores):
    assert list(read(stores.product_db.items, batch_size=5)) == []


class Commands(monitoring.CommandListener):
    """The cursor commands a client sent: (name, the address of the server it went to); and the id of
    each cursor a find opened."""

    def __init__(self):
        self.sent: list[tuple[str, tuple[str, int]]] = []
        self.cursor_ids: list[int] = []

    def started(self, event):
        if event.command_name in ("find", "getMore", "killCursors"):
            self.sent.append((event.command_name, event.connection_id))

    def succeeded(self, event):
        if event.command_name == "find":
            self.cursor_ids.append(event.reply["cursor"]["id"])

    def failed(self, event):
        pass

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


@contextmanager
def listened_items(stores) -> Iterator[tuple[Collection, Commands]]:
    """Ten documents in `items`, through a client whose cursor commands the Commands record; the client is
    closed on leaving."""
    stores.product_db.items.insert_many([doc(n, n) for n in range(10)])
    listener = Commands()
    client = MongoClient(stores.local.mongo.uri, event_listeners=[listener])
    try:
        yield client[stores.product_db_name].items, listener
    finally:
        client.close()


def test_a_cursor_left_early_is_killed(stores):
    with listened_items(stores) as (items, listener):
        batches = read(items, batch_size=3)
        assert len(next(batches)) == 3
        batches.close()
    assert listener.names == ["find", "killCursors"]


def test_every_get_more_and_the_kill_go_to_the_server_that_answered_the_find(stores, routers):
    routers.insert(stores.product_db_name, "items", [doc(n, n) for n in range(10)])
    listener = Commands()
    client = routers.client(event_listeners=[listener])
    try:
        items = client[stores.product_db_name].items
        assert sorted(bson.decode(d)["n"] for batch in read(items, batch_size=3) for d in batch) == list(range(10))
        early = read(items, batch_size=3)
        assert len(next(early)) == 3
        early.close()
    finally:
        client.close()
    assert listener.names == ["find", "getMore", "getMore", "getMore", "find", "killCursors"]
    first, second = listener.sent[:4], listener.sent[4:]
    assert {address for _, address in first} == {first[0][1]}
    assert {address for _, address in second} == {second[0][1]}
    assert first[0][1] != second[0][1]  # the routers were chosen in turn: pinning, not luck


def test_a_cursor_the_server_killed_is_an_unavailable_store_error(stores):
    with listened_items(stores) as (items, listener):
        batches = read(items, batch_size=3)
        assert len(next(batches)) == 3
        stores.product_db.command("killCursors", "items", cursors=[Int64(listener.cursor_ids[0])])
        with pytest.raises(StoreUnavailableError, match=r"^Product MongoDB is unavailable: .*cursor") as lost:
            next(batches)
    assert lost.value.store == PRODUCT_DB
    assert "CursorNotFound" in lost.value.reason


def test_the_server_holding_the_cursor_going_away_is_an_unavailable_store_error(stores, routers):
    routers.insert(stores.product_db_name, "items", [doc(n, n) for n in range(10)])
    listener = Commands()
    client = routers.client(event_listeners=[listener], serverSelectionTimeoutMS=2000)
    try:
        batches = read(client[stores.product_db_name].items, batch_size=3)
        assert len(next(batches)) == 3
        _, (_, port) = listener.sent[0]
        next(proxy for proxy in routers.proxies if proxy.port == port).close()  # its router is gone
        with pytest.raises(StoreUnavailableError, match=r"^Product MongoDB is unavailable: ") as lost:
            next(batches)
    finally:
        client.close()
    assert lost.value.store == PRODUCT_DB


def reply(cursor: dict, **top) -> bytes:
    return bson.encode({"cursor": cursor, "ok": 1.0, **top})


def test_a_reply_with_the_fields_servers_add_around_the_cursor():
    batch = [{"_id": n, "x": "y" * n} for n in range(3)]
    raw = reply({"nextBatch": batch, "id": Int64(42), "ns": "db.items", "atClusterTime": Timestamp(1, 2)},
                operationTime=Timestamp(5, 1), **{"$clusterTime": {"clusterTime": Timestamp(5, 1),
                                                                    "signature": {"hash": b"\0" * 20, "keyId": Int64(0)}}})
    cursor_id, documents = _cursor_reply(raw)
    assert cursor_id == 42
    assert [bson.decode(d) for d in documents] == batch


def test_a_cursor_id_sent_as_an_int32_is_read():
    assert _cursor_reply(reply({"nextBatch": [{"a": 1}], "id": 7, "ns": "db.items"})) == (7, [bson.encode({"a": 1})])


@pytest.mark.parametrize(("raw", "message"), [
    (reply({"firstBatch": [1, 2], "id": Int64(0), "ns": "db.items"}), "BSON type 0x10, not a document"),
    (reply({"firstBatch": [], "ns": "db.items"}), "lacks its id or its batch"),
    (bson.encode({"ok": 0.0, "errmsg": "no"}), "no cursor document"),
], ids=["a number in the batch", "no cursor id", "no cursor"])
def test_a_malformed_reply_is_refused(raw, message):
    with pytest.raises(MalformedReply, match=message):
        _cursor_reply(raw)
