"""Bad input: every kind in bad_input_corpus lands verbatim or is quarantined with a readable reason,
and the valid records plus the quarantined ones are exactly the source, run after run."""

import json
from typing import Any

import sqlalchemy as sa

from etl_assets.sync.carts import READ_AT, build_snapshot, sync_carts
from etl_assets.sync.carts import SOURCE as CART_SOURCE
from etl_assets.sync.product_transform import flatten_product, record_id, row_hashes
from etl_assets.sync.products import SOURCE as PRODUCT_SOURCE
from etl_assets.sync.products import sync_products
from etl_assets_tests.safety.bad_input_corpus import (
    CART_KINDS,
    INJECTION,
    INJECTION_TEXTS,
    PRODUCT_KINDS,
    UNICODE_TEXTS,
    cart_rows,
    product_documents,
)

# Small batches, so valid and invalid records share batches and a bad one cannot sink its neighbours.
BATCH_SIZE = 7
PRODUCT_COLUMNS = ("title", "image", "price", "seller_id", "category", "description", "rating", "quantity",
                   "source_updated_at")


def open_quarantine(warehouse: sa.Engine, source: str) -> dict[str, dict[str, Any]]:
    with warehouse.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT record_id, reason, payload FROM etl_quarantine
            WHERE source = :source AND resolved_at IS NULL
        """), {"source": source})
        return {r.record_id: {"reason": r.reason, "payload": r.payload} for r in rows}


def product_copy(cart_db: sa.Engine) -> dict[str, dict[str, Any]]:
    with cart_db.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(sa.text("SELECT * FROM product"))}


def stored_content(row: dict[str, Any]) -> dict[str, Any]:
    """A copy row in flatten_product's shape, so the hash can be recomputed from what was stored."""
    return {
        **{column: row[column] for column in PRODUCT_COLUMNS},
        "price": float(row["price"]), "rating": float(row["rating"]),
        "tags_json": json.dumps(row["tags"], ensure_ascii=False),
    }


def invalid_record_problems(kind, rid, quarantine: dict, *, written_as: str | None) -> list[str]:
    """An invalid record of `kind` must not be written (`written_as` says how it was, if it was) and must be
    quarantined for its kind's reason."""
    if written_as is not None:
        return [f"{kind.name}: invalid, yet {written_as}"]
    if rid not in quarantine:
        return [f"{kind.name}: invalid, yet not quarantined"]
    reason = quarantine[rid]["reason"]
    return [] if kind.reason in reason else [f"{kind.name}: reason {reason!r} lacks {kind.reason!r}"]


def product_problems(kind, doc: dict, copy: dict, quarantine: dict) -> list[str]:
    rid = record_id(doc)
    if kind.reason is not None:
        return invalid_record_problems(kind, rid, quarantine, written_as="in the copy" if rid in copy else None)
    if rid not in copy:
        return [f"{kind.name}: valid, yet not in the copy (quarantine says {quarantine.get(rid)})"]
    expected, row = flatten_product(doc), copy[rid]
    stored = stored_content(row)
    problems = [f"{kind.name}: {column} stored as {stored[column]!r:.80}, source has {expected[column]!r:.80}"
                for column in (*PRODUCT_COLUMNS, "tags_json") if stored[column] != expected[column]]
    if row_hashes([expected, stored]) != [row["content_hash"]] * 2:
        problems.append(f"{kind.name}: content hash differs from the source's")
    if not row["is_active"]:
        problems.append(f"{kind.name}: stored inactive")
    return problems


def test_every_bad_product_is_quarantined_and_every_valid_one_stored_verbatim(stores):
    documents = product_documents()
    stores.product_db["products"].insert_many([doc for _, doc in documents])

    report = sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine,
                           mode="full", batch_size=BATCH_SIZE, run_id="bad-input-1")

    copy = product_copy(stores.cart_engine)
    quarantine = open_quarantine(stores.warehouse_engine, PRODUCT_SOURCE)
    problems = [p for kind, doc in documents for p in product_problems(kind, doc, copy, quarantine)]
    assert not problems, "\n".join(problems)
    source_ids = {record_id(doc) for _, doc in documents}
    assert len(source_ids) == len(documents) == len(PRODUCT_KINDS)
    assert set(copy).isdisjoint(quarantine) and set(copy) | set(quarantine) == source_ids
    assert (report.read, report.quarantined) == (len(documents), len(quarantine))
    assert len(quarantine) > 30

    by_kind = {kind.name: doc for kind, doc in documents}
    injected = copy[record_id(by_kind["SQL injection text"])]
    assert (injected["title"], injected["description"], injected["seller_id"], injected["tags"]) == (
        INJECTION, INJECTION_TEXTS["description"], INJECTION_TEXTS["sellerId"], INJECTION_TEXTS["tags"])
    emoji = copy[record_id(by_kind["unicode and emoji"])]
    assert (emoji["title"], emoji["description"], emoji["tags"]) == (
        UNICODE_TEXTS["title"], UNICODE_TEXTS["description"], UNICODE_TEXTS["tags"])
    # NUL cannot be stored, so the quarantine keeps it as the visible text \u0000.
    nul_title = quarantine[record_id(by_kind["NUL byte in title"])]["payload"]["title"]
    assert nul_title == "nul\\u0000title"
    literal = quarantine[record_id(by_kind["literal \\u0000 text in an invalid document"])]["payload"]
    assert literal["title"] == "\\u0000"

    again = sync_products(stores.product_db, stores.cart_engine, stores.warehouse_engine,
                          mode="full", batch_size=BATCH_SIZE, run_id="bad-input-2")
    assert (again.inserted, again.updated, again.deactivated, again.resolved) == (0, 0, 0, 0)
    assert again.quarantined == report.quarantined
    assert open_quarantine(stores.warehouse_engine, PRODUCT_SOURCE).keys() == quarantine.keys()


