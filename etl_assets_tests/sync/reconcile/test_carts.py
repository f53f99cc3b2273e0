"""The carts against their snapshots, against real stores: each snapshot missing, stale, with a wrong total
or without its cart is counted and named until the cart sync fixes it."""

import pymongo
from bson import Decimal128

from etl_assets.sync.reconcile.carts import reconcile_carts
from etl_assets_tests.checks.seed import (
    add_cart,
    execute,
    seed_catalog,
    snapshot_carts,
    sync_cart_snapshots,
    sync_catalog,
)
from etl_assets_tests.sync.test_products import FindCommands


def test_cart_snapshots_missing_stale_or_with_a_wrong_total(stores):
    seed_catalog(stores, 3)
    sync_catalog(stores)
    carts = [add_cart(stores, n, product=1 + n % 3) for n in range(1, 7)]
    add_cart(stores, 7, product=1, quantity=0)  # quarantined by the sync: no snapshot expected
    sync_cart_snapshots(stores)
    assert reconcile_carts(stores.cart_engine, stores.order_db, batch_size=4).passed

    stores.order_db.carts.delete_one({"cartId": carts[0]})
    execute(stores.cart_engine, "UPDATE cart SET version = 2, quantity = 5 WHERE id = :id", id=carts[1])
    stores.order_db.carts.update_one({"cartId": carts[2]}, {"$set": {"total": 1.0}})
    stores.order_db.carts.update_one({"cartId": carts[3]}, {"$set": {"total": Decimal128("26.00")}})
    result = reconcile_carts(stores.cart_engine, stores.order_db, batch_size=4)
    assert (result.carts, result.expected_snapshots) == (7, 6)
    assert (result.missing.count, result.missing.ids) == (1, [carts[0]])
    assert (result.stale.count, result.stale.ids) == (1, [carts[1]])
    assert (result.wrong_total.count, result.wrong_total.ids) == (2, [carts[2], carts[3]])
    assert result.failing == 4 and result.sample_ids == carts[:4]

    sync_cart_snapshots(stores)
    assert reconcile_carts(stores.cart_engine, stores.order_db, batch_size=4).passed


def test_snapshots_without_a_cart_are_counted_apart_and_fail_until_the_sync_marks_them(stores):
    carts = snapshot_carts(stores, 5)
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = ANY(CAST(:ids AS uuid[]))", ids=carts[:2])

    result = reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)

    assert not result.passed
    assert (result.without_cart.count, result.without_cart.ids) == (2, carts[:2])
    assert (result.missing.count, result.stale.count, result.marked_deleted) == (0, 0, 0)
    assert result.sample_ids == carts[:2]
    details = result.details()
    assert (details["without_cart"], details["without_cart_ids"]) == (2, carts[:2])

    sync_cart_snapshots(stores)  # marks both
    result = reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)
    assert result.passed and (result.without_cart.count, result.marked_deleted) == (0, 2)

    # A marked snapshot of a cart that came back is no snapshot: missing until the sync clears the mark.
    add_cart(stores, 1, product=1)
    result = reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)
    assert (result.missing.count, result.missing.ids, result.without_cart.count) == (1, [carts[0]], 0)
    sync_cart_snapshots(stores)
    result = reconcile_carts(stores.cart_engine, stores.order_db, batch_size=2)
    assert result.passed and result.marked_deleted == 1


def test_cart_reconciliation_reads_the_snapshots_once_as_cartid_ranges(stores):
    """The stored snapshots are read in one pass, as a full cart sync reads them: each page's range of the
    cartId index from the previous page's end (a `$in` of a whole page costs some servers a scan per page,
    secantusdb 50× a range), then only the keys past the last page. Snapshots without a cart are found
    wherever they fall: inside a page, between two pages, past the last one."""
    seed_catalog(stores, 2)
    sync_catalog(stores)
    carts = sorted(add_cart(stores, n, product=1 + n % 2) for n in range(1, 10))
    sync_cart_snapshots(stores)
    gone = [carts[1], carts[4], carts[8]]  # inside the first page, the first of the second, the last cart
    execute(stores.cart_engine, "DELETE FROM cart WHERE id = ANY(CAST(:ids AS uuid[]))", ids=gone)
    listener = FindCommands()
    client = pymongo.MongoClient(stores.env()["ORDER_MONGO_URI"], event_listeners=[listener])
    try:
        result = reconcile_carts(stores.cart_engine, client[stores.order_db.name], batch_size=4)
    finally:
        client.close()
    assert (result.without_cart.count, result.without_cart.ids) == (3, gone)
    assert (result.carts, result.missing.count, result.stale.count) == (6, 0, 0)
    reads = [find["filter"] for find in listener.finds if find["find"] == "carts" and "cartId" in find["filter"]]
    # 6 carts in pages of 4: two page ranges, then the keys after the last cart read.
    assert [sorted(read["cartId"]) for read in reads] == [["$lte"], ["$gt", "$lte"], ["$gt"]], reads
    assert reads[1]["cartId"]["$gt"] == reads[0]["cartId"]["$lte"]
    assert reads[2]["cartId"]["$gt"] == reads[1]["cartId"]["$lte"] < carts[8]
