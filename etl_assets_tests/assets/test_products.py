"""The product assets run through Dagster against real stores."""

from __future__ import annotations

import dagster as dg
from bson import ObjectId

from etl_assets.assets.products import cart_db_product, product_db_products


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
    assert metadata["dagster/row_count"].value == 30
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
