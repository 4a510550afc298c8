"""Serving: bundle loading, FAISS retrieval, business rules, HTTP and batch (never imports torch)."""
