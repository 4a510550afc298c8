"""shopformer: session-based recommenders and customer-journey models for e-commerce."""

__version__ = "0.1.0"
