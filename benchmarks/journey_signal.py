"""How much conversion signal do richer hand-made features find in a journey dataset? (issue 5)

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/journey_signal.py [--experiment journey_taobao]

Scores the conversion label of exactly the journey recipe's validation and test prefixes with
logistic regression and gradient-boosted trees (scikit-learn) on three nested feature sets:

- ``session``: the logistic-regression baseline's features (counts per event type, length, time since the
  previous event, duration, open cart, single event, last event type);
- ``+ sequence``: revisits of the current item, distinct items, most visits of one item, current item
  already carted (what an encoder can see beyond counts);
- ``+ category``: the current item's category purchase rate (smoothed log rate) and event count over the
  training sessions' events.

Prints one ROC-AUC table; a learner that beats the baseline on validation but not on test is fitting
the split, not the journey.
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shopformer.data.journey.datamodule import JourneyDataModule
from shopformer.models.journey.baselines import SessionEvents, prefix_features
from shopformer.train.config import CONF_DIR, build_datamodule


def sequence_features(dm: JourneyDataModule, positions: np.ndarray) -> np.ndarray:
    """Per prefix: log1p revisits of the current item, distinct items, most visits of one item; current
    item carted earlier in the session."""
    ds, start = dm.data, dm.labels.run_start
    item, event = ds.item.astype(np.int64), ds.event.astype(np.int64)
    cart = ds.event_vocab.index("cart") if "cart" in ds.event_vocab else -1
    rows = []
    for p in positions:
        items = item[start[p] : p + 1]
        _, visits = np.unique(items, return_counts=True)
        carted = items[event[start[p] : p + 1] == cart]
        rows.append([(items == item[p]).sum() - 1, len(visits), visits.max(), float(item[p] in carted)])
    out = np.asarray(rows, dtype=np.float64)
    out[:, :3] = np.log1p(out[:, :3])
    return out


def category_features(dm: JourneyDataModule, positions: np.ndarray, smoothing: float = 20.0) -> np.ndarray:
    """The current item's category: smoothed log purchase rate and log1p event count, training events only."""
    ds = dm.data
    vocab = ds.item_vocab
    if "category" not in vocab.columns:
        return np.zeros((len(positions), 2))
    codes, _ = pd.factorize(vocab["category"].astype("string").fillna(""))
    category = np.zeros(ds.n_items, dtype=np.int64)
    category[vocab["item"].to_numpy(np.int64)] = codes + 1
    keys = category[ds.item.astype(np.int64)]
    train = dm.part == 0
    bought = ds.event == ds.event_vocab.index("purchase")
    total = np.bincount(keys[train], minlength=category.max() + 1).astype(np.float64)
    positive = np.bincount(keys[train & bought], minlength=category.max() + 1).astype(np.float64)
    rate = positive.sum() / max(total.sum(), 1.0)
    log_rate = np.log((positive + smoothing * rate) / (total + smoothing))
    current = keys[positions]
    return np.column_stack([log_rate[current], np.log1p(total[current])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="journey_taobao")
    args = parser.parse_args()
    os.environ.setdefault("SHOPFORMER_DATA", "../shared/data")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={args.experiment}"])
    OmegaConf.update(cfg, "datamodule.gap_buckets", bool(cfg.features.gap_buckets), force_add=True)
    dm = build_datamodule(cfg)
    dm.setup()
    events = SessionEvents(
        dm.data.event, dm.data.ts, dm.labels.run_start, dm.labels.open_cart, dm.n_event_types
    )

    features, labels = {}, {}
    for part in ("train", "valid", "test"):
        examples = dm.examples[part]
        keep = examples.conversion >= 0
        positions = examples.positions[keep]
        session = prefix_features(events, positions)
        sequence = np.hstack([session, sequence_features(dm, positions)])
        features[part] = {
            "session": session,
            "+ sequence": sequence,
            "+ category": np.hstack([sequence, category_features(dm, positions)]),
        }
        labels[part] = examples.conversion[keep].astype(int)
    learners = {
        "logistic regression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "gradient-boosted trees": lambda: HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=0
        ),
    }
    print(
        f"{args.experiment}: conversion ROC-AUC of the recipe's prefixes "
        "(positives: " + ", ".join(f"{part} {labels[part].sum()}" for part in labels) + ")"
    )
    print("| learner | features | valid ROC-AUC | test ROC-AUC |\n|---|---|---|---|")
    for learner, make in learners.items():
        for name in features["train"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = make().fit(features["train"][name], labels["train"])
            auc = {
                part: roc_auc_score(labels[part], model.predict_proba(features[part][name])[:, 1])
                for part in ("valid", "test")
            }
            print(f"| {learner} | {name} | {auc['valid']:.4f} | {auc['test']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
