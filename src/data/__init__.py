"""Event schema, sources, preprocessing, splits and the Lightning datamodule (no model code)."""
