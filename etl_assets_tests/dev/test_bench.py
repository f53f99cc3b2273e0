"""Smoke test of the benchmark's pure helpers: no servers, no timings asserted."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from datetime import UTC, datetime

import bson
import pytest

from dev import bench, bench_data, bench_runs, bench_steps
from dev import bench_report as report
from dev.bench_report import MIB, Measurement


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


def _path_run() -> list[Measurement]:
    runs = [
        _measurement(report.FULL_WARM, 9.0),
        _measurement(report.CART_RAW, 10.0, rows=1_000_000),
        _measurement(report.CART_COLD, 14.0, rows=1_000_000),
        _measurement(report.CART_WARM, 6.0, rows=1_000_000),
        _measurement(report.CART_INCREMENTAL, 1.0, rows=10_000),
        _measurement(report.WAREHOUSE_RAW, 4.0, rows=300_000),
        _measurement(report.WAREHOUSE_FIRST, 5.0, rows=300_000),
        _measurement(report.WAREHOUSE_ANALYTICS_FIRST, 0.9, rows=300_000),
        _measurement(report.WAREHOUSE_REBUILD, 7.0, rows=300_000),
        _measurement(report.WAREHOUSE_ANALYTICS_REBUILD, 1.5, rows=300_000),
        _measurement(f"{report.CHECK_PREFIX}cart_db/product:in_sync_with_catalog", 8.0),
        _measurement(f"{report.CHECK_PREFIX}cart_db/product:unique_ids", 0.5),
        _measurement(f"{report.RUN_PREFIX}validate", 60.0, rss_mib=400),
        _measurement(f"{report.RUN_PREFIX}full_reconcile", 90.0, rss_mib=900),
    ]
    runs[-2].details = {"profile": "small", "limit_bytes": 512 * MIB, "executor": "in_process"}
    runs[-1].details = {"profile": "large", "limit_bytes": 1536 * MIB, "executor": "multiprocess_max_2"}
    return runs


def test_path_targets_hold_each_path_to_its_bound():
    statuses = {t.name: t.status for t in report.evaluate_path_targets(_path_run())}
    assert statuses == {
        "cart sync vs raw limit": "PASS",  # 1.4×
        "cart sync, warm": "PASS",  # 0.43×
        "cart sync, 1% changed": "PASS",  # 7.1%
        "day load, first build": "PASS",  # 1.25×
        "analytics, first build": "PASS",  # 18%
        "day load, rebuild": "FAIL",  # 1.75×
        "analytics, rebuild": "FAIL",  # 21%
        "slowest validate check": "PASS",  # 8 s of the warm sync's 9 s
        "whole run of `validate` fits its profile": "FAIL",  # 512 / 400 = 1.28×
        "whole run of `full_reconcile` fits its profile": "PASS",  # 1536 / 900 = 1.71×
    }
    assert report.evaluate_path_targets([_measurement(report.FULL_COLD, 10.0)]) == []  # no section, no target


def test_cart_target_compares_with_the_raw_limit_that_keeps_the_indexes_of_carts():
    measurements = [*_path_run(), _measurement(report.CART_RAW_WITHOUT_INDEXES, 5.0, rows=1_000_000)]
    statuses = {t.name: t.status for t in report.evaluate_path_targets(measurements)}
    assert statuses["cart sync vs raw limit"] == "PASS"  # 14 s ÷ 10 s, not ÷ the index-free 5 s
    table = report.cart_table(measurements).splitlines()
    assert len(table) == 2 + 5 and "without indexes" in table[3]


def test_path_tables_show_what_was_measured():
    measurements = _path_run()
    assert len(report.cart_table(measurements).splitlines()) == 2 + 4
    assert len(report.warehouse_table(measurements).splitlines()) == 2 + 5
    checks = report.checks_table(measurements).splitlines()
    assert len(checks) == 2 + 2 and "in_sync_with_catalog" in checks[2]  # slowest first
    runs = report.runs_table(measurements).splitlines()
    assert len(runs) == 2 + 2 and "1.28×" in runs[2]
    assert report.cart_table([]) is None and report.latency_table(measurements) is None
    latency = _measurement(report.RUN_LATENCY, 2.0, rows=0)
    latency.details = {"interpreter_start_s": 0.1, "dagster_import_s": 1.0, "code_load_s": 3.0, "run_s": 2.0,
                       "steps_s": 0.5, "launch_to_success_s": 6.1}
    assert "**6.10**" in report.latency_table([latency])


def test_sections_and_scales_from_the_command_line():
    default = bench.parse_args([])
    assert default.sections == list(bench.SECTIONS)
    assert default.carts == bench.DEFAULT_PRODUCTS * bench_data.CART_SYNC_CARTS_PER_PRODUCT
    small = bench.parse_args(["--products", "4000", "--sections", "carts,runs", "--carts", "500"])
    assert (small.sections, small.carts, small.orders) == (["carts", "runs"], 500, 2000)
    assert bench.parse_args(["--quick"]).carts == bench.QUICK_PRODUCTS // 2
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "carts,nope"])


def test_profile_memory_quantities():
    assert bench.memory_bytes("512Mi") == 512 * MIB
    assert bench.memory_bytes("2Gi") == 2048 * MIB
    with pytest.raises(ValueError, match="Mi or Gi"):
        bench.memory_bytes("1G")
    profiles = bench.job_profiles()
    assert profiles["validate"][0] == "medium" and profiles["full_reconcile"][2] == "multiprocess_max_2"


def test_tree_memory_sums_a_process_and_its_children():
    """A parent that starts a child holding 50 MiB: the tree's peak counts both processes."""
    holder = "import time; block = bytearray(50 * 1024 * 1024); time.sleep(1.5)"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {holder!r}])"])
    tree = bench_runs.TreeMemory(parent.pid, interval_s=0.05)
    tree.start()
    parent.wait()
    peak = tree.stop()
    assert peak.processes == 2
    assert peak.rss_bytes > 50 * MIB and peak.pss_bytes > 50 * MIB


