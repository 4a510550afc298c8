"""Journey baselines, fitted on the training prefixes and scored on exactly the model's evaluation prefixes.

- ``majority``: the training class shares / positive rates, whatever the prefix.
- ``markov``: a first-order chain over event types: every head conditioned on the prefix's last
  event type (add-``alpha`` smoothing towards the training shares).
- ``logreg``: logistic regression (scikit-learn) on hand-made session features of the prefix:
  counts per event type, session length, time since the previous event, session duration,
  open cart, and the last event type.
- ``gbdt``: gradient-boosted trees (scikit-learn's histogram GBDT) on the same features: what a
  tabular team would try first, and able to find interactions the linear model cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shopformer.data.journey.labels import IGNORE
from shopformer.models.journey.classification_metrics import JourneyPredictions


@dataclass
class SessionEvents:
    """The flat arrays prefix features are computed from (aligned with the processed dataset)."""

    event: np.ndarray  # event type ids (0 = padding, never present)
    ts: np.ndarray  # unix seconds
    run_start: np.ndarray  # flat index of the first event of each event's session
    open_cart: np.ndarray  # bool
    n_event_types: int  # vocabulary size, padding included


@dataclass
class PrefixLabels:
    """Labels of a set of prefixes (IGNORE where undefined)."""

    positions: np.ndarray
    next_event: np.ndarray
    conversion: np.ndarray
    abandonment: np.ndarray


def prefix_features(events: SessionEvents, positions: np.ndarray) -> np.ndarray:
    """Hand-made features of each prefix (its session up to and including ``positions``), float64 [N, F]."""
    positions = np.asarray(positions, dtype=np.int64)
    types = events.n_event_types - 1
    onehot = np.zeros((len(events.event) + 1, types))
    onehot[np.arange(1, len(events.event) + 1), events.event.astype(np.int64) - 1] = 1.0
    cumulative = np.cumsum(onehot, axis=0)  # row i = counts over events < i
    start = events.run_start[positions]
    counts = cumulative[positions + 1] - cumulative[start]
    length = positions - start + 1
    previous = np.where(positions > start, events.ts[np.maximum(positions - 1, 0)], events.ts[positions])
    since_previous = (events.ts[positions] - previous).clip(0)
    duration = (events.ts[positions] - events.ts[start]).clip(0)
    last = onehot[positions + 1]
    return np.column_stack(
        [
            np.log1p(counts),
            np.log1p(length),
            np.log1p(since_previous),
            np.log1p(duration),
            events.open_cart[positions].astype(np.float64),
            (length == 1).astype(np.float64),
            last,
        ]
    )


class JourneyBaseline:
    """fit(events, train labels) then predict(events, positions) -> probabilities of every head."""

    name = "baseline"

    def fit(self, events: SessionEvents, train: PrefixLabels) -> JourneyBaseline:
        raise NotImplementedError

    def predict(self, events: SessionEvents, positions: np.ndarray) -> JourneyPredictions:
        raise NotImplementedError


def _shares(labels: np.ndarray, classes: int) -> np.ndarray:
    labels = labels[labels != IGNORE]
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return counts / counts.sum() if counts.sum() else np.full(classes, 1.0 / classes)


def _rate(labels: np.ndarray) -> float:
    labels = labels[labels != IGNORE]
    return float(labels.mean()) if labels.size else 0.5


class MajorityBaseline(JourneyBaseline):
    """The training shares for every prefix (argmax: the majority class)."""

    name = "majority"

    def fit(self, events: SessionEvents, train: PrefixLabels) -> MajorityBaseline:
        self.prior = _shares(train.next_event, events.n_event_types - 1)
        self.rates = (_rate(train.conversion), _rate(train.abandonment))
        return self

    def predict(self, events: SessionEvents, positions: np.ndarray) -> JourneyPredictions:
        n = len(positions)
        return JourneyPredictions(
            np.tile(self.prior, (n, 1)), np.full(n, self.rates[0]), np.full(n, self.rates[1])
        )


class MarkovBaseline(JourneyBaseline):
    """First-order Markov chain over event types: each head given the prefix's last event type."""

    name = "markov"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, events: SessionEvents, train: PrefixLabels) -> MarkovBaseline:
        types, classes = events.n_event_types, events.n_event_types - 1
        last = events.event[train.positions].astype(np.int64)
        prior = _shares(train.next_event, classes)
        keep = train.next_event != IGNORE
        table = np.zeros((types, classes))
        np.add.at(table, (last[keep], train.next_event[keep]), 1.0)
        self.transitions = (table + self.alpha * classes * prior) / (
            table.sum(axis=1, keepdims=True) + self.alpha * classes
        )
        self.rates = [self._rates(last, labels, types) for labels in (train.conversion, train.abandonment)]
        return self

    def _rates(self, last: np.ndarray, labels: np.ndarray, types: int) -> np.ndarray:
        keep = labels != IGNORE
        positives = np.bincount(last[keep], weights=labels[keep].astype(np.float64), minlength=types)
        total = np.bincount(last[keep], minlength=types)
        return (positives + self.alpha * _rate(labels)) / (total + self.alpha)

    def predict(self, events: SessionEvents, positions: np.ndarray) -> JourneyPredictions:
        last = events.event[positions].astype(np.int64)
        return JourneyPredictions(self.transitions[last], self.rates[0][last], self.rates[1][last])


