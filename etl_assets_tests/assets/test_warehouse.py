"""The order and warehouse assets, materialized through Dagster against real stores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from etl_assets.assets.orders import order_assets, order_db_orders, warehouse_orders
from etl_assets.assets.warehouse import cart_funnel, daily_sales, product_sales, warehouse_assets
from etl_assets.partitions import DAILY
from etl_assets_tests.sync.test_orders import at, make_order
from etl_assets_tests.sync.test_warehouse import add_funnel_carts

DAY = date(2025, 3, 10)
daily_assets = [warehouse_orders, daily_sales, product_sales, cart_funnel]


def materializations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dict]:
    """{(asset key, partition): metadata values} of a run."""
    return {
        (event.asset_key.to_user_string(), event.materialization.partition): {
            key: value.value for key, value in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def rows(engine: sa.Engine, query: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(query))]


def test_definitions_load_with_the_shared_daily_partitions(stores) -> None:
    defs = dg.Definitions(assets=[*order_assets, *warehouse_assets], resources=stores.resources())
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for key in ("warehouse/orders", "warehouse/daily_sales", "warehouse/product_sales", "warehouse/cart_funnel"):
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert node.partitions_def == DAILY
        assert node.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=31)
        assert node.pools == {"warehouse"}
    cart_funnel_parents = graph.get(dg.AssetKey(["warehouse", "cart_funnel"])).parent_keys
    assert cart_funnel_parents == {dg.AssetKey(["warehouse", "orders"]), dg.AssetKey(["cart_db", "cart"])}


def test_a_day_materializes_with_its_metadata(stores) -> None:
    stores.order_db.orders.insert_many([
        make_order(at(DAY, 1), user="u1", items=[("p1", 2, 5.0)]),
        make_order(at(DAY, 2), user="u2", items=[("p2", 1, 3.25)]),
        make_order(at(DAY, 3), total=0.0),
    ])
    add_funnel_carts(stores.cart_engine, ("u1", "p1", at(DAY, 0), at(DAY, 0)))
    result = dg.materialize(daily_assets, partition_key=DAY.isoformat(), resources=stores.resources())
    assert result.success
    metadata = materializations(result)
    day = DAY.isoformat()

    orders = metadata[("warehouse/orders", day)]
    assert (orders["day"], orders["read"], orders["quarantined"], orders["dagster/row_count"]) == (day, 3, 1, 2)
    assert orders["quarantine_rate"] == round(1 / 3, 4) and orders["items_inserted"] == 2
    assert "total: equals subtotal + tax + shipping - discount" in orders["quarantine_sample"]
    assert [c.name for c in orders["dagster/column_schema"].columns][:3] == ["order_id", "order_day", "user_id"]

    sales = metadata[("warehouse/daily_sales", day)]
    assert (sales["orders"], sales["units"], sales["revenue"], sales["dagster/row_count"]) == (2, 3, 13.25, 1)
    assert sales["average_order_value"] == round(13.25 / 2, 2) and sales["units_per_order"] == 1.5
    revenue = next(c for c in sales["dagster/column_schema"].columns if c.name == "revenue")
    assert revenue.type == "numeric(14,2)" and not revenue.constraints.nullable

    products = metadata[("warehouse/product_sales", day)]
    assert (products["products"], products["top_product"], products["dagster/row_count"]) == (2, "p1", 2)
    assert products["top_product_revenue_share"] == round(10 / 13.25, 4)

    funnel = metadata[("warehouse/cart_funnel", day)]
    assert (funnel["carts"], funnel["converted_carts"], funnel["conversion_rate"]) == (1, 1, 1.0)
    assert funnel["abandon_after_days"] == 3 and funnel["dagster/row_count"] == 1


def test_rerunning_a_daily_sales_partition_is_idempotent(stores) -> None:
    stores.order_db.orders.insert_many([make_order(at(DAY, hour)) for hour in (1, 2)])
    resources = stores.resources()
    dg.materialize([warehouse_orders, daily_sales], partition_key=DAY.isoformat(), resources=resources)
    first = rows(stores.warehouse_engine, "SELECT * FROM daily_sales")

    result = dg.materialize([daily_sales], partition_key=DAY.isoformat(), resources=resources)
    assert materializations(result)[("warehouse/daily_sales", DAY.isoformat())]["replaced"] == 1
    assert rows(stores.warehouse_engine, "SELECT * FROM daily_sales") == first
    assert len(first) == 1 and first[0][1:3] == (2, 6)


def test_a_backfill_run_materializes_every_day_of_its_range(stores) -> None:
    days = [DAY + timedelta(days=n) for n in range(3)]
    stores.order_db.orders.insert_many([make_order(at(day, 12)) for day in days[:2]])
    result = dg.materialize(daily_assets, resources=stores.resources(), tags={
        "dagster/asset_partition_range_start": days[0].isoformat(),
        "dagster/asset_partition_range_end": days[-1].isoformat(),
    })
    metadata = materializations(result)
    assert {partition for _, partition in metadata} == {day.isoformat() for day in days}
    assert all(metadata[("warehouse/daily_sales", day.isoformat())]["day"] == day.isoformat() for day in days)
    assert rows(stores.warehouse_engine, "SELECT day, orders FROM daily_sales ORDER BY day") == [
        (days[0], 1), (days[1], 1), (days[2], 0)]
    assert rows(stores.warehouse_engine, "SELECT count(*) FROM cart_funnel") == [(3,)]


def test_the_cart_funnel_takes_its_idle_threshold_from_run_config(stores) -> None:
    add_funnel_carts(stores.cart_engine, ("u1", "p1", at(DAY, 0) - timedelta(days=5), None))
    result = dg.materialize([cart_funnel], partition_key=DAY.isoformat(), resources=stores.resources(),
                            run_config={"ops": {"warehouse__cart_funnel": {"config": {"abandon_after_days": 7}}}})
    funnel = materializations(result)[("warehouse/cart_funnel", DAY.isoformat())]
    assert (funnel["active_carts"], funnel["abandoned_carts"], funnel["abandon_after_days"]) == (1, 0, 7)


def test_the_source_version_changes_when_an_order_arrives(stores) -> None:
    def observed_version() -> str:
        defs = dg.Definitions(assets=[order_db_orders], resources=stores.resources(),
                              jobs=[dg.define_asset_job("observe", selection=[order_db_orders])])
        result = defs.resolve_job_def("observe").execute_in_process()
        return result.asset_observations_for_node("order_db__orders")[0].tags["dagster/data_version"]

    stores.order_db.orders.insert_one(make_order(at(DAY, 1)))
    before = observed_version()
    assert before == f"1@{datetime(2025, 3, 10, 1, tzinfo=UTC).isoformat()}"
    stores.order_db.orders.insert_one(make_order(at(DAY, 2)))
    assert observed_version() != before
