"""A/B test readouts: per-arm rates, differences with intervals, CUPED, SRM and power (torch-free)."""
