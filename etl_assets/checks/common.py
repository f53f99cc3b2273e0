"""What every check shares: a measurement from etl_assets/sync/reconcile/ becomes an AssetCheckResult,
and a store that cannot be reached fails the check, naming the store and why, instead of crashing it."""

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import dagster as dg

from etl_assets.sync.reconcile.findings import SAMPLE_SIZE, Finding
from etl_assets.sync.reconcile.tables import DayRange
from etl_assets.sync.stores import StoreUnavailableError

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN
# How many past evaluations are searched for the last one that recorded what a check compares against.
_HISTORY = 10


def _metadata_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return dg.MetadataValue.timestamp(value)
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(value)
    return value


def check_result(finding: Finding, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    """`failing` and `sample_ids` lead the metadata of every check; the finding's own counts follow."""
    return dg.AssetCheckResult(
        passed=finding.passed,
        severity=severity,
        metadata={
            "failing": finding.failing,
            "sample_ids": dg.MetadataValue.json(finding.sample_ids[:SAMPLE_SIZE]),
            **{key: _metadata_value(value) for key, value in finding.details().items()},
        },
    )


def evaluate(
    measure: Callable[[], Finding],
    severity: dg.AssetCheckSeverity,
    severity_of: Callable[[Finding], dg.AssetCheckSeverity] | None = None,
) -> dg.AssetCheckResult:
    """Run a measurement. The resources fail fast with StoreUnavailableError when a store is down; the
    check then fails with that message and `severity`, so the UI says which store and why. `severity_of`,
    when given, grades what was found instead."""
    try:
        finding = measure()
    except StoreUnavailableError as err:
        return dg.AssetCheckResult(
            passed=False,
            severity=severity,
            description=str(err),
            metadata={"store": err.store, "unavailable": err.reason},
        )
    return check_result(finding, severity_of(finding) if severity_of else severity)


def run_days(context: dg.AssetCheckExecutionContext) -> DayRange | None:
    """The days a partitioned run materializes, so a check run with them judges just those days; None
    when the run has no partitions (the validate job), meaning every day."""
    if context.has_partition_key:
        day = date.fromisoformat(context.partition_key)
        return day, day
    if context.has_partition_key_range:
        keys = context.partition_key_range
        return date.fromisoformat(keys.start), date.fromisoformat(keys.end)
    return None


def latest_evaluation_with(context: dg.AssetCheckExecutionContext,
                           metadata_key: str) -> tuple[dg.AssetCheckEvaluation, float] | None:
    """This check's last evaluation whose metadata holds `metadata_key`, kept in the Dagster instance, and
    when it was stored. A planned-only record, or an evaluation without the key (its store was down), is
    passed over."""
    (key,) = context.selected_asset_check_keys
    for record in context.instance.event_log_storage.get_asset_check_execution_history(key, limit=_HISTORY):
        evaluation = record.evaluation
        if isinstance(evaluation, dg.AssetCheckEvaluation) and metadata_key in evaluation.metadata:
            return evaluation, record.event.timestamp
    return None
