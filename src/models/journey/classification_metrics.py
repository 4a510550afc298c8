"""Journey metrics (torchmetrics where it has them), one function for the model and every baseline.

Binary heads (conversion, abandonment): ROC-AUC, PR-AUC (average precision), log-loss and expected
calibration error (15 equal-width bins, L1). ROC-AUC and PR-AUC are NaN when the labels hold one class.

Next event type: accuracy of ``argmax p`` (the accuracy-optimal decision) and macro-F1 of the decision
``argmax p / prior**gamma`` (prior = training class shares). ``gamma = 0`` is plain argmax, ``gamma = 1``
the balanced decision that weighs every class alike; macro-F1 asks for something in between, so
every model (and baseline) gets its ``gamma`` chosen on the validation prefixes (:func:`tune_gamma`)
and applied unchanged to the test prefixes. ``macro_f1_argmax`` is macro-F1 of plain argmax: on logs
where one type is 90 % of the events it mostly measures that one class. Classes never predicted
and never seen do not count in the macro average (torchmetrics' rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_calibration_error,
    multiclass_accuracy,
    multiclass_f1_score,
)

from shopformer.data.journey.labels import IGNORE
from shopformer.models.bootstrap import Difference, paired_bootstrap

EPS = 1e-7
ECE_BINS = 15
GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
BINARY_HEADS = ("conversion", "abandonment")


@dataclass
class JourneyPredictions:
    """Probabilities of N prefixes: next event type [N, C] (rows sum to 1), conversion, abandonment [N]."""

    next_event: np.ndarray
    conversion: np.ndarray
    abandonment: np.ndarray


def binary_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of one binary head on the positions whose label is defined (not IGNORE)."""
    labels = np.asarray(labels)
    keep = labels != IGNORE
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64)[keep]).clamp(EPS, 1 - EPS)
    y = torch.as_tensor(labels[keep].astype(np.int64))
    n, positives = int(y.numel()), int(y.sum())
    out = {"n": n, "positives": positives}
    if n == 0:
        return {**out, "roc_auc": math.nan, "pr_auc": math.nan, "log_loss": math.nan, "ece": math.nan}
    both = 0 < positives < n
    out["roc_auc"] = float(binary_auroc(p, y)) if both else math.nan
    out["pr_auc"] = float(binary_average_precision(p, y)) if both else math.nan
    out["log_loss"] = float(F.binary_cross_entropy(p, y.double()))
    out["ece"] = float(binary_calibration_error(p.float(), y, n_bins=ECE_BINS, norm="l1"))
    return out


def _decide(p: torch.Tensor, prior: np.ndarray | None, gamma: float) -> torch.Tensor:
    if prior is None or gamma == 0:
        return p.argmax(dim=1)
    weights = torch.as_tensor(prior, dtype=p.dtype).clamp_min(1e-12) ** gamma
    return (p / weights).argmax(dim=1)


def next_event_metrics(
    probs: np.ndarray, labels: np.ndarray, prior: np.ndarray | None = None, gamma: float = 1.0
) -> dict[str, float]:
    """Accuracy (argmax), macro-F1 (decision ``argmax p / prior**gamma``; and argmax) and log-loss."""
    labels = np.asarray(labels)
    keep = labels != IGNORE
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64)[keep])
    y = torch.as_tensor(labels[keep].astype(np.int64))
    classes = p.shape[1]
    out = {"n": int(y.numel())}
    if not y.numel():
        nan = math.nan
        nans = {"accuracy": nan, "macro_f1": nan, "macro_f1_argmax": nan, "log_loss": nan}
        return {**out, **nans, "decision_gamma": float(gamma)}
    argmax, balanced = p.argmax(dim=1), _decide(p, prior, gamma)
    out["accuracy"] = float(multiclass_accuracy(argmax, y, classes, average="micro"))
    out["macro_f1"] = float(multiclass_f1_score(balanced, y, classes, average="macro"))
    out["macro_f1_argmax"] = float(multiclass_f1_score(argmax, y, classes, average="macro"))
    out["log_loss"] = float(F.nll_loss(p.clamp_min(EPS).log(), y))
    out["decision_gamma"] = float(gamma)
    return out


