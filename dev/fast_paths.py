"""Time each fast path of the product sync against the simple path it replaces, in whole full syncs.

A run is a cold full sync of N generated products into an empty `product` table, then a warm one over
the copy it left (after a VACUUM ANALYZE, as autovacuum would run between two syncs), in a process of
its own, with at most one fast path swapped for its simple path:

    fast           as shipped
    find_raw       pymongo's find_raw_batches, each batch split into documents again (no raw_cursor)
    exact_only     every document through the exact path: pymongo decode, field by field (no columnar)
    pandera        pandera's validate() on every batch (no rules in one query)

Rounds interleave the variants, so a machine that drifts meets them alike; each variant's median run
is kept. Besides wall time, each run records the sync process's CPU (all threads), the servers' CPU
and the share of the machine's CPU that other processes used meanwhile. Uses the bench's products
(dev stores, generated once per size).

    .venv/bin/python -m dev.fast_paths                           # 200,000 products, 5 rounds
    .venv/bin/python -m dev.fast_paths --products 20000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pymongo
import sqlalchemy as sa
from pymongo.collection import Collection

from dev import bench_data
from dev.bench import busy_cpu_seconds, tree_cpu_seconds
from dev.bench_steps import bson_documents
from dev.stores import LocalStores, use_private_runtime_dir
from etl_assets.sync import product_transform, products, validate
from etl_assets.sync.stores import CART_DB, PRODUCT_DB, WAREHOUSE, mongo_database, postgres_engine

VARIANTS = ("fast", "find_raw", "exact_only", "pandera")
BATCH_SIZE = products.BATCH_SIZE
CPUS = psutil.cpu_count() or 1


def find_raw_batch_documents(collection: Collection, query: Mapping[str, Any], *, store: str, batch_size: int,
                             sort: list[tuple[str, int]] | None = None) -> Iterator[list[bytes]]:
    """raw_cursor.find_documents' simple path: pymongo's raw batches, split into documents again."""
    for raw_batch in collection.find_raw_batches(dict(query), sort=sort, batch_size=batch_size):
        yield [bytes(document) for document in bson_documents(raw_batch)]


def use_simple_path(variant: str) -> None:
    if variant == "find_raw":
        products.find_documents = find_raw_batch_documents
    elif variant == "exact_only":
        product_transform._columnar_rows = lambda raw, documents: product_transform._NO_ROWS
    elif variant == "pandera":
        validate.model_rules = lambda frame, model: None


def measured_sync(context: dict[str, Any], run_id: str) -> dict[str, Any]:
    product_db = mongo_database(context["mongo_uri"], context["product_db"], store=PRODUCT_DB, timeout_s=10)
    cart_db = postgres_engine(context["cart_url"], store=CART_DB, timeout_s=10)
    warehouse = postgres_engine(context["warehouse_url"], store=WAREHOUSE, timeout_s=10)
    machine, source, postgres = busy_cpu_seconds(), tree_cpu_seconds(context["mongo_pid"]), \
        tree_cpu_seconds(context["postgres_pid"])
    started, cpu = time.perf_counter(), time.process_time()
    report = products.sync_products(product_db, cart_db, warehouse, mode="full", batch_size=BATCH_SIZE,
                                    run_id=run_id)
    wall, worker_cpu = time.perf_counter() - started, time.process_time() - cpu
    source_cpu = tree_cpu_seconds(context["mongo_pid"]) - source
    postgres_cpu = tree_cpu_seconds(context["postgres_pid"]) - postgres
    others = busy_cpu_seconds() - machine - worker_cpu - source_cpu - postgres_cpu
    return {"wall_s": wall, "worker_cpu_s": worker_cpu, "source_cpu_s": source_cpu,
            "postgres_cpu_s": postgres_cpu, "others_share": max(others, 0.0) / (wall * CPUS),
            "counts": {key: getattr(report, key) for key in ("read", "inserted", "updated", "unchanged",
                                                             "quarantined")}}


def run_variant(variant: str, context: dict[str, Any]) -> dict[str, Any]:
    """In the run's own process: a cold, then a warm full sync with `variant`'s paths."""
    use_simple_path(variant)
    cart_db, warehouse = sa.create_engine(context["cart_url"]), sa.create_engine(context["warehouse_url"])
    bench_data.reset_product_copy(cart_db, warehouse)
    result = {}
    for phase in ("cold", "warm"):
        with cart_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if phase == "warm":
                conn.exec_driver_sql("VACUUM ANALYZE product")
            conn.exec_driver_sql("CHECKPOINT")
        result[phase] = measured_sync(context, f"fast-paths-{variant}-{phase}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path(".local/fast_paths"))
    parser.add_argument("--output", type=Path, default=Path("bench-results/fast_paths.json"))
    parser.add_argument("--table-only", action="store_true", help="print the table of the last --output")
    options = parser.parse_args(argv)
    if options.table_only:
        results = json.loads(options.output.read_text())
        print_table(results["runs"], results["products"])
        return

    use_private_runtime_dir()
    stores = LocalStores.under(options.root.resolve() / "stores").start()
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(stores.mongo.uri)
        product_db = bench_data.database_name(options.products)
        bench_data.ensure_products(client[product_db], options.products)
        for _ in client[product_db]["products"].find_raw_batches({}, batch_size=BATCH_SIZE):
            pass  # one unmeasured read, so no run pays for reading the collection from disk
        context = {
            "mongo_uri": stores.mongo.uri, "product_db": product_db, "mongo_pid": stores.mongo.process.pid,
            "postgres_pid": int((stores.postgres.data_dir / "postmaster.pid").read_text().split()[0]),
            "cart_url": stores.postgres.url("cart"), "warehouse_url": stores.postgres.url("warehouse"),
        }
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        for number in range(1, options.rounds + 1):
            for variant in VARIANTS:
                output = subprocess.run(  # noqa: S603 - this interpreter, this script
                    [sys.executable, "-m", "dev.fast_paths", "run", variant, json.dumps(context)],
                    check=True, capture_output=True, text=True).stdout
                runs[variant].append(json.loads(output.splitlines()[-1]))
                print(f"round {number} {variant}: " + ", ".join(
                    f"{phase} {run['wall_s']:.2f} s (worker CPU {run['worker_cpu_s']:.2f} s, others "
                    f"{run['others_share']:.0%})" for phase, run in runs[variant][-1].items()), flush=True)
    finally:
        stores.stop()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps({"products": options.products, "runs": runs}))
    print_table(runs, options.products)


def print_table(runs: dict[str, list[dict[str, Any]]], count: int) -> None:
    """Each variant's median run. The CPU the sync process spends is the steady figure: wall time
    swings with what else the machine runs (the `others` column)."""
    def median(variant: str, phase: str, key: str) -> float:
        return statistics.median(run[phase][key] for run in runs[variant])

    print(f"\n{count:,} products, median of {len(runs['fast'])} run(s) each\n")
    print("| path | phase | wall (s) | sync process CPU (s) | CPU the fast path saves (s) | others' CPU |")
    print("|---|---|---:|---:|---:|---:|")
    for phase in ("cold", "warm"):
        fast_cpu = median("fast", phase, "worker_cpu_s")
        for variant in VARIANTS:
            cpu = median(variant, phase, "worker_cpu_s")
            saved = "—" if variant == "fast" else f"{cpu - fast_cpu:.2f}"
            print(f"| {variant} | {phase} | {median(variant, phase, 'wall_s'):.2f} | {cpu:.2f} | {saved} | "
                  f"{median(variant, phase, 'others_share'):.0%} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        print(json.dumps(run_variant(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        main()
