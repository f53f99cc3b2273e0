"""Dagster resources for the shop's stores, configured from the environment through EnvVar."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import dagster as dg
from pydantic import PrivateAttr
from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.migrations import SchemaNotCurrentError, require_current
from etl_assets.sync import stores
from etl_assets.sync.stores import CART_DB, ORDER_DB, PRODUCT_DB, WAREHOUSE


class MongoStoreResource(dg.ConfigurableResource):
    """A MongoDB database of one of the shop's services."""

    uri: str
    database: str
    store_name: str
    timeout_s: float = 5.0

    _db: Database | None = PrivateAttr(default=None)

    def db(self) -> Database:
        if self._db is None:
            self._db = stores.mongo_database(
                self.uri, self.database, store=self.store_name, timeout_s=self.timeout_s
            )
        return self._db

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._db is not None:
            self._db.client.close()


class PostgresStoreResource(dg.ConfigurableResource):
    """A PostgreSQL database reached through SQLAlchemy (use a postgresql+psycopg2:// URL).

    `migrations` names the Alembic history that defines the database's ETL-owned schema. The first
    `engine()` of a step checks that the database is at that history's head, so a step against a schema
    that lags (or leads) the code fails at once, without retries, naming the command that migrates it.
    """

    url: str
    store_name: str
    migrations: Literal["cart_db", "warehouse"]
    timeout_s: float = 5.0
    statement_timeout_s: float = 600.0

    _engine: Engine | None = PrivateAttr(default=None)

    def engine(self) -> Engine:
        if self._engine is None:
            engine = stores.postgres_engine(
                self.url,
                store=self.store_name,
                timeout_s=self.timeout_s,
                statement_timeout_s=self.statement_timeout_s,
            )
            try:
                require_current(engine, self.migrations)
            except SchemaNotCurrentError as err:
                engine.dispose()
                # Retrying cannot help until someone migrates; the run-failure alert carries the message.
                raise dg.Failure(description=str(err), allow_retries=False, metadata={
                    "store": err.store,
                    "database_revision": err.database_revision or "none",
                    "code_revision": err.code_revision,
                }) from None
            self._engine = engine
        return self._engine

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The store resources. Every connection setting comes from the environment through EnvVar, or,
    given `env` (tests, local tools), from that mapping's values."""

    def setting(name: str) -> str:
        return dg.EnvVar(name) if env is None else env[name]

    return {
        "product_db": MongoStoreResource(
            uri=setting("PRODUCT_MONGO_URI"), database=setting("PRODUCT_MONGO_DB"), store_name=PRODUCT_DB
        ),
        "order_db": MongoStoreResource(
            uri=setting("ORDER_MONGO_URI"), database=setting("ORDER_MONGO_DB"), store_name=ORDER_DB
        ),
        "cart_db": PostgresStoreResource(
            url=setting("CART_PG_URL"), store_name=CART_DB, migrations="cart_db"
        ),
        "warehouse": PostgresStoreResource(
            url=setting("WAREHOUSE_PG_URL"), store_name=WAREHOUSE, migrations="warehouse"
        ),
    }
