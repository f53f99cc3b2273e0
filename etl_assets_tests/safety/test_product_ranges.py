"""A full sync fanned out over N `_id` ranges leaves the copy the unsplit sync leaves (ids, content hashes,
active flags), also when one range's process is SIGKILLed and that range is run again."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from bson import ObjectId

from etl_assets.settings import SETTINGS
from etl_assets.sync import product_ranges
from etl_assets.sync.guard import DeactivationGuard, MassDeactivationRefused
from etl_assets.sync.product_ranges import RangePlanError, finish_ranges, plan_ranges, sync_range
from etl_assets.sync.products import SYNC_NAME, sync_products
from etl_assets.sync.state import load_watermark
from etl_assets_tests.safety.convergence import (
    PRODUCTS_GONE,
    catalog_truth,
    product_problems,
    reset_product_copy,
    seed_catalog,
)
from etl_assets_tests.safety.test_crash_safety import KILL_SEED, run_and_kill

PRODUCTS, BATCH = 3_000, 250
NOT_AN_OBJECT_ID = "legacy-import-7"  # an _id only the first range reads: it must still be quarantined


def seed(stores) -> None:
    seed_catalog(stores.product_db, PRODUCTS)
    stores.product_db["products"].insert_one({"_id": NOT_AN_OBJECT_ID, "title": "no ObjectId", "image": "i",
                                              "price": 1.0})


def copy_state(cart_db: sa.Engine) -> dict[str, tuple[str, bool]]:
    with cart_db.connect() as conn:
        return {row.id: (row.content_hash, row.is_active)
                for row in conn.execute(sa.text("SELECT id, content_hash, is_active FROM product"))}


def unsplit(stores) -> tuple[dict[str, tuple[str, bool]], int]:
    """The copy the unsplit full sync leaves, from the same start, and how many rows it deactivated."""
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS)
    report = sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine, mode="full",
                           batch_size=BATCH, run_id="unsplit")
    assert not product_problems(catalog_truth(stores.product_db), stores.cart_engine, stores.warehouse_engine)
    return copy_state(stores.cart_engine), report.deactivated


def plan(stores, ranges: int) -> product_ranges.RangePlan:
    return plan_ranges(stores.product_db, stores.warehouse_engine, ranges, run_id=f"plan-{ranges}",
                       started_at=datetime.now(UTC))


def run_range(stores, index: int) -> None:
    sync_range(stores.product_db, stores.cart_engine, stores.warehouse_engine, index, run_id=f"range-{index}",
               batch_size=BATCH)


def gone_still_active(cart_db: sa.Engine) -> int:
    with cart_db.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM product WHERE is_active AND id LIKE 'fade%'")).scalar_one()


def test_ranges_split_the_catalog_into_disjoint_parts_that_cover_it(stores):
    seed(stores)
    ranges = plan(stores, 4).ranges
    assert len(ranges) == 4
    products = stores.product_db["products"]
    counts = [products.count_documents(r.source_filter()) for r in ranges]
    assert sum(counts) == PRODUCTS + 1, counts  # every document in exactly one range
    assert min(counts) > PRODUCTS / 4 / 2, counts  # sampled split points: roughly even
    assert products.count_documents({"$and": [ranges[0].source_filter(), {"_id": NOT_AN_OBJECT_ID}]}) == 1
    saved = product_ranges.load_plan(stores.warehouse_engine)
    for n in range(0, PRODUCTS, 97):  # a copy id and its source document fall in the same range
        hex_id = str(ObjectId(f"{n:024x}"))
        index = product_ranges.range_of(saved, hex_id)
        assert products.count_documents({"$and": [ranges[index].source_filter(), {"_id": ObjectId(hex_id)}]}) == 1


@pytest.mark.parametrize("ranges", [1, 2, 4])
def test_n_ranges_leave_the_copy_the_unsplit_sync_leaves(stores, ranges):
    seed(stores)
    expected, deactivated = unsplit(stores)
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS)
    plan(stores, ranges)
    for index in reversed(range(ranges)):  # any order: each range deactivates nothing by itself
        run_range(stores, index)
        assert gone_still_active(stores.cart_engine) == PRODUCTS_GONE
    report = finish_ranges(stores.cart_engine, stores.warehouse_engine, run_id="finish")
    assert report.deactivated == deactivated >= PRODUCTS_GONE and report.read == PRODUCTS + 1
    assert copy_state(stores.cart_engine) == expected
    assert not product_problems(catalog_truth(stores.product_db), stores.cart_engine, stores.warehouse_engine)


@pytest.mark.parametrize("ranges", [2, 4])
def test_a_range_killed_mid_pass_is_run_again_and_the_copy_converges(stores, ranges):
    """kill -9 of one range's process: finishing refuses (nothing is deactivated) until that range has
    run again; then the copy is the unsplit sync's."""
    seed(stores)
    expected, _ = unsplit(stores)
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS)
    plan(stores, ranges)
    rng = random.Random(KILL_SEED + ranges)
    victim = rng.randrange(ranges)
    for index in range(ranges):
        if index != victim:
            run_range(stores, index)
    # A range holds at least half its even share, so it has two or more batches: hold after one.
    kill = run_and_kill(f"range:{victim}", stores.env(), BATCH, position=1, batch_seconds=0.0, hold=True)
    assert not kill.finished_first, kill
    with pytest.raises(RangePlanError, match=f"range {victim} .* has not finished"):
        finish_ranges(stores.cart_engine, stores.warehouse_engine, run_id="finish-too-early")
    assert gone_still_active(stores.cart_engine) == PRODUCTS_GONE
    run_range(stores, victim)
    finish_ranges(stores.cart_engine, stores.warehouse_engine, run_id="finish")
    assert copy_state(stores.cart_engine) == expected
    assert not product_problems(catalog_truth(stores.product_db), stores.cart_engine, stores.warehouse_engine)


