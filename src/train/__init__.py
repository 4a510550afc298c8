"""Hydra entry points and the glue between data, models, Lightning and MLflow."""
