"""The benchmark's results: measurements, ratios, the targets from the issue, and the printed report.

Pure: nothing here touches a server, so the smoke test runs it without stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 1024 * 1024

RAW = "raw_limit"
FULL_COLD = "full_cold"
FULL_WARM = "full_warm"
INCREMENTAL = "incremental"
SLING = "sling"
OLD_SERVICE = "old_service"
RECONCILE = "reconcile"
# Extra full syncs, cold then warm, at other catalog sizes: for the memory targets.
MEMORY_SCALE = "full_cold_memory"
MEMORY_SCALE_WARM = "full_warm_memory"
FULL_SYNCS = (FULL_COLD, FULL_WARM, MEMORY_SCALE, MEMORY_SCALE_WARM)

LABELS = {
    RAW: "raw limit (find_raw_batches → COPY bytea)",
    FULL_COLD: "our full sync, empty target (cold)",
    FULL_WARM: "our full sync, nothing changed (warm)",
    INCREMENTAL: "our incremental sync, 1% changed",
    SLING: "Sling (MongoDB → PostgreSQL)",
    OLD_SERVICE: "old service algorithm",
    RECONCILE: "reconciliation checks",
    MEMORY_SCALE: "our full sync, cold (memory scale)",
    MEMORY_SCALE_WARM: "our full sync, warm (memory scale)",
}

# The targets. Flatness is a judgement call; this is the bound the report holds it to.
FULL_VS_SLING_MIN = 1.5
FULL_VS_RAW_TIME_MAX = 1.3
INCREMENTAL_VS_FULL_TIME_MAX = 0.10
MEMORY_LIMIT_PRODUCTS = 1_000_000
MEMORY_LIMIT_BYTES = 512 * MIB
MEMORY_FLAT_FROM_PRODUCTS = 100_000
MEMORY_FLAT_GROWTH_MAX = 1.25


@dataclass
class Measurement:
    """One measured step: the work done in its own process, timed by that process."""

    step: str
    products: int  # documents in the source collection
    rows: int  # rows the step handled (read, copied, compared)
    seconds: float
    peak_rss_bytes: int  # of the process that did the work (for Sling: the sling binary)
    cpu_seconds: float = 0.0  # user + system of that process (all its threads) during the timed work
    source_cpu_seconds: float | None = None  # secantusdb during the step
    postgres_cpu_seconds: float | None = None  # every PostgreSQL process during the step
    # The share of the machine's CPU time that went to processes outside the benchmark while the step's
    # process ran (other engineers' tests, say): how noisy this timing is.
    others_cpu_share: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / MIB

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": LABELS.get(self.step, self.step),
                "rows_per_second": round(self.rows_per_second, 1), "peak_rss_mib": round(self.peak_rss_mib, 1)}


@dataclass(frozen=True)
class TargetResult:
    name: str
    required: str
    measured: str
    status: str  # PASS, FAIL, or SKIP when a measurement it needs was not taken

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def time_vs_raw(measurement: Measurement, raw: Measurement | None) -> float | None:
    """Time relative to the raw limit, only where both moved the same rows (else the ratio means nothing)."""
    if raw is None or raw.seconds <= 0 or measurement.rows != raw.rows:
        return None
    return measurement.seconds / raw.seconds


def speed_vs(measurement: Measurement, reference: Measurement | None) -> float | None:
    if reference is None or reference.rows_per_second <= 0:
        return None
    return measurement.rows_per_second / reference.rows_per_second


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _skip(name: str, required: str, why: str) -> TargetResult:
    return TargetResult(name, required, why, "SKIP")


def memory_by_size(measurements: Iterable[Measurement]) -> dict[int, int]:
    """The largest peak RSS of any full sync (cold or warm), by collection size."""
    peaks: dict[int, int] = {}
    for m in measurements:
        if m.step in FULL_SYNCS:
            peaks[m.products] = max(peaks.get(m.products, 0), m.peak_rss_bytes)
    return peaks


def evaluate_targets(measurements: Iterable[Measurement]) -> list[TargetResult]:
    """PASS/FAIL for each of the issue's targets; SKIP when the run did not measure what a target needs."""
    measurements = list(measurements)
    by_step = {m.step: m for m in measurements if m.step not in (MEMORY_SCALE, MEMORY_SCALE_WARM)}
    raw, cold, warm = by_step.get(RAW), by_step.get(FULL_COLD), by_step.get(FULL_WARM)
    sling, incremental, reconcile = by_step.get(SLING), by_step.get(INCREMENTAL), by_step.get(RECONCILE)
    targets: list[TargetResult] = []

    name, required = "full sync vs Sling", f"cold full sync ≥ {FULL_VS_SLING_MIN}× Sling's rows/s"
    if cold and sling:
        ratio = speed_vs(cold, sling)
        targets.append(TargetResult(name, required, f"{ratio:.2f}×", _status(ratio >= FULL_VS_SLING_MIN)))
    else:
        targets.append(_skip(name, required, "not measured"))

    name, required = "full sync vs raw limit", f"cold full sync ≤ {FULL_VS_RAW_TIME_MAX}× the raw-limit time"
    ratio = time_vs_raw(cold, raw) if cold else None
    if ratio is not None:
        targets.append(TargetResult(name, required, f"{ratio:.2f}×", _status(ratio <= FULL_VS_RAW_TIME_MAX)))
    else:
        targets.append(_skip(name, required, "not measured"))

    name = "incremental sync"
    required = f"1% changed: ≤ {INCREMENTAL_VS_FULL_TIME_MAX:.0%} of the warm full-sync time"
    if incremental and warm:
        share = incremental.seconds / warm.seconds
        targets.append(TargetResult(name, required, f"{share:.1%}", _status(share <= INCREMENTAL_VS_FULL_TIME_MAX)))
    else:
        targets.append(_skip(name, required, "not measured"))

    name, required = "reconciliation", "no slower than the warm full sync"
    if reconcile and warm:
        ratio = reconcile.seconds / warm.seconds
        targets.append(TargetResult(name, required, f"{ratio:.2f}× the full-sync time", _status(ratio <= 1.0)))
    else:
        targets.append(_skip(name, required, "not measured"))

    peaks = memory_by_size(measurements)
    name = "full sync memory"
    required = f"peak RSS (cold or warm) ≤ {MEMORY_LIMIT_BYTES // MIB} MiB at {MEMORY_LIMIT_PRODUCTS:,} products"
    if MEMORY_LIMIT_PRODUCTS in peaks:
        peak = peaks[MEMORY_LIMIT_PRODUCTS]
        targets.append(TargetResult(name, required, f"{peak / MIB:.0f} MiB", _status(peak <= MEMORY_LIMIT_BYTES)))
    else:
        targets.append(_skip(name, required, f"no run at {MEMORY_LIMIT_PRODUCTS:,} products"))

    name = "full sync memory is flat"
    required = (f"peak RSS at {MEMORY_LIMIT_PRODUCTS:,} ≤ {MEMORY_FLAT_GROWTH_MAX}× "
                f"the peak at {MEMORY_FLAT_FROM_PRODUCTS:,} products")
    if MEMORY_LIMIT_PRODUCTS in peaks and MEMORY_FLAT_FROM_PRODUCTS in peaks:
        growth = peaks[MEMORY_LIMIT_PRODUCTS] / peaks[MEMORY_FLAT_FROM_PRODUCTS]
        measured = (f"{peaks[MEMORY_FLAT_FROM_PRODUCTS] / MIB:.0f} → {peaks[MEMORY_LIMIT_PRODUCTS] / MIB:.0f} MiB "
                    f"({growth:.2f}×)")
        targets.append(TargetResult(name, required, measured, _status(growth <= MEMORY_FLAT_GROWTH_MAX)))
    else:
        targets.append(_skip(name, required, "needs runs at both sizes"))
    return targets


