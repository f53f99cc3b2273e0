"""The validate job of the code location runs every check, each reporting its counts and sample ids."""

import dagster as dg

from etl_assets.checks import freshness_sensor
from etl_assets.definitions import defs
from etl_assets_tests.checks.seed import seed_catalog, sync_catalog


def test_validate_runs_every_check_of_the_code_location(stores, monkeypatch):
    for name, value in stores.env().items():
        monkeypatch.setenv(name, value)
    seed_catalog(stores, 3)
    sync_catalog(stores)
    repository = defs.get_repository_def()
    assert repository.get_sensor_def(freshness_sensor.name)

    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("validate").execute_in_process(instance=instance, raise_on_error=False)
    evaluations = {e.asset_check_key: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(repository.asset_graph.asset_check_keys)
    assert len(evaluations) == 25
    for key, evaluation in evaluations.items():
        if key.name != "freshness_check":
            assert {"failing", "sample_ids"} <= set(evaluation.metadata), key
        # The stores are consistent; only the freshness of copies this instance never saw materialized fails.
        assert evaluation.passed or key.name == "freshness_check", (key, evaluation.metadata)