def tune_gamma(probs: np.ndarray, labels: np.ndarray, prior: np.ndarray | None, gammas=GAMMAS) -> float:
    """The ``gamma`` of :func:`next_event_metrics` with the best macro-F1 on these (validation) labels;
    ties go to the smaller one (closer to argmax)."""
    if prior is None:
        return 0.0
    scores = [next_event_metrics(probs, labels, prior, g)["macro_f1"] for g in gammas]
    finite = [s if math.isfinite(s) else -1.0 for s in scores]
    return float(gammas[int(np.argmax(finite))])


def journey_metrics(
    predictions: JourneyPredictions,
    next_event: np.ndarray,
    conversion: np.ndarray,
    abandonment: np.ndarray,
    prior: np.ndarray | None = None,
    gamma: float = 1.0,
) -> dict[str, float]:
    """Every head's metrics, flat: ``next_event_macro_f1``, ``conversion_roc_auc``, ..., ``*_n``."""
    event = next_event_metrics(predictions.next_event, next_event, prior, gamma)
    out = {f"next_event_{k}": v for k, v in event.items()}
    for name, labels in zip(BINARY_HEADS, (conversion, abandonment), strict=True):
        out.update({f"{name}_{k}": v for k, v in binary_metrics(getattr(predictions, name), labels).items()})
    return out


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, ...]:
    """(mean predicted probability, observed positive rate, count) per non-empty equal-width bin."""
    labels = np.asarray(labels)
    keep = labels != IGNORE
    p, y = np.asarray(probs, dtype=np.float64)[keep], labels[keep].astype(np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, weights=p, minlength=bins) / np.maximum(count, 1)
    rate = np.bincount(which, weights=y, minlength=bins) / np.maximum(count, 1)
    used = count > 0
    return mean_p[used], rate[used], count[used]


# roc_auc and macro_f1 repeat sklearn / torchmetrics in plain numpy: the bootstrap calls them thousands of
# times per run, where the libraries' per-call overhead dominates (tests check they agree).


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC of 0/1 ``labels`` by the rank-sum formula (ties share their average rank); NaN: one class."""
    labels = np.asarray(labels).astype(bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    _, inverse, counts = np.unique(np.asarray(probs), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse][labels].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def macro_f1(decisions: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Macro-F1 of ``decisions``; classes never predicted and never seen do not count (as torchmetrics)."""
    decisions, labels = np.asarray(decisions), np.asarray(labels)
    true_positive = np.bincount(labels[decisions == labels], minlength=classes)
    predicted = np.bincount(decisions, minlength=classes)
    actual = np.bincount(labels, minlength=classes)
    involved = (predicted + actual) > 0
    if not involved.any():
        return math.nan
    f1 = 2.0 * true_positive / np.maximum(predicted + actual, 1)
    return float(f1[involved].mean())


def decide(probs: np.ndarray, prior: np.ndarray | None, gamma: float) -> np.ndarray:
    """The next-event decision of :func:`next_event_metrics`: ``argmax p / prior**gamma``."""
    return _decide(torch.as_tensor(np.asarray(probs, dtype=np.float64)), prior, gamma).numpy()


def lead_over(
    model: JourneyPredictions,
    baseline: JourneyPredictions,
    labels: dict[str, np.ndarray],
    groups: np.ndarray,
    prior: np.ndarray | None,
    gammas: tuple[float, float],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Difference]:
    """Model minus baseline on conversion ROC-AUC and next-event macro-F1 (each with its own validated
    decision ``gammas``), with a paired bootstrap over ``groups`` (the session of each prefix)."""
    groups = np.asarray(groups)
    out = {}
    converted = np.asarray(labels["conversion"])
    keep = converted != IGNORE
    if keep.any():
        y = converted[keep]
        out["conversion_roc_auc"] = paired_bootstrap(
            lambda p, rows: roc_auc(p[rows], y[rows]),
            np.asarray(model.conversion)[keep],
            np.asarray(baseline.conversion)[keep],
            groups[keep],
            resamples,
            seed,
        )
    following = np.asarray(labels["next_event"])
    keep = following != IGNORE
    if keep.any():
        y, classes = following[keep], np.asarray(model.next_event).shape[1]
        out["next_event_macro_f1"] = paired_bootstrap(
            lambda d, rows: macro_f1(d[rows], y[rows], classes),
            decide(np.asarray(model.next_event)[keep], prior, gammas[0]),
            decide(np.asarray(baseline.next_event)[keep], prior, gammas[1]),
            groups[keep],
            resamples,
            seed,
        )
    return out
