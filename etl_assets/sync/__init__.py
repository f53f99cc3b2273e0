"""The sync engine: extract, transform, load, reconcile. No Dagster imports live here."""
