"""The cart service's carts (observed in Cart PostgreSQL) and their snapshots in Order MongoDB."""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations at runtime.
import dagster as dg
import sqlalchemy as sa

from etl_assets.assets.common import STORE_RETRY, SyncConfig, quarantine_metadata, report_metadata
from etl_assets.assets.products import cart_db_product
from etl_assets.k8s import ORDER_DB_CARTS_TARGET
from etl_assets.resources import MongoStoreResource, PostgresStoreResource
from etl_assets.schemas.carts import CartSnapshot
from etl_assets.sync.carts import COLLECTION, LIVE, SOURCE, sync_carts

_CART_VERSION = sa.text("SELECT count(*) AS carts, max(updated_at) AS updated_at, max(version) AS version FROM cart")


@dg.observable_source_asset(
    key=["cart_db", "cart"],
    group_name="carts",
    description="Carts as the cart service keeps them in Cart PostgreSQL (read only for the ETL).",
)
def cart_db_cart(cart_db: PostgresStoreResource) -> dg.ObserveResult:
    """A new data version whenever a cart is added, removed or updated (count, newest update, top version)."""
    with cart_db.engine().connect() as conn:
        state = conn.execute(_CART_VERSION).one()
    newest = state.updated_at.isoformat() if state.updated_at else "none"
    return dg.ObserveResult(
        data_version=dg.DataVersion(f"{state.carts}:{newest}:{state.version or 0}"),
        metadata={"dagster/row_count": state.carts, "newest_update": newest, "max_version": state.version or 0},
    )


def _snapshot_schema() -> dg.TableSchema:
    columns = CartSnapshot.to_schema().columns
    return dg.TableSchema(columns=[
        dg.TableColumn(name, str(column.dtype), constraints=dg.TableColumnConstraints(nullable=column.nullable))
        for name, column in columns.items()
    ])


@dg.asset(
    key=["order_db", "carts"],
    group_name="carts",
    kinds={"postgres", "mongodb"},
    pool=ORDER_DB_CARTS_TARGET,
    retry_policy=STORE_RETRY,
    deps=[cart_db_product, cart_db_cart],
    description="One snapshot per cart (cart joined with its product, total = price × quantity) in Order "
                "MongoDB `carts`; the cart row wins, guarded by read time. A deleted cart's snapshot is marked "
                "`deletedAt`, never removed. Invalid carts go to the warehouse quarantine.",
)
def order_db_carts(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    cart_db: PostgresStoreResource,
    order_db: MongoStoreResource,
    warehouse: PostgresStoreResource,
) -> dg.MaterializeResult:
    warehouse_engine = warehouse.engine()
    report = sync_carts(
        cart_db.engine(),
        order_db.db(),
        warehouse_engine,
        mode=config.mode,
        dry_run=config.dry_run,
        batch_size=config.batch_size,
        run_id=context.run.run_id,
        progress=context.log.info,
    )
    return dg.MaterializeResult(metadata={
        **report_metadata(report),
        **quarantine_metadata(warehouse_engine, SOURCE),
        "dagster/row_count": order_db.db()[COLLECTION].count_documents({}),
        "live_snapshots": order_db.db()[COLLECTION].count_documents(LIVE),
        "dagster/column_schema": _snapshot_schema(),
    })


cart_assets = [cart_db_cart, order_db_carts]
