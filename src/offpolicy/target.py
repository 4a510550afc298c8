"""A target policy replayed on logged requests: its probability of every logged (item, position).

For each logged request the target bundle scores the same session (same history, filters and k), its
exploration policy turns the top-N candidates into position marginals, and each logged row gets
``target_pscore`` (0 when the target would not consider that item), ``target_slate_pscore``, the
reward model's ``q_hat`` and ``dm_value`` (the model's expectation under the target at that slot) and
``unsupported_mass`` (the target's probability at that slot on items the logging policy could not
show there). The result is a :class:`~shopformer.offpolicy.feedback.BanditFeedback`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopformer.errors import DataError
from shopformer.offpolicy.feedback import BanditFeedback
from shopformer.offpolicy.reward_model import EmpiricalBayesRewardModel, RewardModel, expected_reward
from shopformer.serve.policies import Policy
from shopformer.serve.recommender import Recommender
from shopformer.serve.sessions import Session

LOGGING_GREEDY = "greedy"


@dataclass
class TargetTables:
    """Per logged request: the target's candidates (raw ids as text) and its [N, k] marginals."""

    candidates: list[list[str]]
    marginals: list[np.ndarray]
    scores: list[np.ndarray]


def replay(rec: Recommender, policy: Policy, requests: pd.DataFrame, batch_size: int = 256) -> TargetTables:
    """Score each request (``session_items``, ``filters``, ``k``) with the target bundle and policy."""
    by_text = {str(raw): raw for raw in rec.raw_ids.tolist()}
    tables = TargetTables([], [], [])
    wide = policy.name != "greedy"
    for start in range(0, len(requests), batch_size):
        chunk = requests.iloc[start : start + batch_size]
        sessions = [
            Session(
                [by_text.get(item, item) for item in items],
                k=max(int(k), policy.config.top_n) if wide else int(k),
                filters=json.loads(filters) if filters else None,
            )
            for items, k, filters in zip(chunk["session_items"], chunk["k"], chunk["filters"], strict=True)
        ]
        for result, k in zip(rec.recommend_batch(sessions), chunk["k"], strict=True):
            ids = [str(item) for item, _ in result.items]
            scores = np.array([score for _, score in result.items], dtype=np.float64)
            table = policy.marginals(scores, int(k), ids) if ids else np.zeros((0, int(k)))
            tables.candidates.append(ids)
            tables.scores.append(scores)
            tables.marginals.append(table)
    return tables


def replay_logged(
    rec: Recommender, policy: Policy, bandit: pd.DataFrame, impressions: pd.DataFrame
) -> tuple[TargetTables, pd.DataFrame]:
    """The target replayed on every logged request of ``bandit``, in its order; and those requests."""
    requests = impressions.drop_duplicates("request_id").set_index("request_id")
    requests = requests.reindex(pd.Index(bandit["request_id"].unique()))
    return replay(rec, policy, requests.reset_index()), requests


def target_feedback(
    bandit: pd.DataFrame,
    impressions: pd.DataFrame,
    rec: Recommender,
    policy: Policy,
    *,
    model: RewardModel | None = None,
    source: str = "logs",
    replayed: tuple[TargetTables, pd.DataFrame] | None = None,
) -> BanditFeedback:
    """Bandit feedback (one row per shown item, from ``shopformer-logs join``) against the target.

    ``replayed``: :func:`replay_logged`'s result when already computed (one replay serves every reward).
    """
    _check_propensities(bandit, source)
    tables, requests = replayed or replay_logged(rec, policy, bandit, impressions)
    slate = requests.index.get_indexer(bandit["request_id"])
    position = bandit["position"].to_numpy(np.int64) - 1
    item = bandit["item_id"].astype(str).to_numpy()
    target = _lookup(tables, slate, item, position)
    support = _logging_support(requests)
    rows, cands, probs, unsupported = _sparse_target(tables, slate, position, support)
    model = model or EmpiricalBayesRewardModel()
    reward = bandit["reward"].to_numpy(np.float64)
    model.fit(item, position, reward)
    dm_value = expected_reward(model, row=rows, item=cands, prob=probs, position=position)
    slates = _target_slate_pscores(bandit, tables, policy, slate)
    return BanditFeedback(
        reward=reward,
        position=position,
        pscore=bandit["propensity"].to_numpy(np.float64),
        slate_id=bandit["request_id"].to_numpy(),
        target_pscore=np.clip(target, 0.0, 1.0),  # sums of float marginals may pass 1 by an ulp
        item=item,
        q_hat=model.predict(item, position),
        dm_value=dm_value,
        slate_pscore=_slate_pscores(bandit),
        target_slate_pscore=slates,
        unsupported_mass=np.clip(unsupported, 0.0, 1.0),
    )


