"""Development-only tooling: embedded stores, demo data, the demo and the benchmark. It lives outside
the etl_assets package, so neither the wheel nor the image ships it; run it from the repository root
(`python -m dev.<module>`)."""
