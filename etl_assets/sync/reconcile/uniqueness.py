"""Unique keys: duplicated values of a key, and whether a store enforces the key with a usable unique
index."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pymongo.collection import Collection
from sqlalchemy.engine import Engine

from etl_assets.sync.reconcile.findings import SAMPLE_SIZE, UNREPORTED, Finding, Sample, reported


@dataclass
class DuplicateKeys(Finding):
    """Records that share their key with another record."""

    keys: Sample = field(default_factory=Sample, metadata=reported("duplicated_keys"))
    records: int = field(default=0, metadata=UNREPORTED)

    @property
    def failing(self) -> int:
        return self.records

    @property
    def sample_ids(self) -> list[str]:
        return self.keys.ids


def duplicate_rows(engine: Engine, table: str, column: str) -> DuplicateKeys:
    """Duplicated values of a column, grouped by the server."""
    duplicated = f"SELECT {column} AS key, count(*) AS n FROM {table} GROUP BY {column} HAVING count(*) > 1"  # noqa: S608
    with engine.connect() as conn:
        summary = conn.execute(sa.text(f"SELECT count(*), coalesce(sum(n), 0) FROM ({duplicated}) d")).one()  # noqa: S608
        sample = conn.execute(sa.text(f"SELECT CAST(key AS text) FROM ({duplicated}) d ORDER BY key LIMIT :limit"),  # noqa: S608
                              {"limit": SAMPLE_SIZE}).scalars().all()
    return DuplicateKeys(Sample(summary[0], list(sample)), int(summary[1]))


def duplicate_documents(collection: Collection, key: str | dict[str, Any],
                        match: dict[str, Any] | None = None) -> DuplicateKeys:
    """Duplicated values of a key expression (e.g. "$cartId", or {"$toString": "$_id"}) among the documents
    `match` selects (all by default), grouped by the server."""
    summary = next(collection.aggregate([
        {"$match": match or {}},
        {"$group": {"_id": key, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}},
        {"$sort": {"_id": 1}},
        {"$group": {"_id": None, "keys": {"$sum": 1}, "records": {"$sum": "$n"},
                    "sample": {"$firstN": {"input": "$_id", "n": SAMPLE_SIZE}}}},
    ], allowDiskUse=True), None)
    if summary is None:
        return DuplicateKeys()
    return DuplicateKeys(Sample(summary["keys"], [str(k) for k in summary["sample"]]), summary["records"])


@dataclass
class UniqueKey(Finding):
    """Whether a store enforces a key's uniqueness with a usable unique index on exactly that key. Without
    one, duplicates can appear at any moment (and upserts by the key fail); those already there are counted."""

    key: str
    index: str | None = None  # the enforcing index
    problem: str | None = None  # why none enforces it
    empty: bool = False  # nothing to keep unique yet (a collection the sync has not written)
    duplicates: DuplicateKeys = field(default_factory=DuplicateKeys)

    @property
    def failing(self) -> int:
        return self.duplicates.records

    @property
    def sample_ids(self) -> list[str]:
        return self.duplicates.sample_ids

    @property
    def passed(self) -> bool:
        return (self.index is not None or self.empty) and self.failing == 0


_UNIQUE_INDEXES = sa.text("""
    SELECT CAST(i.indexrelid AS regclass)::text AS name, i.indisvalid AND i.indisready AS usable
    FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = to_regclass(:table) AND a.attname = :column
      AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
    ORDER BY usable DESC, i.indisprimary DESC, name
""")


def unique_key(engine: Engine, table: str, column: str) -> UniqueKey:
    """A PostgreSQL table's key: a valid unique index (the primary key, say) on the column alone. An index
    left invalid by a failed CREATE INDEX CONCURRENTLY enforces nothing."""
    result = UniqueKey(f"{table}({column})")
    with engine.connect() as conn:
        indexes = conn.execute(_UNIQUE_INDEXES, {"table": table, "column": column}).all()
    usable = [index.name for index in indexes if index.usable]
    if usable:
        result.index = usable[0]
        return result
    result.problem = (f"unique index {', '.join(index.name for index in indexes)} is not valid" if indexes
                      else f"no unique index on {result.key}")
    result.duplicates = duplicate_rows(engine, table, column)
    return result


def unique_field_index(collection: Collection, name: str) -> UniqueKey:
    """A MongoDB collection's key: a unique index on the field alone, not partial, so every document counts.
    A collection without documents (before the first sync creates it and its index) has nothing to keep
    unique yet."""
    result = UniqueKey(f"{collection.name}.{name}")
    for index in collection.list_indexes():
        if list(index["key"]) == [name] and index.get("unique") and "partialFilterExpression" not in index:
            result.index = index["name"]
            return result
    result.problem = f"no unique index on {result.key}"
    result.empty = collection.find_one({}, {"_id": 1}) is None
    result.duplicates = duplicate_documents(collection, f"${name}")
    return result
