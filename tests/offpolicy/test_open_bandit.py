"""The Open Bandit Dataset reader and its BanditFeedback: real sample (skipped when absent), broken copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopformer.errors import DataError
from shopformer.offpolicy.estimators import estimate
from shopformer.offpolicy.open_bandit import (
    OpenBanditLog,
    check_action_dist,
    log_path,
    q_hat_grid,
    read_log,
    to_feedback,
    uniform_action_dist,
)
from shopformer.offpolicy.reward_model import EmpiricalBayesRewardModel

N_ROWS = 12  # the broken copies keep the first rows only: fast


@pytest.fixture(scope="module")
def random_path(shared_data: Path) -> Path:
    path = log_path(shared_data, "random")
    if not path.exists():
        pytest.skip(f"Open Bandit sample not found at {path}")
    return path


@pytest.fixture(scope="module")
def random_log(random_path: Path) -> OpenBanditLog:
    return read_log(random_path)


@pytest.fixture(scope="module")
def bts_log(random_path: Path) -> OpenBanditLog:
    return read_log(log_path(random_path.parents[3], "bts"))


def test_reads_both_policies(random_log: OpenBanditLog, bts_log: OpenBanditLog) -> None:
    for log, clicks in ((random_log, 38), (bts_log, 42)):  # SOURCE.md's counts
        assert log.n_rows == 10_000 and log.n_items == 80
        assert int(log.click.sum()) == clicks and log.on_policy_value == clicks / 10_000
        assert set(np.unique(log.position)) == {0, 1, 2}  # 1..3 in the file
        assert log.item.min() >= 0 and log.item.max() <= 79
        assert log.user_features.shape == (10_000, 4) and log.affinity.shape == (10_000, 80)
        assert np.array_equal(log.slate_id, np.arange(10_000))
        assert (np.diff(log.timestamp) >= np.timedelta64(0)).all()
    assert random_log.policy == "random" and bts_log.policy == "bts" and random_log.campaign == "all"
    assert np.all(random_log.pscore == 0.0125)
    assert 4e-5 < bts_log.pscore.min() < bts_log.pscore.max() < 0.96
    assert random_log.context().shape[0] == 10_000


def test_first_rows_match_the_file(random_path: Path, random_log: OpenBanditLog) -> None:
    raw = pd.read_csv(random_path, index_col=0, nrows=3)
    assert random_log.item[:3].tolist() == raw["item_id"].tolist()  # the file is already in time order
    assert random_log.position[:3].tolist() == (raw["position"] - 1).tolist()


def test_feedback_for_a_target(bts_log: OpenBanditLog) -> None:
    rng = np.random.default_rng(0)
    dist = rng.dirichlet(np.ones(80), size=3).T  # [80, 3], each position sums to 1
    q = rng.uniform(0, 0.01, size=(bts_log.n_rows, 80, 3))
    fb = to_feedback(bts_log, dist, q)
    assert fb.n_rows == fb.n_slates == 10_000
    rows = [0, 1, 4321, 9999]
    for i in rows:
        item, pos = bts_log.item[i], bts_log.position[i]
        assert fb.target_pscore[i] == dist[item, pos]
        assert fb.pscore[i] == bts_log.pscore[i] and fb.reward[i] == bts_log.click[i]
        assert fb.q_hat[i] == q[i, item, pos]
        assert fb.dm_value[i] == pytest.approx(float(dist[:, pos] @ q[i, :, pos]), rel=1e-12)
    per_round = to_feedback(bts_log, np.tile(dist, (bts_log.n_rows, 1, 1)), q)  # the [n, 80, 3] form
    np.testing.assert_array_equal(per_round.target_pscore, fb.target_pscore)
    np.testing.assert_allclose(per_round.dm_value, fb.dm_value, rtol=1e-12)


def test_uniform_target_on_the_uniform_log_is_on_policy(random_log: OpenBanditLog) -> None:
    fb = to_feedback(random_log, uniform_action_dist(80))
    np.testing.assert_allclose(fb.importance_weight, 1.0)
    assert estimate(fb, "ipw") == pytest.approx(random_log.on_policy_value, rel=1e-12)


def test_q_hat_grid_answers_every_cell(random_log: OpenBanditLog) -> None:
    model = EmpiricalBayesRewardModel().fit(random_log.item, random_log.position, random_log.click)
    q = q_hat_grid(model, random_log)
    assert q.shape == (10_000, 80, 3) and np.isfinite(q).all()
    np.testing.assert_array_equal(q[0], q[1])  # no context: the same for every round
    i = 7
    expected = model.predict(np.array([random_log.item[i]]), np.array([random_log.position[i]]))
    assert q[i, random_log.item[i], random_log.position[i]] == expected[0]


def test_action_dist_checks() -> None:
    good = uniform_action_dist(80)
    assert check_action_dist(good, 5, 80).shape == (80, 3)
    with pytest.raises(DataError, match=r"action_dist: expected shape \(80, 3\)"):
        check_action_dist(good[:79], 5, 80)
    with pytest.raises(DataError, match=r"expected shape \(5, 80, 3\)"):
        check_action_dist(np.tile(good, (4, 1, 1)), 5, 80)
    with pytest.raises(DataError, match="must sum to 1, e.g. 2$"):
        check_action_dist(2 * good, 5, 80)
    with pytest.raises(DataError, match=r"must lie in \[0, 1\], e.g. -0.5"):
        check_action_dist(np.where(good > 0, -0.5, 0), 5, 80)
    with pytest.raises(DataError, match="NaN/inf values, e.g. nan"):
        check_action_dist(np.where(good > 0, np.nan, 0), 5, 80)


def _broken_copy(
    random_path: Path, tmp_path: Path, column: str, value: object, row: int = 4, *, items: bool = True
) -> Path:
    """The first rows of the random log with one cell changed (``value`` None: the column dropped)."""
    df = pd.read_csv(random_path, index_col=0, nrows=N_ROWS)
    if value is None:
        df = df.drop(columns=[column])
    else:
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
    folder = tmp_path / "random" / "all"
    folder.mkdir(parents=True)
    path = folder / "all.csv"
    df.to_csv(path)
    if items:  # n_items (80) comes from here
        (folder / "item_context.csv").write_bytes((random_path.parent / "item_context.csv").read_bytes())
    return path


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("item_id", 80, r"column 'item_id' has 1 of 12 rows not an integer in 0\.\.79, e\.g\. 80 at row 4"),
        ("item_id", "shoe", r"'item_id' .* e\.g\. 'shoe' at row 4"),
        ("position", 0, r"column 'position' has 1 of 12 rows not an integer in 1\.\.3, e\.g\. 0 at row 4"),
        ("click", 2, r"column 'click' .* e\.g\. 2 at row 4"),
        ("propensity_score", 0.0, r"column 'propensity_score' .*\(0, 1\].* e\.g\. 0\.0 at row 4"),
        ("propensity_score", 1.5, r"'propensity_score' .* e\.g\. 1\.5 at row 4"),
        ("timestamp", "yesterday", r"column 'timestamp' .* not a timestamp, e\.g\. 'yesterday' at row 4"),
        ("user_feature_2", np.nan, r"column 'user_feature_2' has 1 of 12 rows missing"),
        ("click", None, r"missing column 'click' \(the file has: timestamp, item_id"),
    ],
)
def test_broken_copy_names_file_column_value(
    random_path: Path, tmp_path: Path, column: str, value: object, message: str
) -> None:
    path = _broken_copy(random_path, tmp_path, column, value)
    with pytest.raises(DataError, match=message) as info:
        read_log(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


def test_without_item_context_items_come_from_the_ids(random_path: Path, tmp_path: Path) -> None:
    path = _broken_copy(random_path, tmp_path, "click", 1, row=0, items=False)  # a valid change
    log = read_log(path)  # no item_context.csv beside it
    assert log.n_items == int(log.item.max()) + 1 and log.click[0] == 1
    assert log.affinity.shape == (N_ROWS, log.n_items)


def test_missing_file_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file .*SHOPFORMER_DATA"):
        read_log(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="policy must be one of random, bts, got 'ucb'"):
        log_path(tmp_path, "ucb")
