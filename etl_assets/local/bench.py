"""`make bench`: how fast the product sync moves the catalog, against the raw limit, Sling and the old
service, and whether it meets the issue's targets. Not part of CI. See docs/benchmark.md.

    python -m etl_assets.local.bench [--products 200000] [--quick] [--memory-sizes 100000,1000000]

It starts its own stores under .local/bench (the demo stores are left alone), generates the products
once per size, measures every step in a process of its own, prints a Markdown table, PASS/FAIL per
target and a JSON line, and writes bench-results/latest.json. Timings depend on what else the machine
runs: take final figures when it is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pymongo
import sqlalchemy as sa

from etl_assets.local import bench_data, bench_steps
from etl_assets.local import bench_report as report
from etl_assets.local.bench_report import Measurement
from etl_assets.local.stores import LocalStores
from etl_assets.sync.products import BATCH_SIZE

DEFAULT_PRODUCTS = 200_000
QUICK_PRODUCTS = 20_000
OLD_SERVICE_PRODUCTS = 20_000
MEMORY_SIZES = (100_000, 1_000_000)
# The main steps run in this many rounds and each step's median run counts: on a shared VM one run of
# a step can be 15-25% off the next, enough to flip a ratio target either way.
REPEATS = 3
BENCH_DATABASE = "bench"
# Above this share of the machine's CPU going to other processes during a step, its timing is noisy.
NOISY_SHARE = 0.05
CPUS = os.cpu_count() or 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sling_binary() -> str:
    """The binary shipped in the sling-linux-amd64 wheel, unless SLING_BINARY names another."""
    if os.environ.get("SLING_BINARY"):
        return os.environ["SLING_BINARY"]
    import sling_linux_amd64  # only in the bench extra; the tests use this module without it

    return sling_linux_amd64.SLING_BIN


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a server process and its workers, including workers that have exited."""
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot, over all CPUs. Steal counts: it is time
    the hypervisor gave to other machines, as much noise as a neighbour's process."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def _stop_stale_mongo(stores: LocalStores) -> None:
    """A bench that was killed leaves its secantusdb running on the data directory; stop it only if the
    pid file still names that server."""
    pid_file = stores.mongo.pid_file
    if not pid_file.exists():
        return
    try:
        command = " ".join(psutil.Process(int(pid_file.read_text())).cmdline())
    except (psutil.NoSuchProcess, ValueError):
        command = ""
    if str(stores.mongo.data_dir) in command:
        stores.mongo.stop()
    else:
        pid_file.unlink()


class StepFailed(RuntimeError):
    """A measured step's process exited with an error."""


