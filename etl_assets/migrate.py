"""Migrate the ETL's PostgreSQL schemas, or check that they are current. The deploy step before the code.

    python -m etl_assets.migrate [--check] [cart_db|warehouse|all]     (default: all)
    python -m etl_assets.migrate --new "what it changes" {cart_db|warehouse}   (development: a new revision)

Each history connects with its own migration URL, a role allowed the DDL that the ETL owns (see
etl_assets/sql/etl_role.sql and warehouse_role.sql), never the run-time URL:

    CART_PG_MIGRATE_URL       Cart PostgreSQL: the ETL's columns and indexes on `product`
    WAREHOUSE_PG_MIGRATE_URL  Warehouse PostgreSQL: the whole warehouse schema

Upgrading is idempotent: a database at the head is left as it is. --check changes nothing and exits 1
when a database is not at the code's head (what every sync step checks before it starts).
"""

from __future__ import annotations

import argparse
import os
import sys

from alembic import command

from etl_assets.migrations import (
    HISTORIES,
    SchemaNotCurrentError,
    alembic_config,
    code_revision,
    require_current,
    upgrade,
)
from etl_assets.sync.stores import StoreUnavailableError, postgres_engine, redacted_url

CONNECT_TIMEOUT_S = 10.0


def migration_url(name: str) -> str:
    history = HISTORIES[name]
    url = os.environ.get(history.migrate_url_env)
    if not url:
        raise SystemExit(f"{history.migrate_url_env} is not set: the {history.store} URL of the migration role "
                         f"(postgresql+psycopg2://...), needed by `{history.command}`")
    return url


def migrate(name: str, *, check: bool) -> bool:
    """Upgrade (or only check) one history; returns whether the database is at the head afterwards."""
    history = HISTORIES[name]
    url = migration_url(name)
    engine = postgres_engine(url, store=history.store, timeout_s=CONNECT_TIMEOUT_S)
    try:
        if check:
            try:
                require_current(engine, name)
            except SchemaNotCurrentError as err:
                print(err)
                return False
            print(f"{history.store} ({redacted_url(url)}): at revision {code_revision(name)}, the code's head")
            return True
        before, after = upgrade(engine, name)
        change = "already at the head" if before == after else f"migrated from {before or 'an empty schema'}"
        print(f"{history.store} ({redacted_url(url)}): at revision {after}, {change}")
        return True
    finally:
        engine.dispose()


def new_revision(name: str, message: str) -> None:
    """A new, empty revision after the head, numbered in sequence, for a developer to fill in."""
    number = f"{int(code_revision(name)) + 1:04d}"
    command.revision(alembic_config(HISTORIES[name]), message=message, rev_id=number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etl_assets.migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", default="all", choices=[*HISTORIES, "all"])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 unless at the head")
    parser.add_argument("--new", metavar="MESSAGE", help="create an empty revision in TARGET's history")
    args = parser.parse_args(argv)
    names = list(HISTORIES) if args.target == "all" else [args.target]
    if args.new:
        if len(names) != 1:
            parser.error("--new needs one history: cart_db or warehouse")
        new_revision(names[0], args.new)
        return 0
    try:
        current = [migrate(name, check=args.check) for name in names]
    except StoreUnavailableError as err:
        print(err, file=sys.stderr)
        return 2
    return 0 if all(current) else 1


if __name__ == "__main__":
    sys.exit(main())
