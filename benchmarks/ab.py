"""The A/B readout's acceptance figures on simulated tests with known truth.

    .venv/bin/python benchmarks/ab.py [--sims 500] [--units-per-arm 10000] [--lift 0.10]

Realistic e-commerce numbers: conversion 3 %, order value lognormal (median 33, sigma 1), a 50/50
Bernoulli split. Every simulated test goes through ``shopformer.abtest.analysis.analyse``, the function
``shopformer-ab`` calls (and one of them through the CLI itself, on a CSV, to show they agree).

1. A/A: no effect; how often the conversion and revenue-per-visitor tests reject at alpha 0.05 (should
   be 0.05; Wilson interval of the rate over the simulations).
2. Planted lift: conversion +``lift`` relative; how often the 95 % interval of the difference covers the
   true difference, and how often the test finds it (against the power the calculator predicts).
3. CUPED: a pre-period covariate with correlation 0.7 to the unit's control revenue, missing for 10 %
   of units: the variance reduction, the ratio of interval widths (CUPED / plain), and how far each
   mean estimate of the revenue difference lies from the truth in standard errors of that mean.

Prints the processor, date and commit, then a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shopformer.abtest import power as pw
from shopformer.abtest.analysis import Readout, analyse
from shopformer.abtest.cli import main as ab_main
from shopformer.abtest.simulate import Scenario, simulate
from shopformer.abtest.stats import wilson
from shopformer.provenance import processor, short_commit

REPO = Path(__file__).resolve().parents[1]


def comparison(readout: Readout, metric: str):
    return next(c for c in readout.comparisons if c.metric == metric)


def rate(hits: int, n: int) -> str:
    i = wilson(hits, n)
    return f"{i.estimate:.3f} [{i.low:.3f}, {i.high:.3f}]"


def cli_agrees(scenario: Scenario) -> bool:
    """One simulated test written as a CSV event log, read by ``shopformer-ab``: the same p-values?"""
    table = simulate(scenario, seed=12345)
    expected = analyse(table)
    with tempfile.TemporaryDirectory() as tmp:
        frame = table.frame[["unit", "arm", "converted", "revenue"]].rename(columns={"unit": "user_id"})
        frame.to_csv(Path(tmp) / "events.csv", index=False)
        with contextlib.redirect_stdout(io.StringIO()):
            ab_main([str(Path(tmp) / "events.csv"), "--out", str(Path(tmp) / "r.json")])
        result = json.loads((Path(tmp) / "r.json").read_text())
    ours = [c.difference.p_value for c in expected.comparisons]
    theirs = [c["difference"]["p_value"] for c in result["comparisons"]]
    return bool(np.allclose(ours, theirs, rtol=1e-9))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sims", type=int, default=500)
    p.add_argument("--cuped-sims", type=int, default=200)
    p.add_argument("--units-per-arm", type=int, default=10_000)
    p.add_argument("--lift", type=float, default=0.10, help="planted relative lift in conversion")
    args = p.parse_args()
    start = time.perf_counter()
    units = 2 * args.units_per_arm
    print(f"processor: {processor()}; date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit {short_commit()}")
    print(f"{args.sims} simulations, {args.units_per_arm:,} units per arm, conversion 3 %, alpha 0.05\n")

    aa = {"conversion": 0, "revenue_per_visitor": 0}
    for seed in range(args.sims):
        readout = analyse(simulate(Scenario(units=units), seed=seed))
        for metric in aa:
            aa[metric] += comparison(readout, metric).difference.p_value < 0.05

    planted = Scenario(units=units, lift=args.lift)
    covered = found = 0
    for seed in range(args.sims):
        d = comparison(analyse(simulate(planted, seed=10_000 + seed)), "conversion").difference
        covered += d.low <= planted.true_difference <= d.high
        found += d.p_value < 0.05
    predicted = pw.proportion_power(
        0.03, 0.03 * (1 + args.lift), args.units_per_arm, args.units_per_arm, 0.05
    )

    informative = Scenario(
        units=units, lift=args.lift, revenue_lift=args.lift, covariate_corr=0.7, covariate_missing=0.1
    )
    reduction, width, adjusted, plain = [], [], [], []
    for seed in range(args.cuped_sims):
        readout = analyse(simulate(informative, seed=20_000 + seed))
        c = comparison(readout, "revenue_per_visitor")
        reduction.append(readout.cuped["revenue_per_visitor_variance_reduction"])
        width.append((c.cuped.high - c.cuped.low) / (c.difference.high - c.difference.low))
        adjusted.append(c.cuped.diff)
        plain.append(c.difference.diff)
    truth = informative.true_revenue_difference
    bias = {
        name: (np.mean(v) - truth) / (np.std(v) / np.sqrt(len(v)))
        for name, v in (("cuped", adjusted), ("plain", plain))
    }
    agrees = cli_agrees(Scenario(units=units, lift=args.lift))

    n = args.sims
    rows = [
        ("A/A rejection rate, conversion (z-test)", "[0.03, 0.07]", rate(aa["conversion"], n)),
        ("A/A rejection rate, revenue / visitor (Welch)", "[0.03, 0.07]", rate(aa["revenue_per_visitor"], n)),
        (f"planted lift +{args.lift:.0%}: coverage of the 95 % interval", "about 0.95", rate(covered, n)),
        (f"planted lift +{args.lift:.0%}: share significant (power)", f"{predicted:.3f} (calculator)",
         rate(found, n)),
        ("CUPED (corr 0.7, 10 % missing): variance reduction, revenue / visitor", "> 0",
         f"{np.mean(reduction):.1%} (sd {np.std(reduction):.1%})"),
        ("CUPED: interval width, CUPED / plain", "< 1", f"{np.mean(width):.3f} (max {np.max(width):.3f})"),
        ("CUPED: mean estimate - truth, in se of the mean (CUPED; plain)", "about 0 (within 2)",
         f"{bias['cuped']:+.2f}; {bias['plain']:+.2f}"),
        ("sample size, 10 % -> 11 %, alpha 0.05, power 0.8 (per arm)", "14,751 (textbook)",
         f"{pw.proportion_sample_size(0.1, 0.01)[0]:,}"),
        ("CLI on a CSV of one simulated test = in-process readout", "yes", "yes" if agrees else "NO"),
        ("run time", "", f"{time.perf_counter() - start:.0f} s"),
    ]  # fmt: skip
    print("| check | target | result |")
    print("| --- | --- | --- |")
    for name, target, result in rows:
        print(f"| {name} | {target} | {result} |")


if __name__ == "__main__":
    main()
