"""Off-policy estimators against the truth: the synthetic shop's simulator, and real Open Bandit logs.

    .venv/bin/python benchmarks/ope.py [--seeds 20] [--visitors 5000] [--skip simulator|open-bandit]
    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/ope.py --skip simulator   # OBD only

1. Simulator: a softmax logging policy (temperature 1) over the top-20 candidates of a noisy model of
   the shop (``Simulator.scores``, noise 1.0) shows 10 slots to each visitor; the simulator draws
   clicks, purchases and revenue. Each target policy's value per impression is estimated from those
   logs by every estimator, over ``--seeds`` draws of the logs (the visitors stay the same), and
   compared with its exact value: the mean estimate's relative error, the root-mean-square relative
   error, how often the 95 % bootstrap interval covers the truth, and the mean effective sample size.
   The last target ranks its own candidates, some of which the logging policy never shows: IPS-type
   estimates cannot see them, and say so.
2. Open Bandit Dataset sample (ZOZOTOWN, real logs of a uniform-random and a Bernoulli-TS policy): each
   policy's click rate estimated from the other policy's log, beside the Open Bandit Pipeline run in
   its own venv on the same rows (see ``benchmarks/ope_open_bandit.py``).

Prints the processor, date and commit, then one Markdown table per section.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shopformer.data.synthetic import SyntheticConfig
from shopformer.offpolicy.report import evaluate
from shopformer.offpolicy.simulated_logs import batch_marginals, simulate_log, target_rows
from shopformer.offpolicy.simulator import REWARDS, Simulator
from shopformer.provenance import processor, short_commit
from shopformer.serve.policies import PolicyConfig

REPO = Path(__file__).resolve().parents[1]
ESTIMATORS = ["ipw", "clipped-ipw", "snipw", "dm", "dr", "sndr", "switch-dr"]
K, TOP_N = 10, 20


@dataclass
class Target:
    """A target policy: its name, candidates [n, M] and marginals [n, M, k]."""

    name: str
    candidates: np.ndarray
    marginals: np.ndarray


def targets(sim: Simulator, contexts, candidates: np.ndarray, scores: np.ndarray) -> list[Target]:
    """Target policies over the logged pool (re-ranked by a better model), and one outside it."""
    rng = np.random.default_rng(7)
    rho = np.log(sim.relevance(contexts, candidates))
    better = rho + 0.5 * rng.standard_normal(rho.shape)
    order = np.argsort(-better, axis=1, kind="stable")
    reranked = np.take_along_axis(candidates, order, axis=1)
    better_sorted = np.take_along_axis(better, order, axis=1)
    own_candidates, own_scores = sim.scores(contexts, noise=0.5, seed=8, n_candidates=TOP_N)

    def policy(name: str, **settings: float) -> Callable[[np.ndarray], np.ndarray]:
        built = PolicyConfig(name, **settings).build()
        return lambda s: batch_marginals(built, s, K)

    return [
        Target("greedy, better model (same pool)", reranked, policy("greedy")(better_sorted)),
        Target("softmax T=0.5, logging model", candidates, policy("softmax", temperature=0.5)(scores)),
        Target(
            "epsilon-greedy 0.2, better model", reranked, policy("epsilon_greedy", epsilon=0.2)(better_sorted)
        ),
        Target("greedy, logging model", candidates, policy("greedy")(scores)),
        Target("greedy, better model (own top-20)", own_candidates, policy("greedy")(own_scores)),
    ]


def simulator_section(args: argparse.Namespace) -> str:
    sim = Simulator(SyntheticConfig(seed=args.world_seed))
    contexts = sim.contexts(args.visitors, seed=0)
    candidates, scores = sim.scores(contexts, noise=1.0, seed=1, n_candidates=TOP_N)
    logging = PolicyConfig("softmax", temperature=1.0).build()
    table = batch_marginals(logging, scores, K)
    logged_truth = sim.true_value(contexts, candidates, table)
    chosen = targets(sim, contexts, candidates, scores)
    truths = [sim.true_value(contexts, t.candidates, t.marginals) for t in chosen]
    # values[target][reward][estimator] -> list of (value, low, high, ess) over seeds
    values: dict = {t.name: {r: {e: [] for e in ESTIMATORS} for r in REWARDS} for t in chosen}
    unsupported: dict[str, float] = {}
    began = time.perf_counter()
    for seed in range(args.seeds):
        log = simulate_log(sim, contexts, candidates, scores, logging, K, seed=seed, table=table)
        for target in chosen:
            for reward in REWARDS:
                feedback = target_rows(log, target.candidates, target.marginals, reward)
                unsupported[target.name] = float(feedback.unsupported_mass.mean())
                for e in evaluate(feedback, ESTIMATORS, n_bootstrap=args.bootstrap, seed=seed):
                    values[target.name][reward][e.name].append((e.value, e.low, e.high, e.ess or np.nan))
        print(f"[{time.strftime('%H:%M:%S')}] seed {seed + 1}/{args.seeds}", file=sys.stderr, flush=True)
    rows = []
    for target, truth in zip(chosen, truths, strict=True):
        for reward in REWARDS:
            for name in ESTIMATORS:
                v = np.array(values[target.name][reward][name])
                rel = (v[:, 0] - truth[reward]) / truth[reward]
                covered = np.mean((v[:, 1] <= truth[reward]) & (truth[reward] <= v[:, 2]))
                rows.append(
                    [
                        target.name,
                        reward,
                        f"{truth[reward]:.5f}",
                        name,
                        f"{v[:, 0].mean():.5f}",
                        f"{100 * rel.mean():+.1f} %",
                        f"{100 * np.sqrt((rel**2).mean()):.1f} %",
                        f"{100 * covered:.0f} %",
                        "-" if np.isnan(v[:, 3]).all() else f"{np.nanmean(v[:, 3]):,.0f}",
                    ]
                )
    header = [
        f"Shop: {sim.world.n_items:,} items, {args.visitors:,} visitors, k={K} slots from the top {TOP_N}; "
        f"logging policy softmax T=1 over a noisy model (true value per impression: "
        + ", ".join(f"{r} {logged_truth[r]:.5f}" for r in REWARDS)
        + f"). {args.seeds} seeds of the logs, {args.bootstrap} bootstrap resamples each, "
        f"{time.perf_counter() - began:.0f} s.",
        "Target mass outside the logged pool: "
        + "; ".join(f"{name}: {100 * share:.1f} %" for name, share in unsupported.items()),
        "",
    ]
    columns = [
        "target",
        "reward",
        "truth",
        "estimator",
        "mean estimate",
        "bias",
        "RMSE",
        "95 % covers",
        "ESS",
    ]
    return "\n".join(header) + markdown(columns, rows)


def markdown(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, default=20, help="draws of the simulated logs (>= 20 for RESULTS)"
    )
    parser.add_argument("--visitors", type=int, default=5000)
    parser.add_argument("--bootstrap", type=int, default=300, help="bootstrap resamples per estimate")
    parser.add_argument("--world-seed", type=int, default=0, help="the synthetic shop's seed")
    parser.add_argument("--skip", nargs="*", default=[], choices=["simulator", "open-bandit"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"benchmarks/ope.py {' '.join(sys.argv[1:])}: {processor()}, {now}, commit {short_commit()}\n")
    if "simulator" not in args.skip:
        print("## Estimators against the simulator's truth\n")
        print(simulator_section(args), flush=True)
    if "open-bandit" not in args.skip:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from ope_open_bandit import main as open_bandit

        print("\n## Open Bandit Dataset: each policy's click rate from the other policy's log\n", flush=True)
        open_bandit([])


if __name__ == "__main__":
    main()
