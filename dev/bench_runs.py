"""Whole Dagster runs for the benchmark: each named job as a run worker runs it, and each check of the
`validate` job on its own.

A run step's process is the run worker: it loads the code location the way `dagster api execute_run`
does (a reconstructable job from `etl_assets.definitions`), then executes the job with the job's own
executor against a local instance, so a multiprocess job starts its step processes as it would in a
run pod. The parent samples the memory of the whole process tree (TreeMemory), the figure a pod's
memory limit is held to.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

# How often the parent samples a step's process tree: shorter than any step process lives.
SAMPLE_INTERVAL_S = 0.02


def _pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (libraries mapped by several processes) split between them,
    so the tree's sum is the memory the processes hold together, which is what a cgroup is charged."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class TreePeak:
    rss_bytes: int = 0  # the largest sum of RSS over the tree: counts a shared library once per process
    pss_bytes: int = 0  # the largest sum of PSS over the tree
    processes: int = 0  # the most processes alive at once


class TreeMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S):
        super().__init__(name=f"tree-memory-{pid}", daemon=True)
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak = TreePeak()
        self._done = threading.Event()

    def sample(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = pss = alive = 0
        for process in tree:
            try:
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            pss += _pss_bytes(process.pid)
            alive += 1
        self.peak.rss_bytes = max(self.peak.rss_bytes, rss)
        self.peak.pss_bytes = max(self.peak.pss_bytes, pss)
        self.peak.processes = max(self.peak.processes, alive)

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval_s)

    def stop(self) -> TreePeak:
        self._done.set()
        self.join()
        return self.peak


def process_started_at(pid: int) -> float:
    """When a process started, on the time.time() clock."""
    return psutil.Process(pid).create_time()


def seconds_since_start() -> float:
    """How long this process has existed: its interpreter start and the imports before the caller."""
    return time.time() - process_started_at(os.getpid())


# Production's run pods capture no compute logs (dagster.yaml): the local default would start a `tail`
# and a Python watcher per stream in every run, processes a run pod does not have.
_LIKE_A_RUN_POD = """
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def dagster_home(root: Path) -> Path:
    """A local instance for the bench's runs: `make demo`'s (SQLite storage), without compute logs."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    template = Path(__file__).with_name("dagster_local.yaml")
    (home / "dagster.yaml").write_text(template.read_text() + _LIKE_A_RUN_POD)
    return home


# ---------- the run worker (runs in the measured process) ----------

def _events_seconds(instance: object, run_id: str) -> dict[str, float]:
    """From the run's event log: how long the run took from its start event to its success event, and
    how much of it the steps' own work took (each step's start to its end)."""
    from dagster import DagsterEventType

    records = instance.all_logs(run_id)  # type: ignore[attr-defined]
    times: dict[str, float] = {}
    step_started: dict[str, float] = {}
    in_steps = 0.0
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == DagsterEventType.RUN_START:
            times["run_start"] = record.timestamp
        elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
            times["run_end"] = record.timestamp
        elif kind == DagsterEventType.STEP_START:
            step_started[event.step_key] = record.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and event.step_key in step_started:
            in_steps += record.timestamp - step_started.pop(event.step_key)
    return {"start_to_success_s": times.get("run_end", 0.0) - times.get("run_start", 0.0), "steps_s": in_steps}


def run_worker(job_name: str, result_file: Path, *, partition: str | None = None,
               check: str | None = None) -> None:
    """Load the code location, execute `job_name` (or only `check` of it) with its own executor against
    the instance in DAGSTER_HOME, and write the timings as JSON. Each phase is timed on its own: the
    interpreter's start (before this function), importing dagster, loading etl_assets.definitions, and
    the run from its creation to its last event."""
    import json

    before_dagster = seconds_since_start()
    started = time.perf_counter()
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    dagster_import_s = time.perf_counter() - started
    started = time.perf_counter()
    repository = ReconstructableRepository.for_module("etl_assets.definitions", "defs", working_directory=os.getcwd())
    job = repository.get_reconstructable_job(job_name)
    job_def = job.get_definition()
    if check is not None:
        wanted = next(key for key in job_def.asset_layer.asset_graph.asset_check_keys
                      if key.to_user_string() == check)
        job = job.get_subset(asset_check_selection={wanted})
        job.get_definition()
    code_load_s = time.perf_counter() - started
    tags = {"dagster/partition": partition} if partition else None
    cpu_before = time.process_time()
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = dg.execute_job(job, instance=instance, tags=tags)
        run_s = time.perf_counter() - started
        events = _events_seconds(instance, result.run_id)
    result_file.write_text(json.dumps({
        "success": result.success, "run_id": result.run_id,
        "interpreter_start_s": round(before_dagster, 3), "dagster_import_s": round(dagster_import_s, 3),
        "code_load_s": round(code_load_s, 3), "run_s": round(run_s, 3),
        "run_cpu_s": round(time.process_time() - cpu_before, 3),
        **{key: round(value, 3) for key, value in events.items()},
    }))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="bench_runs", description="execute one job as a run worker")
    parser.add_argument("job")
    parser.add_argument("--result-file", type=Path, required=True)
    parser.add_argument("--partition")
    parser.add_argument("--check", help="run only this check of the job (e.g. cart_db/product:matches_schema)")
    args = parser.parse_args(argv)
    run_worker(args.job, args.result_file, partition=args.partition, check=args.check)


if __name__ == "__main__":
    main()
