"""pandera models (polars backend): the one place where the data rules of every store live.

The syncs use the source models row by row to split valid rows from quarantine; the asset checks
use the same models to judge what landed.
"""
