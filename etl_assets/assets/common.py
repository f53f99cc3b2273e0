"""What every sync asset shares: its run config, its retry policy and how a report becomes metadata."""

from __future__ import annotations

from typing import Literal

import dagster as dg

from etl_assets.sync.report import SyncReport

# Store-touching steps retry with exponential backoff and jitter; a dead store fails fast (timeouts)
# and the retry starts from the persisted watermark, so it converges. Delays are 3·(2^n − 1) s ± 3 s:
# about 0–6 s, 6–12 s, 18–24 s, so a restarting store gets half a minute before the step fails.
STORE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=3, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


class SyncConfig(dg.Config):
    """Run config of a sync asset."""

    mode: Literal["incremental", "full"] = "incremental"
    dry_run: bool = False
    batch_size: int = 5000


def report_metadata(report: SyncReport) -> dict[str, dg.RawMetadataValue]:
    """The report as materialization metadata, with the UI's standard row count."""
    data = report.as_dict()
    written = report.inserted + report.updated + report.deactivated
    return {
        **{key: value for key, value in data.items() if value is not None},
        "written": written,
        "dagster/row_count": report.read - report.quarantined,
    }
