"""Off-policy evaluation on the Open Bandit sample, beside the Open Bandit Pipeline (issue 17, item 5).

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/ope_open_bandit.py
    bash benchmarks/peers/obp_env.sh      # once: the Open Bandit Pipeline's own venv (the peer)

Two logging policies ran side by side on ZOZOTOWN: uniform random and Bernoulli Thompson sampling
(BTS). Each direction estimates one policy's click rate from the *other* policy's log and compares it
with the policy's own on-policy click rate (the paper's relative estimation error |V̂ - V_on| / V_on):
``random -> bts`` evaluates BTS on the random log, ``bts -> random`` the reverse. The BTS target is the
distribution OBP computes from its packaged ZOZOTOWN prior (``BernoulliTS(is_zozotown_prior=True)``,
``compute_batch_action_dist``), exported once from the peer venv to ``.cache/peers/obd_targets.npz``;
both tools get that same array, the same rows and the same reward model q̂ (fitted by us on the
evaluation log), so every estimator here is the same formula in both and ``|ours - OBP|`` should be
rounding (<= 1e-12). Intervals: ours resample rows (each row is one round) on the
bootstrap of ``shopformer.offpolicy.report.evaluate``; OBP's are its ``estimate_intervals``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shopformer.offpolicy.open_bandit import (
    OpenBanditLog,
    log_path,
    q_hat_grid,
    read_log,
    to_feedback,
    uniform_action_dist,
)
from shopformer.offpolicy.report import DEFAULT_ESTIMATORS, Estimate, evaluate
from shopformer.offpolicy.reward_model import EmpiricalBayesRewardModel, LogisticRewardModel
from shopformer.provenance import processor, short_commit

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".cache" / "peers" / "obp-venv"
TARGETS = REPO / ".cache" / "peers" / "obd_targets.npz"
PEER = REPO / "benchmarks" / "peers" / "obp_peer.py"
DIRECTIONS = (("random", "bts"), ("bts", "random"))  # (logged by, target)
HOW_TO_PEER = "create the peer venv with `bash benchmarks/peers/obp_env.sh` (a few minutes, 1.5 GB)"


def peer_python(venv: Path) -> Path | None:
    """The peer venv's python, or None when the venv is absent."""
    python = venv / "bin" / "python"
    return python if python.exists() else None


def ensure_targets(targets: Path, venv: Path, *, n_sim: int, seed: int) -> Path | None:
    """The exported target distributions, running the peer once to write them when needed."""
    if targets.exists():
        return targets
    python = peer_python(venv)
    if python is None:
        return None
    targets.parent.mkdir(parents=True, exist_ok=True)
    command = [str(python), str(PEER), "targets", "--out", str(targets), "--n-sim", str(n_sim)]
    subprocess.run([*command, "--seed", str(seed)], check=True, cwd=REPO, stdout=sys.stderr)
    return targets


def fit_q_hat(log: OpenBanditLog, reward_model: str) -> np.ndarray:
    """q̂ on every (round, item, position) of ``log``, fitted on that log's clicks."""
    if reward_model == "logistic":  # the user features, 3-fold cross-fitted
        context = log.context()
        model = LogisticRewardModel(n_folds=3).fit(log.item, log.position, log.click, context)
        return q_hat_grid(model, log, context)
    model = EmpiricalBayesRewardModel().fit(log.item, log.position, log.click)
    return q_hat_grid(model, log)