# ---------- carts ----------

_INSERT_PRODUCT = sa.text("""
    INSERT INTO product (id, title, price, image, seller_id, quantity, content_hash, is_active, synced_at)
    VALUES (:id, :title, :price, :image, :seller_id, :quantity, :hash, :is_active, now() - interval '1 day')
""")
_INSERT_CART = sa.text("""
    INSERT INTO cart (id, user_id, product_id, quantity, version, created_at, updated_at)
    VALUES (:id, :user_id, :product_id, :quantity, :version, :created_at, :updated_at)
""")
_JOINED = sa.text("""
    SELECT c.id::text AS cart_id, c.user_id, c.product_id, c.quantity, c.version, c.created_at, c.updated_at,
           p.title AS product_title, p.price AS product_price, p.image AS product_image, p.seller_id,
           p.quantity AS product_quantity, now() AS read_at
    FROM cart c JOIN product p ON p.id = c.product_id
    WHERE c.id::text = ANY(:ids)
""")


def seed_carts(cart_db: sa.Engine, rows) -> None:
    with cart_db.begin() as conn:
        # A cart whose product is gone is legacy data the foreign key no longer allows; a replica-role
        # session inserts it the way such rows got there.
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for _, cart, product in rows:
            if product:
                conn.execute(_INSERT_PRODUCT, {**product, "hash": "0" * 32})
            conn.execute(_INSERT_CART, cart)


def apply_later_changes(cart_db: sa.Engine, rows) -> None:
    with cart_db.begin() as conn:
        for kind, cart, _ in rows:
            if kind.later:
                assignments = ", ".join(f"{column} = :{column}" for column in kind.later)
                conn.execute(sa.text(f"UPDATE cart SET {assignments}, updated_at = now() WHERE id = :id"),  # noqa: S608
                             {"id": cart["id"], **kind.later})


def cart_problems(kind, cart: dict, snapshots: dict, expected: dict, quarantine: dict) -> list[str]:
    cid = cart["id"]
    if kind.reason is not None:
        return invalid_record_problems(kind, cid, quarantine, written_as="snapshotted" if cid in snapshots else None)
    if snapshots.get(cid) != expected[cid]:
        return [f"{kind.name}: snapshot {snapshots.get(cid)} != {expected[cid]}"]
    return []


def test_every_bad_cart_is_quarantined_and_every_valid_one_snapshotted(stores):
    rows = cart_rows()
    seed_carts(stores.cart_engine, rows)
    first = sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine,
                       mode="full", batch_size=4, run_id="bad-carts-1")
    apply_later_changes(stores.cart_engine, rows)

    second = sync_carts(stores.cart_engine, stores.order_db, stores.warehouse_engine,
                        mode="incremental", batch_size=4, run_id="bad-carts-2")

    valid_ids = [cart["id"] for kind, cart, _ in rows if kind.reason is None]
    with stores.cart_engine.connect() as conn:
        # When each snapshot's row was read is the sync's own bookkeeping, not content.
        expected = {r.cart_id: build_snapshot(r._asdict()) for r in conn.execute(_JOINED, {"ids": valid_ids})}
        expected = {cid: {k: v for k, v in snap.items() if k != READ_AT} for cid, snap in expected.items()}
    documents = list(stores.order_db["carts"].find({}, {"_id": 0, READ_AT: 0}))
    snapshots = {doc["cartId"]: doc for doc in documents}
    quarantine = open_quarantine(stores.warehouse_engine, CART_SOURCE)
    problems = [problem for kind, cart, _ in rows
                for problem in cart_problems(kind, cart, snapshots, expected, quarantine)]
    assert not problems, "\n".join(problems)
    assert len(documents) == len(snapshots)
    assert set(snapshots).isdisjoint(quarantine)
    assert set(snapshots) | set(quarantine) == {cart["id"] for _, cart, _ in rows}
    assert (first.read, first.quarantined) == (len(CART_KINDS), len(quarantine))
    by_kind = {kind.name: cart for kind, cart, _ in rows}
    assert (second.stale_skipped, second.version_reset_ids) == (0, [by_kind["version going backwards"]["id"]])
    for name in ("SQL injection user id", "unicode and emoji user id"):
        assert snapshots[by_kind[name]["id"]]["userId"] == by_kind[name]["user_id"]
