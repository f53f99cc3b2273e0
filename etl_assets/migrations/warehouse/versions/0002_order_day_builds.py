"""etl_order_day_builds: the source fingerprint (etl_assets/sync/order_days.py) each day of orders was last
built from, written by the day load in the transaction that replaces the day's rows. A day without a row
here was never built.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "etl_order_day_builds",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("built_at", sa.TIMESTAMP(timezone=True), nullable=False),
        if_not_exists=True,  # like the baseline: a database that already holds it is adopted
    )


def downgrade() -> None:
    op.drop_table("etl_order_day_builds")
