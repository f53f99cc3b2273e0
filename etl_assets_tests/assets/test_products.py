"""The product assets run through Dagster against real stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
from bson import ObjectId

from etl_assets.assets.products import cart_db_product, override_run_config, product_db_products
from etl_assets_tests.sync.test_products import product


def materialize(stores, instance: dg.DagsterInstance, **config) -> dict:
    result = dg.materialize([product_db_products, cart_db_product], instance=instance, resources=stores.resources(),
                            run_config={"ops": {"cart_db__product": {"config": config}}}, raise_on_error=False)
    assert result.success, result.get_step_failure_events()
    return {key: value.value for key, value in result.asset_materializations_for_node("cart_db__product")[0]
            .metadata.items()}


def test_product_copy_materializes_with_report_metadata(stores):
    stores.product_db.products.insert_many([
        {"_id": ObjectId(), "title": f"p{n}", "image": "i.png", "price": n} for n in range(30)
    ] + [{"_id": ObjectId(), "title": "bad", "image": "i.png", "price": -1}])
    result = dg.materialize(
        [product_db_products, cart_db_product], resources=stores.resources(),
        run_config={"ops": {"cart_db__product": {"config": {"mode": "full", "batch_size": 10}}}},
    )
    metadata = result.asset_materializations_for_node("cart_db__product")[0].metadata
    assert metadata["inserted"].value == 30
    assert metadata["quarantined"].value == 1
    assert (metadata["dagster/row_count"].value, metadata["rows_processed"].value) == (30, 30)
    assert metadata["batches"].value == 4
    assert "price: greater_than_or_equal_to(0)" in metadata["quarantine_sample"].value
    assert metadata["quarantine_open"].value == 1


def test_source_observation_reports_a_data_version(stores):
    stores.product_db.products.insert_one({"_id": ObjectId(), "title": "p", "image": "i", "price": 1})
    with dg.instance_for_test() as instance:
        defs = dg.Definitions(assets=[product_db_products], resources=stores.resources(),
                              jobs=[dg.define_asset_job("observe", selection=[product_db_products])])
        result = defs.resolve_job_def("observe").execute_in_process(instance=instance)
        observation = result.asset_observations_for_node("product_db__products")[0]
        assert observation.tags["dagster/data_version"] == "1@none"
        assert observation.metadata["dagster/row_count"].value == 1


def test_the_row_count_is_the_active_rows_of_the_copy_not_the_rows_processed(stores):
    """Issue 12 §5: after an incremental run that processed 2 products, the UI showed 2 for a table of 30."""
    stores.product_db.products.insert_many([product(n) for n in range(1, 31)])
    with dg.instance_for_test() as instance:
        materialize(stores, instance, mode="full")
        stores.product_db.products.delete_one({"_id": ObjectId(f"{30:024x}")})
        materialize(stores, instance, mode="full")  # 29 active of 30 rows
        stores.product_db.products.update_many({"_id": {"$in": [ObjectId(f"{n:024x}") for n in (1, 2)]}},
                                               {"$set": {"price": 99, "updatedAt": datetime(2026, 12, 1, tzinfo=UTC)}})
        metadata = materialize(stores, instance, mode="incremental")
    assert metadata["dagster/row_count"] == 29
    # The 2 changes, plus whatever the watermark's look-back reads again.
    assert metadata["updated"] == 2 and metadata["rows_processed"] == metadata["read"] < 5


def test_a_refused_deactivation_names_its_override_which_works_for_one_run(stores):
    stores.product_db.products.insert_many([product(n) for n in range(1, 41)])
    with dg.instance_for_test() as instance:
        materialize(stores, instance, mode="full")
        stores.product_db.products.delete_many({"_id": {"$in": [ObjectId(f"{n:024x}") for n in range(1, 13)]}})
        dry = materialize(stores, instance, mode="full", dry_run=True)
        assert (dry["deactivated"], dry["deactivation_limit"], dry["deactivation_refused"]) == (12, 10, True)

        refused = dg.materialize([product_db_products, cart_db_product], instance=instance,
                                 resources=stores.resources(), raise_on_error=False,
                                 run_config={"ops": {"cart_db__product": {"config": {"mode": "full"}}}})
        [failure] = refused.get_step_failure_events()
        description = failure.step_failure_data.user_failure_data.description
        override = override_run_config("cart_db__product", mode="full")
        assert description.startswith("product sync refused to deactivate 12 of 40 active products (30.0%)")
        assert description.endswith(f"override for one run with the run config {override}")
        assert len([e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_START]) == 1
        assert failure.step_failure_data.user_failure_data.metadata["would_deactivate"].value == 12

        allowed = materialize(stores, instance, **json.loads(override)["ops"]["cart_db__product"]["config"])
        assert (allowed["deactivated"], allowed["mass_deactivation_allowed"], allowed["dagster/row_count"]) == (
            12, True, 28)
        assert materialize(stores, instance, mode="full")["deactivated"] == 0  # the next run is guarded again
