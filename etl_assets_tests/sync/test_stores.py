"""Store helpers against the real servers."""

from datetime import UTC, datetime

from etl_assets.sync.stores import collection_fingerprint


def test_the_fingerprint_counts_documents_and_finds_the_newest_date(stores) -> None:
    orders = stores.order_db.orders
    assert collection_fingerprint(orders, "createdAt") == (0, None)
    newest = datetime(2025, 3, 10, 5, tzinfo=UTC)
    orders.insert_many([{"createdAt": datetime(2025, 3, 10, 1, tzinfo=UTC)}, {"createdAt": newest},
                        {"note": "no date"}, {"createdAt": "2030-01-01"}])
    assert collection_fingerprint(orders, "createdAt") == (4, newest)