def _check_propensities(bandit: pd.DataFrame, source: str) -> None:
    if "propensity" not in bandit.columns:
        raise DataError(
            f"{source}: no 'propensity' column: these logs cannot be used for off-policy evaluation"
        )
    missing = bandit["propensity"].isna()
    if missing.any():
        example = bandit.loc[missing, "request_id"].iloc[0]
        raise DataError(
            f"{source}: {int(missing.sum()):,} of {len(bandit):,} shown items have no propensity "
            f"(e.g. request {example!r}): log them with a policy that records propensities"
        )


def _lookup(tables: TargetTables, slate: np.ndarray, item: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The target's probability of each logged (item, position); 0 where it would not show it."""
    out = np.zeros(len(slate))
    index = [{c: i for i, c in enumerate(cands)} for cands in tables.candidates]
    for row, (s, it, p) in enumerate(zip(slate, item, position, strict=True)):
        c = index[s].get(it)
        table = tables.marginals[s]
        if c is not None and p < table.shape[1]:
            out[row] = table[c, p]
    return out


def _logging_support(requests: pd.DataFrame) -> list[tuple[set[str], list[str]]]:
    """Per request: the items the logging policy could show at any slot, and its shown list."""
    out = []
    for policy, candidates, shown in zip(
        requests["policy"], requests["candidates"], requests["shown"], strict=True
    ):
        shown = [str(s) for s in shown]
        pool = set(shown) if policy == LOGGING_GREEDY else {str(c) for c in candidates}
        out.append((pool, shown))
    return out


def _sparse_target(
    tables: TargetTables,
    slate: np.ndarray,
    position: np.ndarray,
    support: Sequence[tuple[set[str], list[str]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row, candidate, probability) triples of the target at each logged row's slot, and the mass
    it puts where the logging policy could not show anything."""
    rows, cands, probs = [], [], []
    unsupported = np.zeros(len(slate))
    for row, (s, p) in enumerate(zip(slate, position, strict=True)):
        table, names = tables.marginals[s], tables.candidates[s]
        if p >= table.shape[1] or not names:
            continue
        column = table[:, p]
        rows.append(np.full(len(names), row))
        cands.append(np.asarray(names, dtype=object))
        probs.append(column)
        pool, shown = support[s]
        greedy_slot = shown[p] if p < len(shown) else None
        allowed = np.array([(c == greedy_slot) if len(pool) == len(shown) else (c in pool) for c in names])
        unsupported[row] = float(column[~allowed].sum())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0), unsupported
    return np.concatenate(rows), np.concatenate(cands), np.concatenate(probs), unsupported


def _slate_pscores(bandit: pd.DataFrame) -> np.ndarray | None:
    if "slate_propensity" not in bandit.columns or bandit["slate_propensity"].isna().any():
        return None
    return bandit["slate_propensity"].to_numpy(np.float64)


def _target_slate_pscores(
    bandit: pd.DataFrame, tables: TargetTables, policy: Policy, slate: np.ndarray
) -> np.ndarray | None:
    """The target's probability of each logged list (repeated on its rows); None when it has none."""
    per_request = np.zeros(len(tables.candidates))
    shown = bandit.groupby(slate, sort=True)["item_id"].apply(lambda s: [str(x) for x in s])
    for s, items in shown.items():
        names = {c: i for i, c in enumerate(tables.candidates[s])}
        if not all(item in names for item in items):
            continue  # the target cannot show this list
        p = policy.slate_probability(tables.scores[s], np.array([names[i] for i in items]))
        if p is None:
            return None
        per_request[s] = p
    return per_request[slate]


def list_metrics(rec: Recommender, tables: TargetTables, impressions: pd.DataFrame) -> dict[str, tuple]:
    """(target, logged) in-stock share and mean price of the shown items, where the bundle has them.

    The target's figures are expectations under its position marginals (exact, no draw); the logged
    ones are the shares of what the logging policy showed."""
    attrs = rec.attributes
    by_text = {str(raw): raw for raw in rec.raw_ids.tolist()}
    columns = {"in_stock": attrs.flags.get("in_stock"), "price": attrs.price}
    out: dict[str, tuple] = {}
    for name, values in columns.items():
        if values is None:
            continue
        target = [
            float(
                (table * values[attrs.encode([by_text.get(c, c) for c in cands])][:, None]).sum(axis=0).mean()
            )
            for cands, table in zip(tables.candidates, tables.marginals, strict=True)
            if cands
        ]
        shown = [attrs.encode([by_text.get(str(i), i) for i in items]) for items in impressions["shown"]]
        logged = np.concatenate([values[ids] for ids in shown if len(ids)]) if shown else np.zeros(0)
        out[name] = (float(np.nanmean(target)), float(np.nanmean(logged)) if logged.size else float("nan"))
    return out
