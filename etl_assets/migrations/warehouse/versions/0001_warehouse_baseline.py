"""The warehouse as etl_assets/sql/warehouse_schema.sql created it: sync state, quarantine, orders and
their items, and the daily analytics tables.

Every object is created only if missing, so a warehouse that the old run-time schema file built is
adopted as it stands and stamped at this revision.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMPTZ = sa.TIMESTAMP(timezone=True)
NOW = sa.text("now()")
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    op.create_table(
        "etl_sync_state",
        sa.Column("sync_name", sa.Text, primary_key=True),
        sa.Column("watermark", JSONB),
        sa.Column("last_run_id", sa.Text),
        sa.Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
        if_not_exists=True,
    )
    op.create_table(
        "etl_quarantine",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("record_id", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("first_seen", TIMESTAMPTZ, nullable=False, server_default=NOW),
        sa.Column("last_seen", TIMESTAMPTZ, nullable=False, server_default=NOW),
        sa.Column("resolved_at", TIMESTAMPTZ),
        if_not_exists=True,
    )
    op.create_index("etl_quarantine_open_idx", "etl_quarantine", ["source"],
                    postgresql_where=sa.text("resolved_at IS NULL"), if_not_exists=True)

    op.create_table(
        "orders",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("order_day", sa.Date, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("order_status", sa.Text, nullable=False),
        sa.Column("payment_status", sa.Text, nullable=False),
        *(sa.Column(name, MONEY, nullable=False) for name in ("subtotal", "tax", "shipping", "discount", "total")),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False),
        sa.Column("paid_at", TIMESTAMPTZ),
        if_not_exists=True,
    )
    op.create_index("orders_day_idx", "orders", ["order_day"], if_not_exists=True)
    # The cart funnel looks up a user's latest order of a product.
    op.create_index("orders_user_idx", "orders", ["user_id", "created_at"], if_not_exists=True)

    op.create_table(
        "order_items",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("order_day", sa.Date, nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("product_title", sa.Text, nullable=False),
        sa.Column("seller_id", sa.Text),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
        sa.Column("subtotal", MONEY, nullable=False),
        if_not_exists=True,
    )
    op.create_index("order_items_day_idx", "order_items", ["order_day"], if_not_exists=True)

    op.create_table(
        "daily_sales",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("revenue", MONEY, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "product_sales",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("product_id", sa.Text, primary_key=True),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("revenue", MONEY, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "cart_funnel",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("active_carts", sa.Integer, nullable=False),
        sa.Column("abandoned_carts", sa.Integer, nullable=False),
        sa.Column("converted_carts", sa.Integer, nullable=False),
        sa.Column("abandon_after_days", sa.Integer, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    for table in ("cart_funnel", "product_sales", "daily_sales", "order_items", "orders", "etl_quarantine",
                  "etl_sync_state"):
        op.drop_table(table)
