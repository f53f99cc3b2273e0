"""Smoke test of the benchmark's pure helpers: no servers, no timings asserted."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import bson
import pytest

from etl_assets.local import bench, bench_data, bench_steps
from etl_assets.local import bench_report as report
from etl_assets.local.bench_report import MIB, Measurement


def _measurement(step: str, seconds: float, rows: int = 200_000, products: int = 200_000,
                 rss_mib: int = 200) -> Measurement:
    return Measurement(step=step, products=products, rows=rows, seconds=seconds, peak_rss_bytes=rss_mib * MIB)


def _run(full_cold_s: float = 10.0) -> list[Measurement]:
    return [
        _measurement(report.RAW, 8.0),
        _measurement(report.FULL_COLD, full_cold_s),
        _measurement(report.FULL_WARM, 9.0),
        _measurement(report.INCREMENTAL, 0.5, rows=2_000),
        _measurement(report.SLING, 20.0),
        _measurement(report.RECONCILE, 6.0),
        _measurement(report.OLD_SERVICE, 25.0, rows=20_000, products=20_000),
        _measurement(report.MEMORY_SCALE, 5.0, rows=100_000, products=100_000, rss_mib=210),
        _measurement(report.MEMORY_SCALE, 50.0, rows=1_000_000, products=1_000_000, rss_mib=230),
    ]


def test_targets_pass_and_fail_on_the_issue_bounds():
    statuses = {t.name: t.status for t in report.evaluate_targets(_run())}
    assert statuses == {
        "full sync vs Sling": "PASS",  # 2.0×
        "full sync vs raw limit": "PASS",  # 1.25×
        "incremental sync": "PASS",
        "reconciliation": "PASS",
        "full sync memory": "PASS",
        "full sync memory is flat": "PASS",
    }
    slow = {t.name: t.status for t in report.evaluate_targets(_run(full_cold_s=14.0))}
    assert slow["full sync vs Sling"] == "FAIL"  # 20 / 14 = 1.43×
    assert slow["full sync vs raw limit"] == "FAIL"  # 14 / 8 = 1.75×


def test_missing_measurements_are_skipped_not_failed():
    targets = report.evaluate_targets([_measurement(report.FULL_COLD, 10.0)])
    assert {t.status for t in targets} == {"SKIP"}


def test_memory_growth_beyond_the_bound_fails():
    run = [*_run(), _measurement(report.MEMORY_SCALE_WARM, 50.0, rows=1_000_000, products=1_000_000,
                                 rss_mib=600)]
    assert report.memory_by_size(run)[1_000_000] == 600 * MIB  # the warm run's peak, the larger one
    statuses = {t.name: t.status for t in report.evaluate_targets(run)}
    assert statuses["full sync memory"] == "FAIL"
    assert statuses["full sync memory is flat"] == "FAIL"


def test_ratios_only_where_they_mean_something():
    raw, cold, incremental = _measurement(report.RAW, 8.0), _measurement(report.FULL_COLD, 10.0), _measurement(
        report.INCREMENTAL, 0.5, rows=2_000)
    assert report.time_vs_raw(cold, raw) == pytest.approx(1.25)
    assert report.time_vs_raw(incremental, raw) is None  # different rows: no time ratio
    assert report.speed_vs(cold, None) is None


def test_markdown_tables_have_a_row_per_measurement_and_target():
    measurements = _run()
    table = report.markdown_table(measurements).splitlines()
    assert len(table) == 2 + len(measurements)
    assert table[0].startswith("| step |")
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "| 1.25× |" in next(line for line in table if report.LABELS[report.FULL_COLD] in line)
    targets = report.targets_table(report.evaluate_targets(measurements)).splitlines()
    assert len(targets) == 2 + 6 and "**PASS**" in targets[2]
    assert len(report.cpu_table(measurements).splitlines()) == 2 + len(measurements)
    reconcile = next(m for m in measurements if m.step == report.RECONCILE)
    reconcile.details = {"passed": True, "missing": 0, "extra": 0, "drifted": 0, "active_copy_rows": 9,
                         "expected_active_rows": 9}
    assert report.reconciliation_verdict(measurements).startswith("Reconciliation of the copy after the syncs: passed")
    assert report.reconciliation_verdict(measurements[:1]) is None
    measurements[0].details = {"first_batch_s": 6.0}
    assert "after 6.00 s of its 8.00 s (75%)" in report.first_batch_note(measurements)
    summary = report.summary(measurements, report.evaluate_targets(measurements), {"products": 200_000})
    assert summary["products"] == 200_000 and summary["steps"][0]["rows_per_second"] == 25_000.0


def test_raw_batch_becomes_binary_copy_rows():
    docs = [{"_id": i, "title": "x" * i} for i in range(3)]
    raw_batch = b"".join(bson.encode(doc) for doc in docs)
    payload, rows = bench_steps.binary_copy_payload(raw_batch)
    assert rows == 3
    assert payload.startswith(bench_steps.PGCOPY_HEADER) and payload.endswith(bench_steps.PGCOPY_TRAILER)
    body, decoded = payload[len(bench_steps.PGCOPY_HEADER):-len(bench_steps.PGCOPY_TRAILER)], []
    while body:
        fields, length = struct.unpack("!hi", body[:6])
        assert fields == 1
        decoded.append(bson.decode(body[6:6 + length]))
        body = body[6 + length:]
    assert decoded == docs


def test_old_service_inserts_one_by_one_and_pauses_after_every_hundred():
    products = [{"_id": bson.ObjectId(), "title": f"p{i}", "price": -1 if i == 7 else 1.0} for i in range(250)]
    existing = {str(products[0]["_id"])}
    inserted, pauses = [], []

    def insert(row: tuple) -> None:
        if row[2] == -1:
            raise ValueError("rejected by the database")
        inserted.append(row)

    result = bench_steps.legacy_sync(products, existing, insert, pause=pauses.append)
    assert (result.inserted, result.failed, result.batches) == (248, 1, 3)
    assert pauses == [bench_steps.LEGACY_PAUSE_S] * 3
    assert inserted[0][5:9] == (5, "other", None, 4.5)  # the old service's defaults


def test_generated_products_are_deterministic():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first, again = list(bench_data.product_chunks(12, now)), list(bench_data.product_chunks(12, now))
    assert first == again and [len(chunk) for chunk in first] == [12]
    assert first[0][3]["_id"] == bench_data.bench_product_id(3)


def test_quick_flag_sets_a_small_run():
    quick = bench.parse_args(["--quick"])
    assert (quick.products, quick.memory_sizes, quick.repeats) == (bench.QUICK_PRODUCTS, [], 1)
    default = bench.parse_args([])
    assert (default.products, default.memory_sizes, default.repeats) == (
        bench.DEFAULT_PRODUCTS, list(bench.MEMORY_SIZES), bench.REPEATS)
    assert bench.parse_args(["--products", "1_000_000", "--memory-sizes", ""]).memory_sizes == []


def test_median_run_keeps_the_middle_time_and_lists_every_run():
    runs = [_measurement(report.FULL_COLD, seconds) for seconds in (9.8, 7.4, 8.3)]
    median = bench.median_run(runs)
    assert median.seconds == 8.3
    assert median.details["runs_s"] == [9.8, 7.4, 8.3]
    assert "runs_s" not in bench.median_run([_measurement(report.RAW, 5.0)]).details
