"""Journey labels (next event type, conversion, abandonment), censoring at the window end, the session split,
and the journey datamodule's windows: no label ever looks at the features' future, no feature at a label's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopformer.data.journey.datamodule import JourneyDataModule
from shopformer.data.journey.labels import (
    IGNORE,
    PARTS,
    UNUSED,
    JourneyLabelConfig,
    journey_labels,
    open_cart_flags,
    session_starts,
)
from shopformer.data.journey.split import JourneySplit
from shopformer.data.preprocess import PreprocessConfig
from shopformer.data.sources import FrameSource, SyntheticSource, TaobaoSource
from shopformer.data.split import LeaveOneOut
from shopformer.data.store import DatasetSpec
from shopformer.errors import DataError

VOCAB = ["<pad>", "view", "cart", "purchase"]
V, C, P = 1, 2, 3
I = IGNORE  # noqa: E741
END = 100_000  # window end (unix seconds)


def _labels(sessions: list[list[tuple[int, int]]], censor_minutes: float = 30.0):
    """Labels of sessions given as [(event id, timestamp), ...], concatenated."""
    event = np.array([e for s in sessions for e, _ in s])
    ts = np.array([t for s in sessions for _, t in s])
    starts = np.concatenate([[True] + [False] * (len(s) - 1) for s in sessions])
    config = JourneyLabelConfig(censor_minutes=censor_minutes, window_end=END)
    return journey_labels(event, ts, starts, VOCAB, config)


def test_labels_of_a_converting_and_an_abandoning_session():
    done = END - 7200  # ends two hours before the window end: not censored
    labels = _labels(
        [
            [(V, done - 300), (C, done - 200), (V, done - 100), (P, done)],
            [(V, done - 300), (C, done - 200), (V, done)],
        ]
    )
    assert labels.next_event.tolist() == [C - 1, V - 1, P - 1, I, C - 1, V - 1, I]
    assert labels.conversion.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert labels.open_cart.tolist() == [False, True, True, False, False, True, True]
    assert labels.abandonment.tolist() == [I, 0, 0, I, I, 1, 1]
    assert not labels.censored.any()
    assert labels.run_start.tolist() == [0, 0, 0, 0, 4, 4, 4]


def test_censored_session_without_purchase_is_unknown_not_negative():
    late = END - 600  # the last event 10 minutes before the window end: the session may go on
    labels = _labels([[(V, late - 60), (C, late)], [(V, late - 120), (P, late - 60), (V, late)]])
    assert labels.censored.all()
    assert labels.conversion.tolist() == [I, I, 1, I, I]  # an observed purchase is positive anyway
    assert labels.abandonment.tolist() == [I, I, I, I, I]
    assert labels.next_event.tolist() == [C - 1, I, P - 1, V - 1, I]  # the next step is known inside
    assert labels.facts["censored_sessions"] == 2


def test_censoring_threshold_is_the_configured_gap():
    gap = 30 * 60  # an unseen event after the window end joins a session only within the gap
    assert _labels([[(V, END - gap + 1)]], censor_minutes=30).censored.all()
    assert not _labels([[(V, END - gap)]], censor_minutes=30).censored.any()
    assert _labels([[(V, END)]], censor_minutes=0).conversion.tolist() == [0]  # censoring off


def test_cart_after_purchase_reopens_the_cart():
    done = END - 9000
    labels = _labels([[(C, done - 40), (P, done - 30), (V, done - 20), (C, done - 10), (V, done)]])
    assert labels.open_cart.tolist() == [True, False, False, True, True]
    assert labels.abandonment.tolist() == [0, I, I, 1, 1]
    assert labels.conversion.tolist() == [1, 0, 0, 0, 0]


def test_open_cart_flags_stop_at_session_starts():
    events = np.array([C, V, V, V])
    starts = np.array([True, False, True, False])
    assert open_cart_flags(events, starts, C, P).tolist() == [True, True, False, False]


def test_session_starts_from_sequence_and_session_ids():
    seq = np.array([0, 0, 0, 1, 1])
    session = np.array([5, 5, 6, 6, 6])
    assert session_starts(seq, session).tolist() == [True, False, True, True, False]


def test_no_purchase_type_is_refused():
    with pytest.raises(DataError, match="'purchase' event type"):
        journey_labels(np.array([1]), np.array([0]), np.array([True]), ["<pad>", "click"])


def test_split_by_session_start_drops_the_censoring_zone():
    starts = np.arange(0, 10_000, 100)
    split = JourneySplit(valid_fraction=0.1, test_fraction=0.2)
    part, facts = split.assign(starts, window_end=10_000, censor_minutes=10)
    assert (part[starts >= 10_000 - 600] == UNUSED).all()
    kept = starts[part != UNUSED]
    assert (np.diff(part[part != UNUSED]) >= 0).all()  # train, then valid, then test
    assert facts["test_sessions"] == pytest.approx(0.2 * len(kept), abs=1)
    assert facts["train_sessions"] + facts["valid_sessions"] + facts["test_sessions"] == len(kept)
    with pytest.raises(DataError, match="test_fraction"):
        JourneySplit(test_fraction=0.0).assign(starts, 10_000, 10)


@pytest.mark.parametrize("folds", [2, 5])
def test_fold_splits_test_every_kept_session_once_in_time_blocks(folds):
    starts = np.random.default_rng(0).permutation(np.arange(0, 10_000, 10))
    tested = np.zeros(len(starts), dtype=int)
    for fold in range(folds):
        part, facts = JourneySplit(valid_fraction=0.1, folds=folds, fold=fold).assign(starts, 10_000, 10)
        kept = part != UNUSED
        assert (part[starts >= 10_000 - 600] == UNUSED).all()
        tested += part == PARTS["test"]
        test, valid = starts[part == PARTS["test"]], starts[part == PARTS["valid"]]
        # one contiguous block of start times, a fold's share of the kept sessions
        assert facts["test_sessions"] == pytest.approx(kept.sum() / folds, abs=2)
        between = (starts >= test.min()) & (starts <= test.max()) & kept
        assert (part[between] == PARTS["test"]).all()
        # validation touches the test block: before it, or after it for the first block
        assert facts["valid_sessions"] == pytest.approx(0.1 * kept.sum(), abs=2)
        if fold:
            assert valid.max() < test.min() and not ((starts > valid.max()) & (starts < test.min())).any()
        else:
            assert valid.min() > test.max() and not ((starts > test.max()) & (starts < valid.min())).any()
        assert facts["fold"] == fold
    assert (tested[starts < 10_000 - 600] == 1).all()


def test_last_fold_is_the_default_split():
    starts = np.arange(0, 10_000, 7)
    default, _ = JourneySplit(valid_fraction=0.1, test_fraction=0.2).assign(starts, 10_000, 10)
    last, _ = JourneySplit(valid_fraction=0.1, folds=5, fold=4).assign(starts, 10_000, 10)
    np.testing.assert_array_equal(default, last)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"folds": 1}, "folds must be >= 2"),
        ({"folds": 5, "fold": 5}, "fold in"),
        ({"folds": 5, "test_cutoff": 100}, "exclude each other"),
        ({"folds": 2, "valid_fraction": 0.5}, "no training sessions"),
    ],
)
def test_bad_fold_options_are_refused(options, message):
    with pytest.raises(DataError, match=message):
        JourneySplit(**options).assign(np.arange(100), 1_000, 1)


# -- the datamodule on a hand-made log ---------------------------------------------------------------


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type"])


@pytest.fixture(scope="module")
def tiny_dm() -> JourneyDataModule:
    """Ten users: five train-period sessions, then valid and test ones; user 9's session is censored."""
    rows = []
    for user in range(10):
        t0 = 10_000 * user
        kinds = ["view", "cart", "view", "purchase"] if user % 2 else ["view", "view", "cart", "view"]
        rows += [(user, 100 + 10 * user + j, t0 + 60 * j, kind) for j, kind in enumerate(kinds)]
    rows.append((9, 999, 10_000 * 9 + 600, "view"))  # user 9: the last event is the window end
    spec = DatasetSpec(
        "tiny",
        FrameSource(_frame(rows)),
        sequence_key="session",
        preprocess=PreprocessConfig(dedupe_consecutive=False),
        split=LeaveOneOut(),
    )
    dm = JourneyDataModule(
        spec, cache_dir=None, max_len=3, batch_size=4, split=JourneySplit(0.2, 0.3, drop_tail=False)
    )
    dm.setup()
    return dm


