"""The command lines a person types, run from the repository root as the README gives them.

One `dagster dev -w workspace.yaml` (webserver, daemon, code server) serves every launch in this module:
`dagster job launch` queues a run that its daemon must find in the workspace and start, and the
in-process forms (`dg launch`, `dagster asset materialize`) write their runs to the same instance.
`dg check defs` and `dg list defs` load the project as `dg` sees it. Every form must also appear in
the README, so what the README promises is what is tested.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from bson import ObjectId

from dev.stores import LocalStores
from etl_assets.alerts import LOG_PREFIX
from etl_assets.jobs import all_jobs
from etl_assets_tests.conftest import fresh_store_set
from etl_assets_tests.dagster_dev import (
    DONE,
    LOCATION,
    REPO_ROOT,
    VENV_BIN,
    WORKSPACE,
    DagsterDev,
    dagster_env,
    running_dagster_dev,
)

README = (REPO_ROOT / "README.md").read_text()
DG = str(VENV_BIN / "dg")
# Bounds, not expectations: loading the code location and running a small sync take seconds, and
# `validate` (one process per check) about a minute on an idle machine, four on a crowded one.
COMMAND_TIMEOUT_S = 480
RUN_TIMEOUT_S = 480
# A Kubernetes Service name (RFC 1035 label): the chart names the user deployment's Service after it.
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")

# How each README form launches a job: through the daemon (queued), or in the command's own process.
QUEUED_FORMS = {
    "job launch -w workspace.yaml": "dagster job launch -w workspace.yaml -j {job}",
    "job launch (pyproject.toml)": "dagster job launch -j {job}",
}
IN_PROCESS_FORMS = {"dg launch": "dg launch --job {job}"}
# `dagster asset materialize` runs assets, so the check-only `validate` job has no such form.
MATERIALIZE_FORMS = {
    "product_sync_incremental": "dagster asset materialize -m etl_assets.definitions --select cart_db/product",
}
LAUNCHES = [
    pytest.param(job, template.format(job=job), id=f"{job}: {name}")
    for job in ("validate", "product_sync_incremental")
    for name, template in {**QUEUED_FORMS, **IN_PROCESS_FORMS}.items()
] + [pytest.param(job, command, id=f"{job}: asset materialize") for job, command in MATERIALIZE_FORMS.items()]


def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_one_code_location_name_everywhere() -> None:
    """workspace.yaml, pyproject.toml (for `dagster` and for `dg`) and the Helm user deployment, whose
    name the chart uses for the code location and for its Kubernetes Service."""
    tool = pyproject()["tool"]
    (deployment,) = yaml.safe_load((REPO_ROOT / "helm-values" / "values.yaml").read_text())[
        "dagster-user-deployments"]["deployments"]
    (entry,) = yaml.safe_load(WORKSPACE.read_text())["load_from"]
    assert entry["python_module"]["module_name"] == tool["dagster"]["module_name"]
    assert tool["dg"]["project"]["code_location_target_module"] == tool["dagster"]["module_name"]
    names = {
        "workspace.yaml": LOCATION,
        "[tool.dagster]": tool["dagster"]["code_location_name"],
        "[tool.dg.project]": tool["dg"]["project"]["code_location_name"],
        "helm user deployment": deployment["name"],
    }
    assert set(names.values()) == {LOCATION}, names
    assert DNS_LABEL.fullmatch(LOCATION)


def test_readme_gives_every_named_job_a_launch_form() -> None:
    for job in all_jobs:
        for template in QUEUED_FORMS.values():
            assert template.format(job=job.name) in README, f"README lacks `{template.format(job=job.name)}`"
        for template in IN_PROCESS_FORMS.values():
            assert template.format(job=job.name) in README, f"README lacks `{template.format(job=job.name)}`"
    for command in (*MATERIALIZE_FORMS.values(), "dg check defs", "dg list defs"):
        assert command in README, f"README lacks `{command}`"


def run_cli(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`command` from the repository root, with this environment's own dagster and dg executables."""
    program, *arguments = command.split()
    return subprocess.run([str(VENV_BIN / program), *arguments], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)


