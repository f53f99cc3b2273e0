"""A full product sync spread over N disjoint `_id` ranges, each synced by a process (a pod) of its own.

Three phases, their hand-over kept in the warehouse's sync state, so that the steps share nothing but
the stores (step pods under k8s_job_executor share no filesystem):

1. `plan_ranges` samples the source's `_id`s and stores N-1 split points with the plan's start time.
2. `sync_range(i)` runs the full sync over range i: upserts and quarantines what it reads, then
   stores which of the copy's active rows in its range it did not see (it deactivates nothing).
3. `finish_ranges` waits for no range: it fails if any range of the plan has no stored outcome. It
   adds the ranges' counts up, applies the mass-deactivation guard to the whole reconcile, and only
   then deactivates what the ranges did not see, resolves the quarantine of records gone from the
   source, and moves the watermark to the plan's start.

A range killed at any point is simply run again: its outcome is stored only when its pass completed,
and nothing is deactivated before every range has one. A product is deactivated only when the range
that covers its id read the source without it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from bson import ObjectId
from pymongo.database import Database
from sqlalchemy.engine import Engine

from etl_assets.sync.guard import DEFAULT_GUARD, DeactivationGuard
from etl_assets.sync.products import SOURCE, SYNC_NAME, ProductLoader, apply_guard, sync_products
from etl_assets.sync.quarantine import Quarantine
from etl_assets.sync.report import SyncReport
from etl_assets.sync.state import load_watermark, save_watermark

PLAN_STATE = "product_sync_ranges"
# `_id`s sampled per range to place the split points: enough that ranges come out within a few
# percent of each other, few enough that the sample is cheap.
SAMPLE_PER_RANGE = 200


def range_state(index: int) -> str:
    return f"{PLAN_STATE}/{index}"


class RangePlanError(RuntimeError):
    """The ranges' stored outcomes do not belong to the current plan, or one is missing."""


@dataclass(frozen=True)
class IdRange:
    """Product ids from `lower` (inclusive) to `upper` (exclusive), as 24-digit hex; None is open. Hex
    strings of ObjectIds sort as the ObjectIds do, so one range means the same products in the source
    and in the copy. The first range also takes every `_id` that is not an ObjectId: such a document
    can only be quarantined, and must be read by some range."""

    index: int
    lower: str | None
    upper: str | None

    def source_filter(self) -> dict[str, Any]:
        bounds: dict[str, Any] = {}
        if self.lower is not None:
            bounds["$gte"] = ObjectId(self.lower)
        if self.upper is not None:
            bounds["$lt"] = ObjectId(self.upper)
        if not bounds:
            return {}
        if self.lower is None:
            return {"$or": [{"_id": bounds}, {"_id": {"$not": {"$type": "objectId"}}}]}
        return {"_id": bounds}

    def copy_condition(self) -> tuple[str, dict[str, str]]:
        """SQL over `product.id`, and its parameters."""
        parts, params = ["true"], {}
        if self.lower is not None:
            parts.append("id >= %(lower)s")
            params["lower"] = self.lower
        if self.upper is not None:
            parts.append("id < %(upper)s")
            params["upper"] = self.upper
        return " AND ".join(parts), params


