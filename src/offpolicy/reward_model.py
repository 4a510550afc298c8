"""The direct method's reward model q̂(context, item, position), fitted on the logs.

:class:`EmpiricalBayesRewardModel` needs no context features: the mean reward of each (item, position),
shrunk towards its position's mean by as much as the spread between items warrants. It answers for any
(item, position), an unseen item getting its position's mean. :class:`LogisticRewardModel` adds context
features (e.g. the Open Bandit data's user features) through scikit-learn, with optional cross-fitting.
:func:`expected_reward` turns either into ``dm_value`` from a sparse list of the target's candidates.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shopformer.errors import ConfigError, DataError


class RewardModel(Protocol):
    """What the direct method needs from a reward model."""

    def fit(
        self,
        items: np.ndarray,
        positions: np.ndarray,
        rewards: np.ndarray,
        features: np.ndarray | None = None,
    ) -> RewardModel:
        """Fit on the logged rows."""

    def predict(
        self,
        items: np.ndarray,
        positions: np.ndarray,
        features: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """q̂ for each (item, position[, features]); ``rows``: the logged row each query belongs to."""


class EmpiricalBayesRewardModel:
    """Per-(item, position) mean reward shrunk towards the position mean (empirical Bayes).

    Binary rewards: a beta prior per position with mean mu (the position's click rate) and strength
    m = mu (1 - mu) / tau^2 - 1 (method of moments; tau^2 is the between-item variance of the true
    rates), so q̂ = (clicks + m mu) / (shows + m). Other rewards: the normal-normal analogue with
    m = sigma^2 / tau^2 (sigma^2: the pooled within-item variance). tau^2 is the DerSimonian-Laird
    moment estimate; when it is 0 every item gets its position's mean.
    """

    def __init__(self, *, binary: bool | None = None) -> None:
        self.binary = binary  # None: decide from the rewards (all 0/1 means binary)

    def fit(
        self,
        items: np.ndarray,
        positions: np.ndarray,
        rewards: np.ndarray,
        features: np.ndarray | None = None,
    ) -> EmpiricalBayesRewardModel:
        """Fit on logged rows; ``features`` is accepted for a common interface and ignored."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.size == 0 or not np.isfinite(rewards).all():
            raise DataError("reward model: rewards must be a non-empty array of finite numbers")
        binary = bool(np.isin(rewards, (0.0, 1.0)).all()) if self.binary is None else self.binary
        frame = pd.DataFrame({"item": np.asarray(items), "position": np.asarray(positions), "r": rewards})
        frame["r2"] = rewards * rewards
        groups = frame.groupby(["item", "position"], sort=False).agg(
            n=("r", "size"), total=("r", "sum"), squares=("r2", "sum")
        )
        position = groups.index.get_level_values("position")
        strength, mean = _prior(groups, position, binary)
        m, mu = strength.reindex(position).to_numpy(), mean.reindex(position).to_numpy()
        n, total = groups["n"].to_numpy(np.float64), groups["total"].to_numpy()
        with np.errstate(invalid="ignore"):
            shrunk = np.where(np.isinf(m), mu, (total + np.where(np.isinf(m), 0.0, m) * mu) / (n + m))
        self.table_ = pd.Series(shrunk, index=groups.index)
        self.position_mean_ = mean
        self.prior_strength_ = strength
        self.global_mean_ = float(rewards.mean())
        return self

    def predict(
        self,
        items: np.ndarray,
        positions: np.ndarray,
        features: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """q̂ per (item, position); an unseen item gets its position's mean, an unseen position the mean."""
        if not hasattr(self, "table_"):
            raise ConfigError("reward model: call fit() before predict()")
        positions = np.asarray(positions)
        key = pd.MultiIndex.from_arrays([np.asarray(items), positions], names=["item", "position"])
        q = self.table_.reindex(key).to_numpy(dtype=np.float64, copy=True)
        unseen = np.isnan(q)
        if unseen.any():
            fallback = self.position_mean_.reindex(positions[unseen]).fillna(self.global_mean_)
            q[unseen] = fallback.to_numpy(dtype=np.float64)
        return q


def _prior(groups: pd.DataFrame, position: pd.Index, binary: bool) -> tuple[pd.Series, pd.Series]:
    """Per position: the prior strength m (inf: no spread between items) and the prior mean mu."""
    n = groups["n"].astype(np.float64)
    mean_g = groups["total"] / n
    by = (
        pd.DataFrame(
            {
                "N": n,
                "S": groups["total"],
                "G": 1.0,
                "n2": n * n,
                "nybar2": n * mean_g * mean_g,
                "ssw": groups["squares"] - groups["total"] * mean_g,
            }
        )
        .groupby(position.to_numpy())
        .sum()
    )
    mu = by["S"] / by["N"]
    between = by["nybar2"] - by["N"] * mu * mu  # sum_g n_g (ybar_g - mu)^2
    if binary:
        within = mu * (1 - mu)
    else:
        dof = by["N"] - by["G"]
        within = (by["ssw"] / dof.where(dof > 0)).fillna(between / by["N"].clip(lower=1)).clip(lower=0)
    scale = by["N"] - by["n2"] / by["N"]
    tau2 = ((between - (by["G"] - 1) * within) / scale.where(scale > 0)).fillna(0.0).clip(lower=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = within / tau2 - (1.0 if binary else 0.0)
    strength = strength.where(tau2 > 0, np.inf).clip(lower=0.0)
    return strength, mu


class LogisticRewardModel:
    """Click probability from context features, item and position (scikit-learn logistic regression).

    The design is [standardised features | one-hot item | one-hot position] (sparse, so a large
    catalogue is fine). With ``n_folds > 1`` it cross-fits: one model per fold, each trained on the
    other folds (whole groups, e.g. slates, stay in one fold), and :meth:`predict` with ``rows`` answers
    each logged row from the model that never saw it.
    """

    def __init__(self, *, C: float = 1.0, n_folds: int = 1, seed: int = 0, max_iter: int = 1000) -> None:
        if n_folds < 1:
            raise ConfigError(f"n_folds: must be >= 1, got {n_folds}")
        self.C, self.n_folds, self.seed, self.max_iter = C, n_folds, seed, max_iter

    def fit(
        self,
        items: np.ndarray,
        positions: np.ndarray,
        rewards: np.ndarray,
        features: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> LogisticRewardModel:
        """Fit on logged rows (0/1 rewards); ``groups`` (e.g. slate ids) keeps a group in one fold."""
        y = np.asarray(rewards, dtype=np.float64)
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"reward model: a logistic model needs 0/1 rewards; {int(bad.sum()):,} of {y.size:,} rows "
                f"are not, e.g. {float(y[row])!r} at row {row}"
            )
        self.has_features_ = features is not None
        self.scaler_ = StandardScaler().fit(_features(features, y.size)) if self.has_features_ else None
        self.encoder_ = OneHotEncoder(handle_unknown="ignore").fit(_ids(items, positions))
        design = self._design(items, positions, features)
        self.fold_ = self._folds(y.size, groups)
        if self.n_folds == 1:
            self.models_ = [_fit_logistic(design, y, self.C, self.max_iter)]
        else:  # model k never sees fold k
            held_in = [self.fold_ != k for k in range(self.n_folds)]
            self.models_ = [_fit_logistic(design[keep], y[keep], self.C, self.max_iter) for keep in held_in]
        return self

    def predict(
        self,
        items: np.ndarray,
        positions: np.ndarray,
        features: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(reward = 1) per query.

        Cross-fitted: with ``rows`` (the training row each query belongs to) a query is answered by the
        model that held that row out; without, by the average of the fold models.
        """
        if not hasattr(self, "models_"):
            raise ConfigError("reward model: call fit() before predict()")
        if self.has_features_ and features is None:
            raise ConfigError("reward model: fitted with context features, so predict() needs them too")
        design = self._design(items, positions, features)
        if len(self.models_) == 1:
            return _predict(self.models_[0], design)
        if rows is None:
            return np.mean([_predict(model, design) for model in self.models_], axis=0)
        fold = self.fold_[np.asarray(rows)]
        out = np.empty(design.shape[0])
        for k, model in enumerate(self.models_):
            mine = fold == k
            if mine.any():
                out[mine] = _predict(model, design[mine])
        return out

    def _design(
        self, items: np.ndarray, positions: np.ndarray, features: np.ndarray | None
    ) -> sparse.csr_matrix:
        blocks = [self.encoder_.transform(_ids(items, positions))]
        if self.has_features_:
            dense = self.scaler_.transform(_features(features, blocks[0].shape[0]))
            blocks.insert(0, sparse.csr_matrix(dense))
        return sparse.hstack(blocks, format="csr")

    def _folds(self, n: int, groups: np.ndarray | None) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        codes = np.arange(n) if groups is None else pd.factorize(np.asarray(groups))[0]
        fold_of_code = rng.permutation(int(codes.max()) + 1) % self.n_folds
        return fold_of_code[codes]


def expected_reward(
    model: RewardModel,
    *,
    row: np.ndarray,
    item: np.ndarray,
    prob: np.ndarray,
    position: np.ndarray,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """``dm_value`` per logged row: sum over the target's candidates of prob * q̂(context, item, position).

    ``row``/``item``/``prob`` list, sparsely, each logged row's candidates (the row index, the item, the
    target's probability of it at that row's position); ``position`` and ``features`` are per logged row.
    """
    row = np.asarray(row)
    position = np.asarray(position)
    context = None if features is None else np.asarray(features)[row]
    q = model.predict(np.asarray(item), position[row], context, rows=row)
    return np.bincount(row, weights=np.asarray(prob, dtype=np.float64) * q, minlength=position.shape[0])


class _Constant:
    """Stands in for a logistic model when a training fold has a single reward value."""

    def __init__(self, p: float) -> None:
        self.p = p


def _fit_logistic(
    design: sparse.csr_matrix, y: np.ndarray, C: float, max_iter: int
) -> LogisticRegression | _Constant:
    if np.unique(y).size < 2:
        return _Constant(float(y.mean()) if y.size else 0.0)
    return LogisticRegression(C=C, max_iter=max_iter).fit(design, y)


def _predict(model: LogisticRegression | _Constant, design: sparse.csr_matrix) -> np.ndarray:
    if isinstance(model, _Constant):
        return np.full(design.shape[0], model.p)
    return model.predict_proba(design)[:, 1]


def _ids(items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.column_stack([np.asarray(items).astype(str), np.asarray(positions).astype(str)])


def _features(features: np.ndarray | None, n: int) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    array = array.reshape(-1, 1) if array.ndim == 1 else array
    if array.shape[0] != n:
        raise DataError(f"reward model: features have {array.shape[0]:,} rows but there are {n:,} items")
    return array
