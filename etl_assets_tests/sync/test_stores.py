"""Store helpers against the real servers."""

import time
from datetime import UTC, datetime

import pymongo
import pytest
import sqlalchemy as sa

from etl_assets.sync.stores import StoreUnavailableError, collection_fingerprint, ping_mongo, ping_postgres


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
