"""The synthetic shop behind a bundle: its simulator from the manifest, and a policy's true value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopformer.data.synthetic import ITEM_ID_OFFSET
from shopformer.errors import DataError
from shopformer.offpolicy.shop import (
    SYNTHETIC_SOURCE,
    VisitReport,
    drive_visitors,
    policy_truth,
    simulator_of_bundle,
)
from shopformer.serve.bundle import read_manifest, write_manifest
from shopformer.serve.policies import PolicyConfig
from shopformer.serve.recommender import Recommender
from tests.serve.conftest import make_bundle

SHOP = {"_target_": SYNTHETIC_SOURCE, "n_users": 200, "n_items": 120, "seed": 5}


@pytest.fixture(scope="module")
def shop_bundle(tmp_path_factory):
    """A hand-made bundle whose catalogue is the synthetic shop's (raw ids 100000 + i)."""
    path = tmp_path_factory.mktemp("shop") / "bundle"
    make_bundle(path, n_items=SHOP["n_items"] + 1)
    vocab = pd.read_parquet(path / "vocab.parquet")
    vocab["item_id"] = ITEM_ID_OFFSET + vocab["item"].to_numpy() - 1
    vocab.to_parquet(path / "vocab.parquet", index=False)
    manifest = read_manifest(path)
    manifest["train_config"] = {"data": {"source": SHOP}}
    write_manifest(path, {k: v for k, v in manifest.items() if k != "files"})
    return path


def test_the_simulator_is_rebuilt_from_the_bundle_manifest(shop_bundle):
    sim = simulator_of_bundle(shop_bundle)
    assert sim.config.n_items == 120 and sim.config.n_users == 200 and sim.config.seed == 5


def test_a_bundle_not_trained_on_the_shop_has_no_simulator(tmp_path):
    path = tmp_path / "plain"
    make_bundle(path, n_items=30)
    with pytest.raises(DataError, match="not the synthetic shop"):
        simulator_of_bundle(path)


@pytest.mark.parametrize("name", ["greedy", "softmax", "epsilon_greedy"])
def test_policy_truth_is_the_marginal_weighted_value_of_the_bundle_s_lists(shop_bundle, name):
    sim = simulator_of_bundle(shop_bundle)
    rec = Recommender.load(shop_bundle)
    visitors = sim.contexts(80, seed=2)
    policy = PolicyConfig(name, top_n=8).build()
    value = policy_truth(sim, visitors, rec, policy, k=4)
    # the same by hand: each visitor's candidates, the policy's table, the simulator's click model
    expected = []
    for j, session in enumerate(visitors.sessions()):
        result = rec.recommend(session.tolist(), k=4 if name == "greedy" else 8)
        ids = np.array([i for i, _ in result.items])
        table = policy.marginals(np.array([s for _, s in result.items]), 4)
        context = visitors.take(np.array([j]))
        per_slot = [
            table[:, p] @ sim.probabilities(context, ids[None], np.full((1, ids.size), p))[0][0]
            for p in range(4)
        ]
        expected.append(np.mean(per_slot))
    assert value["click"] == pytest.approx(np.mean(expected), rel=1e-6)


def test_visitors_refuse_a_url_that_is_not_http(shop_bundle):
    sim = simulator_of_bundle(shop_bundle)
    with pytest.raises(Exception, match="url"):
        drive_visitors("ftp://x", sim, sim.contexts(3, seed=0))
    assert "0 of 0 visitors" in VisitReport().line()