def test_datamodule_parts_and_counts(tiny_dm):
    assert (
        tiny_dm.facts["train_sessions"] + tiny_dm.facts["valid_sessions"] + tiny_dm.facts["test_sessions"]
        == 10
    )
    test = tiny_dm.examples["test"]
    censored = tiny_dm.labels.censored[test.positions]
    assert censored.any() and (test.conversion[censored] != 0).all()  # never a negative when censored
    assert tiny_dm.class_prior().sum() == pytest.approx(1.0)
    assert tiny_dm.event_classes == ["view", "cart", "purchase"]


def test_training_windows_cover_each_training_label_once_and_nothing_else(tiny_dm):
    batch = tiny_dm.train_set.__getitems__(list(range(len(tiny_dm.train_set))))
    labelled = (batch["next_event"] != I) | (batch["conversion"] != I) | (batch["abandonment"] != I)
    expected = (tiny_dm.part == PARTS["train"]) & tiny_dm.labels.defined()
    assert int(labelled.sum()) == int(expected.sum())
    assert batch["item_ids"].shape[1] <= 3  # max_len
    # next-item targets never leave the training sessions
    train_items = set(tiny_dm.data.item[tiny_dm.part == PARTS["train"]].tolist())
    assert set(batch["targets"][batch["targets"] > 0].tolist()) <= train_items


