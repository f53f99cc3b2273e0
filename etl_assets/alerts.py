"""Alerts about failed runs and failed checks: always one structured log line, optionally a webhook.

The alert sensors at the end (alert_on_run_failure, alert_on_failed_checks) build an `Alert` from what
Dagster tells them. They are always running, whatever SHOP_SYNC_AUTOMATION_DEFAULT says: a failure must
never go unnoticed. An `Alert` is plain data, so the format is tested without a Dagster instance.
Nothing secret leaves: every text is redacted (credentials in URLs, secret-looking query parameters)
and the webhook's own URL is never logged.
"""

# No `from __future__ import annotations`: Dagster reads the sensors' resource annotations at runtime.
import json
import logging
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg

from etl_assets.jobs import WILL_RETRY_TAG
from etl_assets.settings import ALERT_WEBHOOK_URL_ENV, SETTINGS, AutomationSettings

LOG_PREFIX = "shop-sync alert "
MAX_SUMMARY_CHARS = 500
MAX_LISTED_CHECKS = 20
# Dagster's own errors around the user code's error: a step error names the innermost other one.
_DAGSTER_WRAPPERS = ("Dagster", "RetryRequested")

# scheme://user:password@host or scheme://token@host: everything between :// and @ is credentials.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@'\"]+@")
_SECRET_PARAMETER = re.compile(
    r"(?i)(?P<name>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|signature|sig))"
    r"(?P<sep>\s*[=:]\s*)[^\s&;,'\"]+"
)


def redact(text: str) -> str:
    """The text with URL credentials and secret-looking parameters replaced by ***."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SECRET_PARAMETER.sub(r"\g<name>\g<sep>***", text)


def summarize(error: str) -> str:
    """The first non-empty line of an error, redacted and cut to a readable length."""
    first = next((line.strip() for line in error.splitlines() if line.strip()), "no error message")
    first = redact(first)
    return first if len(first) <= MAX_SUMMARY_CHARS else f"{first[:MAX_SUMMARY_CHARS]}…"


@dataclass(frozen=True)
class FailedCheck:
    asset: str
    check: str
    description: str | None = None


@dataclass(frozen=True)
class Alert:
    kind: Literal["run_failure", "check_failure"]
    run_id: str
    job: str
    assets: tuple[str, ...]
    summary: str
    failed_steps: tuple[str, ...] = ()
    failed_checks: tuple[FailedCheck, ...] = ()
    # A failed run that the instance retries (run_retries); the retry's own failure alerts again.
    will_retry: bool = False
    run_url: str | None = None
    # The code location that launched the run (`shop-sync`); None for a run executed in its own process.
    code_location: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def payload(self) -> dict[str, Any]:
        """The alert as JSON-ready data; every free text in it is redacted."""
        return {
            "alert": self.kind,
            "severity": "error",
            "run_id": self.run_id,
            "job": self.job,
            "assets": list(self.assets),
            "summary": summarize(self.summary),
            "failed_steps": list(self.failed_steps),
            "failed_checks": [
                {"asset": c.asset, "check": c.check,
                 "description": summarize(c.description) if c.description else None}
                for c in self.failed_checks[:MAX_LISTED_CHECKS]
            ],
            "will_retry": self.will_retry,
            "run_url": self.run_url,
            "code_location": self.code_location,
            "occurred_at": self.occurred_at.isoformat(),
        }

    def log_line(self) -> str:
        return LOG_PREFIX + json.dumps(self.payload(), sort_keys=True)

    def text(self) -> str:
        """One line for a chat channel."""
        what = "failed" if self.kind == "run_failure" else "finished with failed checks"
        retry = " (will retry)" if self.will_retry else ""
        link = f" {self.run_url}" if self.run_url else ""
        return f"shop-sync: {self.job} {what}{retry}, run {self.run_id[:8]}: {summarize(self.summary)}{link}"


class AlertWebhookResource(dg.ConfigurableResource):
    """Where alerts are posted (a Slack-style incoming webhook: JSON with a `text` field, plus the
    structured `alert`). Without a URL alerts are only logged."""

    url: str | None = None
    timeout_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def post(self, alert: Alert) -> None:
        body = json.dumps({"text": alert.text(), "alert": alert.payload()}).encode()
        request = urllib.request.Request(
            self.url or "", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()


def alert_webhook_resource(settings: AutomationSettings) -> AlertWebhookResource:
    """The webhook resource, its URL read through EnvVar when ALERT_WEBHOOK_URL is set."""
    if settings.alert_webhook_configured:
        return AlertWebhookResource(url=dg.EnvVar(ALERT_WEBHOOK_URL_ENV))
    return AlertWebhookResource()


def deliver(alert: Alert, webhook: AlertWebhookResource, log: logging.Logger) -> None:
    """Log the alert, then post it if a webhook is configured. A webhook that fails is logged and
    not retried: the log line is the alert's durable record, and a dead webhook must not stop alerts."""
    log.error(alert.log_line())
    if not webhook.enabled:
        return
    try:
        webhook.post(alert)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or getattr(err, "code", None) or type(err).__name__
        log.warning(f"alert webhook delivery failed for run {alert.run_id}: {redact(str(reason))}")


