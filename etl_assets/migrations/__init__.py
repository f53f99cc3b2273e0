"""The ETL's schemas as Alembic migrations, and the check that a database is at the code's revision.

Two histories, each in its own directory with its own version table (`shop_sync.alembic_version`, in
a schema of the ETL's own, so it never meets a version table of the cart service's):

- `warehouse`: the whole warehouse schema; the ETL owns that database.
- `cart_db`: only what the ETL owns in the cart service's database: the ETL's columns and indexes on
  `product`. The cart service's own tables and columns belong to its own migrations; no revision here
  alters or drops them.

Migrations run at deploy time, as a migration role, through `python -m etl_assets.migrate`. No sync,
asset or check runs DDL; a step only compares the database's revision with the code's head
(`require_current`) and fails at once, naming the command, when they differ.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

VERSION_SCHEMA = "shop_sync"
VERSION_TABLE = "alembic_version"
MIGRATE_COMMAND = "python -m etl_assets.migrate"
# A migration waits at most this long for a table lock. Waiting longer would queue every sync and check
# behind its ACCESS EXCLUSIVE request; failing lets the deploy retry once the long transaction is over.
LOCK_TIMEOUT_S = 10


@dataclass(frozen=True)
class History:
    """One migration history: which database it defines and where its migration URL comes from."""

    name: str
    store: str
    migrate_url_env: str

    @property
    def command(self) -> str:
        return f"{MIGRATE_COMMAND} {self.name}"


HISTORIES = {
    "cart_db": History("cart_db", "Cart PostgreSQL", "CART_PG_MIGRATE_URL"),
    "warehouse": History("warehouse", "Warehouse PostgreSQL", "WAREHOUSE_PG_MIGRATE_URL"),
}


class SchemaNotCurrentError(RuntimeError):
    """A database's schema is not at the revision the code needs. The message says how to migrate it."""

    def __init__(self, history: History, database_revision: str | None, code_revision: str):
        found = f"revision {database_revision}" if database_revision else "no revision (never migrated)"
        super().__init__(
            f"{history.store} schema is at {found}, the code needs revision {code_revision}. Migrate it "
            f"with `{history.command}` ({history.migrate_url_env} set to the migration role's URL; in "
            "Kubernetes, the shop-sync-migrate Job), then rerun."
        )
        self.store = history.store
        self.database_revision = database_revision
        self.code_revision = code_revision


def alembic_config(history: History, connection: Connection | None = None) -> Config:
    """The history's Alembic configuration, from the package's own files (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("etl_assets") / "migrations" / history.name))
    config.attributes["connection"] = connection
    return config


@functools.cache
def code_revision(name: str) -> str:
    """The head revision of a history, as the installed code defines it."""
    heads = ScriptDirectory.from_config(alembic_config(HISTORIES[name])).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the {name} migration history has {len(heads)} heads {heads}; merge them")
    return heads[0]


def database_revision(connection: Connection) -> str | None:
    """The revision a database is at, or None when it was never migrated."""
    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE, "version_table_schema": VERSION_SCHEMA}
    )
    return context.get_current_revision()


def require_current(engine: Engine, name: str) -> None:
    """Raise SchemaNotCurrentError unless the database is at the code's head. One small query."""
    history = HISTORIES[name]
    with engine.connect() as conn:
        found = database_revision(conn)
    if found != code_revision(name):
        raise SchemaNotCurrentError(history, found, code_revision(name))


def upgrade(engine: Engine, name: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database to `revision`, in one transaction; returns (revision before, revision after)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT set_config('lock_timeout', :timeout, true)"),
                     {"timeout": f"{LOCK_TIMEOUT_S}s"})
        before = database_revision(conn)
        command.upgrade(alembic_config(HISTORIES[name], conn), revision)
        return before, database_revision(conn)


def run_migrations(name: str) -> None:
    """The body of each history's env.py: migrate on the connection `upgrade` handed over."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(f"run the {name} migrations through `{MIGRATE_COMMAND}`, not the alembic CLI")
    # The version table's schema must exist before Alembic creates the table. In the cart database the
    # role script (etl_role.sql) creates it for the migration role, which may not create schemas there.
    exists = connection.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"),
                                {"schema": VERSION_SCHEMA}).scalar()
    if not exists:
        connection.exec_driver_sql(f"CREATE SCHEMA {VERSION_SCHEMA}")
    context.configure(connection=connection, version_table=VERSION_TABLE, version_table_schema=VERSION_SCHEMA)
    with context.begin_transaction():
        context.run_migrations()
