"""The ETL's columns and index on the cart service's `product` table, as etl_assets/sql/cart_db_schema.sql
defined them.

The cart service's own columns (id, title, price, image, seller_id, quantity) and its `cart` table come
from the cart service's migrations and are never altered here. Each column and the index is added only
if missing, so a database that already has them is adopted as it stands.

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
# Rows the cart service wrote before the ETL's first run get a hash that matches no product, so the
# next sync rewrites them from the catalog; the default is dropped again, as the column had none.
NO_HASH = sa.text("repeat('0', 32)")


def etl_columns() -> list[sa.Column]:
    """New Column objects on every call: Alembic attaches each one it adds to a table."""
    return [
        sa.Column("category", sa.Text, nullable=False, server_default="other"),
        sa.Column("description", sa.Text),
        sa.Column("rating", sa.Numeric(3, 2)),
        sa.Column("tags", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("source_updated_at", TIMESTAMPTZ),
        sa.Column("content_hash", sa.CHAR(32), nullable=False, server_default=NO_HASH),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("synced_at", TIMESTAMPTZ, nullable=False, server_default=sa.text("now()")),
    ]


def upgrade() -> None:
    for column in etl_columns():
        op.add_column("product", column, if_not_exists=True)
    op.alter_column("product", "content_hash", server_default=None)
    op.create_index("product_synced_at_idx", "product", ["synced_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("product_synced_at_idx", table_name="product", if_exists=True)
    for column in reversed(etl_columns()):
        op.drop_column("product", column.name)