class Bench:
    """The bench stores and the measured steps run against them."""

    def __init__(self, stores: LocalStores, root: Path, batch_size: int):
        self.stores = stores
        self.root = root
        self.batch_size = batch_size
        self.failures: list[str] = []
        postgres = stores.postgres
        self.cart_db = sa.create_engine(postgres.url("cart"))
        self.warehouse = sa.create_engine(postgres.url("warehouse"))
        with postgres.admin_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                {"name": BENCH_DATABASE}).scalar():
                conn.exec_driver_sql(f'CREATE DATABASE "{BENCH_DATABASE}"')
        self.bench_db = sa.create_engine(postgres.url(BENCH_DATABASE))
        with self.bench_db.begin() as conn:
            conn.exec_driver_sql(bench_steps.BENCH_SCHEMA)
        self.mongo: pymongo.MongoClient = pymongo.MongoClient(stores.mongo.uri, tz_aware=True)
        self.postmaster_pid = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])

    def products(self, count: int) -> str:
        """The database holding `count` generated products (generated now if need be), its pages warm."""
        name = bench_data.database_name(count)
        started = time.perf_counter()
        if bench_data.ensure_products(self.mongo[name], count, progress=log):
            log(f"  generated {count:,} products in {time.perf_counter() - started:.0f} s")
        # One unmeasured pass first, so no step pays for reading the collection from disk.
        for _ in self.mongo[name]["products"].find_raw_batches({}, batch_size=self.batch_size):
            pass
        return name

    def context(self, product_db: str) -> bench_steps.StepContext:
        socket_dir = self.stores.postgres.socket_dir
        return bench_steps.StepContext(
            mongo_uri=self.stores.mongo.uri,
            product_db=product_db,
            cart_url=self.stores.postgres.url("cart"),
            warehouse_url=self.stores.postgres.url("warehouse"),
            bench_url=self.stores.postgres.url(BENCH_DATABASE),
            sling_url=f"postgresql://postgres@/{BENCH_DATABASE}?host={socket_dir}&sslmode=disable",
            sling_binary=sling_binary(),
            sling_home=str(self.root / "sling"),
            batch_size=self.batch_size,
        )

    def checkpoint(self) -> None:
        """Flush PostgreSQL's dirty pages now, so a checkpoint does not land inside the next step."""
        with self.bench_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")

    def measure(self, step: str, product_db: str, products: int) -> Measurement:
        """Run one step in its own process; its peak RSS and CPU come from that process's rusage."""
        ctx = self.context(product_db)
        self.checkpoint()
        (self.root / "steps").mkdir(exist_ok=True)
        # Kept so a step can be rerun (or profiled) by hand while the stores are up: see docs/benchmark.md.
        (self.root / "steps" / f"{step}.json").write_text(ctx.to_json())
        machine_before = busy_cpu_seconds()
        window_started = time.perf_counter()
        source_before = tree_cpu_seconds(self.stores.mongo.process.pid)
        postgres_before = tree_cpu_seconds(self.postmaster_pid)
        with tempfile.NamedTemporaryFile(suffix=".json") as result_file:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", "etl_assets.local.bench", "step", step, "--context", ctx.to_json(),
                 "--result-file", result_file.name])
            _, status, usage = os.wait4(process.pid, 0)
            window = time.perf_counter() - window_started
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise StepFailed(f"{report.LABELS[step]} ({products:,}) failed with exit code "
                                 f"{process.returncode}; its traceback is above")
            outcome = bench_steps.StepOutcome(**json.loads(Path(result_file.name).read_text()))
        # The step's whole life, start-up and imports too (for Sling, with the binary it waited for).
        step_cpu = usage.ru_utime + usage.ru_stime
        source_cpu = tree_cpu_seconds(self.stores.mongo.process.pid) - source_before
        postgres_cpu = tree_cpu_seconds(self.postmaster_pid) - postgres_before
        others_cpu = busy_cpu_seconds() - machine_before - step_cpu - source_cpu - postgres_cpu
        measurement = Measurement(
            step=step, products=products, rows=outcome.rows, seconds=outcome.seconds,
            peak_rss_bytes=outcome.worker_peak_rss_bytes or usage.ru_maxrss * 1024,
            cpu_seconds=outcome.cpu_seconds, source_cpu_seconds=source_cpu, postgres_cpu_seconds=postgres_cpu,
            others_cpu_share=max(others_cpu, 0.0) / (window * CPUS), details=outcome.details,
        )
        log(f"  {report.LABELS[step]} ({products:,}): {measurement.rows:,} rows in {measurement.seconds:.2f} s, "
            f"{measurement.rows_per_second:,.0f} rows/s, peak RSS {measurement.peak_rss_mib:.0f} MiB")
        return measurement

    def truncate(self, table: str) -> None:
        with self.bench_db.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {table}")

    def reset_product_copy(self) -> None:
        bench_data.reset_product_copy(self.cart_db, self.warehouse)

    def vacuum_product_copy(self) -> None:
        """What autovacuum does between two scheduled syncs: the warm run meets a settled table."""
        with self.cart_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE product, cart")

    def run(self, products: int, old_service_products: int, memory_sizes: list[int],
            repeats: int) -> list[Measurement]:
        def step(name: str, product_db: str, count: int,
                 prepare: Callable[[], object] | None = None) -> Measurement | None:
            log(f"{report.LABELS[name]} ({count:,} products)")
            if prepare:
                prepare()
            try:
                return self.measure(name, product_db, count)
            except StepFailed as err:  # the other steps still tell something; its targets become SKIP
                log(f"  {err}")
                self.failures.append(str(err))
                return None

        log(f"products: {products:,}")
        main_db = self.products(products)

        def prepare_warm() -> None:
            log(f"  loaded {bench_data.load_carts(self.cart_db, products):,} carts")
            self.vacuum_product_copy()

        # Whole rounds, not one step three times in a row: the machine drifts over minutes, and the
        # steps a ratio compares should meet the same machine.
        main_steps: list[tuple[str, Callable[[], object] | None]] = [
            (report.RAW, lambda: self.truncate(bench_steps.RAW_TABLE)),
            (report.FULL_COLD, self.reset_product_copy),
            (report.FULL_WARM, prepare_warm),
            (report.INCREMENTAL,
             lambda: log(f"  changed {bench_data.change_one_percent(self.mongo[main_db], products):,} products")),
            (report.SLING, None),
            (report.RECONCILE, None),
        ]
        runs: dict[str, list[Measurement]] = {name: [] for name, _ in main_steps}
        for number in range(1, repeats + 1):
            log(f"round {number} of {repeats}")
            for name, prepare in main_steps:
                if len(runs[name]) < number - 1:  # it failed in an earlier round: not run again
                    continue
                if measured := step(name, main_db, products, prepare):
                    runs[name].append(measured)
        measurements = [median_run(measured) for measured in runs.values() if measured]
        old_db = self.products(old_service_products)
        extra = [step(report.OLD_SERVICE, old_db, old_service_products,
                      lambda: self.truncate(bench_steps.LEGACY_TABLE))]
        for size in memory_sizes:
            if size != products:
                size_db = self.products(size)
                extra += [step(report.MEMORY_SCALE, size_db, size, self.reset_product_copy),
                          step(report.MEMORY_SCALE_WARM, size_db, size)]
        return measurements + [m for m in extra if m]


