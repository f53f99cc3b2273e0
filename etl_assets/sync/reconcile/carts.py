"""The carts (Cart PostgreSQL `cart`) against their snapshots (Order MongoDB `carts`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.schemas.carts import TOTAL_TOLERANCE
from etl_assets.sync import carts as cart_sync
from etl_assets.sync.reconcile.findings import Finding, Sample, first_ids, reported
from etl_assets.sync.reconcile.tables import BATCH_SIZE
from etl_assets.sync.streams import read_ahead


@dataclass
class CartReconciliation(Finding):
    """The carts against their snapshots. Every cart the sync would snapshot (valid, with an active
    product) must have a live (unmarked) one, of the cart's version, whose total is the copy's price × the
    cart's quantity; and every live snapshot must have its cart (the sync marks the rest deletedAt)."""

    carts: int = 0
    expected_snapshots: int = 0
    missing: Sample = field(default_factory=Sample)
    stale: Sample = field(default_factory=Sample, metadata=reported("stale_versions", ids="stale_ids"))
    wrong_total: Sample = field(default_factory=Sample,
                                metadata=reported("wrong_totals", ids="wrong_total_ids"))
    without_cart: Sample = field(default_factory=Sample)
    marked_deleted: int = 0

    @property
    def failing(self) -> int:
        return self.missing.count + self.stale.count + self.wrong_total.count + self.without_cart.count

    @property
    def sample_ids(self) -> list[str]:
        return first_ids(self.missing, self.stale, self.wrong_total, self.without_cart)


def _total_matches(stored: Any, expected: float) -> bool:
    return isinstance(stored, int | float) and not isinstance(stored, bool) and abs(stored - expected) < TOTAL_TOLERANCE


def reconcile_carts(cart_db: Engine, order_db: Database, *, batch_size: int = BATCH_SIZE) -> CartReconciliation:
    """Page through the carts (joined with their products) as the cart sync does and build the snapshots
    it would write. Read the stored snapshots as a full cart sync does, in one pass: each page's keyset
    range of the unique cartId index, from the previous page's last cart through its own (a `$in` of a
    whole page is a scan per page on some servers), and the keys past the last page. A snapshot marked
    deleted counts as none; a live one in a page's range whose cart the page does not hold, or past the
    last page with no cart, is one the sync has not marked yet."""
    result = CartReconciliation()
    snapshots = order_db[cart_sync.COLLECTION]

    def pages_with_stored() -> Iterator[tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]]:
        after = None
        for rows in cart_sync.iter_cart_pages(cart_db, None, batch_size):
            yield rows, cart_sync.snapshots_in_range(snapshots, after, rows[-1]["cart_id"])
            after = rows[-1]["cart_id"]

    last_cart_id = None
    # Both stores are read on a thread, a page ahead, while this one builds and compares the snapshots.
    for rows, in_range in read_ahead(pages_with_stored()):
        expected = cart_sync.check_batch(rows).snapshots
        result.carts += len(rows)
        result.expected_snapshots += len(expected)
        stored = {cart_id: doc for cart_id, doc in in_range.items() if doc.get(cart_sync.DELETED_AT) is None}
        missing, stale, wrong_total = [], [], []
        for snapshot in expected:
            doc = stored.get(snapshot["cartId"])
            if doc is None:
                missing.append(snapshot["cartId"])
            elif doc.get("version") != snapshot["version"]:
                stale.append(snapshot["cartId"])
            elif not _total_matches(doc.get("total"), snapshot["total"]):
                wrong_total.append(snapshot["cartId"])
        result.missing.add(missing)
        result.stale.add(stale)
        result.wrong_total.add(wrong_total)
        page_carts = {row["cart_id"] for row in rows}
        result.without_cart.add(sorted(cart_id for cart_id in stored if cart_id not in page_carts))
        last_cart_id = rows[-1]["cart_id"]
    for diff in cart_sync.diff_keys(cart_db, snapshots, batch_size, after=last_cart_id):
        result.without_cart.add(diff.gone)
    result.marked_deleted = snapshots.count_documents({cart_sync.DELETED_AT: {"$ne": None}})
    return result
