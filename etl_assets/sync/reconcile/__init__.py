"""What the asset checks measure, one module per kind of measurement: schema, products, carts, integrity,
uniqueness, coverage, quarantine (the stores' health is etl_assets/sync/stores.py's ping_*).

No Dagster here. Every function streams a store (one server-side cursor, read in batches) or lets the
server aggregate, so memory follows the batch size, never the size of a table or collection. Each returns
a small result, a Finding (findings.py): how many records fail, the ids of the first SAMPLE_SIZE of them,
and the counts the verdict rests on. etl_assets/checks/ turns a result into an AssetCheckResult.

The rules themselves live elsewhere and are reused, never restated: the pandera models of
etl_assets/schemas/, and the syncs' own flattening, hashing and validation (transform_batch for products,
check_batch for carts), so a check expects exactly what the sync would have written.
"""
