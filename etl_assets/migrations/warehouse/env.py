"""Alembic environment of the warehouse history; etl_assets.migrations.run_migrations does the work."""

from etl_assets.migrations import run_migrations

run_migrations("warehouse")