def test_evaluation_prefix_holds_only_the_past(tiny_dm):
    ds, test = tiny_dm.data, tiny_dm.examples["test"]
    batch = tiny_dm.test_set.__getitems__(list(range(len(tiny_dm.test_set))))
    for row, position in enumerate(test.positions):
        start = max(int(tiny_dm.labels.run_start[position]), position - 2)
        expected = ds.item[start : position + 1]
        got = batch["item_ids"][row].numpy()
        assert got[got > 0].tolist() == expected.tolist()  # events up to and including the prefix end
        assert batch["conversion"][row] == tiny_dm.labels.conversion[position]


def test_labels_never_depend_on_later_sessions_features(tiny_dm):
    """Changing everything after a prefix leaves its evaluation input unchanged (no feature leakage)."""
    position = int(tiny_dm.examples["test"].positions[0])
    batch = tiny_dm.test_set.__getitems__([0])
    item = tiny_dm.tokens.item.copy()
    tiny_dm.tokens.item[position + 1 :] = 1
    try:
        again = tiny_dm.test_set.__getitems__([0])
    finally:
        tiny_dm.tokens.item[:] = item
    assert position >= 0 and (batch["item_ids"] == again["item_ids"]).all()


def test_order_only_data_is_refused(tmp_path):
    frame = _frame([(1, 5, 0, "view"), (1, 6, 1, "purchase")])
    spec = DatasetSpec("order", FrameSource(frame, has_timestamps=False), split=LeaveOneOut())
    with pytest.raises(DataError, match="real timestamps"):
        JourneyDataModule(spec, cache_dir=None).setup()


def test_user_sequences_see_earlier_sessions():
    """Per-user sequences: a test prefix's window also holds the user's earlier (training) sessions."""
    source = SyntheticSource(n_users=150, n_items=80, n_categories=5, seed=3, journey_signal=1.0)
    spec = DatasetSpec("syn", source, sequence_key="user", split=LeaveOneOut())
    dm = JourneyDataModule(spec, cache_dir=None, max_len=30)
    dm.setup()
    test = dm.examples["test"]
    batch = dm.test_set.__getitems__(list(range(len(test.positions))))
    window = (batch["item_ids"] > 0).sum(dim=1).numpy()
    in_session = test.positions - dm.labels.run_start[test.positions] + 1
    assert (window >= np.minimum(in_session, 30)).all() and (window > in_session).any()