@dataclass(frozen=True)
class RangePlan:
    plan_id: str  # the planning run and time: its ranges' outcomes carry it
    started_at: str  # ISO; the watermark once every range is done
    split_points: tuple[str, ...]

    @property
    def ranges(self) -> list[IdRange]:
        bounds = [None, *self.split_points, None]
        return [IdRange(i, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

    def as_state(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "started_at": self.started_at, "split_points": list(self.split_points)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RangePlan:
        return cls(state["plan_id"], state["started_at"], tuple(state["split_points"]))


def split_points(product_db: Database, ranges: int, sample_per_range: int = SAMPLE_PER_RANGE) -> tuple[str, ...]:
    """N-1 split points at the quantiles of a random sample of the source's ObjectId `_id`s (`$sample`,
    which MongoDB serves from a random cursor, without a sort of the collection)."""
    if ranges < 1:
        raise ValueError(f"ranges must be at least 1, not {ranges}")
    if ranges == 1:
        return ()
    sample = sorted({str(doc["_id"]) for doc in product_db["products"].aggregate([
        {"$match": {"_id": {"$type": "objectId"}}},
        {"$sample": {"size": ranges * sample_per_range}},
        {"$project": {"_id": 1}},
    ])})
    if len(sample) < ranges:  # a catalog smaller than the ranges asked for: fewer, non-empty ranges
        return tuple(sample[1:])
    return tuple(dict.fromkeys(sample[len(sample) * k // ranges] for k in range(1, ranges)))


def plan_ranges(product_db: Database, warehouse: Engine, ranges: int, *, run_id: str,
                started_at: datetime) -> RangePlan:
    """Place the split points and store the plan; the ranges of an earlier plan no longer count."""
    # Unique per planning, even when a retried step plans again within the same run.
    plan = RangePlan(f"{run_id}@{started_at.isoformat()}", started_at.isoformat(), split_points(product_db, ranges))
    save_watermark(warehouse, PLAN_STATE, plan.as_state(), run_id)
    return plan


def load_plan(warehouse: Engine) -> RangePlan:
    state = load_watermark(warehouse, PLAN_STATE)
    if state is None:
        raise RangePlanError("no product sync range plan: run the plan step first")
    return RangePlan.from_state(state)


_ACTIVE = "SELECT count(*) FROM product WHERE is_active AND {condition}"
# NOT EXISTS in WHERE, which PostgreSQL runs as a hash anti-join (inside an aggregate's FILTER it
# would be a subquery per row, over an unindexed temp table).
_UNSEEN = """
    SELECT id FROM product
    WHERE is_active AND {condition} AND NOT EXISTS (SELECT 1 FROM product_seen s WHERE s.id = product.id)
    ORDER BY id
"""


def _unseen_in(id_range: IdRange) -> Callable[[ProductLoader], dict[str, Any]]:
    def unseen(loader: ProductLoader) -> dict[str, Any]:
        condition, params = id_range.copy_condition()
        with loader.conn.cursor() as cur:
            cur.execute("ANALYZE product_seen")
            cur.execute(_ACTIVE.format(condition=condition), params)
            active = cur.fetchone()[0]
            cur.execute(_UNSEEN.format(condition=condition), params)
            unseen = [row[0] for row in cur.fetchall()]
        loader.conn.commit()
        return {"active": active, "unseen": unseen}

    return unseen


def sync_range(product_db: Database, cart_db: Engine, warehouse: Engine, index: int, *, run_id: str,
               batch_size: int, progress: Callable[[str], None] | None = None) -> SyncReport:
    """The full sync of range `index` of the current plan; stores its outcome for finish_ranges."""
    plan = load_plan(warehouse)
    if not 0 <= index < len(plan.ranges):
        raise ValueError(f"range {index} is not in the plan, which has {len(plan.ranges)} ranges")
    id_range = plan.ranges[index]
    outcome: dict[str, Any] = {}

    def remember(loader: ProductLoader) -> int:
        outcome.update(_unseen_in(id_range)(loader))
        return 0  # deactivated: none, finish_ranges decides for the whole reconcile

    report = sync_products(product_db, cart_db, warehouse, mode="full", batch_size=batch_size, run_id=run_id,
                           progress=progress, part=id_range.source_filter(), end_of_full_pass=remember)
    save_watermark(warehouse, range_state(index), {
        "plan_id": plan.plan_id, "read": report.read, **outcome,
    }, run_id)
    return report


def finish_ranges(cart_db: Engine, warehouse: Engine, *, run_id: str,
                  guard: DeactivationGuard = DEFAULT_GUARD) -> SyncReport:
    """Deactivate what the plan's ranges did not see, all at once; resolve the quarantine of products
    gone from the source; move the watermark to the plan's start. Raises MassDeactivationRefused, with
    nothing deactivated, resolved or moved, when `guard` refuses the whole reconcile's deactivation."""
    plan = load_plan(warehouse)
    report = SyncReport(mode="full", dry_run=False)
    unseen: list[str] = []
    active = 0
    for id_range in plan.ranges:
        outcome = load_watermark(warehouse, range_state(id_range.index))
        if outcome is None or outcome["plan_id"] != plan.plan_id:
            raise RangePlanError(f"range {id_range.index} of plan {plan.plan_id} has not finished: run it again")
        report.read += outcome["read"]
        active += outcome["active"]
        unseen += outcome["unseen"]
    apply_guard(report, guard, deactivating=len(unseen), active=active)
    report.deactivated = deactivate(cart_db, unseen)
    started_at = datetime.fromisoformat(plan.started_at)
    report.resolved = Quarantine(warehouse, SOURCE, run_id).resolve_unseen_since(started_at)
    report.watermark_before = load_watermark(warehouse, SYNC_NAME)
    # Every range began after the plan: what changed or appeared before it has been read; what
    # changed since, the next incremental sync reads (both components, as a complete pass sets them).
    report.watermark_after = {"created_at": plan.started_at, "updated_at": plan.started_at}
    save_watermark(warehouse, SYNC_NAME, report.watermark_after, run_id)
    return report.finish()


def deactivate(cart_db: Engine, ids: list[str]) -> int:
    """Deactivate these products where they are still active."""
    if not ids:
        return 0
    with cart_db.begin() as conn:
        return conn.execute(sa.text(
            "UPDATE product SET is_active = false, synced_at = now() WHERE is_active AND id = ANY(:ids)"),
            {"ids": ids}).rowcount


def range_of(plan: RangePlan, product_id: str) -> int:
    """The index of the range that covers a product id (hex)."""
    return bisect.bisect_right(plan.split_points, product_id)
