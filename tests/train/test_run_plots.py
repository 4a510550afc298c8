"""The plots of every next-item run: popularity deciles by hand, PNG files, MLflow artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shopformer.models.ranking_metrics import FullRankingMetrics
from shopformer.train.next_item import write_plots
from shopformer.train.run_plots import (
    LEARNING_CURVES_PNG,
    POPULARITY_BIAS_PNG,
    next_item_plots,
    popularity_bias,
    popularity_deciles,
)

PNG = b"\x89PNG\r\n\x1a\n"
# Items 1..10 (0 is padding); most popular first, equal counts by id: 8, 2, 3, 10, 9, 1, 7, 5, 4, 6.
COUNTS = np.array([0, 3, 7, 7, 0, 1, 0, 2, 9, 4, 5])


def test_popularity_deciles_by_hand():
    assert popularity_deciles(COUNTS).tolist() == [-1, 5, 1, 2, 8, 7, 9, 6, 0, 4, 3]
    # 15 items: decile = rank * 10 // 15, so the deciles hold 2, 1, 2, 1, ... items.
    fifteen = popularity_deciles(np.r_[0, np.arange(15, 0, -1)])  # item 1 the most popular
    assert fifteen[1:].tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 9]


def test_popularity_bias_shares_by_hand():
    top = np.array([[8, 2, 0], [8, 4, 6]])  # 0: an empty slot, not counted
    bias = popularity_bias(COUNTS, top, targets=np.array([3, 8]))
    assert bias.catalogue.tolist() == [0.1] * 10
    assert bias.recommended.tolist() == [0.4, 0.2, 0, 0, 0, 0, 0, 0, 0.2, 0.2]  # 8, 2, 8, 4, 6
    assert bias.targets.tolist() == [0.5, 0, 0.5, 0, 0, 0, 0, 0, 0, 0]  # 8 and 3
    assert (bias.queries, bias.k) == (2, 3)


def test_metrics_keep_the_top_k_they_ranked():
    """The popularity plot counts the ranking's own top-10 (column 0, the padding, never in it)."""
    torch.manual_seed(0)
    queries, items = torch.randn(5, 8), torch.randn(40, 8)
    metrics = FullRankingMetrics(40, ks=(10, 20), chunk_size=16)
    metrics.update(queries, items, torch.tensor([1, 2, 3, 4, 5]))
    scores = queries @ items.T
    scores[:, 0] = -torch.inf
    assert torch.equal(metrics.last_top[:, :10], scores.topk(10, dim=1).indices)


def test_plots_are_png_files_made_without_pyplot(tmp_path):
    import matplotlib.pyplot as plt

    curve = {0: {"train/loss": 5.0, "val/ndcg_10": 0.1}, 1: {"train/loss": 4.0, "val/ndcg_10": 0.2}}
    paths = next_item_plots(tmp_path, curve, COUNTS, np.array([[8, 2]]), np.array([3]))
    assert [p.name for p in paths] == [LEARNING_CURVES_PNG, POPULARITY_BIAS_PNG]
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    assert plt.get_fignums() == []  # nothing left in pyplot's registry
    # No epoch trained (fitted baseline): no learning curves; no test: no popularity bias.
    assert [p.name for p in next_item_plots(tmp_path / "b", {}, COUNTS, np.array([[8]]), np.array([3]))] == [
        POPULARITY_BIAS_PNG
    ]
    assert next_item_plots(tmp_path / "c", {}, COUNTS, np.zeros((0, 10)), np.zeros(0)) == []


def test_a_plot_that_fails_never_fails_the_run(tmp_path, capsys):
    class Broken:
        learning_curve: dict = {}

        def test_recommendations(self):
            raise RuntimeError("no figure today")

    assert write_plots(Broken(), None, tmp_path) == []
    assert capsys.readouterr().err.strip() == "plots skipped: RuntimeError: no figure today"


def test_plots_are_artifacts_of_trained_and_baseline_runs(compared_runs, tmp_path):
    from mlflow import MlflowClient

    trained, _, baseline = compared_runs
    client = MlflowClient()
    listed = {
        s["run_id"]: {a.path for a in client.list_artifacts(s["run_id"], "plots")} for s in compared_runs
    }
    assert listed[trained["run_id"]] == {f"plots/{LEARNING_CURVES_PNG}", f"plots/{POPULARITY_BIAS_PNG}"}
    assert listed[baseline["run_id"]] == {f"plots/{POPULARITY_BIAS_PNG}"}  # no epochs: no learning curve
    local = client.download_artifacts(trained["run_id"], f"plots/{LEARNING_CURVES_PNG}", str(tmp_path))
    assert Path(local).read_bytes().startswith(PNG)


def test_summary_names_the_plot_files(compared_runs):
    trained, _, baseline = compared_runs
    assert [Path(p).name for p in trained["plots"]] == [LEARNING_CURVES_PNG, POPULARITY_BIAS_PNG]
    assert [Path(p).name for p in baseline["plots"]] == [POPULARITY_BIAS_PNG]
    assert all(Path(p).is_file() for p in trained["plots"] + baseline["plots"])
