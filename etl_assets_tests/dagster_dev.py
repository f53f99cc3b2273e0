"""`dagster dev -w workspace.yaml` as a person starts it from the repository root (webserver, daemon and
code server), on a free port with its own DAGSTER_HOME holding the local instance, pointed at a test's
stores. Shared by the tests that drive the real daemon."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from dev.stores import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
LOCAL_INSTANCE = REPO_ROOT / "dev" / "dagster_local.yaml"
VENV_BIN = Path(sys.executable).parent
DAGSTER = str(VENV_BIN / "dagster")
(LOCATION,) = (entry["python_module"]["location_name"] for entry in yaml.safe_load(WORKSPACE.read_text())["load_from"])
REPOSITORY = "__repository__"
# A bound, not an expectation: the code location loads in a few seconds on a laptop.
START_TIMEOUT_S = 120
IN_PROGRESS = {"STARTING", "STARTED"}
DONE = {"SUCCESS", "FAILURE", "CANCELED"}

LOCATIONS = """
query { workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RUNS = """
query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { __typename ... on Runs { results {
  runId jobName status startTime endTime tags { key value } } } } }"""


@dataclass
class DagsterDev:
    process: subprocess.Popen
    port: int
    log: Path
    env: dict[str, str]

    @property
    def graphql_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def query(self, query: str, **variables: Any) -> dict:
        response = requests.post(self.graphql_url, json={"query": query, "variables": variables}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def runs(self, **filters: Any) -> list[dict]:
        return self.query(RUNS, filter=filters)["runsOrError"]["results"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_until(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dagster dev exited:\n{self.log_tail()}"
            if value := predicate():
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{self.log_tail()}")


def location_loaded(dev: DagsterDev) -> bool:
    try:
        entries = dev.query(LOCATIONS)["workspaceOrError"]["locationEntries"]
    except requests.RequestException:
        return False
    entry = next((e for e in entries if e["name"] == LOCATION), None)
    if entry is None or entry["loadStatus"] != "LOADED":
        return False
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry["locationOrLoadError"]
    return True


def dagster_env(store_env: Mapping[str, str], dagster_home: Path, **settings: str) -> dict[str, str]:
    """This process's environment with the stores, a fresh local instance in `dagster_home`, and no
    SHOP_SYNC_* or alert settings but `settings`."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(LOCAL_INSTANCE, dagster_home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOP_SYNC_")}
    env.pop("ALERT_WEBHOOK_URL", None)
    return {**env, **store_env, "DAGSTER_HOME": str(dagster_home), **settings}


@contextlib.contextmanager
def running_dagster_dev(env: dict[str, str], log: Path) -> Iterator[DagsterDev]:
    """`dagster dev -w workspace.yaml` from the repository root, as `make ui` runs it."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", DAGSTER, "dev", "-h", "127.0.0.1", "-p", str(port),
             "-w", WORKSPACE.name],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    dev = DagsterDev(process, port, log, env)
    try:
        dev.wait_until(lambda: location_loaded(dev), START_TIMEOUT_S, "the code location to load")
        yield dev
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop dagster dev and everything it started: its own process group, nothing else."""
    # The webserver, daemon and code server share the dev process's group (start_new_session).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
