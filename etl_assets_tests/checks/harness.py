"""Running asset checks (and assets with their checks) in process against the test stores."""

from typing import Any

import dagster as dg

from etl_assets.definitions import defs


def evaluate_checks(resources: dict, *checks: dg.AssetChecksDefinition,
                    instance: dg.DagsterInstance | None = None) -> dict[str, dg.AssetCheckEvaluation]:
    """Run only `checks`, as the validate job does, keyed by "asset/key:check_name"."""
    checks_only = dg.Definitions(assets=defs.assets, asset_checks=list(checks), resources=resources,
                                 jobs=[dg.define_asset_job("checks", selection=dg.AssetSelection.all_asset_checks())])
    result = checks_only.resolve_job_def("checks").execute_in_process(instance=instance, raise_on_error=False)
    return by_key(result)


def by_key(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def metadata(evaluation: dg.AssetCheckEvaluation) -> dict[str, Any]:
    return {key: value.value for key, value in evaluation.metadata.items()}


def failing(evaluation: dg.AssetCheckEvaluation) -> tuple[bool, int, list[str]]:
    """(passed, failing count, sample ids), the three things every check reports."""
    values = metadata(evaluation)
    return evaluation.passed, values["failing"], values["sample_ids"]
