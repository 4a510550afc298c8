"""``shopformer-shop``: simulated visitors of the synthetic shop, and the simulator's ground truth.

    shopformer-shop visit --bundle A --url http://127.0.0.1:8000 [--visitors 2000] [--seed 1] [--k 10]
        [--clients 4] [--max-seconds 300]
    shopformer-shop truth --bundle B [--policy softmax] [--temperature 1] [--top-n 20] [--visitors 2000]
        [--seed 1] [--k 10] [--out truth.json]

``visit`` sends the visitors (the same ones for the same ``--visitors`` and ``--seed``) to a running
``shopformer-serve`` and reports their clicks and purchases to its ``POST /feedback``; ``--bundle`` is
any bundle trained on the shop (it names the shop). ``truth`` prints what a bundle under a policy
earns on those visitors per impression, exactly: the figure an off-policy estimate should hit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from shopformer.errors import ConfigError, exit_on_user_error
from shopformer.offpolicy.shop import drive_visitors, policy_truth, simulator_of_bundle
from shopformer.serve.policies import NAMES, PolicyConfig

PROG = "shopformer-shop"


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line user errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def parser() -> Parser:
    top = Parser(prog=PROG, description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, text in (("visit", "send simulated visitors to a service"), ("truth", "a policy's true value")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--bundle", required=True, help="a bundle trained on the synthetic shop")
        sub.add_argument("--visitors", type=int, default=2000)
        sub.add_argument("--seed", type=int, default=1, help="which visitors (same seed, same visitors)")
        sub.add_argument("--k", type=int, default=10)
    visit = commands.choices["visit"]
    visit.add_argument("--url", default="http://127.0.0.1:8000")
    visit.add_argument("--clients", type=int, default=4, help="visitors at a time")
    visit.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    truth = commands.choices["truth"]
    truth.add_argument("--policy", default="greedy", choices=NAMES)
    truth.add_argument("--epsilon", type=float, default=0.1)
    truth.add_argument("--temperature", type=float, default=1.0)
    truth.add_argument("--top-n", type=int, default=20)
    truth.add_argument("--out", help="write the true values as JSON here")
    return top


def run(args: argparse.Namespace) -> None:
    sim = simulator_of_bundle(args.bundle)
    contexts = sim.contexts(args.visitors, seed=args.seed)
    if args.command == "visit":
        report = drive_visitors(
            args.url,
            sim,
            contexts,
            k=args.k,
            seed=args.seed,
            clients=args.clients,
            max_seconds=args.max_seconds,
        )
        print(report.line())
        return
    from shopformer.serve.recommender import Recommender  # onnxruntime and faiss: only here

    config = PolicyConfig(args.policy, epsilon=args.epsilon, temperature=args.temperature, top_n=args.top_n)
    rec = Recommender.load(args.bundle)
    values = policy_truth(sim, contexts, rec, config.build(), k=args.k)
    print(
        f"true value of {rec.name} {rec.version} with {config.name} on {len(contexts):,} visitors "
        f"(seed {args.seed}), per impression: "
        + ", ".join(f"{name} {value:.5g}" for name, value in values.items())
    )
    if args.out:
        Path(args.out).write_text(json.dumps({"policy": config.__dict__, "truth": values}, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    """``shopformer-shop visit|truth``."""
    with exit_on_user_error(PROG):
        run(parser().parse_args(sys.argv[1:] if argv is None else list(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
