"""A store answers with its version, or is named as unavailable within seconds."""

import time

import pymongo
import pytest
import sqlalchemy as sa

from etl_assets.sync.reconcile.health import ping_mongo, ping_postgres
from etl_assets.sync.stores import StoreUnavailableError


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
