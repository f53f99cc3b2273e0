"""`make bench`: how fast each path moves its data, against its raw limit (and, for the product sync,
Sling and the old service), whether it meets the issues' targets, and how much memory a whole run of
each named job needs. Not part of CI. See docs/benchmark.md.

    python -m dev.bench [--products 200000] [--quick] [--memory-sizes 100000,1000000]
        [--sections products,carts,warehouse,checks,runs] [--carts N] [--orders N]

It starts its own stores under .local/bench (the demo stores are left alone), generates the data
once per size, measures every step in a process of its own (a whole run: its run worker and every
step process it starts), prints Markdown tables, PASS/FAIL per target and a JSON line, and writes
bench-results/latest.json. Timings depend on what else the machine runs: take final figures when it
is quiet.
"""

from __future__ import annotations

import argparse
import functools
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

from dev import bench_data, bench_runs, bench_steps
from dev import bench_report as report
from dev.bench_report import Measurement
from dev.stores import LocalStores
from etl_assets.resources import PRODUCT_DB
from etl_assets.sync.products import BATCH_SIZE, sync_products
from etl_assets.sync.stores import mongo_database

DEFAULT_PRODUCTS = 200_000
QUICK_PRODUCTS = 20_000
OLD_SERVICE_PRODUCTS = 20_000
MEMORY_SIZES = (100_000, 1_000_000)
# The main steps run in this many rounds and each step's median run counts: on a shared VM one run of
# a step can be 15-25% off the next, enough to flip a ratio target either way.
REPEATS = 3
BENCH_DATABASE = "bench"
ORDER_DATABASE = "bench_orders"  # cart snapshots and one day of orders
SECTIONS = ("products", "carts", "warehouse", "checks", "runs", "fanout")
FANOUT_RANGES = (1, 2)
MONGO_STALL_TOLERANCE_MS = 120_000
# Above this share of the machine's CPU going to other processes during a step, its timing is noisy.
NOISY_SHARE = 0.05
CPUS = os.cpu_count() or 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sling_binary() -> str:
    """The binary shipped in the sling-linux-amd64 wheel, unless SLING_BINARY names another; "" when
    neither is there."""
    if os.environ.get("SLING_BINARY"):
        return os.environ["SLING_BINARY"]
    try:
        import sling_linux_amd64  # only in the bench extra; the tests use this module without it
    except ImportError:
        return ""  # the Sling step then fails and says so; the other steps do not need it
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
            order_db=ORDER_DATABASE,
            day=bench_data.bench_day().isoformat(),
        )

    def checkpoint(self) -> None:
        """Flush PostgreSQL's dirty pages now, so a checkpoint does not land inside the next step."""
        with self.bench_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")

    def measure(self, step: str, product_db: str, products: int) -> Measurement:
        """Run one step in its own process; its peak RSS and CPU come from that process's rusage."""
        ctx = self.context(product_db)
        (self.root / "steps").mkdir(exist_ok=True)
        # Kept so a step can be rerun (or profiled) by hand while the stores are up: see docs/benchmark.md.
        (self.root / "steps" / f"{step}.json").write_text(ctx.to_json())
        return self._measure(step, products, lambda result: [
            sys.executable, "-m", "dev.bench", "step", step, "--context", ctx.to_json(),
            "--result-file", result])

    def measure_run(self, step: str, product_db: str, products: int, job: str, *, check: str | None = None,
                    partition: str | None = None, settings: dict[str, str] | None = None) -> Measurement:
        """A whole Dagster run of `job` (or of one of its checks) in a run worker of its own, against the
        bench stores; its peak is the summed memory of the worker and every step process it starts."""
        # secantusdb holds its GIL through a long find (a whole range at 1M products), so a heartbeat can
        # go unanswered past the 5 s default, and pymongo then cancels the read in flight.
        stall_tolerant_mongo = f"{self.stores.mongo.uri}&connectTimeoutMS={MONGO_STALL_TOLERANCE_MS}"
        env = {**os.environ, **self.stores.env(), "PRODUCT_MONGO_DB": product_db, "ORDER_MONGO_DB": ORDER_DATABASE,
               "PRODUCT_MONGO_URI": stall_tolerant_mongo, "ORDER_MONGO_URI": stall_tolerant_mongo,
               "DAGSTER_HOME": str(bench_runs.dagster_home(self.root)), **(settings or {})}

        def command(result: str) -> list[str]:
            return [sys.executable, "-m", "dev.bench_runs", job, "--result-file", result,
                    *(["--check", check] if check else []), *(["--partition", partition] if partition else [])]

        measurement = self._measure(step, products, command, env=env, whole_tree=True)
        if job in job_profiles():
            profile, limit, executor = job_profiles()[job]
            measurement.details.update(profile=profile, limit_bytes=limit, executor=executor)
        return measurement

    def _measure(self, step: str, products: int, command: Callable[[str], list[str]],
                 env: dict[str, str] | None = None, whole_tree: bool = False) -> Measurement:
        self.checkpoint()
        machine_before = busy_cpu_seconds()
        window_started = time.perf_counter()
        source_before = tree_cpu_seconds(self.stores.mongo.process.pid)
        postgres_before = tree_cpu_seconds(self.postmaster_pid)
        with tempfile.NamedTemporaryFile(suffix=".json") as result_file:
            launched_at = time.time()
            process = subprocess.Popen(command(result_file.name), env=env)  # noqa: S603 - this interpreter
            tree = bench_runs.TreeMemory(process.pid)
            tree.start()
            # rusage counts the step process and the children it waited for (a run's step processes).
            _, status, usage = os.wait4(process.pid, 0)
            peak = tree.stop()
            window = time.perf_counter() - window_started
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise StepFailed(f"{report.label(step)} ({products:,}) failed with exit code "
                                 f"{process.returncode}; its traceback is above")
            result = json.loads(Path(result_file.name).read_text())
        step_cpu = usage.ru_utime + usage.ru_stime
        source_cpu = tree_cpu_seconds(self.stores.mongo.process.pid) - source_before
        postgres_cpu = tree_cpu_seconds(self.postmaster_pid) - postgres_before
        others_cpu = busy_cpu_seconds() - machine_before - step_cpu - source_cpu - postgres_cpu
        if whole_tree:
            if not result["success"]:
                raise StepFailed(f"{report.label(step)} ({products:,}): the run failed, see its events in "
                                 f"{bench_runs.dagster_home(self.root)} (run {result['run_id']})")
            # From the launch (Popen) to the run's last event: what a person waiting on the run sees.
            finished = launched_at + result["interpreter_start_s"] + result["dagster_import_s"] + \
                result["code_load_s"] + result["run_s"]
            outcome = bench_steps.StepOutcome(0, result["run_s"], result["run_cpu_s"], {
                **result, "launch_to_success_s": round(finished - launched_at, 3),
                "peak_pss_bytes": peak.pss_bytes, "processes": peak.processes})
            peak_bytes = peak.rss_bytes
        else:
            outcome = bench_steps.StepOutcome(**result)
            # The step's own peak; for Sling, the sling binary's.
            peak_bytes = outcome.peak_rss_bytes
        measurement = Measurement(
            step=step, products=products, rows=outcome.rows, seconds=outcome.seconds, peak_rss_bytes=peak_bytes,
            cpu_seconds=outcome.cpu_seconds, source_cpu_seconds=source_cpu, postgres_cpu_seconds=postgres_cpu,
            others_cpu_share=max(others_cpu, 0.0) / (window * CPUS), details=outcome.details,
        )
        log(f"  {report.label(step)} ({products:,}): {measurement.rows:,} rows in {measurement.seconds:.2f} s, "
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

    def step(self, name: str, product_db: str, count: int,
             prepare: Callable[[], object] | None = None) -> Measurement | None:
        log(f"{report.label(name)} ({count:,} products)")
        if prepare:
            prepare()
        try:
            return self.measure(name, product_db, count)
        except StepFailed as err:  # the other steps still tell something; its targets become SKIP
            log(f"  {err}")
            self.failures.append(str(err))
            return None

    def rounds(self, steps: list[tuple[str, Callable[[], object] | None]], product_db: str, products: int,
               repeats: int) -> list[Measurement]:
        """Whole rounds, not one step three times in a row: the machine drifts over minutes, and the
        steps a ratio compares should meet the same machine. Each step's median run is kept."""
        runs: dict[str, list[Measurement]] = {name: [] for name, _ in steps}
        for number in range(1, repeats + 1):
            log(f"round {number} of {repeats}")
            for name, prepare in steps:
                if len(runs[name]) < number - 1:  # it failed in an earlier round: not run again
                    continue
                if measured := self.step(name, product_db, products, prepare):
                    runs[name].append(measured)
        return [median_run(measured) for measured in runs.values() if measured]

    def run(self, options: argparse.Namespace) -> list[Measurement]:
        products, repeats = options.products, options.repeats
        log(f"products: {products:,}")
        main_db = self.products(products)
        measurements: list[Measurement] = []
        if "products" in options.sections:
            measurements += self.product_sync_steps(main_db, options)
        if self.copy_rows() != products:  # the paths below read the copy the product sync keeps
            log("bringing the product copy in line with the catalog (not measured)")
            sync_products(self.mongo_database(main_db), self.cart_db, self.warehouse, mode="full",
                          run_id="bench-prepare")
        if "carts" in options.sections:
            measurements += self.cart_sync_steps(main_db, products, options.carts, repeats)
        elif {"warehouse", "checks", "runs"} & set(options.sections) and self.cart_rows() != options.carts:
            log(f"  loaded {bench_data.load_carts(self.cart_db, options.carts):,} carts "
                "(for the cart funnel, the checks and runs)")
        if "warehouse" in options.sections:
            measurements += self.warehouse_steps(main_db, products, options.orders, repeats)
        if "checks" in options.sections:
            if "products" not in options.sections:  # the checks' target: a warm full sync at this scale
                self.vacuum_product_copy()
                measurements += [m for m in [self.step(report.FULL_WARM, main_db, products)] if m]
            measurements += self.check_steps(main_db, products)
        if "runs" in options.sections:
            measurements += self.job_runs(main_db, products, options.orders)
        if "fanout" in options.sections:
            measurements += self.fanout_runs(main_db, products, options.fanout)
        return measurements

    def fanout_runs(self, main_db: str, products: int, range_counts: list[int]) -> list[Measurement]:
        """Whole runs of product_sync_fanout over a copy in line with the catalog (the nightly case),
        with 1, 2, … ranges: its wall time from launch to success against the ranges."""
        measurements = []
        for ranges in range_counts:
            step = f"{report.FANOUT_PREFIX}{ranges}"
            log(f"{report.label(step)} ({products:,} products)")
            try:
                measured = self.measure_run(step, main_db, products, "product_sync_fanout",
                                            settings={"SHOP_SYNC_PRODUCT_SYNC_RANGES": str(ranges)})
            except StepFailed as err:
                log(f"  {err}")
                self.failures.append(str(err))
                continue
            measured.rows = products
            measured.seconds = measured.details["run_s"]
            measurements.append(measured)
        return measurements

    def product_sync_steps(self, main_db: str, options: argparse.Namespace) -> list[Measurement]:
        products = options.products

        def prepare_warm() -> None:
            log(f"  loaded {bench_data.load_carts(self.cart_db, int(products * bench_data.CARTS_PER_PRODUCT)):,} carts")
            self.vacuum_product_copy()

        measurements = self.rounds([
            (report.RAW, lambda: self.truncate(bench_steps.RAW_TABLE)),
            (report.FULL_COLD, self.reset_product_copy),
            (report.FULL_WARM, prepare_warm),
            (report.INCREMENTAL,
             lambda: log(f"  changed {bench_data.change_one_percent(self.mongo[main_db], products):,} products")),
            (report.SLING, None),
            (report.RECONCILE, None),
        ], main_db, products, options.repeats)
        old_db = self.products(options.old_service_products)
        extra = [self.step(report.OLD_SERVICE, old_db, options.old_service_products,
                           lambda: self.truncate(bench_steps.LEGACY_TABLE))]
        for size in options.memory_sizes:
            if size != products:
                size_db = self.products(size)
                extra += [self.step(report.MEMORY_SCALE, size_db, size, self.reset_product_copy),
                          self.step(report.MEMORY_SCALE_WARM, size_db, size)]
        measurements += [m for m in extra if m]
        if options.memory_sizes and options.memory_sizes[-1] != products:
            # The memory runs left another catalog's copy; the paths below need this one's.
            self.reset_product_copy()
        return measurements

    def cart_sync_steps(self, main_db: str, products: int, carts: int, repeats: int) -> list[Measurement]:
        """Cold into an empty `carts`, warm (a full pass, nothing changed: the nightly reconcile), and an
        incremental sync after 1% of the carts changed (what cart_changes launches)."""
        log(f"cart sync: {carts:,} carts over {products:,} products")
        with self.cart_db.begin() as conn:
            # The copy as it stands between syncs: written by an earlier sync, not within the cart
            # sync's lookback, so an incremental cart sync finds only the carts that changed.
            conn.exec_driver_sql("UPDATE product SET synced_at = synced_at - interval '1 day'")
        log(f"  loaded {bench_data.load_carts(self.cart_db, carts):,} carts")
        self.vacuum_product_copy()
        order_db = self.mongo[ORDER_DATABASE]
        return self.rounds([
            (report.CART_RAW, None),
            (report.CART_RAW_WITHOUT_INDEXES, None),
            (report.CART_COLD, lambda: bench_data.reset_cart_snapshots(order_db, self.warehouse)),
            (report.CART_WARM, None),
            (report.CART_INCREMENTAL,
             lambda: log(f"  changed {bench_data.change_carts_one_percent(self.cart_db):,} carts")),
        ], main_db, products, repeats)

    def warehouse_steps(self, main_db: str, products: int, orders: int, repeats: int) -> list[Measurement]:
        """One day of orders loaded into an empty day, then rebuilt; the analytics tables after each."""
        day = bench_data.bench_day()
        log(f"warehouse day build: {orders:,} orders of {bench_data.ITEMS_PER_ORDER} items on {day}")
        started = time.perf_counter()
        if bench_data.ensure_orders(self.mongo[ORDER_DATABASE], day, orders, products):
            log(f"  generated {orders:,} orders in {time.perf_counter() - started:.0f} s")
        return self.rounds([
            (report.WAREHOUSE_RAW, lambda: self.truncate(bench_steps.RAW_ORDER_ITEMS_TABLE)),
            (report.WAREHOUSE_FIRST, lambda: bench_data.reset_warehouse_day(self.warehouse, day)),
            (report.WAREHOUSE_ANALYTICS_FIRST, None),
            (report.WAREHOUSE_REBUILD, None),
            (report.WAREHOUSE_ANALYTICS_REBUILD, None),
        ], main_db, products, repeats)

    def check_steps(self, main_db: str, products: int) -> list[Measurement]:
        """Every check of the validate job, each alone in a run of its own, over the stores as the
        paths above left them."""
        measurements = []
        for check in validate_checks():
            step = f"{report.CHECK_PREFIX}{check}"
            log(f"{report.label(step)} ({products:,} products)")
            try:
                measured = self.measure_run(step, main_db, products, "validate", check=check)
            except StepFailed as err:
                log(f"  {err}")
                self.failures.append(str(err))
                continue
            # The run's time includes Dagster's own events; the check's is its step's.
            measured.seconds = measured.details["steps_s"]
            measurements.append(measured)
        return measurements

    def job_runs(self, main_db: str, products: int, orders: int) -> list[Measurement]:
        """A whole run of every named job, the heaviest way the stores allow: the day's warehouse build,
        a first cart sync into empty snapshots, the product sync with nothing to copy (also the
        latency of an edit), the nightly reconcile, and validation."""
        day = bench_data.bench_day()
        if self.mongo[ORDER_DATABASE]["orders"].estimated_document_count() == 0:
            bench_data.ensure_orders(self.mongo[ORDER_DATABASE], day, orders, products)
        plan: list[tuple[str, str, str | None, Callable[[], object] | None]] = [
            (f"{report.RUN_PREFIX}warehouse_build", "warehouse_build", day.isoformat(), None),
            (f"{report.RUN_PREFIX}cart_sync", "cart_sync", None,
             lambda: bench_data.reset_cart_snapshots(self.mongo[ORDER_DATABASE], self.warehouse)),
            (f"{report.RUN_PREFIX}product_sync_incremental", "product_sync_incremental", None, None),
            (report.RUN_LATENCY, "product_sync_incremental", None, None),
            (f"{report.RUN_PREFIX}full_reconcile", "full_reconcile", None, None),
            (f"{report.RUN_PREFIX}validate", "validate", None, None),
        ]
        measurements = []
        for step, job, partition, prepare in plan:
            log(f"{report.label(step)} ({products:,} products)")
            if prepare:
                prepare()
            try:
                measurements.append(self.measure_run(step, main_db, products, job, partition=partition))
            except StepFailed as err:
                log(f"  {err}")
                self.failures.append(str(err))
        return measurements

    def mongo_database(self, name: str) -> pymongo.database.Database:
        return mongo_database(self.stores.mongo.uri, name, store=PRODUCT_DB, timeout_s=10)

    def copy_rows(self) -> int:
        with self.cart_db.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM product")).scalar_one()

    def cart_rows(self) -> int:
        with self.cart_db.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM cart")).scalar_one()


def validate_checks() -> list[str]:
    """The validate job's checks, as `asset/key:check_name`."""
    from etl_assets.definitions import defs

    graph = defs.resolve_job_def("validate").asset_layer.asset_graph
    return sorted(key.to_user_string() for key in graph.asset_check_keys)


@functools.cache
def job_profiles() -> dict[str, tuple[str, int, str]]:
    """Each named job's profile, that profile's memory limit in bytes, and the job's executor."""
    from etl_assets.definitions import defs
    from etl_assets.jobs import all_jobs
    from etl_assets.k8s import PROFILE_TAG, PROFILES

    profiles = {}
    for job in all_jobs:
        profile = job.tags[PROFILE_TAG]
        executor = defs.resolve_job_def(job.name).executor_def.name
        profiles[job.name] = (profile, memory_bytes(PROFILES[profile].limits_memory), executor)
    return profiles


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in binary units (what the profiles use) in bytes."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    if quantity[-2:] not in units:
        raise ValueError(f"memory quantity {quantity!r}: use Ki, Mi or Gi")
    return int(quantity[:-2]) * units[quantity[-2:]]


def median_run(runs: list[Measurement]) -> Measurement:
    """The run with the median time; with several, every run's time goes into its details."""
    median = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    if len(runs) > 1:
        median.details = {**median.details, "runs_s": [round(m.seconds, 2) for m in runs]}
    return median


def _sections(text: str) -> list[str]:
    sections = [part.strip() for part in text.split(",") if part.strip()]
    if unknown := set(sections) - set(SECTIONS):
        raise argparse.ArgumentTypeError(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    return sections


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
    parser.add_argument("--sections", type=_sections, default=list(SECTIONS),
                        help=f"which paths to measure, comma-separated (default all: {','.join(SECTIONS)})")
    parser.add_argument("--carts", type=int, default=None,
                        help=f"carts for the cart sync, the cart funnel and the checks (default {bench_data.CART_SYNC_CARTS_PER_PRODUCT}× "
                             "the products: 1,000,000 at 200,000; half the products with --quick)")
    parser.add_argument("--orders", type=int, default=None,
                        help=f"orders in the warehouse's day (default {bench_data.ORDERS_PER_PRODUCT}× the products)")
    parser.add_argument("--fanout", type=_sizes, default=list(FANOUT_RANGES),
                        help=f"range counts of the product_sync_fanout runs (default {','.join(map(str, FANOUT_RANGES))})")
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
    if args.carts is None:  # a smoke run keeps the test server's slow cart upserts short
        args.carts = args.products // 2 if args.quick else args.products * bench_data.CART_SYNC_CARTS_PER_PRODUCT
    if args.orders is None:
        args.orders = int(args.products * bench_data.ORDERS_PER_PRODUCT)
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
        measurements = bench.run(args)
    finally:
        if not args.keep_stores:
            stores.stop()
    targets = report.evaluate_targets(measurements) if "products" in args.sections else []
    targets += report.evaluate_path_targets(measurements)
    noisiest = max((m.others_cpu_share or 0.0 for m in measurements), default=0.0)
    run = {
        "products": args.products, "quick": args.quick, "batch_size": args.batch_size, "repeats": args.repeats,
        "old_service_products": args.old_service_products, "memory_sizes": args.memory_sizes,
        "sections": args.sections, "carts": args.carts, "orders": args.orders,
        "started_at": started_at.isoformat(), "finished_at": datetime.now(UTC).isoformat(),
        "failed_steps": bench.failures,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_at_start": load_at_start, "load_at_end": os.getloadavg(),
                    "max_noise_share": round(noisiest, 3)},
    }
    result = report.summary(measurements, targets, run)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n### Benchmark: {args.products:,} products, {args.carts:,} carts, {args.orders:,} orders in a day, "
          f"{os.cpu_count()} CPUs, {started_at:%Y-%m-%d %H:%M} UTC\n")
    if args.repeats > 1:
        print(f"The product, cart and warehouse steps ran in {args.repeats} rounds (the old service, the memory "
              "runs, the checks and the whole runs once); the tables show each step's median run (every run's "
              "time is in the JSON, `runs_s`).\n")
    if "products" in args.sections:
        print(report.markdown_table(measurements))
    for title, table in (("Cart sync", report.cart_table(measurements)),
                         ("Warehouse day build", report.warehouse_table(measurements)),
                         ("The validate job's checks, each alone", report.checks_table(measurements)),
                         ("Whole runs of the named jobs", report.runs_table(measurements)),
                         ("A do-nothing product_sync_incremental run, launch to success",
                          report.latency_table(measurements)),
                         ("The full product sync fanned out over _id ranges", report.fanout_table(measurements))):
        if table:
            print(f"\n{title}:\n\n{table}")
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
