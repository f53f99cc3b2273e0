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
PRODUCT_STEPS = (RAW, FULL_COLD, FULL_WARM, INCREMENTAL, SLING, OLD_SERVICE, RECONCILE, MEMORY_SCALE,
                 MEMORY_SCALE_WARM)
# Cart sync, Cart PostgreSQL → Order MongoDB `carts` (issue #16).
CART_RAW = "cart_raw_limit"  # into a collection with the indexes of `carts`: the target's reference
CART_RAW_WITHOUT_INDEXES = "cart_raw_limit_without_indexes"
CART_COLD = "cart_cold"
CART_WARM = "cart_warm"
CART_INCREMENTAL = "cart_incremental"
# Warehouse day build: the day's orders loaded, then its analytics tables.
WAREHOUSE_RAW = "warehouse_raw_limit"
WAREHOUSE_FIRST = "warehouse_first"
WAREHOUSE_ANALYTICS_FIRST = "warehouse_analytics_first"
WAREHOUSE_REBUILD = "warehouse_rebuild"
WAREHOUSE_ANALYTICS_REBUILD = "warehouse_analytics_rebuild"
# Whole Dagster runs (`run:<job>`) and the validate job's checks one by one (`check:<asset>:<check>`).
RUN_PREFIX = "run:"
CHECK_PREFIX = "check:"
# Whole runs of product_sync_fanout over N ranges (`fanout:<N>`).
FANOUT_PREFIX = "fanout:"
# The floor of an edit's latency: product_sync_incremental launched with nothing to copy.
RUN_LATENCY = "run_latency"

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
    CART_RAW: "cart raw limit (server-side cursor over the join → insert_many, `carts`' indexes)",
    CART_RAW_WITHOUT_INDEXES: "cart raw limit without indexes (reference only)",
    CART_COLD: "our cart sync, empty `carts` (cold)",
    CART_WARM: "our cart sync, full pass, nothing changed (warm)",
    CART_INCREMENTAL: "our cart sync, incremental, 1% changed",
    WAREHOUSE_RAW: "warehouse raw limit (find of the day → COPY of the items)",
    WAREHOUSE_FIRST: "our day load, first build (orders + items)",
    WAREHOUSE_ANALYTICS_FIRST: "our analytics tables, first build",
    WAREHOUSE_REBUILD: "our day load, rebuild of the same day",
    WAREHOUSE_ANALYTICS_REBUILD: "our analytics tables, rebuild",
    RUN_LATENCY: "Dagster run of product_sync_incremental, nothing changed",
}


def label(step: str) -> str:
    if step.startswith(RUN_PREFIX):
        return f"whole run of `{step[len(RUN_PREFIX):]}`"
    if step.startswith(CHECK_PREFIX):
        return f"check `{step[len(CHECK_PREFIX):]}`"
    if step.startswith(FANOUT_PREFIX):
        return f"product_sync_fanout over {step[len(FANOUT_PREFIX):]} range(s), nothing changed"
    return LABELS.get(step, step)

