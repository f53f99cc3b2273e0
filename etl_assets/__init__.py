"""shop-sync: keeps the shop's product, cart and order stores in sync, as Dagster assets."""
