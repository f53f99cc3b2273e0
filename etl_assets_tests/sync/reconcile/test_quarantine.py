"""A sync's quarantine as the check sees it: open now, and new since the last look."""

from etl_assets.sync.products import SOURCE as PRODUCTS_SOURCE
from etl_assets.sync.quarantine import Quarantine, Rejection
from etl_assets.sync.reconcile.quarantine import quarantine_status


def test_quarantine_counts_what_is_open_and_what_is_new_since_the_last_look(stores):
    quarantine = Quarantine(stores.warehouse_engine, PRODUCTS_SOURCE, "run-1")
    quarantine.put([Rejection("a", "price: below 0", {}), Rejection("b", "title: missing", {})])
    first = quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, None)
    assert (first.open, first.failing, sorted(first.sample_ids)) == (2, 2, ["a", "b"])

    quarantine.put([Rejection("b", "title: still missing", {}), Rejection("c", "tags: not a list", {})])
    quarantine.resolve(["a"])
    second = quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, first.as_of)
    assert (second.open, second.failing, second.sample_ids) == (2, 1, ["c"])
    assert second.reasons == ["c: tags: not a list"]

    third = quarantine_status(stores.warehouse_engine, PRODUCTS_SOURCE, second.as_of)
    assert (third.open, third.passed) == (2, True)