def on_policy_interval(
    click: np.ndarray, *, n_bootstrap: int, seed: int, alpha: float
) -> tuple[float, float]:
    """Bootstrap percentile interval of a click rate.

    Resampling n 0/1 rows with replacement draws Binomial(n, CTR) clicks, so that is drawn directly.
    """
    rng = np.random.default_rng(seed)
    rates = rng.binomial(click.size, click.mean(), size=n_bootstrap) / click.size
    low, high = np.quantile(rates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def write_peer_inputs(path: Path, log: OpenBanditLog, action_dist: np.ndarray, q_hat: np.ndarray) -> None:
    """The arrays OBP's ``OffPolicyEvaluation`` needs, exactly as ours sees them."""
    np.savez(
        path,
        reward=log.click.astype(np.float64),
        action=log.item,
        position=log.position,
        pscore=log.pscore,
        action_dist=action_dist,
        estimated_rewards_by_reg_model=q_hat,
    )


def run_peer(python: Path, inputs: list[Path], out: Path, args: argparse.Namespace) -> dict:
    """OBP's estimates for each inputs file, from the peer venv."""
    command = [str(python), str(PEER), "estimate", "--out", str(out), *map(str, inputs)]
    command += ["--clip", str(args.clip), "--switch-lambda", str(args.switch_lambda)]
    command += ["--n-bootstrap", str(args.n_bootstrap), "--seed", str(args.seed), "--alpha", str(args.alpha)]
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def reader_check(logs: dict[str, OpenBanditLog], targets: dict[str, np.ndarray]) -> str:
    """Whether OBP's own loader (on its packaged copy of the sample) sees the rows our reader sees.

    The packaged CSVs are byte-identical to ours; pandas 2's default float parser may round a
    propensity such as ``0.019430000000000003`` one ulp away from the exact value that ours reads.
    """
    notes = []
    for policy, log in logs.items():
        theirs = [targets.get(f"obd_{policy}_{key}") for key in ("action", "position", "reward", "pscore")]
        if any(array is None for array in theirs):
            return "OBP's loader: not compared (the targets file has no rows)"
        same = [
            np.array_equal(a, b) for a, b in zip([log.item, log.position, log.click], theirs, strict=False)
        ]
        if not all(same) or theirs[3].shape != log.pscore.shape:
            notes.append(f"{policy}: DIFFERENT item/position/click rows")
            continue
        off = log.pscore != theirs[3]
        if not off.any():
            notes.append(f"{policy} identical row by row")
            continue
        relative = float(np.max(np.abs(log.pscore / theirs[3] - 1)))
        notes.append(
            f"{policy} same items/positions/clicks; pscore differs in {int(off.sum()):,} rows by at most "
            f"{relative:.1e} (relative: float parsing of pandas {targets.get('pandas_version', '2')})"
        )
    return "OBP's loader on its packaged sample vs our reader: " + "; ".join(notes)


def direction_table(ours: list[Estimate], peer: dict | None, truth: float) -> list[str]:
    """One line per estimator: ours, OBP's, both relative errors, and |ours - OBP|."""
    header = [
        "estimator",
        "ours",
        "95 % interval",
        "rel. error",
        "covers",
        "OBP",
        "OBP 95 % interval",
        "OBP rel. err",
        "|ours - OBP|",
    ]
    rows = []
    for e in ours:
        row = [
            e.name,
            f"{e.value:.6f}",
            f"[{e.low:.5f}, {e.high:.5f}]",
            _rel(e.value, truth),
            "yes" if e.low <= truth <= e.high else "no",
        ]
        if peer is not None and e.name in peer["estimates"]:
            value, iv = peer["estimates"][e.name], peer["intervals"][e.name]
            row += [
                f"{value:.6f}",
                f"[{iv['low']:.5f}, {iv['high']:.5f}]",
                _rel(value, truth),
                f"{abs(e.value - value):.1e}",
            ]
        else:
            row += ["-", "-", "-", "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"[{e.name}] {e.warning}" for e in ours if e.warning]
    return lines + [f"    note {n}" for n in notes]


def _rel(value: float, truth: float) -> str:
    return f"{abs(value - truth) / truth:.3f}"


@dataclass
class Direction:
    """One direction's inputs and our estimates (before the peer runs)."""

    logged: str
    target: str
    estimates: list[Estimate]
    inputs: Path
    q_hat_seconds: float
    ours_seconds: float


def load_targets(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], str]:
    """The exported target distributions (empty when unavailable) and a line saying where they came from."""
    target_file = ensure_targets(Path(args.targets), Path(args.venv), n_sim=args.n_sim, seed=args.target_seed)
    if target_file is None:
        return {}, f"BTS target: not available (it comes from the OBP venv): {HOW_TO_PEER}"
    with np.load(target_file, allow_pickle=False) as data:
        targets = {key: data[key] for key in data.files}
    where = target_file.relative_to(REPO) if target_file.is_relative_to(REPO) else target_file
    return targets, (
        f"BTS target: {targets['obp_version']} BernoulliTS(is_zozotown_prior=True, campaign="
        f"{targets['campaign']}), {int(targets['n_sim']):,} simulations, "
        f"seed {int(targets['seed'])} ({where})"
    )


def estimate_direction(
    log: OpenBanditLog, target: str, action_dist: np.ndarray, tmp: Path, args: argparse.Namespace
) -> Direction:
    """Fit q̂ on the log, run our estimators and write the same inputs for the peer."""
    start = time.perf_counter()
    q_hat = fit_q_hat(log, args.reward_model)
    fitted = time.perf_counter()
    estimates = evaluate(
        to_feedback(log, action_dist, q_hat),
        DEFAULT_ESTIMATORS,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        alpha=args.alpha,
        clip=args.clip,
        switch_lambda=args.switch_lambda,
    )
    done = time.perf_counter()
    inputs = tmp / f"{log.policy}_to_{target}.npz"
    write_peer_inputs(inputs, log, action_dist, q_hat)
    return Direction(log.policy, target, estimates, inputs, fitted - start, done - fitted)


def direction_section(
    d: Direction, logs: dict[str, OpenBanditLog], peer: dict | None, args: argparse.Namespace
) -> list[str]:
    """The heading, the on-policy truth with its interval, and the table of one direction."""
    own, logged = logs[d.target], logs[d.logged]
    truth = own.on_policy_value
    low, high = on_policy_interval(own.click, n_bootstrap=args.n_bootstrap, seed=args.seed, alpha=args.alpha)
    result = None if peer is None else peer["results"][d.inputs.stem]
    return [
        f"\n### {d.target} evaluated on the {d.logged} log ({logged.n_rows:,} rows, "
        f"{int(logged.click.sum())} clicks)",
        f"on-policy CTR of {d.target} (its own log, {own.n_rows:,} rows, {int(own.click.sum())} clicks): "
        f"{truth:.5f}, 95 % interval [{low:.5f}, {high:.5f}] (relative half-width "
        f"{(high - low) / 2 / truth:.2f})",
        f"time: q̂ {d.q_hat_seconds:.1f} s; ours, all estimates + bootstrap {d.ours_seconds:.1f} s"
        + ("" if result is None else f"; OBP, point estimates only {result['estimate_seconds']:.2f} s"),
        *direction_table(d.estimates, result, truth),
    ]


NOTES = (
    "rel. error: |V̂ - V_on| / V_on against the target's own on-policy CTR, itself uncertain by the "
    "relative half-width shown; covers: our interval contains V_on.",
    "dm's interval is narrow because q̂ is fitted once, not refitted per resample: it omits the reward "
    "model's own error.",
    "Intervals differ a little between the tools by design: ours resample rows and re-normalise snipw/sndr "
    "in each resample; OBP's bootstrap the per-round terms with the full-sample normalisation.",
)


def run(args: argparse.Namespace) -> str:
    """The whole Open Bandit section as text."""
    python = peer_python(Path(args.venv))
    lines = [
        "## Open Bandit sample (ZOZOTOWN, campaign all): relative estimation error |V̂ - V_on| / V_on",
        f"processor: {processor()}; date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; commit: {short_commit()}",
    ]
    targets, where = load_targets(args)
    lines.append(where)
    if python is None:
        lines.append(f"OBP peer: not run: {HOW_TO_PEER}")
    logs = {policy: read_log(log_path(args.data, policy)) for policy in ("random", "bts")}
    if targets:
        lines.append(reader_check(logs, targets))
    lines.append(
        f"reward model q̂ for dm/dr/sndr/switch-dr: {args.reward_model}, fitted on the evaluation log"
        f"{' and given to both tools' if python else ''}; clip {args.clip:g}, "
        f"switch lambda {args.switch_lambda:g}; "
        f"{args.n_bootstrap:,} bootstrap resamples"
    )
    dists = {
        "random": targets.get("random", uniform_action_dist(logs["random"].n_items)),
        "bts": targets.get("bts"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        directions = [
            estimate_direction(logs[logged], target, dists[target], Path(tmp), args)
            for logged, target in DIRECTIONS
            if dists[target] is not None
        ]
        inputs = [d.inputs for d in directions]
        peer = run_peer(python, inputs, Path(tmp) / "obp.json", args) if python and directions else None
    for logged, target in DIRECTIONS:
        if dists[target] is None:
            lines.append(f"\n### {target} evaluated on the {logged} log: skipped (no BTS target)")
    for direction in directions:
        lines += direction_section(direction, logs, peer, args)
    lines += ["", *(f"- {note}" for note in NOTES)]
    if peer is not None:
        lines.append(
            f"- OBP peer: {peer['obp_version']}, numpy {peer['numpy_version']}, python {peer['python']}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.environ.get("SHOPFORMER_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data", default=data, help="the data root ($SHOPFORMER_DATA)")
    parser.add_argument("--venv", default=str(VENV), help="the OBP peer venv")
    parser.add_argument("--targets", default=str(TARGETS), help="exported target distributions (.npz)")
    parser.add_argument("--reward-model", choices=("eb", "logistic"), default="eb")
    parser.add_argument("--clip", type=float, default=100.0)
    parser.add_argument("--switch-lambda", type=float, default=100.0)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-sim", type=int, default=100_000, help="BTS Monte-Carlo simulations (export)")
    parser.add_argument("--target-seed", type=int, default=12345, help="BTS Monte-Carlo seed (export)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the Open Bandit section; exit 2 when the data is absent."""
    args = parse_args(argv)
    if not log_path(args.data, "random").exists():
        print(
            f"Open Bandit sample not found under {args.data}/open-bandit-sample (set SHOPFORMER_DATA)",
            file=sys.stderr,
        )
        return 2
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
