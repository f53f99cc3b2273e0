"""Development-only helpers: embedded stores and demo data. Production never imports this package."""
