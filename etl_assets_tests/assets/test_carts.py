"""The cart assets in Dagster: definitions, a materialization against real stores, an observation."""

from __future__ import annotations

import dagster as dg

from etl_assets.assets.carts import cart_assets, cart_db_cart, order_db_carts
from etl_assets.sync.carts import SYNC_NAME
from etl_assets.sync.state import load_watermark
from etl_assets_tests.sync.test_carts import (
    PRODUCT_A,
    PRODUCT_B,
    add_cart,
    add_product,
    cart_row,
    delete_cart,
    restore_cart,
    update_cart,
)

CARTS = dg.AssetKey(["order_db", "carts"])
SOURCE = dg.AssetKey(["cart_db", "cart"])


def sync_config(**config) -> dict:
    return {"ops": {"order_db__carts": {"config": config}}}


def test_definitions_describe_the_cart_assets(stores):
    defs = dg.Definitions(assets=cart_assets, resources=stores.resources())
    dg.Definitions.validate_loadable(defs)
    spec = order_db_carts.specs_by_key[CARTS]
    assert spec.group_name == "carts"
    assert spec.kinds == {"postgres", "mongodb"}
    assert {dep.asset_key for dep in spec.deps} == {dg.AssetKey(["cart_db", "product"]), SOURCE}
    assert order_db_carts.op.pool == "order_db_carts"
    assert order_db_carts.op.retry_policy.max_retries == 3
    assert cart_db_cart.is_observable and cart_db_cart.group_name == "carts"


def test_materializing_syncs_the_snapshots_and_reports_metadata(stores):
    add_product(stores.cart_engine, PRODUCT_A, price="2.50")
    cart_ids = [add_cart(stores.cart_engine, PRODUCT_A, quantity=n) for n in (1, 2, 3)]
    orphan = add_cart(stores.cart_engine, PRODUCT_B, bypass_foreign_key=True)

    instance = dg.DagsterInstance.ephemeral()

    result = dg.materialize([order_db_carts], resources=stores.resources(), instance=instance,
                            run_config=sync_config(mode="full", batch_size=2))

    assert result.success
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("order_db__carts")[0].metadata.items()}
    assert metadata["mode"] == "full" and metadata["dry_run"] is False
    assert (metadata["read"], metadata["inserted"], metadata["quarantined"], metadata["batches"]) == (4, 3, 1, 2)
    assert (metadata["written"], metadata["rows_processed"], metadata["dagster/row_count"]) == (3, 3, 3)
    assert metadata["quarantine_open"] == 1
    assert f"`{orphan}`: cart {orphan}: product {PRODUCT_B} does not exist" in metadata["quarantine_sample"]
    assert "cartId" in [c.name for c in metadata["dagster/column_schema"].columns]
    assert metadata["watermark_after"] == load_watermark(stores.warehouse_engine, SYNC_NAME)
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(message.startswith("cart sync batch 2: read 4, inserted 3") for message in logs)
    assert stores.order_db["carts"].find_one({"cartId": cart_ids[2]})["total"] == 7.5

    dry = dg.materialize([order_db_carts], resources=stores.resources(),
                         run_config=sync_config(mode="full", dry_run=True))
    dry_metadata = dry.asset_materializations_for_node("order_db__carts")[0].metadata
    assert dry_metadata["dry_run"].value is True and dry_metadata["unchanged"].value == 3


def test_observing_the_cart_source_changes_its_data_version_when_a_cart_changes(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    cart_id = add_cart(stores.cart_engine, PRODUCT_A)
    defs = dg.Definitions(assets=[cart_db_cart], resources=stores.resources(),
                          jobs=[dg.define_asset_job("observe_carts", selection=[SOURCE])])
    instance = dg.DagsterInstance.ephemeral()

    def observe() -> dg.AssetObservation:
        result = defs.resolve_job_def("observe_carts").execute_in_process(instance=instance)
        assert result.success
        return result.asset_observations_for_node("cart_db__cart")[0]

    first = observe()
    assert observe().tags["dagster/data_version"] == first.tags["dagster/data_version"]
    update_cart(stores.cart_engine, cart_id, quantity=2, version=2)
    second = observe()

    assert second.tags["dagster/data_version"] != first.tags["dagster/data_version"]
    assert first.metadata["dagster/row_count"].value == 1
    assert (first.metadata["max_version"].value, second.metadata["max_version"].value) == (1, 2)


def test_materializing_reports_marked_deletions_and_version_resets(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    gone = add_cart(stores.cart_engine, PRODUCT_A)
    restored = add_cart(stores.cart_engine, PRODUCT_A, version=4)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([order_db_carts], resources=stores.resources(), instance=instance).success
    delete_cart(stores.cart_engine, gone)
    restore_cart(stores.cart_engine, restored, **{**cart_row(stores.cart_engine, restored), "version": 2})

    result = dg.materialize([order_db_carts], resources=stores.resources(), instance=instance)

    metadata = {k: v.value for k, v in result.asset_materializations_for_node("order_db__carts")[0].metadata.items()}
    assert (metadata["marked_deleted"], metadata["marked_deleted_ids"]) == (1, [gone])
    assert (metadata["version_resets"], metadata["version_reset_ids"]) == (1, [restored])
    assert (metadata["written"], metadata["dagster/row_count"], metadata["live_snapshots"]) == (2, 2, 1)
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert f"marked 1 snapshot(s) of deleted carts: {gone}" in logs
    assert any(m.startswith("version reset: 1 cart(s)") and m.endswith(restored) for m in logs)


def test_the_row_count_is_the_snapshots_the_collection_holds_not_the_carts_processed(stores):
    add_product(stores.cart_engine, PRODUCT_A)
    cart_ids = [add_cart(stores.cart_engine, PRODUCT_A, quantity=n) for n in (1, 2, 3)]
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([order_db_carts], resources=stores.resources(), instance=instance,
                   run_config=sync_config(mode="full"))
    update_cart(stores.cart_engine, cart_ids[0], quantity=5, version=2)

    result = dg.materialize([order_db_carts], resources=stores.resources(), instance=instance,
                            run_config=sync_config(mode="incremental"))
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("order_db__carts")[0].metadata.items()}
    assert metadata["dagster/row_count"] == stores.order_db["carts"].count_documents({}) == 3
    assert (metadata["rows_processed"], metadata["updated"]) == (1, 1)