def failed_error_checks(instance: dg.DagsterInstance, run_id: str) -> tuple[FailedCheck, ...]:
    """The ERROR-severity checks that failed in a run."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = (record.event_log_entry.dagster_event.asset_check_evaluation_data for record in records)
    return tuple(
        FailedCheck(e.asset_key.to_user_string(), e.check_name, e.description)
        for e in evaluations
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    )


def run_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, ...]:
    """The assets a run planned to materialize or check (a whole asset job's run selects none itself)."""
    planned = instance.get_asset_keys_for_run(run.run_id, of_type={
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED})
    return tuple(sorted(key.to_user_string() for key in {*planned, *(run.asset_selection or ())}))


def _run_url(run_id: str) -> str | None:
    return f"{SETTINGS.ui_base_url}/runs/{run_id}" if SETTINGS.ui_base_url else None


def _code_location(run: dg.DagsterRun) -> str | None:
    return run.remote_job_origin.location_name if run.remote_job_origin else None


def step_error(event: dg.DagsterEvent) -> str | None:
    """The error a step failed with: the user code's own error, not Dagster's wrapper around it (a
    step that used up its retries fails with RetryRequestedFromPolicy caused by the last error)."""
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cause and error.cls_name and error.cls_name.startswith(_DAGSTER_WRAPPERS):
        error = error.cause
    if error is None:
        return None
    # The message starts with the exception's dotted path; the class name is enough for a reader.
    qualified, _, text = error.message.partition(": ")
    if text and error.cls_name and qualified.endswith(error.cls_name):
        return f"{error.cls_name}: {text}"
    return error.message


@dg.run_failure_sensor(
    minimum_interval_seconds=SETTINGS.alert_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts on every failed run of this code location (syncs, validation, warehouse builds).",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alert_webhook: AlertWebhookResource):
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    errors = [error for error in map(step_error, step_failures) if error]
    alert = Alert(
        kind="run_failure",
        run_id=run.run_id,
        job=run.job_name,
        assets=run_assets(context.instance, run),
        summary=errors[0] if errors else (context.failure_event.message or "the run failed"),
        failed_steps=tuple(event.step_key for event in step_failures if event.step_key),
        failed_checks=failed_error_checks(context.instance, run.run_id),
        will_retry=run.tags.get(WILL_RETRY_TAG) == "true",
        run_url=_run_url(run.run_id),
        code_location=_code_location(run),
    )
    deliver(alert, alert_webhook, context.log)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=SETTINGS.alert_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when a run succeeded but an ERROR-severity asset check in it failed (failed runs "
    "are reported, with their failed checks, by alert_on_run_failure).",
)
def alert_on_failed_checks(context: dg.RunStatusSensorContext, alert_webhook: AlertWebhookResource):
    run = context.dagster_run
    failed = failed_error_checks(context.instance, run.run_id)
    if not failed:
        return dg.SkipReason(f"run {run.run_id} failed no ERROR-severity check")
    names = ", ".join(f"{check.asset}:{check.check}" for check in failed[:5])
    alert = Alert(
        kind="check_failure",
        run_id=run.run_id,
        job=run.job_name,
        assets=run_assets(context.instance, run),
        summary=f"{len(failed)} ERROR-severity check(s) failed: {names}",
        failed_checks=failed,
        run_url=_run_url(run.run_id),
        code_location=_code_location(run),
    )
    deliver(alert, alert_webhook, context.log)


alert_sensors = [alert_on_run_failure, alert_on_failed_checks]
