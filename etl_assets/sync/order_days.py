"""Which days of orders the warehouse must (re)build: each day's fingerprint in the source, against the
fingerprint its last build recorded.

A day's fingerprint is computed by the server in one aggregation per UTC day of createdAt (a range of the
createdAt index), grouped by (orderStatus, paymentStatus). Every figure is a sum or a max, so it does not
depend on the order the server reads documents in, and each costs the server O(1) per order (no
per-character hashing, which a MongoDB aggregation can only do with $reduce over every character):

- orders: how many;
- created_ms, id_seconds: sums of createdAt (ms) and of the ObjectId's own timestamp, standing for the
  order ids: an insert, a deletion or an order re-keyed under a new _id moves them;
- paid_ms: sum of paidAt (ms), so a payment moves it even when the statuses stay;
- total_cents: sum of the totals in cents;
- bytes: sum of the documents' BSON sizes, so most other edits (a corrected field) move it too;
- newest_update: the newest updatedAt, where the Order service sets it.

Grouping by the statuses makes the figures a hash of ids and statuses: a status change moves an order's
figures from one group to another. The digest is a SHA-256 of the sorted groups. What it cannot see is an
edit that keeps every figure: a field rewritten to a value of the same BSON size, with no updatedAt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from bson import json_util
from pymongo.collection import Collection
from sqlalchemy.engine import Engine

from etl_assets.sync.state import DayBuild, load_day_builds


def _convert(expr: Any, to: str, default: Any) -> dict[str, Any]:
    """$convert that never fails the aggregation: a value of the wrong type becomes `default`."""
    return {"$convert": {"input": expr, "to": to, "onError": default, "onNull": default}}


_GROUP = {
    "_id": {"order_status": "$orderStatus", "payment_status": "$paymentStatus"},
    "orders": {"$sum": 1},
    "created_ms": {"$sum": {"$toLong": "$createdAt"}},
    "id_seconds": {"$sum": _convert(_convert("$_id", "date", None), "long", 0)},
    "paid_ms": {"$sum": _convert("$paidAt", "long", -1)},
    "total_cents": {"$sum": _convert({"$round": [{"$multiply": [_convert("$total", "double", 0), 100]}, 0]},
                                     "long", 0)},
    "bytes": {"$sum": {"$bsonSize": "$$ROOT"}},
    "newest_update": {"$max": "$updatedAt"},
}


@dataclass(frozen=True)
class DayFingerprint:
    """A day of orders as the source holds it: how many, and the digest of its figures."""

    orders: int
    digest: str


def _digest(groups: list[dict[str, Any]]) -> str:
    canonical = sorted(json_util.dumps(group, sort_keys=True) for group in groups)
    return hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:32]


EMPTY_DAY = DayFingerprint(0, _digest([]))


def day_fingerprints(orders: Collection, first: date, last: date) -> dict[date, DayFingerprint]:
    """The fingerprint of every day from `first` to `last` (inclusive) that has orders in the source.

    One aggregation per day: grouping a window by a computed day would cost the server a date
    formatting per order, a fifth of the aggregation."""
    fingerprints = {}
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        start = datetime.combine(day, time(), tzinfo=UTC)
        window = {"$gte": start, "$lt": start + timedelta(days=1)}
        groups = [{**group.pop("_id"), **group}
                  for group in orders.aggregate([{"$match": {"createdAt": window}}, {"$group": _GROUP}])]
        if groups:
            fingerprints[day] = DayFingerprint(sum(g["orders"] for g in groups), _digest(groups))
    return fingerprints


def lookback_window(last_day: date, days: int, first_day: date) -> tuple[date, date]:
    """The `days` days up to `last_day` (inclusive), none before `first_day`."""
    return max(first_day, last_day - timedelta(days=days - 1)), last_day


@dataclass(frozen=True)
class DayToBuild:
    """A day whose warehouse rows do not match the source: never built, or built from other orders."""

    day: date
    fingerprint: DayFingerprint
    built: DayBuild | None

    @property
    def reason(self) -> str:
        if self.built is None:
            return f"never built ({self.fingerprint.orders} orders in the source)"
        return (f"built from {self.built.orders} orders (fingerprint {self.built.fingerprint[:12]}), the source "
                f"now has {self.fingerprint.orders} (fingerprint {self.fingerprint.digest[:12]})")


def days_to_build(orders: Collection, warehouse: Engine, first: date, last: date) -> list[DayToBuild]:
    """The days from `first` to `last` whose source fingerprint differs from the one their last build
    recorded, and the days with orders that no build recorded. A day without orders that was never built
    needs nothing; one whose orders were all deleted since its build does."""
    source = day_fingerprints(orders, first, last)
    builds = load_day_builds(warehouse, first, last)
    stale = []
    for day in sorted(source.keys() | builds.keys()):
        fingerprint = source.get(day, EMPTY_DAY)
        built = builds.get(day)
        if built is None or built.fingerprint != fingerprint.digest:
            stale.append(DayToBuild(day, fingerprint, built))
    return stale
