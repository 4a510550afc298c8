"""``shopformer-ab``: an A/B test's readout from an event log or our serving logs; and a power calculator.

    shopformer-ab EVENTS.csv|.parquet [--unit user_id] [--arm arm] [--revenue revenue]
        [--event event_type] [--converted-event purchase] [--converted COLUMN] [--time time]
        [--covariate COLUMN [--pre-period FILE]] [--control A] [--split 50/50] [--alpha 0.05]
        [--power 0.8] [--bootstrap N] [--plots DIR] [--out report.json]
    shopformer-ab --logs LOG_DIR [--unit COLUMN] [same options]
    shopformer-ab power --baseline 0.03 (--mde 0.05 [--relative] | --units N) [--sd SD]
        [--alpha 0.05] [--power 0.8] [--split 50/50] [--out power.json]

The readout: per arm conversion (Wilson interval), revenue per visitor and order value (t intervals);
each arm minus the control with interval, relative lift and p-value; CUPED with a pre-period
covariate; a sample-ratio-mismatch check; the MDE the test could detect and a warning when it is
underpowered. ``power`` gives the units per arm for an MDE, or (``--units``: in all arms together)
the MDE for a number of units; ``--sd`` makes it a test of means (revenue) instead of a proportion.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shopformer.abtest import power as pw
from shopformer.abtest.analysis import analyse, parse_split
from shopformer.abtest.logs import from_logs
from shopformer.abtest.plots import write_plots
from shopformer.abtest.report import format_report, plain, to_json
from shopformer.abtest.units import Columns, UnitTable, from_file
from shopformer.errors import ConfigError, exit_on_user_error

PROG = "shopformer-ab"


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line user errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1)")
    return value


def readout_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("input", nargs="?", help="an event log or per-unit table (CSV or Parquet)")
    p.add_argument("--logs", help="a server's log_dir (impressions/ and feedback/) instead of a file")
    p.add_argument("--unit", help="the unit id column (default: user_id; logs: unit, else request_id)")
    p.add_argument("--arm", default="arm", help="the assignment column")
    p.add_argument("--revenue", help="revenue column (default: revenue, when the file has it)")
    p.add_argument("--event", help="event type column (default: event_type, when the file has it)")
    p.add_argument("--converted-event", default="purchase", help="the event that counts as converting")
    p.add_argument("--converted", help="a 0/1 conversion column (default: converted, when present)")
    p.add_argument("--time", help="event time column for the cumulative plot (default: time, when present)")
    p.add_argument("--covariate", help="pre-period metric per unit for CUPED (a column)")
    p.add_argument("--pre-period", help="a file of unit and --covariate column (else: the input's column)")
    p.add_argument("--control", help="the control arm (default: control or A when present, else the first)")
    p.add_argument("--split", help="planned split, control first, e.g. 50/50 (default: equal)")
    p.add_argument("--alpha", type=probability, default=0.05, help="significance level (two-sided)")
    p.add_argument("--power", type=probability, default=0.8, help="power for the MDE and the warnings")
    p.add_argument("--bootstrap", type=int, default=0, help="also a bootstrap of revenue (N resamples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plots", help="write PNG plots into this directory")
    p.add_argument("--out", help="write every number as JSON here")
    return p


def power_parser() -> Parser:
    p = Parser(prog=f"{PROG} power", description="units per arm for an MDE, or the MDE for some units")
    p.add_argument(
        "--baseline", type=float, required=True, help="control conversion rate (or mean, with --sd)"
    )
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--mde", type=float, help="the lift to detect (absolute; relative with --relative)")
    size.add_argument("--units", type=int, help="units in all arms together: gives the MDE")
    p.add_argument("--relative", action="store_true", help="--mde is relative to the baseline (0.05: +5 %%)")
    p.add_argument("--sd", type=float, help="per-unit standard deviation: a test of means (e.g. revenue)")
    p.add_argument("--alpha", type=probability, default=0.05)
    p.add_argument("--power", type=probability, default=0.8)
    p.add_argument("--split", default="50/50", help="control/treatment weights")
    p.add_argument("--out", help="write the numbers as JSON here")
    return p


def load(args: argparse.Namespace) -> UnitTable:
    """The per-unit table of the input file or of the serving logs."""
    if (args.input is None) == (args.logs is None):
        raise ConfigError("give an event log file or --logs LOG_DIR (one of them)")
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap: {args.bootstrap} resamples (0: none)")
    if args.logs is not None:
        return from_logs(args.logs, args.unit, args.converted_event, args.pre_period, args.covariate)
    cols = Columns(
        unit=args.unit or "user_id",
        arm=args.arm,
        revenue=args.revenue,
        event=args.event,
        converted_event=args.converted_event,
        converted=args.converted,
        covariate=args.covariate,
        time=args.time,
    )
    return from_file(args.input, cols, args.pre_period)


def readout_main(argv: Sequence[str]) -> dict[str, Any]:
    args = readout_parser().parse_args(list(argv))
    table = load(args)
    readout = analyse(
        table,
        control=args.control,
        alpha=args.alpha,
        power=args.power,
        split=args.split,
        bootstrap_resamples=args.bootstrap,
        seed=args.seed,
    )
    print(format_report(readout))
    result = to_json(readout)
    if args.plots:
        paths = write_plots(table, readout, args.plots)
        result["plots"] = [str(p) for p in paths]
        print(f"\nplots: {', '.join(str(p) for p in paths)}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return result


def power_numbers(args: argparse.Namespace) -> dict[str, Any]:
    """The calculator's numbers (see :func:`power_main`)."""
    means = args.sd is not None
    if not means and not 0 < args.baseline < 1:
        raise ConfigError(f"--baseline: {args.baseline} is not a conversion rate in (0, 1) (or give --sd)")
    weights = parse_split(args.split, 2)
    ratio = weights[1] / weights[0]
    out: dict[str, Any] = {"baseline": args.baseline, "alpha": args.alpha, "power": args.power}
    out |= {"split": weights, "metric": "mean" if means else "proportion", "sd": args.sd}
    if args.units is not None:
        n_a = round(args.units * weights[0] / sum(weights))
        n_b = args.units - n_a
        if min(n_a, n_b) < 2:
            raise ConfigError(f"--units: {args.units} leaves fewer than 2 units in an arm")
        if means:
            mde = pw.mean_mde(args.sd, n_a, n_b, args.alpha, args.power)
        else:
            mde = pw.proportion_mde(args.baseline, n_a, n_b, args.alpha, args.power)
        return out | {
            "units": [n_a, n_b],
            "mde": mde,
            "mde_relative": mde / args.baseline if args.baseline else None,
        }
    if not args.mde or args.mde <= 0:
        raise ConfigError(f"--mde: {args.mde} must be a positive lift")
    delta = args.mde * args.baseline if args.relative else args.mde
    try:
        if means:
            n_a, n_b = pw.mean_sample_size(args.sd, delta, args.alpha, args.power, ratio)
        else:
            n_a, n_b = pw.proportion_sample_size(args.baseline, delta, args.alpha, args.power, ratio)
    except ValueError as exc:
        raise ConfigError(f"--mde: {exc}") from None
    return out | {
        "mde": delta,
        "mde_relative": delta / args.baseline if args.baseline else None,
        "units": [n_a, n_b],
    }


