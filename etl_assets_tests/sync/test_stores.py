"""Store helpers against the real servers."""

import time
from datetime import UTC, datetime

import pymongo
import pytest
import sqlalchemy as sa

from etl_assets.sync.stores import (
    StoreUnavailableError,
    collection_fingerprint,
    mongo_client,
    ping_mongo,
    ping_postgres,
)


def test_the_fingerprint_counts_documents_and_finds_the_newest_date(stores) -> None:
    orders = stores.order_db.orders
    assert collection_fingerprint(orders, "createdAt") == (0, None)
    newest = datetime(2025, 3, 10, 5, tzinfo=UTC)
    orders.insert_many([{"createdAt": datetime(2025, 3, 10, 1, tzinfo=UTC)}, {"createdAt": newest},
                        {"note": "no date"}, {"createdAt": "2030-01-01"}])
    assert collection_fingerprint(orders, "createdAt") == (4, newest)


def test_reachable_stores_answer_with_their_version(stores):
    assert ping_mongo(stores.order_db, "Order MongoDB").server_version
    health = ping_postgres(stores.cart_engine, "Cart PostgreSQL")
    assert health.passed and health.latency_ms >= 0


@pytest.mark.parametrize("store", ["mongo", "postgres"])
def test_an_unreachable_store_is_named_within_seconds(tmp_path, store):
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="^Test store is unavailable: .+") as raised:
        if store == "mongo":
            client = pymongo.MongoClient("mongodb://127.0.0.1:9/?directConnection=true", serverSelectionTimeoutMS=1000)
            ping_mongo(client["db"], "Test store")
        else:
            engine = sa.create_engine(f"postgresql+psycopg2://postgres@/x?host={tmp_path}",
                                      connect_args={"connect_timeout": 1})
            ping_postgres(engine, "Test store")
    assert raised.value.store == "Test store"
    assert time.monotonic() - started < 5


def test_timeouts_in_the_uri_win_over_the_defaults(local_stores):
    # A server that can stall longer than the 5 s default (a heartbeat unanswered for that long cancels
    # the reads in flight) is given more time in its URI, as an operator would.
    separator = "&" if "?" in local_stores.mongo.uri else "/?"
    uri = f"{local_stores.mongo.uri}{separator}connectTimeoutMS=60000&serverSelectionTimeoutMS=45000"
    client = mongo_client(uri, store="Test store", timeout_s=5)
    try:
        assert client.options.pool_options.connect_timeout == 60
        assert client.options.server_selection_timeout == 45
    finally:
        client.close()
    default = mongo_client(local_stores.mongo.uri, store="Test store", timeout_s=5)
    try:
        assert default.options.pool_options.connect_timeout == 5
        assert default.options.server_selection_timeout == 5
    finally:
        default.close()
