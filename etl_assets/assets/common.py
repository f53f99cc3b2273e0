"""What the assets share: the sync run config and retry policy, how a report and the quarantine become
metadata, and how a source collection is observed."""

from __future__ import annotations

from datetime import date

import dagster as dg
import sqlalchemy as sa
from pymongo.collection import Collection
from sqlalchemy.engine import Engine

from etl_assets.sync.modes import Mode
from etl_assets.sync.quarantine import open_count, open_rejections
from etl_assets.sync.report import SyncReport
from etl_assets.sync.stores import collection_fingerprint

QUARANTINE_SAMPLE = 10  # open quarantine rows a materialization quotes

# Store-touching steps retry with exponential backoff and jitter; a dead store fails fast (timeouts)
# and the retry starts from the persisted watermark, so it converges. Delays are 3·(2^n − 1) s ± 3 s:
# about 0–6 s, 6–12 s, 18–24 s, so a restarting store gets half a minute before the step fails.
STORE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=3, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


class SyncConfig(dg.Config):
    """Run config of a sync asset."""

    mode: Mode = "incremental"
    dry_run: bool = False
    batch_size: int = 5000


def report_metadata(report: SyncReport) -> dict[str, dg.RawMetadataValue]:
    """The report as materialization metadata. `rows_processed` is what the run handled (read and
    valid); the UI's `dagster/row_count` is the rows the table holds, which each asset adds itself."""
    data = report.as_dict()
    return {
        **{key: value for key, value in data.items() if value is not None},
        "written": report.written,
        "rows_processed": report.read - report.quarantined,
    }


def partition_row_count(warehouse: Engine, table: str, day_column: str, day: date) -> int:
    """The rows a daily partition of a warehouse table holds after its load: its `dagster/row_count`."""
    with warehouse.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {day_column} = :day"),  # noqa: S608
                            {"day": day}).scalar_one()


def quarantine_metadata(warehouse: Engine, source: str) -> dict[str, dg.RawMetadataValue]:
    """How many records of `source` wait in quarantine, and the newest of them with their reasons."""
    rows = open_rejections(warehouse, source, QUARANTINE_SAMPLE)
    return {
        "quarantine_open": open_count(warehouse, source),
        "quarantine_sample": dg.MetadataValue.md(
            "\n".join(f"- `{r['record_id']}`: {r['reason']}" for r in rows) or "none"),
    }


def observe_collection(collection: Collection, date_field: str) -> dg.ObserveResult:
    """A source collection's observation: its data version changes when a document is added or removed,
    or a newer `date_field` appears."""
    count, newest = collection_fingerprint(collection, date_field)
    newest_text = newest.isoformat() if newest else "none"
    return dg.ObserveResult(
        data_version=dg.DataVersion(f"{count}@{newest_text}"),
        metadata={"dagster/row_count": count, f"newest_{date_field}": newest_text},
    )