@pytest.mark.usefixtures("shared_data")
def test_taobao_slice_labels_honour_censoring():
    spec = DatasetSpec(
        "taobao",
        TaobaoSource(),
        sequence_key="session",
        preprocess=PreprocessConfig(dedupe_consecutive=False, session_gap_minutes=30),
        split=LeaveOneOut(),
    )
    dm = JourneyDataModule(spec, cache_dir=None, max_len=20)
    dm.setup()
    facts = dm.facts
    assert facts["sessions"] == 70_977  # SOURCE.md, 30-minute sessions
    assert facts["window_end_utc"].startswith("2017-11-26 03:10:11")
    assert 0.2 < facts["censored_sessions"] / facts["sessions"] < 0.35
    labels = dm.labels
    assert not ((labels.conversion == 0) & labels.censored).any()
    assert not ((labels.abandonment == 1) & labels.censored).any()
    # sessions starting in the last 30 minutes are in no part; every part has positives to score
    assert facts["unused_from_utc"].startswith("2017-11-26 02:40:11")
    for part in ("train", "valid", "test"):
        assert facts[f"{part}_conversion_positives"] > 50 and facts[f"{part}_next_event"] > 2000


def test_item_categories_rank_by_training_events():
    source = SyntheticSource(n_users=150, n_items=80, n_categories=5, seed=3)
    dm = JourneyDataModule(
        DatasetSpec("syn", source, sequence_key="session", split=LeaveOneOut()), cache_dir=None
    )
    dm.setup()
    codes = dm.item_categories(buckets=3)
    assert codes[0] == 0 and set(np.unique(codes)) == {0, 1, 2}
    vocab = dm.data.item_vocab.set_index("item")
    counts = dm.train_item_counts()
    by_category = pd.Series(counts[vocab.index], index=vocab["category"].to_numpy()).groupby(level=0).sum()
    top = by_category.idxmax()
    assert (codes[vocab.index[vocab["category"] == top]] == 1).all()
    assert (dm.item_categories(buckets=1) == 0).all()


def test_category_statistics_are_training_event_shares_per_category():
    source = SyntheticSource(n_users=150, n_items=80, n_categories=5, seed=3)
    dm = JourneyDataModule(
        DatasetSpec("syn", source, sequence_key="session", split=LeaveOneOut()), cache_dir=None
    )
    dm.setup()
    stats = dm.category_statistics(smoothing=1e-9)
    assert stats.shape == (dm.data.n_items, dm.n_event_classes + 1) and not stats[0].any()
    ds, vocab = dm.data, dm.data.item_vocab.set_index("item")
    train = dm.part == PARTS["train"]
    category_of = vocab["category"].reindex(np.arange(ds.n_items)).to_numpy()
    overall = np.bincount(ds.event[train] - 1, minlength=dm.n_event_classes) / train.sum()
    for name in vocab["category"].unique()[:3]:
        rows = vocab.index[vocab["category"] == name]
        assert (stats[rows] == stats[rows[0]]).all()  # one category, one row: seen or not
        events = ds.event[train & (category_of[ds.item] == name)] - 1
        shares = np.bincount(events, minlength=dm.n_event_classes) / len(events)
        with np.errstate(divide="ignore"):
            expected = np.log(shares) - np.log(overall)
        finite = np.isfinite(expected)
        np.testing.assert_allclose(stats[rows[0], :-1][finite], expected[finite], rtol=1e-5)
        assert stats[rows[0], -1] == pytest.approx(np.log1p(len(events)))
    smoothed = dm.category_statistics(smoothing=1e9)  # all pseudo-events: every share is the overall one
    np.testing.assert_allclose(smoothed[:, :-1], 0.0, atol=1e-4)
    with pytest.raises(DataError, match="smoothing"):
        dm.category_statistics(smoothing=0.0)