@pytest.fixture(scope="module")
def dev(local_stores: LocalStores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    stores = fresh_store_set(local_stores)
    stores.product_db.products.insert_many([
        {"_id": ObjectId(), "title": f"Product {n}", "image": f"{n}.png", "price": n,
         "updatedAt": datetime.now(UTC)}
        for n in range(1, 6)
    ])
    root = tmp_path_factory.mktemp("cli")
    # Automation stays stopped: the only runs are the ones this module launches.
    env = dagster_env(stores.env(), root / "dagster_home", SHOP_SYNC_AUTOMATION_DEFAULT="stopped")
    with running_dagster_dev(env, root / "dagster_dev.log") as running:
        yield running
    stores.mongo.close()


def run_ids(dev: DagsterDev) -> set[str]:
    return {run["runId"] for run in dev.runs()}


@pytest.mark.timeout(COMMAND_TIMEOUT_S + RUN_TIMEOUT_S)
@pytest.mark.parametrize(("job", "command"), LAUNCHES)
def test_readme_form_runs_the_job_to_success(dev: DagsterDev, job: str, command: str) -> None:
    assert command in README, f"the README does not give `{command}`"
    before = run_ids(dev)
    done = run_cli(command, dev.env)
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"

    expected_job = "__ASSET_JOB" if command in MATERIALIZE_FORMS.values() else job

    def finished_run() -> dict | None:
        # Not a sensor's run (sync_freshness is always on), nor a retry of a failed run (run_retries).
        launched = [run for run in dev.runs() if run["runId"] not in before and run["jobName"] == expected_job
                    and not {"dagster/sensor_name", "dagster/parent_run_id"} & {tag["key"] for tag in run["tags"]}]
        assert len(launched) <= 1, f"`{command}` started {len(launched)} runs"
        return launched[0] if launched and launched[0]["status"] in DONE else None

    run = dev.wait_until(finished_run, RUN_TIMEOUT_S, f"the run `{command}` started to finish")
    assert run["status"] == "SUCCESS", f"`{command}`: run {run['runId']} ended {run['status']}\n{dev.log_tail()}"


def alert_payloads(dev: DagsterDev) -> list[dict]:
    return [json.loads(line.split(LOG_PREFIX, 1)[1]) for line in dev.log.read_text(errors="replace").splitlines()
            if LOG_PREFIX in line]


def test_alerts_name_the_code_location(dev: DagsterDev) -> None:
    """The validate runs above fail a check (the catalog is not yet copied when they run), so the
    check-failure alert fires for them, naming the location the daemon launched them from."""
    def validate_alerts() -> list[dict]:
        return [alert for alert in alert_payloads(dev) if alert["job"] == "validate"]

    alerts = dev.wait_until(validate_alerts, RUN_TIMEOUT_S, "an alert about a validate run")
    assert {alert["code_location"] for alert in alerts} <= {LOCATION, None}
    assert LOCATION in {alert["code_location"] for alert in alerts}


@pytest.fixture
def local_env(tmp_path: Path) -> dict[str, str]:
    """No stores: loading the definitions needs none. A DAGSTER_HOME, or Dagster would take the
    production ./dagster.yaml as the instance (it does so for any command run from the root)."""
    return dagster_env({}, tmp_path / "dagster_home")


def test_dg_check_defs_passes(local_env: dict[str, str]) -> None:
    done = run_cli("dg check defs", local_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "All definitions loaded successfully." in done.stdout


def test_dg_list_defs_lists_every_named_job(local_env: dict[str, str]) -> None:
    done = run_cli("dg list defs --json", local_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {job["name"] for job in json.loads(done.stdout)["jobs"]} == {job.name for job in all_jobs}

