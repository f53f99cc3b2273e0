"""Software-defined assets, one module per store family."""
