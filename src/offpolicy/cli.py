"""``shopformer-ope``: what a target bundle and policy would earn, estimated from a served policy's logs.

    shopformer-ope --logs LOG_DIR --target BUNDLE [--policy softmax] [--temperature 1.0] [--top-n 20]
        [--reward click purchase revenue] [--estimators ipw snipw dr ...] [--bootstrap 1000]
        [--out estimates.json]

``LOG_DIR`` is a server's ``log_dir`` (``impressions/`` and ``feedback/`` inside). Values are per
impression (per shown item), as the Open Bandit Pipeline reports them; the slate estimators (``iips``,
``sips``) are per request. The logged policy's own value (the plain mean) is printed first, so the
lift reads off directly. Every estimate has a bootstrap interval over whole requests, the effective
sample size of its importance weights and a warning when it rests on a few of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopformer.errors import ConfigError, exit_on_user_error
from shopformer.offpolicy.estimators import DEFAULT_CLIP, DEFAULT_SWITCH_LAMBDA, ESTIMATORS
from shopformer.offpolicy.feedback import BanditFeedback
from shopformer.offpolicy.report import DEFAULT_ESTIMATORS, Estimate, evaluate, format_table
from shopformer.offpolicy.target import list_metrics, replay_logged, target_feedback
from shopformer.serve.event_log import read_log
from shopformer.serve.logs_cli import join
from shopformer.serve.policies import NAMES, PolicyConfig

PROG = "shopformer-ope"
REWARDS = ("click", "purchase", "revenue")


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line user errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--logs", required=True, help="a server's log_dir (impressions/ and feedback/)")
    p.add_argument("--target", required=True, help="the target bundle (directory or MLflow URI)")
    p.add_argument("--policy", default="greedy", choices=NAMES, help="the target's exploration policy")
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-n", type=int, default=20, help="candidates the target policy draws from")
    p.add_argument("--reward", nargs="+", default=list(REWARDS), choices=REWARDS)
    p.add_argument(
        "--estimators", nargs="+", default=[*DEFAULT_ESTIMATORS, "iips", "sips"], choices=ESTIMATORS
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of whole requests (0: none)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - interval level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", type=float, default=DEFAULT_CLIP, help="clipped-ipw's weight cap")
    p.add_argument("--switch-lambda", type=float, default=DEFAULT_SWITCH_LAMBDA, help="switch-dr's threshold")
    p.add_argument("--out", help="write every estimate as JSON here")
    return p


def load_logs(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(joined bandit rows with every reward, impressions, the join's report lines)."""
    impressions = read_log(directory / "impressions", "impressions")
    feedback = read_log(directory / "feedback", "feedback")
    table, report = join(impressions, feedback, reward="click")
    return table.to_pandas(), impressions.to_pandas(), report.lines


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Estimate every requested reward; prints the tables, returns what ``--out`` writes."""
    from shopformer.serve.recommender import Recommender  # loads onnxruntime and faiss: only here

    bandit, impressions, notes = load_logs(Path(args.logs))
    config = PolicyConfig(args.policy, epsilon=args.epsilon, temperature=args.temperature, top_n=args.top_n)
    rec = Recommender.load(args.target)
    policy = config.build()
    logged = ", ".join(f"{p} ({n:,})" for p, n in impressions["policy"].value_counts().items())
    print(f"logs: {len(impressions):,} requests, {len(bandit):,} shown items; logging policy {logged}")
    for line in notes:
        print(f"  {line}")
    print(f"target: {rec.name} {rec.version} with {config.name} ({_settings(config)})")
    replayed = replay_logged(rec, policy, bandit, impressions)  # once: the rewards below share it
    lists = list_metrics(rec, *replayed)
    for name, (target, logged) in lists.items():
        label = {"in_stock": "in-stock share", "price": "mean price"}[name]
        print(f"  {label} of the items shown: target {target:.4g} (expected), logged {logged:.4g}")
    print()
    out: dict[str, Any] = {"target": {"bundle": args.target, "policy": config.__dict__}, "rewards": {}}
    out["lists"] = {name: {"target": t, "logged": g} for name, (t, g) in lists.items()}
    for reward in args.reward:
        frame = bandit.assign(reward=bandit[reward].astype(np.float64))
        feedback = target_feedback(frame, impressions, rec, policy, source=str(args.logs), replayed=replayed)
        estimates = evaluate(
            feedback,
            args.estimators,
            n_bootstrap=args.bootstrap,
            alpha=args.alpha,
            seed=args.seed,
            clip=args.clip,
            switch_lambda=args.switch_lambda,
        )
        mean, low, high = _logged_value(feedback, args)
        print(f"## {reward} per impression: logged policy {mean:.4g} [{low:.4g}, {high:.4g}]")
        print(format_table(estimates) + "\n")
        out["rewards"][reward] = {"logged": [mean, low, high], "estimates": [_as_dict(e) for e in estimates]}
    return out


def _logged_value(feedback: BanditFeedback, args: argparse.Namespace) -> tuple[float, float, float]:
    """The logged policy's mean reward per impression, with the same bootstrap over whole requests
    (IPS with the target equal to the logging policy: every weight is 1)."""
    on_policy = replace(feedback, target_pscore=feedback.pscore, unsupported_mass=None)
    (e,) = evaluate(on_policy, ["ipw"], n_bootstrap=args.bootstrap, alpha=args.alpha, seed=args.seed)
    return e.value, e.low, e.high


def _settings(config: PolicyConfig) -> str:
    keys = {
        "epsilon_greedy": ("epsilon", "top_n"),
        "softmax": ("temperature", "top_n"),
        "thompson": ("top_n",),
    }
    return ", ".join(f"{key}={getattr(config, key)}" for key in keys.get(config.name, ())) or "top k"


def _as_dict(e: Estimate) -> dict[str, Any]:
    return {
        "name": e.name,
        "value": e.value,
        "low": e.low,
        "high": e.high,
        "ess": e.ess,
        "top_weights": list(e.top_weights),
        "top_share": e.top_share,
        "warning": e.warning,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``shopformer-ope``."""
    with exit_on_user_error(PROG):
        args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        result = run(args)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2, default=float))
            print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