# The targets. Flatness is a judgement call; this is the bound the report holds it to.
FULL_VS_SLING_MIN = 1.5
FULL_VS_RAW_TIME_MAX = 1.3
INCREMENTAL_VS_FULL_TIME_MAX = 0.10
MEMORY_LIMIT_PRODUCTS = 1_000_000
MEMORY_LIMIT_BYTES = 512 * MIB
MEMORY_FLAT_FROM_PRODUCTS = 100_000
MEMORY_FLAT_GROWTH_MAX = 1.25
CART_COLD_VS_RAW_MAX = 1.5
CART_WARM_VS_COLD_MAX = 0.5
CART_INCREMENTAL_VS_COLD_MAX = 0.10
WAREHOUSE_VS_RAW_MAX = 1.5
ANALYTICS_VS_LOAD_MAX = 0.20


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
        return {**asdict(self), "label": label(self.step),
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


def _table(columns: Iterable[str], alignment: str, rows: Iterable[Iterable[str]]) -> str:
    """A Markdown table; `alignment` holds an "l" (left) or "r" (right) for each column."""
    def line(cells: Iterable[str]) -> str:
        return f"| {' | '.join(cells)} |"

    separator = "|" + "|".join("---:" if side == "r" else "---" for side in alignment) + "|"
    return "\n".join([line(columns), separator, *map(line, rows)])


def markdown_table(measurements: Iterable[Measurement]) -> str:
    """The measurements as a Markdown table, ratios against the raw limit and Sling of the same run."""
    measurements = list(measurements)
    by_step = {m.step: m for m in measurements}
    raw, sling = by_step.get(RAW), by_step.get(SLING)
    columns = ("step", "products", "rows", "time (s)", "rows/s", "peak RSS (MiB)", "time ÷ raw limit",
               "rows/s ÷ Sling")
    return _table(columns, "lrrrrrrr", (
        (label(m.step), f"{m.products:,}", f"{m.rows:,}", f"{m.seconds:,.2f}", f"{m.rows_per_second:,.0f}",
         f"{m.peak_rss_mib:,.0f}", _number(time_vs_raw(m, raw), suffix="×"), _number(speed_vs(m, sling), suffix="×"))
        for m in measurements if m.step in PRODUCT_STEPS))


def targets_table(targets: Iterable[TargetResult]) -> str:
    return _table(("target", "required", "measured", "result"), "llll",
                  ((t.name, t.required, t.measured, f"**{t.status}**") for t in targets))


def cpu_table(measurements: Iterable[Measurement]) -> str:
    """Where each step's time went, by process: the worker, the MongoDB-wire server, PostgreSQL."""
    columns = ("step", "wall (s)", "worker CPU (s)", "secantusdb CPU (s)", "PostgreSQL CPU (s)", "CPU used by others")
    return _table(columns, "lrrrrr", (
        (f"{label(m.step)} ({m.products:,})", f"{m.seconds:,.2f}", f"{m.cpu_seconds:,.2f}",
         _number(m.source_cpu_seconds), _number(m.postgres_cpu_seconds),
         "—" if m.others_cpu_share is None else f"{m.others_cpu_share:.0%}")
        for m in measurements))


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


# ---------- the other paths (issue #16) and whole runs (issue #12 §6) ----------

PROFILE_HEADROOM_MIN = 1.5  # a profile's memory limit over the peak of the runs it serves


def _ratio_target(name: str, required: str, numerator: Measurement | None, denominator: Measurement | None,
                  bound: float, *, percent: bool = False) -> TargetResult:
    if numerator is None or denominator is None or denominator.seconds <= 0:
        return _skip(name, required, "not measured")
    ratio = numerator.seconds / denominator.seconds
    measured = f"{ratio:.1%}" if percent else f"{ratio:.2f}×"
    return TargetResult(name, required, measured, _status(ratio <= bound))


def slowest_check(measurements: Iterable[Measurement]) -> Measurement | None:
    checks = [m for m in measurements if m.step.startswith(CHECK_PREFIX)]
    return max(checks, key=lambda m: m.seconds) if checks else None


def evaluate_path_targets(measurements: Iterable[Measurement]) -> list[TargetResult]:
    """PASS/FAIL for the cart sync, the warehouse day build, the validate checks and the whole runs'
    memory; a section that did not run adds no targets."""
    measurements = list(measurements)
    by_step = {m.step: m for m in measurements}
    targets: list[TargetResult] = []
    if any(step in by_step for step in (CART_RAW, CART_COLD, CART_WARM, CART_INCREMENTAL)):
        cold = by_step.get(CART_COLD)
        targets += [
            _ratio_target("cart sync vs raw limit",
                          f"cold ≤ {CART_COLD_VS_RAW_MAX}× the raw-limit time (with `carts`' indexes)",
                          cold, by_step.get(CART_RAW), CART_COLD_VS_RAW_MAX),
            _ratio_target("cart sync, warm", f"full pass with nothing changed ≤ {CART_WARM_VS_COLD_MAX}× cold",
                          by_step.get(CART_WARM), cold, CART_WARM_VS_COLD_MAX),
            _ratio_target("cart sync, 1% changed", f"incremental ≤ {CART_INCREMENTAL_VS_COLD_MAX:.0%} of cold",
                          by_step.get(CART_INCREMENTAL), cold, CART_INCREMENTAL_VS_COLD_MAX, percent=True),
        ]
    if any(step in by_step for step in (WAREHOUSE_RAW, WAREHOUSE_FIRST, WAREHOUSE_REBUILD)):
        raw = by_step.get(WAREHOUSE_RAW)
        for load, analytics, when in ((WAREHOUSE_FIRST, WAREHOUSE_ANALYTICS_FIRST, "first build"),
                                      (WAREHOUSE_REBUILD, WAREHOUSE_ANALYTICS_REBUILD, "rebuild")):
            targets += [
                _ratio_target(f"day load, {when}", f"≤ {WAREHOUSE_VS_RAW_MAX}× the raw-limit time",
                              by_step.get(load), raw, WAREHOUSE_VS_RAW_MAX),
                _ratio_target(f"analytics, {when}", f"≤ {ANALYTICS_VS_LOAD_MAX:.0%} on top of the day load",
                              by_step.get(analytics), by_step.get(load), ANALYTICS_VS_LOAD_MAX, percent=True),
            ]
    if slowest := slowest_check(measurements):
        warm = by_step.get(FULL_WARM)
        name = "slowest validate check"
        required = "≤ the warm full product sync's time at the same scale"
        if warm is None:
            targets.append(_skip(name, required, "no warm full sync measured"))
        else:
            ratio = slowest.seconds / warm.seconds
            targets.append(TargetResult(name, required, f"{label(slowest.step)}: {ratio:.2f}×", _status(ratio <= 1.0)))
    for run in (m for m in measurements if m.step.startswith(RUN_PREFIX)):
        limit = run.details.get("limit_bytes")
        name = f"{label(run.step)} fits its profile"
        required = f"`{run.details.get('profile')}` memory limit ≥ {PROFILE_HEADROOM_MIN}× the run's peak"
        if not limit or run.peak_rss_bytes <= 0:
            targets.append(_skip(name, required, "no profile or no peak"))
            continue
        headroom = limit / run.peak_rss_bytes
        targets.append(TargetResult(name, required, f"{limit / MIB:.0f} MiB ÷ {run.peak_rss_mib:.0f} MiB = "
                                    f"{headroom:.2f}×", _status(headroom >= PROFILE_HEADROOM_MIN)))
    return targets


def _mib(value: float | None) -> str:
    return "—" if not value else f"{value / MIB:,.0f}"


def _step_cells(m: Measurement) -> tuple[str, ...]:
    """A path step's first cells: its label, rows, time, rows/s and peak RSS."""
    return label(m.step), f"{m.rows:,}", f"{m.seconds:,.2f}", f"{m.rows_per_second:,.0f}", f"{m.peak_rss_mib:,.0f}"


def cart_table(measurements: Iterable[Measurement]) -> str | None:
    by_step = {m.step: m for m in measurements}
    order = (CART_RAW, CART_RAW_WITHOUT_INDEXES, CART_COLD, CART_WARM, CART_INCREMENTAL)
    steps = [by_step[s] for s in order if s in by_step]
    if not steps:
        return None
    raw, cold = by_step.get(CART_RAW), by_step.get(CART_COLD)
    columns = ("step", "carts", "time (s)", "carts/s", "peak RSS (MiB)", "time ÷ raw limit", "time ÷ cold")
    return _table(columns, "lrrrrrr", (
        (*_step_cells(m), _number(m.seconds / raw.seconds if raw else None, suffix="×"),
         _number(m.seconds / cold.seconds if cold else None, suffix="×"))
        for m in steps))


def warehouse_table(measurements: Iterable[Measurement]) -> str | None:
    by_step = {m.step: m for m in measurements}
    order = (WAREHOUSE_RAW, WAREHOUSE_FIRST, WAREHOUSE_ANALYTICS_FIRST, WAREHOUSE_REBUILD, WAREHOUSE_ANALYTICS_REBUILD)
    steps = [by_step[s] for s in order if s in by_step]
    if not steps:
        return None
    raw = by_step.get(WAREHOUSE_RAW)
    columns = ("step", "order items", "time (s)", "items/s", "peak RSS (MiB)", "time ÷ raw limit")
    return _table(columns, "lrrrrr", (
        (*_step_cells(m), _number(m.seconds / raw.seconds if raw else None, suffix="×")) for m in steps))


def checks_table(measurements: Iterable[Measurement]) -> str | None:
    """The validate job's checks, each run on its own through Dagster, slowest first."""
    measurements = list(measurements)
    checks = sorted((m for m in measurements if m.step.startswith(CHECK_PREFIX)), key=lambda m: -m.seconds)
    if not checks:
        return None
    warm = next((m for m in measurements if m.step == FULL_WARM), None)
    return _table(("check", "time (s)", "peak RSS (MiB)", "time ÷ warm full product sync"), "lrrr", (
        (f"`{m.step[len(CHECK_PREFIX):]}`", f"{m.seconds:,.2f}", f"{m.peak_rss_mib:,.0f}",
         _number(m.seconds / warm.seconds if warm else None, suffix="×"))
        for m in checks))


def runs_table(measurements: Iterable[Measurement]) -> str | None:
    """Each named job's whole run: its process tree's peak memory against its profile's limit."""
    runs = [m for m in measurements if m.step.startswith(RUN_PREFIX)]
    if not runs:
        return None
    columns = ("job", "executor", "processes", "wall (s)", "peak RSS, summed (MiB)", "peak PSS, summed (MiB)",
               "profile", "limit (MiB)", "limit ÷ peak RSS")

    def cells(m: Measurement) -> tuple[str, ...]:
        limit = m.details.get("limit_bytes")
        return (f"`{m.step[len(RUN_PREFIX):]}`", str(m.details.get("executor", "—")),
                str(m.details.get("processes", "—")), f"{m.seconds:,.2f}", f"{m.peak_rss_mib:,.0f}",
                _mib(m.details.get("peak_pss_bytes")), str(m.details.get("profile", "—")), _mib(limit),
                _number(limit / m.peak_rss_bytes if limit and m.peak_rss_bytes else None, suffix="×"))

    return _table(columns, "llrrrrlrr", map(cells, runs))


LATENCY_PHASES = (("interpreter_start_s", "process start (interpreter, before any import of ours)"),
                  ("dagster_import_s", "import dagster"),
                  ("code_load_s", "code load (etl_assets.definitions)"),
                  ("run_s", "the run: creation to its last event"),
                  ("steps_s", "  of which the step itself (the sync's work)"))


def latency_table(measurements: Iterable[Measurement]) -> str | None:
    """Where the wall time of a do-nothing product_sync_incremental run goes, launch to success."""
    run = next((m for m in measurements if m.step == RUN_LATENCY), None)
    if run is None:
        return None
    phases = [(text, f"{run.details[key]:,.2f}") for key, text in LATENCY_PHASES if key in run.details]
    total = ("**launch to success**", f"**{run.details.get('launch_to_success_s', 0.0):,.2f}**")
    return _table(("phase", "time (s)"), "lr", [*phases, total])


def fanout_table(measurements: Iterable[Measurement]) -> str | None:
    """The fan-out's whole runs: wall time against the number of ranges, and the speed-up over one."""
    runs = sorted((m for m in measurements if m.step.startswith(FANOUT_PREFIX)),
                  key=lambda m: int(m.step[len(FANOUT_PREFIX):]))
    if not runs:
        return None
    single = next((m for m in runs if m.step == f"{FANOUT_PREFIX}1"), None)
    columns = ("ranges", "products", "run (s)", "launch to success (s)", "rows/s", "peak RSS, summed (MiB)",
               "speed-up over 1")
    return _table(columns, "rrrrrrr", (
        (m.step[len(FANOUT_PREFIX):], f"{m.products:,}", f"{m.seconds:,.2f}",
         f"{m.details.get('launch_to_success_s', 0.0):,.2f}", f"{m.rows_per_second:,.0f}", f"{m.peak_rss_mib:,.0f}",
         _number(single.seconds / m.seconds if single and m.seconds else None, suffix="×"))
        for m in runs))


def summary(measurements: Iterable[Measurement], targets: Iterable[TargetResult],
            run: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the run found, as the JSON written to bench-results/latest.json."""
    return {
        **run,
        "steps": [m.as_dict() for m in measurements],
        "targets": [asdict(t) for t in targets],
    }
