"""Encoders, baselines, losses and metrics."""
