"""Journey model (shared encoder, heads, rare-item token), its masked loss, metrics and baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

from shopformer.data.journey.labels import IGNORE
from shopformer.models.attention import TransformerEncoder
from shopformer.models.embedding import TokenEmbedding
from shopformer.models.journey.baselines import (
    GradientBoostingBaseline,
    LogisticBaseline,
    MajorityBaseline,
    MarkovBaseline,
    PrefixLabels,
    SessionEvents,
    prefix_features,
)
from shopformer.models.journey.classification_metrics import (
    JourneyPredictions,
    binary_metrics,
    decide,
    journey_metrics,
    lead_over,
    macro_f1,
    next_event_metrics,
    roc_auc,
    tune_gamma,
)
from shopformer.models.journey.loss import JourneyLoss
from shopformer.models.journey.model import JourneyModel
from shopformer.models.losses import FullCrossEntropy

N_ITEMS, N_TYPES, N_GAPS = 30, 4, 17  # types: pad, view, cart, purchase


def _model(**kwargs) -> JourneyModel:
    torch.manual_seed(0)
    options = {
        "dim": 16,
        "max_len": 8,
        "heads": 2,
        "dropout": 0.0,
        "n_event_types": N_TYPES,
        "n_gap_buckets": N_GAPS,
    }
    return JourneyModel(N_ITEMS, **{**options, **kwargs}).eval()


def _batch(b: int = 3, length: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "item_ids": torch.randint(1, N_ITEMS, (b, length), generator=g),
        "event_types": torch.randint(1, N_TYPES, (b, length), generator=g),
        "gap_buckets": torch.randint(1, N_GAPS, (b, length), generator=g),
    }
    for channel in batch.values():
        channel[0, :2] = 0  # row 0 is left-padded
    return batch


def test_shares_the_recommenders_encoder_and_embedding():
    model = _model()
    assert isinstance(model.encoder, TransformerEncoder) and isinstance(model.embed, TokenEmbedding)
    assert model.objective == "journey"


def test_shapes_and_probabilities():
    model, batch = _model(), _batch()
    hidden = model(**batch)
    assert hidden.shape == (3, 6, 16)
    logits = model.heads(hidden)
    assert logits.next_event.shape == (3, 6, N_TYPES - 1) and logits.conversion.shape == (3, 6)
    events, conversion, abandonment = model.journey(**batch)
    assert torch.allclose(events.sum(dim=1), torch.ones(3))
    assert conversion.shape == abandonment.shape == (3,)
    assert ((conversion > 0) & (conversion < 1)).all()
    # the last-position path used in serving equals the full forward's last position
    assert torch.allclose(model.encode(**batch), hidden[:, -1], atol=1e-5)


def test_causal_heads_never_see_later_events():
    model, batch = _model(), _batch()
    before = model(**batch)[:, :3]
    changed = {k: v.clone() for k, v in batch.items()}
    for channel in changed.values():
        channel[:, 3:] = torch.randint(1, 4, channel[:, 3:].shape)
    assert torch.allclose(model(**changed)[:, :3], before, atol=1e-6)


def test_rare_items_share_one_token():
    model = _model(min_item_count=2)
    counts = np.zeros(N_ITEMS, dtype=np.int64)
    counts[1:10] = 5
    counts[10:20] = 1
    model.set_known_items(counts)
    vectors = model.item_vectors()
    assert torch.equal(vectors[12], vectors[15]) and not torch.equal(vectors[3], vectors[4])
    assert torch.count_nonzero(vectors[0]) == 0  # padding
    batch = _batch()
    batch["item_ids"][:, -1] = 12
    again = {**batch, "item_ids": batch["item_ids"].clone()}
    again["item_ids"][:, -1] = 15
    assert torch.allclose(model.encode(**batch), model.encode(**again))
    with pytest.raises(ValueError, match="entries"):
        model.set_known_items(counts[:5])


def test_event_types_are_required():
    with pytest.raises(ValueError, match="event-type channel"):
        JourneyModel(N_ITEMS, n_event_types=0)


def _labelled(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    shape = batch["item_ids"].shape
    out = dict(batch)
    out["next_event"] = torch.randint(0, N_TYPES - 1, shape)
    out["conversion"] = torch.randint(0, 2, shape)
    out["abandonment"] = torch.full(shape, IGNORE)
    out["abandonment"][:, -1] = 1
    out["targets"] = torch.randint(1, N_ITEMS, shape)
    out["next_event"][0, :2] = out["conversion"][0, :2] = IGNORE
    return out


@torch.no_grad()
def test_loss_ignores_undefined_labels_and_weights_heads():
    model, batch = _model(), _labelled(_batch())
    loss = JourneyLoss(next_event=1.0, conversion=2.0, abandonment=0.5)
    total, parts = loss(
        model, model(**{k: batch[k] for k in ("item_ids", "event_types", "gap_buckets")}), batch
    )
    assert set(parts) == {"next_event", "conversion", "abandonment"}
    assert total == pytest.approx(
        float(parts["next_event"] + 2 * parts["conversion"] + 0.5 * parts["abandonment"])
    )
    hidden = model(**{k: batch[k] for k in ("item_ids", "event_types", "gap_buckets")})
    mask = batch["conversion"] != IGNORE
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        model.heads(hidden).conversion[mask], batch["conversion"][mask].float()
    )
    assert float(parts["conversion"]) == pytest.approx(float(expected), rel=1e-5)
    # no abandonment label at all: that head adds zero, still differentiable
    batch["abandonment"][:] = IGNORE
    with torch.enable_grad():
        hidden = model(**{k: batch[k] for k in ("item_ids", "event_types", "gap_buckets")})
        total, parts = loss(model, hidden, batch)
    assert float(parts["abandonment"]) == 0.0 and total.requires_grad


def test_next_item_head_is_optional():
    model, batch = _model(), _labelled(_batch())
    hidden = model(**{k: batch[k] for k in ("item_ids", "event_types", "gap_buckets")})
    with_items = JourneyLoss(next_item=0.5, item_loss=FullCrossEntropy())
    total, parts = with_items(model, hidden, batch)
    assert "next_item" in parts and float(parts["next_item"].detach()) > 0
    with pytest.raises(ValueError, match="item_loss"):
        JourneyLoss(next_item=1.0)


# -- metrics -----------------------------------------------------------------------------------------


def test_binary_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    probs = np.clip(0.3 * labels + rng.uniform(0, 0.7, 500), 0.01, 0.99)
    labels[:50] = IGNORE
    got = binary_metrics(probs, labels)
    keep = labels != IGNORE
    assert got["n"] == 450 and got["positives"] == int(labels[keep].sum())
    assert got["roc_auc"] == pytest.approx(roc_auc_score(labels[keep], probs[keep]), abs=1e-6)
    assert got["pr_auc"] == pytest.approx(average_precision_score(labels[keep], probs[keep]), abs=1e-6)
    assert got["log_loss"] == pytest.approx(log_loss(labels[keep], probs[keep]), abs=1e-6)
    # ECE by hand: |mean p - rate| weighted by bin size, 15 equal-width bins
    p, y = probs[keep], labels[keep]
    bins = np.minimum((p * 15).astype(int), 14)
    ece = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    assert got["ece"] == pytest.approx(ece, abs=1e-4)


def test_binary_metrics_one_class_is_nan():
    got = binary_metrics(np.array([0.2, 0.4]), np.array([1, 1]))
    assert math.isnan(got["roc_auc"]) and math.isfinite(got["log_loss"])
    assert binary_metrics(np.array([0.2]), np.array([IGNORE]))["n"] == 0


def test_next_event_metrics_and_decision_rule():
    rng = np.random.default_rng(1)
    labels = rng.choice(3, 1000, p=[0.8, 0.15, 0.05])
    probs = rng.dirichlet([1, 1, 1], 1000) * 0.5
    probs[np.arange(1000), labels] += 0.2
    probs[:, 0] += 0.6
    probs /= probs.sum(axis=1, keepdims=True)
    prior = np.array([0.8, 0.15, 0.05])
    got = next_event_metrics(probs, labels, prior, gamma=1.0)
    balanced = (probs / prior).argmax(axis=1)
    assert got["macro_f1"] == pytest.approx(f1_score(labels, balanced, average="macro"), abs=1e-6)
    assert got["macro_f1_argmax"] == pytest.approx(
        f1_score(labels, probs.argmax(1), average="macro"), abs=1e-6
    )
    assert got["accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())
    assert got["log_loss"] == pytest.approx(log_loss(labels, probs), abs=1e-6)
    gamma = tune_gamma(probs, labels, prior)
    best = max(next_event_metrics(probs, labels, prior, g)["macro_f1"] for g in (0, 0.25, 0.5, 0.75, 1))
    assert next_event_metrics(probs, labels, prior, gamma)["macro_f1"] == pytest.approx(best)


def test_journey_metrics_are_flat_and_named():
    preds = JourneyPredictions(np.full((4, 3), 1 / 3), np.full(4, 0.5), np.full(4, 0.5))
    got = journey_metrics(preds, np.array([0, 1, 2, IGNORE]), np.array([0, 1, 0, 1]), np.full(4, IGNORE))
    assert got["next_event_n"] == 3 and got["conversion_roc_auc"] == 0.5 and got["abandonment_n"] == 0


def test_rank_sum_auc_and_numpy_macro_f1_agree_with_the_reported_metrics():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 500)
    probs = np.round(0.3 * labels + rng.random(500), 1)  # rounded: many ties
    assert roc_auc(probs, labels) == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert math.isnan(roc_auc(probs, np.ones(500)))
    events = rng.choice(4, 300, p=[0.7, 0.2, 0.1, 0.0])  # class 3 never occurs
    event_probs = rng.dirichlet([1, 1, 1, 0.1], 300)
    prior = np.array([0.7, 0.2, 0.1, 1e-3])
    for gamma in (0.0, 1.0):
        reported = next_event_metrics(event_probs, events, prior, gamma)["macro_f1"]
        assert macro_f1(decide(event_probs, prior, gamma), events, 4) == pytest.approx(reported, abs=1e-6)


def test_lead_over_a_baseline_is_the_metric_difference_with_an_interval():
    rng = np.random.default_rng(6)
    n = 600
    conversion = rng.integers(0, 2, n)
    conversion[::7] = IGNORE
    next_event = rng.integers(0, 3, n)
    next_event[::5] = IGNORE
    onehot = np.eye(3)[np.where(next_event == IGNORE, 0, next_event)]
    good = JourneyPredictions(
        0.6 * onehot + 0.4 / 3, 0.5 * conversion.clip(0) + 0.5 * rng.random(n), rng.random(n)
    )
    poor = JourneyPredictions(rng.dirichlet([1, 1, 1], n), rng.random(n), rng.random(n))
    labels = {"next_event": next_event, "conversion": conversion, "abandonment": np.full(n, IGNORE)}
    sessions = np.repeat(np.arange(n // 3), 3)
    lead = lead_over(good, poor, labels, sessions, None, (0.0, 0.0), resamples=200)
    assert set(lead) == {"conversion_roc_auc", "next_event_macro_f1"}
    good_m, poor_m = journey_metrics(good, **labels), journey_metrics(poor, **labels)
    for metric, d in lead.items():
        assert d.delta == pytest.approx(good_m[metric] - poor_m[metric], abs=1e-6)
        assert 0.0 < d.low < d.delta < d.high and d.resamples == 200
    same = lead_over(poor, poor, labels, sessions, None, (0.0, 0.0), resamples=50)
    assert all(d.delta == 0.0 and d.low == d.high == 0.0 for d in same.values())


# -- baselines ---------------------------------------------------------------------------------------


def _events() -> tuple[SessionEvents, PrefixLabels]:
    """Sessions 'view cart purchase' and 'view view': a Markov chain over types explains them."""
    rng = np.random.default_rng(0)
    event, ts, start, conv = [], [], [], []
    for s in range(200):
        kinds = [1, 2, 3] if s % 2 else [1, 1]
        first = len(event)
        event += kinds
        ts += list(1000 * s + 30 * np.arange(len(kinds)) + rng.integers(0, 5, len(kinds)))
        start += [first] * len(kinds)
        conv += [1, 1, 0] if s % 2 else [0, 0]
    event, ts, start = np.array(event), np.array(ts), np.array(start)
    open_cart = np.zeros(len(event), dtype=bool)
    open_cart[event == 2] = True
    nxt = np.r_[event[1:], 0] - 1
    nxt[np.r_[start[1:] != start[:-1], True]] = IGNORE
    labels = PrefixLabels(np.arange(len(event)), nxt, np.array(conv), np.full(len(event), IGNORE))
    return SessionEvents(event, ts, start, open_cart, n_event_types=4), labels


def test_prefix_features_count_within_the_session():
    events, labels = _events()
    x = prefix_features(events, np.array([1, 4]))  # 2nd view of session 0, purchase of session 1
    assert x[0, :3].tolist() == pytest.approx(np.log1p([2, 0, 0]).tolist())
    assert x[1, :3].tolist() == pytest.approx(np.log1p([1, 1, 1]).tolist())
    assert x[:, 3].tolist() == pytest.approx(np.log1p([2, 3]).tolist())  # session length so far


def test_baselines_fit_and_predict():
    events, labels = _events()
    positions = labels.positions
    majority = MajorityBaseline().fit(events, labels).predict(events, positions)
    assert np.allclose(majority.next_event, majority.next_event[0]) and np.allclose(
        majority.conversion.std(), 0
    )
    markov = MarkovBaseline(alpha=0.01).fit(events, labels).predict(events, positions)
    cart = np.flatnonzero(events.event == 2)[0]
    assert markov.next_event[cart].argmax() == 2  # after a cart comes the purchase
    assert np.allclose(markov.next_event.sum(axis=1), 1.0)
    logreg = LogisticBaseline().fit(events, labels).predict(events, positions)
    keep = labels.conversion != IGNORE
    assert roc_auc_score(labels.conversion[keep], logreg.conversion[keep]) > 0.9
    assert np.allclose(logreg.abandonment, majority.abandonment)  # no abandonment labels: constant
    gbdt = GradientBoostingBaseline().fit(events, labels).predict(events, positions)
    assert roc_auc_score(labels.conversion[keep], gbdt.conversion[keep]) > 0.9
    assert np.allclose(gbdt.next_event.sum(axis=1), 1.0)
    assert gbdt.next_event[cart].argmax() == 2


def test_gradient_boosting_finds_an_interaction_logistic_regression_cannot():
    """Conversion = exactly one of (cart present, long gap): an XOR no linear model separates."""
    rng = np.random.default_rng(7)
    n = 2000
    cart = rng.random(n) < 0.5
    gap = np.where(rng.random(n) < 0.5, 600, 5)
    event = np.where(cart, 2, 1)
    ts = np.cumsum(np.full(2 * n, 10))
    # two-event sessions: a view, then (after ``gap`` seconds) a view or a cart
    events = SessionEvents(
        np.ravel(np.column_stack([np.ones(n, int), event])),
        np.ravel(np.column_stack([ts[::2], ts[::2] + gap])),
        np.repeat(np.arange(0, 2 * n, 2), 2),
        np.ravel(np.column_stack([np.zeros(n, bool), cart])),
        n_event_types=4,
    )
    converted = (cart ^ (gap > 60)).astype(int)
    positions = np.arange(1, 2 * n, 2)
    labels = PrefixLabels(positions, np.full(n, IGNORE), converted, np.full(n, IGNORE))
    auc = {
        cls.name: roc_auc_score(converted, cls().fit(events, labels).predict(events, positions).conversion)
        for cls in (LogisticBaseline, GradientBoostingBaseline)
    }
    assert auc["gbdt"] > 0.99 and auc["logreg"] < 0.75


def test_item_categories_are_an_extra_embedding_rare_items_keep():
    model = _model(category_buckets=4, min_item_count=2)
    counts = np.zeros(N_ITEMS, dtype=np.int64)
    model.set_known_items(counts)  # every item rare: only the category tells them apart
    codes = np.zeros(N_ITEMS, dtype=np.int64)
    codes[1:10], codes[10:20] = 1, 2
    batch = _batch()
    batch["item_ids"][:, -1] = 3
    before = model.encode(**batch)
    model.set_item_categories(codes)
    same = {**batch, "item_ids": batch["item_ids"].clone()}
    same["item_ids"][:, -1] = 5  # same category as item 3
    other = {**batch, "item_ids": batch["item_ids"].clone()}
    other["item_ids"][:, -1] = 12
    after = model.encode(**batch)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, model.encode(**same)) and not torch.allclose(after, model.encode(**other))
    with pytest.raises(ValueError, match="category codes"):
        model.set_item_categories(np.full(N_ITEMS, 4))


def test_category_statistics_tell_rare_items_apart_by_their_category():
    model = _model(category_statistics=True, min_item_count=2)
    model.set_known_items(np.zeros(N_ITEMS, dtype=np.int64))  # every item rare
    batch = _batch()
    batch["item_ids"][:, -1] = 3
    before = model.encode(**batch)
    statistics = np.zeros((N_ITEMS, N_TYPES), dtype=np.float32)  # 3 classes + the event count
    statistics[1:10] = [0.5, -1.0, 2.0, 4.0]
    statistics[10:20] = [-0.5, 1.0, 0.0, 1.0]
    model.set_item_statistics(statistics)
    after = model.encode(**batch)
    same = {**batch, "item_ids": batch["item_ids"].clone()}
    same["item_ids"][:, -1] = 5  # same statistics as item 3
    other = {**batch, "item_ids": batch["item_ids"].clone()}
    other["item_ids"][:, -1] = 12
    assert not torch.allclose(before, after)
    assert torch.allclose(after, model.encode(**same)) and not torch.allclose(after, model.encode(**other))
    assert "item_statistics" in model.state_dict()  # travels with the checkpoint
    with pytest.raises(ValueError, match="shape"):
        model.set_item_statistics(statistics[:, :2])
    with pytest.raises(ValueError, match="finite"):
        model.set_item_statistics(np.full_like(statistics, np.nan))
    with pytest.raises(ValueError, match="category_statistics=tokens, outcomes or heads"):
        _model().set_item_statistics(statistics)
    with pytest.raises(ValueError, match="must be one of"):
        _model(category_statistics="everywhere")


def test_category_statistics_for_all_heads_reach_the_next_event_head_too():
    model = _model(category_statistics="heads")
    batch = _batch()
    before = model.journey(**batch)
    statistics = np.random.default_rng(0).normal(size=(N_ITEMS, N_TYPES)).astype(np.float32)
    statistics[0] = 0.0
    model.set_item_statistics(statistics)
    after = model.journey(**batch)
    assert all(not torch.allclose(b, a) for b, a in zip(before, after, strict=True))
    with pytest.raises(ValueError, match="needs the histories' item_ids"):
        model.heads(model(**batch))


def test_category_statistics_for_outcomes_leave_the_next_event_head_alone():
    model = _model(category_statistics="outcomes")
    batch = _batch()
    statistics = np.zeros((N_ITEMS, N_TYPES), dtype=np.float32)
    before = model.journey(**batch)
    statistics[1:] = np.random.default_rng(0).normal(size=(N_ITEMS - 1, N_TYPES))
    model.set_item_statistics(statistics)
    after = model.journey(**batch)
    assert torch.allclose(before[0], after[0])  # next event: unchanged
    assert not torch.allclose(before[1], after[1]) and not torch.allclose(before[2], after[2])
    # every position sees the statistics of its own prefix only, as the last-position path does
    hidden = model(**batch)
    full = model.heads(hidden, batch["item_ids"])
    cut = {name: channel[:, :4] for name, channel in batch.items()}
    last = model.heads(model.encode(**cut), cut["item_ids"])
    assert torch.allclose(full.conversion[1:, 3], last.conversion[1:], atol=1e-5)
    with pytest.raises(ValueError, match="needs the histories' item_ids"):
        model.heads(hidden)


def test_session_counts_are_the_counts_so_far():
    model = _model(session_counts=True)
    ids = torch.tensor([[0, 0, 5, 7, 5, 5]])
    events = torch.tensor([[0, 0, 1, 1, 2, 1]])  # view, view, cart, view
    gaps = torch.tensor([[0, 0, 1, 2, 4, 8]])  # first event, then <=10 s, 30-60 s, 10-30 min
    counts = torch.expm1(model.session_count_features(ids, events, gaps))[0]
    views, carts, purchases, length, repeats, minutes = counts.T
    assert views.tolist() == [0, 0, 1, 2, 2, 3] and carts.tolist() == [0, 0, 0, 0, 1, 1]
    assert purchases.abs().sum() == 0 and length.tolist() == [0, 0, 1, 2, 3, 4]
    assert torch.allclose(repeats, torch.tensor([0.0, 0, 0, 0, 1, 2]), atol=1e-6)  # item 5 came back twice
    assert minutes[2] == 0 and 0 < minutes[3] < minutes[4] < 1 < 10 < minutes[5] < 30
    assert (counts[:2] == 0).all()  # padding


def test_session_counts_keep_the_model_causal_and_padding_blind():
    model, batch = _model(session_counts=True), _batch()
    hidden = model(**batch)
    assert torch.allclose(model.encode(**batch), hidden[:, -1], atol=1e-5)
    changed = {k: v.clone() for k, v in batch.items()}
    for channel in changed.values():
        channel[:, 3:] = torch.randint(1, 4, channel[:, 3:].shape)
    assert torch.allclose(model(**changed)[:, :3], hidden[:, :3], atol=1e-6)
    padded = {k: torch.nn.functional.pad(v[1:], (2, 0)) for k, v in batch.items()}  # two more pads
    assert torch.allclose(
        model.encode(**padded), model.encode(**{k: v[1:] for k, v in batch.items()}), atol=1e-5
    )
    assert not torch.allclose(model.encode(**batch), _model(session_counts=False).encode(**batch))