def _number(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def markdown_table(measurements: Iterable[Measurement]) -> str:
    """The measurements as a Markdown table, ratios against the raw limit and Sling of the same run."""
    measurements = list(measurements)
    by_step = {m.step: m for m in measurements}
    raw, sling = by_step.get(RAW), by_step.get(SLING)
    lines = [
        "| step | products | rows | time (s) | rows/s | peak RSS (MiB) | time ÷ raw limit | rows/s ÷ Sling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        lines.append(
            f"| {LABELS.get(m.step, m.step)} | {m.products:,} | {m.rows:,} | {m.seconds:,.2f} | "
            f"{m.rows_per_second:,.0f} | {m.peak_rss_mib:,.0f} | {_number(time_vs_raw(m, raw), suffix='×')} | "
            f"{_number(speed_vs(m, sling), suffix='×')} |"
        )
    return "\n".join(lines)


def targets_table(targets: Iterable[TargetResult]) -> str:
    lines = ["| target | required | measured | result |", "|---|---|---|---|"]
    lines += [f"| {t.name} | {t.required} | {t.measured} | **{t.status}** |" for t in targets]
    return "\n".join(lines)


def cpu_table(measurements: Iterable[Measurement]) -> str:
    """Where each step's time went, by process: the worker, the MongoDB-wire server, PostgreSQL."""
    lines = ["| step | wall (s) | worker CPU (s) | secantusdb CPU (s) | PostgreSQL CPU (s) | CPU used by others |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {LABELS.get(m.step, m.step)} ({m.products:,}) | {m.seconds:,.2f} | {m.cpu_seconds:,.2f} | "
        f"{_number(m.source_cpu_seconds)} | {_number(m.postgres_cpu_seconds)} | "
        f"{'—' if m.others_cpu_share is None else f'{m.others_cpu_share:.0%}'} |"
        for m in measurements
    ]
    return "\n".join(lines)


def first_batch_note(measurements: Iterable[Measurement]) -> str | None:
    """How much of the raw limit the source spent before its first batch."""
    raw = next((m for m in measurements if m.step == RAW and "first_batch_s" in m.details), None)
    if raw is None or raw.seconds <= 0:
        return None
    first = raw.details["first_batch_s"]
    return (f"The source answered the raw limit's find after {first:.2f} s of its {raw.seconds:.2f} s "
            f"({first / raw.seconds:.0%}): time a single cursor cannot overlap with any work of its own.")


def reconciliation_verdict(measurements: Iterable[Measurement]) -> str | None:
    """Whether the copy the syncs left behind reconciles with the catalog: the bench's own correctness check."""
    found = next((m.details for m in measurements if m.step == RECONCILE), None)
    if found is None:
        return None
    verdict = "passed" if found.get("passed") else "FAILED"
    return (f"Reconciliation of the copy after the syncs: {verdict} (missing {found.get('missing')}, "
            f"extra {found.get('extra')}, drifted {found.get('drifted')}, "
            f"{found.get('active_copy_rows')} active rows for {found.get('expected_active_rows')} expected).")


def summary(measurements: Iterable[Measurement], targets: Iterable[TargetResult],
            run: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the run found, as the JSON written to bench-results/latest.json."""
    return {
        **run,
        "steps": [m.as_dict() for m in measurements],
        "targets": [asdict(t) for t in targets],
    }