def test_a_step_reports_its_own_peak_not_the_bench_processs(tmp_path, monkeypatch):
    """The bench process grows (it loads carts and orders) before it starts a step; the step's peak must
    not inherit that (rusage's ru_maxrss does, across fork and exec)."""
    bench_process = bytearray(400 * MIB)
    bench_process[::4096] = b"\x01" * len(bench_process[::4096])  # touched, so resident
    script = ("import sys; from pathlib import Path; from dev import bench_steps; "
              "bench_steps.STEPS['tiny'] = lambda ctx: bench_steps.StepOutcome(1, 0.0, 0.0); "
              "bench_steps.run_step('tiny', None, Path(sys.argv[1]))")
    result = tmp_path / "result.json"
    step = subprocess.Popen([sys.executable, "-c", script, str(result)])
    _, status, usage = os.wait4(step.pid, 0)
    assert status == 0 and usage.ru_maxrss * 1024 > 400 * MIB  # what the bench used to report
    assert 0 < json.loads(result.read_text())["peak_rss_bytes"] < 300 * MIB
    del bench_process


def test_fanout_table_shows_the_speed_up_over_one_range():
    runs = [_measurement(f"{report.FANOUT_PREFIX}2", 30.0), _measurement(f"{report.FANOUT_PREFIX}1", 45.0)]
    table = report.fanout_table(runs).splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["1", "2"]  # by ranges
    assert table[3].rstrip().endswith("| 1.50× |")
    assert report.fanout_table(_run()) is None


def test_the_peak_of_a_process_that_has_exited_is_unknown_not_an_error():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while bench_steps.peak_rss_bytes(child.pid) is not None:  # until it exits (a zombie: no memory left)
        pass
    assert bench_steps.peak_rss_bytes(child.pid) is None
    child.wait()
    assert bench_steps.peak_rss_bytes(child.pid) is None and bench_steps.peak_rss_bytes() > 0
