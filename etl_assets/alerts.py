"""Alerts about failed runs and failed checks: always one structured log line, optionally a webhook.

The sensors in sensors.py build an `Alert` from what Dagster tells them; everything here is plain data,
so the format is tested without a Dagster instance. Nothing secret leaves: every text is redacted
(credentials in URLs, secret-looking query parameters) and the webhook's own URL is never logged.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg

from etl_assets.settings import ALERT_WEBHOOK_URL_ENV, AutomationSettings

LOG_PREFIX = "shop-sync alert "
MAX_SUMMARY_CHARS = 500
MAX_LISTED_CHECKS = 20

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
