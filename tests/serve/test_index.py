"""FAISS index construction: factory strings, search parameters, ids offset by one, recall."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from shopformer.serve import index as ix


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    vectors = np.random.default_rng(0).normal(size=(3001, 16)).astype(np.float32)
    vectors[0] = 0.0  # padding row, never indexed
    return vectors


def test_flat_search_is_exact_and_offsets_ids(items):
    queries = items[[5, 17]] + 0.01
    scores, ids = ix.search(ix.build_index(items, "Flat"), queries, k=4)
    brute = queries @ items[1:].T
    np.testing.assert_array_equal(ids, np.argsort(-brute, axis=1)[:, :4] + 1)
    np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :4], rtol=1e-5)


def test_approximate_indexes_measure_their_recall(items):
    queries = items[1:201]
    ivf = ix.build_index(items, "IVF16,Flat", {"nprobe": 16})  # every list visited: exact
    assert ix.measure_recall(ivf, items, queries, k=10)["value"] == 1.0
    hnsw = ix.build_index(items, "HNSW16", {"efSearch": 8})
    assert 0.5 < ix.measure_recall(hnsw, items, queries, k=10)["value"] <= 1.0


def test_ef_construction_builds_a_better_graph(items, tmp_path):
    queries = items[1:201]
    loose = ix.build_index(items, "HNSW8", {"efSearch": 10, "efConstruction": 4})
    careful = ix.build_index(items, "HNSW8", {"efSearch": 10, "efConstruction": 200})
    assert faiss.downcast_index(careful).hnsw.efConstruction == 200
    loose_recall = ix.measure_recall(loose, items, queries, k=10)["value"]
    assert ix.measure_recall(careful, items, queries, k=10)["value"] > loose_recall
    ix.write_index(careful, tmp_path / "index.faiss")  # stored with the graph; not a search parameter
    again = ix.read_index(tmp_path / "index.faiss", {"efSearch": 10, "efConstruction": 200})
    assert faiss.downcast_index(again).hnsw.efConstruction == 200


def test_ivf_trains_on_a_bounded_reproducible_sample(items):
    sample = ix._training_sample(items[1:], nlist=8)
    assert len(sample) == ix.TRAIN_POINTS_PER_LIST * 8 < len(items) - 1
    np.testing.assert_array_equal(sample, ix._training_sample(items[1:], nlist=8))
    assert ix._training_sample(items[1:], nlist=64) is not None
    assert len(ix._training_sample(items[1:100], nlist=8)) == 99  # small catalogues: every row


@pytest.mark.parametrize(
    ("factory", "params", "message"),
    [
        ("Bogus", {}, "not valid"),
        ("IVF5000,Flat", {}, "needs at least 5000 items"),
        ("HNSW32", {"nprob": 3}, "unknown index parameter"),
        ("IVF16,Flat", {"efConstruction": 100}, "HNSW indexes only"),
    ],
)
def test_bad_index_specs_are_one_clear_error(items, factory, params, message):
    with pytest.raises(ix.IndexConfigError, match=message):
        ix.build_index(items, factory, params)


@pytest.mark.parametrize(
    ("factory", "params", "n_items", "message"),
    [
        ("Bogus", {}, 100, "not valid"),
        ("IVF16,Flat", {}, 16, "needs at least 16 items to train its 16 lists; the catalogue has 15"),
        ("HNSW32", {"nprob": 3}, 100, "unknown index parameter"),
        ("IVF16,Flat", {"efConstruction": 100}, 100, "HNSW indexes only"),
    ],
)
def test_index_spec_check_refuses_what_the_build_would(factory, params, n_items, message):
    with pytest.raises(ix.IndexConfigError, match=message):
        ix.check_index_spec(factory, params, dim=16, n_items=n_items)  # n_items counts the padding row


def test_index_spec_check_accepts_buildable_specs_without_building():
    ix.check_index_spec("IVF16,Flat", {"nprobe": 4, "efSearch": None}, dim=16, n_items=17)
    ix.check_index_spec("HNSW8", {"efSearch": 10, "efConstruction": 40}, dim=16, n_items=2)
    ix.check_index_spec("Flat", None, dim=16, n_items=2)
