"""Journey model against its baselines under time-blocked cross-validation (issue 5).

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/journey_cv.py \
        [--experiment journey_taobao] [--folds 5] [--seeds 0 1 2] [--jobs 2] [--threads 1] [-- OVERRIDE ...]

One recipe split tests a fifth of the sessions. On a short real log that is few labels (the Taobao
slice's test part holds 187 conversions), and the test set's own sampling noise is then far larger
than the spread over seeds. This runs the recipe once per fold and seed with
``datamodule.split.folds=K datamodule.split.fold=k`` (each session is tested in exactly one fold; the
validation part is the tenth of the sessions beside the test block) and combines the folds:

- each metric: mean over folds per seed, then mean +- std over seeds (baselines are deterministic);
- the model's lead over each baseline (conversion ROC-AUC, next-event macro-F1): per fold the paired
  bootstrap of the run (whole test sessions resampled), combined over the disjoint folds as independent
  estimates (:func:`shopformer.models.bootstrap.mean_difference`).

Each run's JSON line is kept in ``--out`` (``fold{k}_seed{s}.json``); an existing file is reused, so an
interrupted sweep resumes. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shopformer.models.bootstrap import Difference, mean_difference

METRICS = ("conversion_roc_auc", "conversion_pr_auc", "next_event_macro_f1", "abandonment_roc_auc")
LEAD_METRICS = ("conversion_roc_auc", "next_event_macro_f1")


def train_command(
    experiment: str, folds: int, fold: int, seed: int, threads: int, extra: list[str]
) -> list[str]:
    """The ``shopformer-train`` call of one fold and seed (no MLflow, no export: a measurement)."""
    train = Path(sys.executable).with_name("shopformer-train")
    return [
        str(train),
        f"experiment={experiment}",
        f"datamodule.split.folds={folds}",
        f"datamodule.split.fold={fold}",
        f"seed={seed}",
        f"threads={threads}",
        f"task_name={experiment}_cv{folds}_f{fold}_s{seed}",
        "logger=none",
        "export=false",
        "registry.register=false",
        *extra,
    ]


def run_one(command: list[str], target: Path) -> dict[str, Any]:
    """Run one training (unless ``target`` holds its summary already) and return its JSON summary."""
    if target.exists():
        return json.loads(target.read_text())
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(lines[-1])
    target.write_text(json.dumps(summary))
    return summary


def combine(runs: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    """Fold means per seed, their mean and std over seeds, and the combined leads (see the module doc)."""
    folds = sorted({fold for fold, _ in runs})
    seeds = sorted({seed for _, seed in runs})
    missing = [(f, s) for f in folds for s in seeds if (f, s) not in runs]
    if missing:
        raise ValueError(f"runs missing for (fold, seed) {missing}")

    def fold_mean(values: list[float | None]) -> float:
        defined = [v for v in values if v is not None]
        return sum(defined) / len(defined) if defined else float("nan")

    model = {m: [fold_mean([runs[f, s]["test"].get(m) for f in folds]) for s in seeds] for m in METRICS}
    # the same on the validation parts: what a variant of the recipe is chosen by
    valid = {
        m: [fold_mean([runs[f, s].get("valid", {}).get(m) for f in folds]) for s in seeds]
        for m in (*METRICS, "loss", "conversion_log_loss", "next_event_log_loss")
    }
    names = list(runs[folds[0], seeds[0]]["baselines"])
    baselines = {
        name: {m: fold_mean([runs[f, seeds[0]]["baselines"][name].get(m) for f in folds]) for m in METRICS}
        for name in names
    }
    leads: dict[str, dict[str, list[Difference]]] = {}
    for name in names:
        for metric in LEAD_METRICS:
            per_seed = []
            for s in seeds:
                per_fold = [Difference(**runs[f, s]["lead"][name][metric]) for f in folds]
                per_seed.append(mean_difference(per_fold))
            leads.setdefault(name, {})[metric] = per_seed
    counts = {
        key: sum(runs[f, seeds[0]]["examples"]["test"][key] for f in folds)
        for key in ("next_event", "conversion", "conversion_positives")
    }
    return {
        "folds": folds,
        "seeds": seeds,
        "model": model,
        "valid": valid,
        "baselines": baselines,
        "leads": leads,
        "counts": counts,
    }


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {_std(values):.4f}"


def report(result: dict[str, Any]) -> str:
    """Markdown: the metric table (model mean +- std over seeds, baselines) and the lead table."""
    lines = [
        f"{len(result['folds'])} folds x {len(result['seeds'])} seeds; test labels over all folds: "
        f"{result['counts']['conversion']} conversion prefixes ({result['counts']['conversion_positives']} "
        f"positive), {result['counts']['next_event']} next-event prefixes",
        "",
        "| fold mean | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
        "| journey model | " + " | ".join(_mean_std(result["model"][m]) for m in METRICS) + " |",
    ]
    for name, values in result["baselines"].items():
        lines.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in METRICS) + " |")
    valid = result["valid"]
    lines += [
        "",
        "Journey model on the validation parts (fold mean; mean ± std over seeds): "
        + ", ".join(f"{m} {_mean_std(v)}" for m, v in valid.items() if np.isfinite(v).any()),
    ]
    lines += [
        "",
        "| baseline | metric | lead per seed | model seed std | sd of the lead (bootstrap, folds combined) "
        "| 95 % interval (first seed) | lead > seed std and interval > 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, metrics in result["leads"].items():
        for metric, per_seed in metrics.items():
            deltas = [d.delta for d in per_seed]
            spread = _std(result["model"][metric])
            sd = float(np.mean([d.sd for d in per_seed]))
            first = per_seed[0]
            holds = min(deltas) > spread and all(d.low > 0 for d in per_seed)
            lines.append(
                f"| {name} | {metric} | {' / '.join(f'{x:+.4f}' for x in deltas)} | {spread:.4f} | {sd:.4f} "
                f"| [{first.low:+.4f}, {first.high:+.4f}] | {'yes' if holds else 'no'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="journey_taobao")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--out", type=Path, default=None, help="default outputs/journey_cv/<experiment>")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args()
    out = args.out or Path("outputs/journey_cv") / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    jobs = {
        (fold, seed): (
            train_command(args.experiment, args.folds, fold, seed, args.threads, args.overrides),
            out / f"fold{fold}_seed{seed}.json",
        )
        for seed in args.seeds
        for fold in range(args.folds)
    }
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {key: pool.submit(run_one, *job) for key, job in jobs.items()}
        runs = {}
        for key, future in futures.items():
            runs[key] = future.result()
            print(f"fold {key[0]} seed {key[1]}: done", file=sys.stderr, flush=True)
    print(f"`{' '.join(jobs[next(iter(jobs))][0][1:])}` ... ({out})\n")
    print(report(combine(runs)))


if __name__ == "__main__":
    main()
