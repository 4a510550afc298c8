"""The recommender against brute-force numpy top-k over the same item vectors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from shopformer.errors import RequestError
from shopformer.serve.bundle import BundleError
from shopformer.serve.recommender import Recommender
from shopformer.serve.sessions import Session


def histories(bundle, n: int, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 2 * bundle.max_len, size=n)  # some longer than max_len
    return [bundle.raw_ids[rng.integers(0, len(bundle.raw_ids), size=m)].tolist() for m in lengths]


def ids(result) -> list:
    return [item for item, _ in result.items]


def mask_of(bundle, in_stock=False, categories=None, min_price=None, max_price=None) -> np.ndarray:
    v = bundle.vocab
    mask = np.ones(len(v), dtype=bool)
    if in_stock:
        mask &= v["in_stock"].to_numpy()
    if categories is not None:
        mask &= v["category"].isin(categories).to_numpy()
    if min_price is not None:
        mask &= (v["price"] >= min_price).to_numpy()
    if max_price is not None:
        mask &= (v["price"] <= max_price).to_numpy()
    return mask


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("k", [1, 10, 60])
def test_top_k_equals_brute_force(bundle, recommender, exclude_seen, k):
    for history in histories(bundle, 8, seed=k):
        result = recommender.recommend(history, k=k, exclude_seen=exclude_seen)
        exclude = bundle.internal(history) if exclude_seen else ()
        assert ids(result) == bundle.top_k(bundle.query(history), k, exclude=exclude)
        scores = [s for _, s in result.items]
        expected = bundle.items[bundle.internal(ids(result))] @ bundle.query(history)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
        assert result.unknown_items == []


@pytest.mark.parametrize(
    "filters",
    [
        {"in_stock": True},
        {"categories": ["c1", "c4"]},
        {"exclude_categories": ["c0", "c2", "c3"]},
        {"min_price": 20.0, "max_price": 45.5},
        {"in_stock": True, "categories": ["c5"], "max_price": 60},
    ],
)
def test_filtered_top_k_equals_brute_force(bundle, recommender, filters):
    spec = dict(filters)
    if "exclude_categories" in spec:
        spec["categories"] = sorted(
            {"c0", "c1", "c2", "c3", "c4", "c5"} - set(spec.pop("exclude_categories"))
        )
    mask = mask_of(bundle, **spec)
    for history in histories(bundle, 5, seed=1):
        result = recommender.recommend(history, k=10, filters=filters)
        expected = bundle.top_k(bundle.query(history), 10, exclude=bundle.internal(history), mask=mask)
        assert ids(result) == expected


def test_widening_finds_k_items_when_filters_remove_most(bundle, recommender, monkeypatch):
    # c3 in stock under 30: about 10 of 299 items; the first fetch (k + history + room) misses most
    filters = {"in_stock": True, "categories": ["c3"], "max_price": 30.0}
    mask = mask_of(bundle, in_stock=True, categories=["c3"], max_price=30.0)
    history = histories(bundle, 1, seed=2)[0][:3]
    eligible = int(mask.sum() - mask[bundle.internal(history) - 1].sum())
    assert eligible >= 3
    calls = []
    original = recommender.index.search
    monkeypatch.setattr(recommender.index, "search", lambda q, k: calls.append(k) or original(q, k))
    k = eligible - 1
    result = recommender.recommend(history, k=k, filters=filters)
    assert len(result.items) == k
    assert ids(result) == bundle.top_k(bundle.query(history), k, exclude=bundle.internal(history), mask=mask)
    assert len(calls) > 1 and calls == sorted(calls)  # searched again, wider
    # asking for more than exist returns every eligible item
    assert len(recommender.recommend(history, k=200, filters=filters).items) == eligible


def test_boosts_reorder_exactly(bundle, recommender):
    flags = bundle.vocab["new_arrival"].to_numpy()
    raw = bundle.raw_ids
    boost = 3.0 * flags
    boost[[10, 20]] += [50.0, -2.0]  # explicit raw ids: one pushed to the top, one demoted
    filters = {"boosts": {"new_arrival": 3.0}, "boost_items": {str(raw[10]): 50.0, str(raw[20]): -2.0}}
    for history in histories(bundle, 5, seed=3):
        query = bundle.query(history)
        result = recommender.recommend(history, k=10, filters=filters)
        expected = bundle.top_k(query, 10, exclude=bundle.internal(history), boost=boost)
        assert ids(result) == expected
        plain = bundle.top_k(query, 10, exclude=bundle.internal(history))
        assert expected != plain  # the boosts did change the answer
        internal = bundle.internal(ids(result))
        expected_scores = bundle.items[internal] @ query + boost[internal - 1]
        np.testing.assert_allclose([s for _, s in result.items], expected_scores, rtol=1e-5, atol=1e-4)


def test_unknown_items_are_reported_and_dropped(bundle, recommender):
    known = bundle.raw_ids[[4, 7]].tolist()
    result = recommender.recommend([known[0], 999_999, known[1], "nope"], k=5)
    assert result.unknown_items == [999_999, "nope"]
    assert result.items == recommender.recommend(known, k=5).items
    # string forms of integer ids are the same items
    assert recommender.recommend([str(i) for i in known], k=5).items == result.items


def test_only_unknown_items_give_an_empty_answer(recommender):
    result = recommender.recommend([-1, "x"], k=5)
    assert result.items == [] and result.unknown_items == [-1, "x"]


def test_batch_equals_one_by_one(bundle, recommender):
    sessions = [
        Session(h, k=3 + i, exclude_seen=i % 2 == 0, filters={"in_stock": True} if i % 3 == 0 else None)
        for i, h in enumerate(histories(bundle, 12, seed=4))
    ]
    sessions.append(Session([123456789], k=4))  # no known item: empty, does not disturb the others
    batch = recommender.recommend_batch(sessions)
    for session, result in zip(sessions, batch, strict=True):
        single = recommender.recommend(
            session.items, k=session.k, exclude_seen=session.exclude_seen, filters=session.filters
        )
        assert ids(result) == ids(single)
        np.testing.assert_allclose([s for _, s in result.items], [s for _, s in single.items], rtol=1e-5)
    assert batch[-1].items == [] and batch[-1].unknown_items == [123456789]


def test_arrays_path_matches_raw_path(bundle, recommender):
    sessions = histories(bundle, 6, seed=5)  # some longer than max_len: the arrays path cuts them too
    width = max(len(h) for h in sessions)
    item_ids = np.zeros((len(sessions), width), dtype=np.int64)
    for row, h in enumerate(sessions):
        item_ids[row, width - len(h) :] = bundle.internal(h)
    found, scores = recommender.recommend_arrays(item_ids, k=7)
    assert found.shape == scores.shape == (len(sessions), 7)
    for row, h in enumerate(sessions):
        assert bundle.raw_ids[found[row] - 1].tolist() == ids(recommender.recommend(h, k=7))
    single = bundle.internal(sessions[0][-1:])[None, :]  # one column: padded to the encoder's min_len
    assert recommender.recommend_arrays(single, k=3)[0].tolist() == [
        bundle.internal(ids(recommender.recommend(sessions[0][-1:], k=3))).tolist()
    ]


def test_similar_excludes_the_item(bundle, recommender):
    for internal in (1, 50, 298):
        raw = bundle.raw_ids[internal - 1]
        result = recommender.similar(raw, k=8)
        assert raw not in ids(result)
        assert ids(result) == bundle.top_k(bundle.items[internal], 8, exclude=[internal])
    filtered = recommender.similar(bundle.raw_ids[0], k=5, filters={"categories": ["c2"]})
    assert set(bundle.vocab.set_index("item_id").loc[ids(filtered), "category"]) == {"c2"}
    assert recommender.similar("unknown", k=3).unknown_items == ["unknown"]


def test_journey_inputs_match_reference(journey_bundle, journey_recommender):
    rng = np.random.default_rng(6)
    for m in (1, 5, 30):
        history = journey_bundle.raw_ids[rng.integers(0, 299, size=m)].tolist()
        events = rng.choice(["view", "cart", "purchase"], size=m).tolist()
        stamps = np.cumsum(rng.integers(0, 5000, size=m)).tolist()
        result = journey_recommender.recommend(history, event_types=events, timestamps=stamps, k=6)
        query = journey_bundle.query(history, events, stamps)
        assert ids(result) == journey_bundle.top_k(query, 6, exclude=journey_bundle.internal(history))


def test_journey_unknown_items_drop_their_events_and_gaps(journey_bundle, journey_recommender):
    history, events, stamps = ["sku-0003", "gone", "sku-0100"], ["cart", "view", "view"], [0, 50, 4000]
    result = journey_recommender.recommend(history, event_types=events, timestamps=stamps, k=4)
    query = journey_bundle.query(["sku-0003", "sku-0100"], ["cart", "view"], [0, 4000])
    assert result.unknown_items == ["gone"]
    assert ids(result) == journey_bundle.top_k(
        query, 4, exclude=journey_bundle.internal(["sku-0003", "sku-0100"])
    )
    # integer ids given for a string-keyed catalogue are looked up as strings (and are unknown here)
    assert journey_recommender.recommend([3, "sku-0003"], timestamps=[0, 1], k=1).unknown_items == [3]


@pytest.mark.parametrize(
    ("kwargs", "loc"),
    [
        ({"event_types": ["view", "teleport"], "timestamps": [0, 1]}, ("event_types",)),
        ({"event_types": ["view"], "timestamps": [0, 1]}, ("event_types",)),
        ({"timestamps": None}, ("timestamps",)),
        ({"timestamps": [0, 1], "k": 0}, ("k",)),
        ({"timestamps": [0, 1], "filters": {"boosts": {"shiny": 1.0}}}, ("filters", "boosts", "shiny")),
    ],
)
def test_request_errors_name_the_field(journey_recommender, kwargs, loc):
    with pytest.raises(RequestError) as info:
        journey_recommender.recommend(["sku-0001", "sku-0002"], **kwargs)
    assert info.value.loc == loc


def test_empty_history_is_an_error(recommender):
    with pytest.raises(RequestError, match="empty history"):
        recommender.recommend([])


def test_tampered_bundle_is_refused(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    items = np.load(copy / "items.npy")
    items[5, 0] += 1.0
    np.save(copy / "items.npy", items)
    with pytest.raises(BundleError, match="items.npy does not match its sha256"):
        Recommender.load(copy)
    (copy / "index.faiss").unlink()
    with pytest.raises(BundleError, match="index.faiss is missing"):
        Recommender.load(copy)


def test_faiss_threads_hold_in_any_calling_thread(bundle):
    import threading

    import faiss

    from shopformer.serve.recommender import Recommender

    rec = Recommender.load(bundle.path, faiss_threads=1)
    seen = []

    def ask():
        faiss.omp_set_num_threads(2)  # a fresh thread's OpenMP default on this 2-core machine
        rec.recommend_batch([{"items": bundle.raw_ids[[1, 2]].tolist()}])
        seen.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=ask)
    worker.start()
    worker.join()
    assert seen == [1]


def test_length_groups_bound_padding_and_cover_every_row():
    from shopformer.serve.encoding import length_groups

    lengths = np.array([200, 50, 52, 120, 199, 51, 130, 0, 60])
    groups = length_groups(lengths, max_rows=2, slack=1.15)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    for rows in groups:
        assert len(rows) <= 2
        assert lengths[rows].max() <= 1.15 * max(lengths[rows].min(), 1)
    assert [len(g) for g in length_groups(np.array([100, 105, 110]))] == [3]  # close: one run


def test_grouped_encoder_runs_equal_one_session_at_a_time(bundle):
    from shopformer.serve.recommender import Recommender
    from shopformer.serve.sessions import Session

    rec = Recommender.load(bundle.path)
    rng = np.random.default_rng(0)
    sessions = [
        Session(items=bundle.raw_ids[rng.integers(1, len(bundle.raw_ids), size=n)].tolist())
        for n in (3, 40, 4, 25, 7, 39, 1, 12)
    ]
    alone = np.concatenate([rec.query_vectors(rec.encode([s]).inputs) for s in sessions])
    together = rec.query_vectors(rec.encode(sessions).inputs)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
