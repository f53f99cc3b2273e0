"""daily_sales.paid_orders and paid_revenue: the orders of the day whose payment status is now `paid`,
which a late payment changes when its day is rebuilt. Days built before this revision are filled in
from the orders and items the warehouse already holds, so no day needs a rebuild.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("daily_sales", sa.Column("paid_orders", sa.Integer, nullable=False, server_default="0"),
                  if_not_exists=True)
    op.add_column("daily_sales", sa.Column("paid_revenue", sa.Numeric(14, 2), nullable=False, server_default="0"),
                  if_not_exists=True)  # like the baseline: adopt a database that has them
    op.execute("""
        UPDATE daily_sales d
        SET paid_orders = paid.orders, paid_revenue = paid.revenue
        FROM (
            SELECT o.order_day, count(DISTINCT o.order_id) AS orders, sum(i.subtotal) AS revenue
            FROM orders o JOIN order_items i ON i.order_id = o.order_id
            WHERE o.payment_status = 'paid'
            GROUP BY o.order_day
        ) AS paid
        WHERE d.day = paid.order_day
    """)


def downgrade() -> None:
    op.drop_column("daily_sales", "paid_revenue")
    op.drop_column("daily_sales", "paid_orders")
