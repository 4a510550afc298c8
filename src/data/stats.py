"""Dataset statistics as a dict (for meta.json / MLflow) and as a printable table."""

from __future__ import annotations

from typing import Any

import numpy as np

from shopformer.data.split import CONTEXT, TEST, TRAIN, VALID
from shopformer.data.store import ProcessedDataset

PERCENTILES = (5, 25, 50, 75, 95)


def dataset_stats(ds: ProcessedDataset) -> dict[str, Any]:
    """Counts, sequence-length percentiles, event-type counts and split sizes."""
    lengths = np.diff(ds.offsets)
    keys = ds.sequence_keys
    n_users = int(keys["user_id"].nunique()) if "user_id" in keys else None
    if ds.meta["sequence_key"] == "user":
        n_users = ds.n_sequences
    sessions = ds.session[ds.session >= 0]
    event_counts = np.bincount(ds.event, minlength=len(ds.event_vocab))
    train_end = ds.train_end()
    train_lengths = train_end - ds.offsets[:-1]
    return {
        "name": ds.meta["name"],
        "sequence_key": ds.meta["sequence_key"],
        "users": n_users,
        "sessions": int(np.unique(sessions).size) if sessions.size else None,
        "sequences": ds.n_sequences,
        "items": ds.n_items - 1,
        "interactions": int(len(ds.item)),
        "has_timestamps": ds.has_timestamps,
        "sequence_length": {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 2),
            **{f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES},
            "max": int(lengths.max()),
        },
        "event_types": {name: int(event_counts[i]) for i, name in enumerate(ds.event_vocab) if i > 0},
        "split": {
            **ds.meta["split"],
            "train_events": int((ds.role == TRAIN).sum()),
            "train_sequences": int((train_lengths >= 2).sum()),
            "valid_targets": int((ds.role == VALID).sum()),
            "test_targets": int((ds.role == TEST).sum()),
            "context_events": int((ds.role == CONTEXT).sum()),
        },
        "preprocessing": ds.meta["report"],
    }


LABEL_WIDTH = 24


def format_row(label: str, value: Any) -> str:
    """One line of the stats table."""
    text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    return f"{label:<{LABEL_WIDTH}}  {text}"


def format_stats(stats: dict[str, Any]) -> str:
    """A plain two-column table, one fact per line."""
    rows: list[str] = []

    def add(label: str, value: Any) -> None:
        rows.append(format_row(label, value))

    add("dataset", stats["name"])
    add("sequence key", stats["sequence_key"])
    missing = {"users": "n/a (no user ids)", "sessions": "n/a (no session ids or timestamps)"}
    for key in ("users", "sessions", "sequences", "items", "interactions"):
        value = stats[key]
        add(key, missing[key] if value is None else value)
    add("real timestamps", "yes" if stats["has_timestamps"] else "no (order only)")
    lengths = stats["sequence_length"]
    add("sequence length", "  ".join(f"{k} {v:g}" for k, v in lengths.items()))
    for name, count in stats["event_types"].items():
        add(f"event '{name}'", count)
    for key, value in stats["split"].items():
        add("split" if key == "split" else f"split {key}", value)
    for key, value in stats["preprocessing"].items():
        add(key, value)
    return "\n".join(rows)
