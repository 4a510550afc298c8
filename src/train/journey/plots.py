"""Calibration and ROC plots of the binary journey heads, the model beside its baselines (PNG files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from shopformer.data.journey.labels import IGNORE
from shopformer.models.journey.classification_metrics import BINARY_HEADS, JourneyPredictions, reliability

CALIBRATION_PNG, ROC_PNG = "calibration.png", "roc.png"


def _defined(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = labels != IGNORE
    return np.asarray(probs)[keep], labels[keep]


def calibration_plot(
    predictions: Mapping[str, JourneyPredictions], labels: Mapping[str, np.ndarray], path: str | Path
) -> Path:
    """Reliability diagram per binary head: observed positive rate against mean predicted probability."""
    fig, axes = plt.subplots(1, len(BINARY_HEADS), figsize=(5 * len(BINARY_HEADS), 4.5))
    for ax, head in zip(np.atleast_1d(axes), BINARY_HEADS, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
        for name, pred in predictions.items():
            mean_p, rate, count = reliability(getattr(pred, head), labels[head])
            if len(count):
                ax.plot(mean_p, rate, marker="o", markersize=3, label=name)
        ax.set(title=f"{head} (n={int((labels[head] != IGNORE).sum()):,})", xlabel="predicted probability")
        ax.set(ylabel="observed rate", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8)
    return _save(fig, path)


def roc_plot(
    predictions: Mapping[str, JourneyPredictions], labels: Mapping[str, np.ndarray], path: str | Path
) -> Path:
    """ROC curves per binary head with the AUC of each model in the legend."""
    fig, axes = plt.subplots(1, len(BINARY_HEADS), figsize=(5 * len(BINARY_HEADS), 4.5))
    for ax, head in zip(np.atleast_1d(axes), BINARY_HEADS, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for name, pred in predictions.items():
            probs, y = _defined(labels[head], getattr(pred, head))
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, probs)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, probs):.3f})")
        positives = int((labels[head] == 1).sum())
        ax.set(title=f"{head} ({positives:,} positives)", xlabel="false positive rate")
        ax.set(ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def journey_plots(
    predictions: Mapping[str, JourneyPredictions], labels: Mapping[str, np.ndarray], directory: str | Path
) -> list[Path]:
    """Both plots into ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        calibration_plot(predictions, labels, directory / CALIBRATION_PNG),
        roc_plot(predictions, labels, directory / ROC_PNG),
    ]


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
