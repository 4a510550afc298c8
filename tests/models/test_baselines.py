"""Baselines and the NumPy ranking reference; the synthetic data rewards sequence models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shopformer.data.datamodule import SequenceDataModule
from shopformer.data.sources import SyntheticSource
from shopformer.data.split import TRAIN
from shopformer.data.store import DatasetSpec
from shopformer.models import baselines
from shopformer.models.baselines import MostPopular, SparseTransition, Transition
from shopformer.models.ranking_metrics import ranks_against_catalogue
from shopformer.models.ranking_reference import ranking_metrics, target_ranks


def test_ranks_by_hand():
    scores = np.array([[9.0, 0.3, 0.9, 0.1], [9.0, 0.5, 0.5, 0.5]])
    # Row 0: item 1 is second best; row 1: ties count against the target.
    np.testing.assert_array_equal(target_ranks(scores, np.array([1, 2])), [1, 2])
    m = ranking_metrics(np.array([0, 1, 10]), ks=(1, 10))
    assert m["hr@1"] == pytest.approx(1 / 3) and m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert m["mrr@10"] == pytest.approx((1 + 0.5) / 3)


def test_transition_counts_by_hand():
    items = np.array([1, 2, 1, 2, 3, 1, 3])
    seq = np.array([0, 0, 0, 0, 0, 1, 1])
    model = Transition(n_items=4).fit(items, seq)
    scores = model.score(torch.tensor([[0, 1], [0, 2]])).numpy()
    assert scores[0, 2] > scores[0, 3] > scores[0, 1]  # 1->2 twice, 1->3 once (other sequence)
    assert scores[1].argmax() == 1


@pytest.fixture(scope="module")
def synthetic() -> SequenceDataModule:
    spec = DatasetSpec("syn", SyntheticSource(n_users=2000, n_items=1500, seed=11))
    dm = SequenceDataModule(spec, cache_dir=None, max_len=20)
    dm.setup()
    return dm


def evaluate(model, dm) -> dict[str, float]:
    batch = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    ranks = target_ranks(model.score(batch["item_ids"]).numpy(), batch["target"].numpy())
    return ranking_metrics(ranks, ks=(10,))


def test_transition_beats_popularity_on_synthetic_data(synthetic):
    ds = synthetic.data
    train = ds.role == TRAIN
    pop = evaluate(MostPopular(ds.n_items).fit(ds.item[train], ds.seq[train]), synthetic)
    trans = evaluate(Transition(ds.n_items).fit(ds.item[train], ds.seq[train]), synthetic)
    assert trans["ndcg@10"] > 2 * pop["ndcg@10"] and trans["hr@10"] > 1.5 * pop["hr@10"]
    assert pop["hr@10"] > 0.01  # popularity is a real, not a broken, baseline


def _fitted_pair(synthetic) -> tuple[Transition, SparseTransition]:
    ds = synthetic.data
    train = ds.role == TRAIN
    return (
        Transition(ds.n_items).fit(ds.item[train], ds.seq[train]),
        SparseTransition(ds.n_items).fit(ds.item[train], ds.seq[train]),
    )


def test_sparse_transition_scores_and_ranks_as_the_dense_table(synthetic):
    dense, sparse = _fitted_pair(synthetic)
    batch = synthetic.test_set.__getitems__(list(range(300)))
    history = batch["item_ids"]
    history[:3] = 0  # empty histories: popularity alone
    np.testing.assert_array_equal(sparse.score(history).numpy(), dense.score(history).numpy())
    seen = history[:, -5:]
    for chunk_size in (7, 65536):  # the scorer's chunks, and the whole catalogue at once
        got = ranks_against_catalogue(
            sparse.encode(history), sparse.item_scorer(), batch["target"], seen, chunk_size, k_max=10
        )
        want = ranks_against_catalogue(
            dense.encode(history), dense.item_vectors(), batch["target"], seen, chunk_size, k_max=10
        )
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_sparse_transition_loads_from_its_saved_weights_without_pickle(synthetic, tmp_path):
    _, sparse = _fitted_pair(synthetic)
    torch.save(sparse.state_dict(), tmp_path / "w.pt")
    restored = SparseTransition(sparse.n_items)
    restored.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    history = synthetic.test_set.__getitems__(list(range(50)))["item_ids"]
    np.testing.assert_array_equal(restored.score(history).numpy(), sparse.score(history).numpy())
    assert restored.columns.numel() == sparse.columns.numel() > 0


def test_the_transition_recipe_keeps_a_dense_table_up_to_its_limit_then_a_sparse_one(monkeypatch):
    assert type(Transition(n_items=100)) is Transition
    monkeypatch.setattr(baselines, "MAX_DENSE_TRANSITION_ITEMS", 50)
    model = Transition(n_items=100)
    assert type(model) is SparseTransition and not model.exportable
    assert model.columns.numel() == 0 and not hasattr(model, "table")
    with pytest.raises(NotImplementedError, match="no item table"):
        model.item_vectors()