class LogisticBaseline(JourneyBaseline):
    """Logistic regression on :func:`prefix_features`, one model per head (multinomial for the next event)."""

    name = "logreg"

    def __init__(self, C: float = 1.0, max_iter: int = 1000) -> None:
        self.C, self.max_iter = C, max_iter

    def _model(self, labels: np.ndarray):
        """An unfitted model for these (defined) labels."""
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter))

    def _fit(self, x: np.ndarray, labels: np.ndarray):
        keep = labels != IGNORE
        if np.unique(labels[keep]).size < 2:
            return None  # one class only: the constant share is all there is to learn
        return self._model(labels[keep]).fit(x[keep], labels[keep])

    def fit(self, events: SessionEvents, train: PrefixLabels) -> LogisticBaseline:
        x = prefix_features(events, train.positions)
        self.classes = events.n_event_types - 1
        self.fallback = MajorityBaseline().fit(events, train)
        self.heads = {
            name: self._fit(x, getattr(train, name)) for name in ("next_event", "conversion", "abandonment")
        }
        return self

    def predict(self, events: SessionEvents, positions: np.ndarray) -> JourneyPredictions:
        x = prefix_features(events, positions)
        out = self.fallback.predict(events, positions)
        model = self.heads["next_event"]
        if model is not None:
            probs = np.zeros((len(positions), self.classes))
            probs[:, model.classes_] = model.predict_proba(x)
            out.next_event = probs
        for name in ("conversion", "abandonment"):
            model = self.heads[name]
            if model is not None:
                setattr(out, name, model.predict_proba(x)[:, 1])
        return out


class GradientBoostingBaseline(LogisticBaseline):
    """Gradient-boosted trees on :func:`prefix_features`, one model per head. A tenth of the training
    prefixes stops the boosting early, where every class has enough rows to be split that way."""

    name = "gbdt"

    def __init__(self, max_iter: int = 300, learning_rate: float = 0.05, seed: int = 0) -> None:
        self.max_iter, self.learning_rate, self.seed = max_iter, learning_rate, seed

    def _model(self, labels: np.ndarray):
        _, counts = np.unique(labels, return_counts=True)
        return HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            early_stopping=bool(counts.min() >= 20),
            validation_fraction=0.1,
            random_state=self.seed,
        )


BASELINES = {
    cls.name: cls for cls in (MajorityBaseline, MarkovBaseline, LogisticBaseline, GradientBoostingBaseline)
}