def median_run(runs: list[Measurement]) -> Measurement:
    """The run with the median time; with several, every run's time goes into its details."""
    median = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    if len(runs) > 1:
        median.details = {**median.details, "runs_s": [round(m.seconds, 2) for m in runs]}
    return median


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=None,
                        help=f"products in the catalog (default {DEFAULT_PRODUCTS:,}; {QUICK_PRODUCTS:,} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK_PRODUCTS:,} products and no memory-scale runs")
    parser.add_argument("--memory-sizes", type=_sizes, default=None,
                        help="catalog sizes of the extra full syncs (cold, then warm) for the memory targets "
                             f"(default {','.join(map(str, MEMORY_SIZES))}; none with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"rounds of the main steps, each step's median run kept (default {REPEATS}; 1 with --quick)")
    parser.add_argument("--old-service-products", type=int, default=OLD_SERVICE_PRODUCTS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="the product sync's batch size")
    parser.add_argument("--root", type=Path, default=Path(".local/bench"), help="where the bench stores live")
    parser.add_argument("--output", type=Path, default=Path("bench-results/latest.json"))
    parser.add_argument("--keep-stores", action="store_true",
                        help="leave the bench stores running afterwards, to rerun or profile a step by hand")
    args = parser.parse_args(argv)
    if args.products is None:
        args.products = QUICK_PRODUCTS if args.quick else DEFAULT_PRODUCTS
    if args.memory_sizes is None:
        args.memory_sizes = [] if args.quick else list(MEMORY_SIZES)
    if args.repeats is None:
        args.repeats = 1 if args.quick else REPEATS
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def step_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench step", description="run one measured step (used by the bench)")
    parser.add_argument("name", choices=sorted(bench_steps.STEPS))
    parser.add_argument("--context", required=True, help="the StepContext as JSON")
    parser.add_argument("--result-file", type=Path, required=True)
    args = parser.parse_args(argv)
    bench_steps.run_step(args.name, bench_steps.StepContext.from_json(args.context), args.result_file)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["step"]:
        step_main(argv[1:])
        return
    args = parse_args(argv)
    root = args.root.resolve()
    started_at = datetime.now(UTC)
    load_at_start = os.getloadavg()
    stores = LocalStores.under(root / "stores")
    _stop_stale_mongo(stores)
    stores.start()
    try:
        bench = Bench(stores, root, args.batch_size)
        measurements = bench.run(args.products, args.old_service_products, args.memory_sizes, args.repeats)
    finally:
        if not args.keep_stores:
            stores.stop()
    targets = report.evaluate_targets(measurements)
    noisiest = max((m.others_cpu_share or 0.0 for m in measurements), default=0.0)
    run = {
        "products": args.products, "quick": args.quick, "batch_size": args.batch_size, "repeats": args.repeats,
        "old_service_products": args.old_service_products, "memory_sizes": args.memory_sizes,
        "started_at": started_at.isoformat(), "finished_at": datetime.now(UTC).isoformat(),
        "failed_steps": bench.failures,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_at_start": load_at_start, "load_at_end": os.getloadavg(),
                    "max_noise_share": round(noisiest, 3)},
    }
    result = report.summary(measurements, targets, run)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n### Product sync benchmark: {args.products:,} products, {os.cpu_count()} CPUs, "
          f"{started_at:%Y-%m-%d %H:%M} UTC\n")
    if args.repeats > 1:
        print(f"The steps at {args.products:,} products but the old service ran in {args.repeats} rounds; the "
              "table shows each step's median run (every run's time is in the JSON, `runs_s`).\n")
    print(report.markdown_table(measurements))
    print("\n" + report.targets_table(targets))
    if verdict := report.reconciliation_verdict(measurements):
        print(f"\n{verdict}")
    print("\nWhere the time went:\n\n" + report.cpu_table(measurements))
    if note := report.first_batch_note(measurements):
        print(f"\n{note}")
    for failure in bench.failures:
        print(f"\nFAILED STEP: {failure}")
    if noisiest > NOISY_SHARE:
        print(f"\nOther processes took up to {noisiest:.0%} of the machine's CPU during a step: "
              "rerun on a quiet machine for final figures.")
    print(f"\nwritten to {args.output}")
    print(json.dumps(result, separators=(",", ":")))
    if bench.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
