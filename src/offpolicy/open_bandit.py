"""Read the Open Bandit Dataset (ZOZOTOWN) and turn a log plus a target policy into :class:`BanditFeedback`.

One file per logging policy and campaign (``{policy}/{campaign}/{campaign}.csv[.gz]``, as the Open Bandit
Pipeline ships it): one row per impression, the item (0..n_items-1) a policy placed at one of three
positions (1, 2, 3 in the file; 0-based here, as in OBP), the click, and the logging policy's probability
of that item at that position. The rows carry no request id (the sample keeps single impressions), so,
as in OBP, every row is its own round: ``slate_id`` is the row number.

The target policy is a dense action distribution ``[n_rounds, n_items, len_list]`` (or one
``[n_items, len_list]`` for every round), OBP's ``action_dist``: with 80 items a dense array is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopformer.errors import DataError
from shopformer.offpolicy.feedback import BanditFeedback

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
LEN_LIST = 3
USER_COLUMNS = tuple(f"user_feature_{k}" for k in range(4))
REQUIRED = ("timestamp", "item_id", "position", "click", "propensity_score", *USER_COLUMNS)
SAMPLE_FOLDER = "open-bandit-sample"


@dataclass(frozen=True, eq=False)
class OpenBanditLog:
    """One logging policy's impressions, sorted by time (as OBP sorts them; ``timestamp`` in UTC).

    ``item``/``position`` (0-based)/``click`` int64, ``pscore`` float64, ``user_features`` the four
    hashed categorical user features as integer codes [n, 4] (codes are per file), ``affinity`` the
    user's past clicks on each item [n, n_items] (empty [n, 0] when the file has no such columns).
    """

    path: Path
    policy: str
    campaign: str
    n_items: int
    timestamp: np.ndarray
    item: np.ndarray
    position: np.ndarray
    click: np.ndarray
    pscore: np.ndarray
    user_features: np.ndarray
    affinity: np.ndarray

    @property
    def n_rows(self) -> int:
        """Number of impressions (OBP's ``n_rounds``)."""
        return int(self.item.shape[0])

    @property
    def slate_id(self) -> np.ndarray:
        """Each row is its own round (the file has no request id)."""
        return np.arange(self.n_rows, dtype=np.int64)

    @property
    def on_policy_value(self) -> float:
        """The logging policy's own click rate: OBP's ``calc_on_policy_policy_value_estimate``."""
        return float(self.click.mean())

    def context(self) -> np.ndarray:
        """One-hot user features with the first level of each dropped (OBP's default ``context``)."""
        frame = pd.DataFrame(self.user_features, columns=list(USER_COLUMNS)).astype("category")
        return pd.get_dummies(frame, drop_first=True).to_numpy(dtype=np.float64)


def log_path(data_root: str | Path, policy: str, campaign: str = "all") -> Path:
    """The log of ``policy`` under ``data_root`` (``$SHOPFORMER_DATA``), gzipped or not."""
    if policy not in POLICIES:
        raise DataError(f"open bandit: policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if campaign not in CAMPAIGNS:
        raise DataError(f"open bandit: campaign must be one of {', '.join(CAMPAIGNS)}, got {campaign!r}")
    folder = Path(data_root) / SAMPLE_FOLDER / policy / campaign
    plain = folder / f"{campaign}.csv"
    return plain if plain.exists() else folder / f"{campaign}.csv.gz"


def read_log(path: str | Path, *, policy: str | None = None, campaign: str | None = None) -> OpenBanditLog:
    """Read and check one Open Bandit Dataset file; any problem raises :class:`DataError` naming it.

    ``n_items`` comes from ``item_context.csv`` beside the file when present, else from the largest item
    id. ``policy``/``campaign`` default to the two folder names above the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no such file (the Open Bandit sample lies in $SHOPFORMER_DATA/{SAMPLE_FOLDER})"
        )
    try:
        df = pd.read_csv(path, index_col=0)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns[:8])) + (", ..." if len(df.columns) > 8 else "")
        raise DataError(f"{path}: missing column {missing[0]!r} (the file has: {have or 'no columns'})")
    if df.empty:
        raise DataError(f"{path}: no rows")
    df = df.assign(_time=_timestamps(df["timestamp"], path))
    df = df.sort_values("_time", kind="stable")
    n_items = _n_items(path, df)
    return OpenBanditLog(
        path=path,
        policy=policy or path.parent.parent.name,
        campaign=campaign or path.parent.name,
        n_items=n_items,
        timestamp=df["_time"].dt.tz_convert(None).to_numpy(),
        item=_integers(df, "item_id", path, 0, n_items - 1),
        position=_integers(df, "position", path, 1, LEN_LIST) - 1,
        click=_integers(df, "click", path, 0, 1),
        pscore=_propensities(df, path),
        user_features=_user_codes(df, path),
        affinity=_affinity(df, path, n_items),
    )


def to_feedback(
    log: OpenBanditLog, action_dist: np.ndarray, q_hat: np.ndarray | None = None
) -> BanditFeedback:
    """The log as seen by a target policy: its probability of each logged (item, position).

    ``action_dist``: the target's [n_rounds, n_items, len_list] (or [n_items, len_list], the same for
    every round) with each position's column summing to 1, OBP's ``action_dist``. ``q_hat``: the reward
    model on every (round, item, position) [n_rounds, n_items, len_list], OBP's
    ``estimated_rewards_by_reg_model``; with it the feedback carries ``q_hat`` at the logged cell and
    ``dm_value`` = sum over items of target probability x q̂ at the logged position.
    """
    dist = check_action_dist(action_dist, log.n_rows, log.n_items)
    rows, item, position = np.arange(log.n_rows), log.item, log.position
    at_position = dist[:, position].T if dist.ndim == 2 else dist[rows, :, position]  # [n, n_items]
    model: dict[str, np.ndarray] = {}
    if q_hat is not None:
        q = _check_grid(q_hat, (log.n_rows, log.n_items, LEN_LIST), "q_hat")
        model["q_hat"] = q[rows, item, position]
        model["dm_value"] = np.sum(at_position * q[rows, :, position], axis=1)
    return BanditFeedback(
        reward=log.click.astype(np.float64),
        position=position,
        pscore=log.pscore,
        slate_id=log.slate_id,
        target_pscore=at_position[rows, item],
        item=item,
        **model,
    )


def uniform_action_dist(n_items: int, len_list: int = LEN_LIST) -> np.ndarray:
    """The uniform random policy: every item equally likely at every position ([n_items, len_list])."""
    return np.full((n_items, len_list), 1.0 / n_items)


def q_hat_grid(predict: object, log: OpenBanditLog, features: np.ndarray | None = None) -> np.ndarray:
    """A fitted reward model's q̂ on every (round, item, position): [n_rounds, n_items, len_list].

    ``predict`` is a :class:`~shopformer.offpolicy.reward_model.RewardModel`; queries carry their
    round as ``rows`` so a cross-fitted model answers each round from the fold that held it out.
    """
    n, k = log.n_rows, log.n_items
    grid = np.meshgrid(np.arange(n), np.arange(k), np.arange(LEN_LIST), indexing="ij")
    rows, items, positions = (a.ravel() for a in grid)
    context = None if features is None else np.asarray(features)[rows]
    q = predict.predict(items, positions, context, rows=rows)  # type: ignore[attr-defined]
    return np.asarray(q, dtype=np.float64).reshape(n, k, LEN_LIST)


def check_action_dist(action_dist: np.ndarray, n_rounds: int, n_items: int) -> np.ndarray:
    """``action_dist`` as float64 after checking its shape, range and that each position sums to 1."""
    dist = np.asarray(action_dist, dtype=np.float64)
    shapes = ((n_items, LEN_LIST), (n_rounds, n_items, LEN_LIST))
    _check_grid(dist, shapes[0] if dist.ndim == 2 else shapes[1], "action_dist")
    if ((dist < 0) | (dist > 1)).any():
        bad = dist[(dist < 0) | (dist > 1)]
        raise DataError(f"action_dist: probabilities must lie in [0, 1], e.g. {float(bad[0]):.6g}")
    totals = dist.sum(axis=-2)
    off = np.abs(totals - 1.0) > 1e-6
    if off.any():
        example = float(totals[off][0])
        raise DataError(
            f"action_dist: each position's probabilities over items must sum to 1, e.g. {example:.6g}"
        )
    return dist


def _check_grid(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    grid = np.asarray(array, dtype=np.float64)
    if grid.shape != shape:
        raise DataError(f"{name}: expected shape {shape} (rounds, items, positions), got {grid.shape}")
    if not np.isfinite(grid).all():
        raise DataError(f"{name}: has NaN/inf values, e.g. {float(grid[~np.isfinite(grid)][0])}")
    return grid


def _timestamps(values: pd.Series, path: Path) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    _raise_for(parsed.isna().to_numpy(), values, path, "timestamp", "not a timestamp")
    return parsed


def _integers(df: pd.DataFrame, column: str, path: Path, low: int, high: int) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() | (values != values.round()) | (values < low) | (values > high)
    _raise_for(bad.to_numpy(), df[column], path, column, f"not an integer in {low}..{high}")
    return values.to_numpy(dtype=np.int64)


def _propensities(df: pd.DataFrame, path: Path) -> np.ndarray:
    values = pd.to_numeric(df["propensity_score"], errors="coerce")
    bad = ~((values > 0) & (values <= 1))  # NaN fails both
    why = "not a probability in (0, 1] (a logged row must have had a chance to be shown)"
    _raise_for(bad.to_numpy(), df["propensity_score"], path, "propensity_score", why)
    return values.to_numpy(dtype=np.float64)


def _user_codes(df: pd.DataFrame, path: Path) -> np.ndarray:
    codes = []
    for column in USER_COLUMNS:
        _raise_for(df[column].isna().to_numpy(), df[column], path, column, "missing")
        codes.append(pd.factorize(df[column], sort=True)[0])
    return np.stack(codes, axis=1).astype(np.int64)


def _affinity(df: pd.DataFrame, path: Path, n_items: int) -> np.ndarray:
    columns = [f"user-item_affinity_{k}" for k in range(n_items)]
    present = [c for c in columns if c in df.columns]
    if not present:
        return np.zeros((len(df), 0))
    if len(present) < n_items:
        absent = next(c for c in columns if c not in df.columns)
        raise DataError(f"{path}: missing column {absent!r} (one affinity column per item, {n_items} items)")
    values = df[columns].apply(pd.to_numeric, errors="coerce")
    for column in columns:
        _raise_for(values[column].isna().to_numpy(), df[column], path, column, "not a number")
    return values.to_numpy(dtype=np.float64)


def _n_items(path: Path, df: pd.DataFrame) -> int:
    """Items in the campaign: the rows of ``item_context.csv`` beside the log, else the largest id + 1."""
    context = path.parent / "item_context.csv"
    if context.is_file():
        try:
            return int(len(pd.read_csv(context, index_col=0)))
        except (ValueError, OSError, UnicodeDecodeError) as err:
            raise DataError(f"{context}: not a readable CSV ({str(err).splitlines()[0]})") from None
    largest = pd.to_numeric(df["item_id"], errors="coerce").max()
    return int(largest) + 1 if np.isfinite(largest) else 1


def _raise_for(bad: np.ndarray, values: pd.Series, path: Path, column: str, what: str) -> None:
    """Raise naming the file, column, the count of bad rows and the first bad value with its row label."""
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = values.iloc[first]
        value = value.item() if isinstance(value, np.generic) else value
        raise DataError(
            f"{path}: column {column!r} has {int(bad.sum()):,} of {len(bad):,} rows {what}, "
            f"e.g. {value!r} at row {values.index[first]!r}"
        )