def test_a_range_of_an_earlier_plan_does_not_count(stores):
    seed(stores)
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS)
    plan(stores, 2)
    run_range(stores, 0)
    run_range(stores, 1)
    plan(stores, 2)  # a new reconcile began: the old outcomes may describe another catalog
    run_range(stores, 0)
    with pytest.raises(RangePlanError, match="range 1"):
        finish_ranges(stores.cart_engine, stores.warehouse_engine, run_id="finish")
    assert gone_still_active(stores.cart_engine) == PRODUCTS_GONE


def test_fanout_job_syncs_every_range_and_materializes_the_copy(stores, monkeypatch):
    """The job as the code location defines it (SHOP_SYNC_PRODUCT_SYNC_RANGES, 2 by default), in process."""
    from etl_assets.definitions import defs

    for name, value in stores.env().items():
        monkeypatch.setenv(name, value)
    seed(stores)
    expected, _ = unsplit(stores)
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS)
    job = defs.resolve_job_def("product_sync_fanout")
    result = job.execute_in_process(run_config={"ops": {
        f"sync_product_range_{i}": {"config": {"batch_size": BATCH}} for i in range(SETTINGS.product_sync_ranges)}})
    assert result.success
    (materialization,) = result.asset_materializations_for_node("finish_product_ranges")
    assert materialization.asset_key.to_user_string() == "cart_db/product"
    assert materialization.metadata["ranges"].value == SETTINGS.product_sync_ranges
    assert materialization.metadata["dagster/row_count"].value == sum(active for _, active in expected.values())
    assert copy_state(stores.cart_engine) == expected


def test_finishing_applies_the_mass_deactivation_guard_to_the_whole_reconcile(stores):
    """Each range deactivates nothing by itself; the guard judges what all of them did not see, at once."""
    seed(stores)
    reset_product_copy(stores.cart_engine, stores.warehouse_engine, PRODUCTS)
    plan(stores, 2)
    run_range(stores, 0)
    run_range(stores, 1)
    finish_ranges(stores.cart_engine, stores.warehouse_engine, run_id="finish")
    stores.product_db["products"].delete_many({"_id": {"$type": "objectId", "$lt": ObjectId(f"{1000:024x}")}})
    before, watermark = copy_state(stores.cart_engine), load_watermark(stores.warehouse_engine, SYNC_NAME)

    plan(stores, 2)
    run_range(stores, 0)
    run_range(stores, 1)
    with pytest.raises(MassDeactivationRefused, match=r"refused to deactivate \d+ of \d+ active products") as refused:
        finish_ranges(stores.cart_engine, stores.warehouse_engine, run_id="finish-refused")
    assert refused.value.deactivating > refused.value.limit
    assert copy_state(stores.cart_engine) == before
    assert load_watermark(stores.warehouse_engine, SYNC_NAME) == watermark

    allowed = finish_ranges(stores.cart_engine, stores.warehouse_engine, run_id="finish-allowed",
                            guard=DeactivationGuard(allow_mass_deactivation=True))
    assert (allowed.deactivated, allowed.mass_deactivation_allowed) == (refused.value.deactivating, True)
