"""Referential integrity: carts whose product the copy does not hold active, and order items whose product
the copy has never held."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl_assets.sync.reconcile.findings import SAMPLE_SIZE, UNREPORTED, Finding, Sample, first_ids, reported
from etl_assets.sync.reconcile.tables import (
    BATCH_SIZE,
    DayRange,
    day_condition,
    day_scope,
    server_side_batches,
    table_exists,
)


@dataclass
class CartProductReferences(Finding):
    """Carts whose product the copy does not hold, or holds as inactive: the cart sync cannot snapshot them."""

    carts: int = 0
    missing_product: Sample = field(default_factory=Sample,
                                    metadata=reported("missing_product", ids="missing_product_cart_ids"))
    inactive_product: Sample = field(default_factory=Sample,
                                     metadata=reported("inactive_product", ids="inactive_product_cart_ids"))
    product_ids: list[str] = field(default_factory=list, metadata=reported("sample_product_ids"))

    @property
    def failing(self) -> int:
        return self.missing_product.count + self.inactive_product.count

    @property
    def sample_ids(self) -> list[str]:
        return first_ids(self.missing_product, self.inactive_product)


_CART_REFERENCE_COUNTS = sa.text("""
    SELECT count(*) AS carts,
           count(*) FILTER (WHERE p.id IS NULL) AS missing,
           count(*) FILTER (WHERE NOT p.is_active) AS inactive
    FROM cart c LEFT JOIN product p ON p.id = c.product_id
""")
_CART_REFERENCE_SAMPLE = sa.text("""
    (SELECT c.id::text AS cart_id, c.product_id, true AS missing
     FROM cart c LEFT JOIN product p ON p.id = c.product_id
     WHERE p.id IS NULL ORDER BY c.id LIMIT :limit)
    UNION ALL
    (SELECT c.id::text, c.product_id, false
     FROM cart c JOIN product p ON p.id = c.product_id
     WHERE NOT p.is_active ORDER BY c.id LIMIT :limit)
""")


def cart_product_references(cart_db: Engine) -> CartProductReferences:
    """Counted by the server with one join; only the samples come back."""
    with cart_db.connect() as conn:
        counts = conn.execute(_CART_REFERENCE_COUNTS).one()
        sample = conn.execute(_CART_REFERENCE_SAMPLE, {"limit": SAMPLE_SIZE}).all()
    result = CartProductReferences(carts=counts.carts)
    result.missing_product = Sample(counts.missing, [r.cart_id for r in sample if r.missing])
    result.inactive_product = Sample(counts.inactive, [r.cart_id for r in sample if not r.missing])
    result.product_ids = list(dict.fromkeys(r.product_id for r in sample))[:SAMPLE_SIZE]
    return result


@dataclass
class OrphanOrderItems(Finding):
    """Order items whose product id the cart database's copy has never held (active or not)."""

    items: int = 0
    products: int = 0
    orphans: Sample = field(default_factory=Sample, metadata=UNREPORTED)
    unknown_products: Sample = field(default_factory=Sample,
                                     metadata=reported("unknown_products", ids="unknown_product_ids"))
    scope: str = "all days"

    @property
    def failing(self) -> int:
        return self.orphans.count

    @property
    def sample_ids(self) -> list[str]:
        return self.orphans.ids


def orphan_order_items(warehouse: Engine, cart_db: Engine, days: DayRange | None = None, *,
                       batch_size: int = BATCH_SIZE) -> OrphanOrderItems:
    """The warehouse groups its order items by product id; each batch of distinct ids is looked up in the
    copy with one query. The two databases may live on different servers, so no cross-database join."""
    condition, params = day_condition("order_day", days)
    per_product = sa.text(f"SELECT product_id, count(*) AS items FROM order_items WHERE {condition} "  # noqa: S608
                          "GROUP BY product_id")
    sample = sa.text(f"""
        SELECT order_id || '#' || line_no FROM order_items
        WHERE {condition} AND product_id = ANY(:unknown) ORDER BY order_id, line_no LIMIT :limit
    """)  # noqa: S608 - constant condition
    result = OrphanOrderItems(scope=day_scope(days))
    orphan_items = 0
    with warehouse.connect() as conn:
        if not table_exists(conn, "order_items"):
            return result
        with cart_db.connect() as copy:
            for rows in server_side_batches(conn, per_product, params, batch_size):
                known = set(copy.execute(sa.text("SELECT id FROM product WHERE id = ANY(:ids)"),
                                         {"ids": [r.product_id for r in rows]}).scalars())
                unknown = [r for r in rows if r.product_id not in known]
                result.items += sum(r.items for r in rows)
                result.products += len(rows)
                result.unknown_products.add(sorted(r.product_id for r in unknown))
                orphan_items += sum(r.items for r in unknown)
        if orphan_items:
            result.orphans = Sample(orphan_items, list(conn.execute(sample, {
                **params, "unknown": result.unknown_products.ids, "limit": SAMPLE_SIZE}).scalars()))
    return result