def power_main(argv: Sequence[str]) -> dict[str, Any]:
    """Print units per arm for an MDE (or the MDE for ``--units``); the numbers as a dict."""
    args = power_parser().parse_args(list(argv))
    r = power_numbers(args)
    n_a, n_b = r["units"]

    def show(x: float) -> str:
        return f"{x:,.4g}" if r["metric"] == "mean" else f"{x * 100:.3g} %"

    rel = f" ({r['mde_relative']:+.1%} relative)" if r["mde_relative"] is not None else ""
    print(
        f"{r['metric']} test, baseline {show(args.baseline)}, alpha {args.alpha} two-sided, "
        f"power {args.power:.0%}, split {args.split}"
    )
    what = "detectable lift" if args.units is not None else "lift to detect"
    after = show(args.baseline + r["mde"])
    print(f"{what}: {show(r['mde']).replace(' %', ' pp')}{rel}; {show(args.baseline)} -> {after}")
    print(f"units: {n_a:,} control + {n_b:,} treatment = {n_a + n_b:,}")
    if args.out:
        Path(args.out).write_text(json.dumps(plain(r), indent=2))
        print(f"wrote {args.out}")
    return r


def main(argv: Sequence[str] | None = None) -> int:
    """``shopformer-ab`` (readout) or ``shopformer-ab power``."""
    args = list(sys.argv[1:] if argv is None else argv)
    with exit_on_user_error(PROG):
        if args and args[0] == "power":
            power_main(args[1:])
        else:
            readout_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
