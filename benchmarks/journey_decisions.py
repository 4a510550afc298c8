"""Where the journey model's next-event decisions part from a baseline's, and whether parting pays.

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/journey_decisions.py DIR [--baseline markov]

DIR holds the runs of ``benchmarks/journey_cv.py`` (``fold{k}_seed{s}.json``). Each run names its
checkpoint, and the checkpoint holds the config that rebuilds the fold's data. For every run this scores
the validation and test prefixes with the checkpoint and with the baseline fitted on the same training
prefixes, and prints:

- next-event macro-F1 with the decision ``gamma`` chosen on validation (what the run reported), and the
  best over a fine grid of ``gamma`` on the test prefixes themselves. That second one is an oracle, not a
  result: it bounds what any choice of ``gamma`` could have given;
- next-event log-loss and F1 per event type;
- on how many test prefixes the two decisions differ, and how often each is right there;
- the geometric mixture ``baseline^(1-w) * model^w`` (renormalised), from w = 0 (the baseline) to w = 1
  (the model), its ``gamma`` chosen on validation: macro-F1 on validation and on test (fold means,
  mean +- std over seeds). Where the model's departures from the baseline carry signal, test macro-F1
  rises with w as validation does.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from shopformer.data.journey.labels import IGNORE
from shopformer.models.journey.classification_metrics import decide, next_event_metrics, tune_gamma
from shopformer.train.base_module import CHANNELS
from shopformer.train.checkpoint import checkpoint_config, load_checkpoint, restore_model
from shopformer.train.config import build_datamodule
from shopformer.train.journey.task import fit_baseline

FINE_GAMMAS = tuple(np.round(np.arange(0.0, 1.51, 0.05), 2))
MIXTURE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
RUN_FILE = re.compile(r"fold(\d+)_seed(\d+)\.json")


@dataclass
class Part:
    """Next-event probabilities [N, C] of one part's prefixes, from the model and the baseline, and labels."""

    model: np.ndarray
    base: np.ndarray
    labels: np.ndarray


@dataclass
class Scored:
    """One run's validation and test parts, the training class shares and the event classes' names."""

    valid: Part
    test: Part
    prior: np.ndarray
    classes: list[str]


@torch.no_grad()
def model_next_event(model, loader) -> tuple[np.ndarray, np.ndarray]:
    """The model's next-event probabilities [N, C] after every prefix of ``loader``, and their labels."""
    probs, labels = [], []
    for batch in loader:
        channels = {name: batch[name] for name in CHANNELS if name in batch}
        probs.append(model.journey(batch["item_ids"], **channels)[0].double().numpy())
        labels.append(batch["next_event"].numpy())
    return np.concatenate(probs), np.concatenate(labels)


def score_run(checkpoint_path: str | Path, baseline: str) -> Scored:
    """Rebuild the run's data from its checkpoint; score validation and test with model and baseline."""
    checkpoint = load_checkpoint(checkpoint_path)
    cfg = checkpoint_config(checkpoint)
    dm = build_datamodule(cfg)
    dm.setup()
    model = restore_model(checkpoint, cfg, dm)
    fitted, events = fit_baseline(baseline, dm)
    parts = {}
    for part, loader in (("valid", dm.val_dataloader()), ("test", dm.test_dataloader())):
        probs, labels = model_next_event(model, loader)
        examples = dm.examples[part]
        if not np.array_equal(labels, examples.next_event):
            raise RuntimeError(f"{checkpoint_path}: the {part} loader's labels are not the examples' order")
        parts[part] = Part(probs, fitted.predict(events, examples.positions).next_event, labels)
    return Scored(parts["valid"], parts["test"], dm.class_prior(), list(dm.event_classes))


def geometric_mixture(base: np.ndarray, model: np.ndarray, weight: float) -> np.ndarray:
    """Rows of ``base^(1-weight) * model^weight``, renormalised to sum to 1."""
    logs = (1 - weight) * np.log(np.clip(base, 1e-12, 1)) + weight * np.log(np.clip(model, 1e-12, 1))
    p = np.exp(logs - logs.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def departures(model_choice: np.ndarray, base_choice: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Share of labelled prefixes where the two decisions differ; how often each is right there."""
    keep = labels != IGNORE
    m, b, y = model_choice[keep], base_choice[keep], labels[keep]
    differ = m != b
    if not differ.any():
        return {"share": 0.0, "model_right": float("nan"), "base_right": float("nan")}
    return {
        "share": float(differ.mean()),
        "model_right": float((m[differ] == y[differ]).mean()),
        "base_right": float((b[differ] == y[differ]).mean()),
    }


def per_class_f1(probs: np.ndarray, labels: np.ndarray, prior: np.ndarray, gamma: float) -> np.ndarray:
    keep = labels != IGNORE
    choice = decide(probs[keep], prior, gamma)
    return f1_score(labels[keep], choice, labels=list(range(probs.shape[1])), average=None, zero_division=0)


def macro_f1(probs: np.ndarray, labels: np.ndarray, prior: np.ndarray, gamma: float) -> float:
    return next_event_metrics(probs, labels, prior, gamma)["macro_f1"]


def run_row(scored: Scored) -> dict[str, object]:
    """One run's figures (see the module doc); F1 of the baseline and model at their validation gamma."""
    valid, test, prior = scored.valid, scored.test, scored.prior
    row: dict[str, object] = {}
    for who in ("model", "base"):
        gamma = tune_gamma(getattr(valid, who), valid.labels, prior)
        probs = getattr(test, who)
        curve = [macro_f1(probs, test.labels, prior, g) for g in FINE_GAMMAS]
        best = int(np.argmax(curve))
        row[who] = {
            "gamma": gamma,
            "f1": macro_f1(probs, test.labels, prior, gamma),
            "oracle_f1": curve[best],
            "oracle_gamma": FINE_GAMMAS[best],
            "log_loss": next_event_metrics(probs, test.labels)["log_loss"],
            "per_class": per_class_f1(probs, test.labels, prior, gamma),
        }
    row["departures"] = departures(
        decide(test.model, prior, row["model"]["gamma"]),
        decide(test.base, prior, row["base"]["gamma"]),
        test.labels,
    )
    mixture = {}
    for weight in MIXTURE_WEIGHTS:
        mixed_valid = geometric_mixture(valid.base, valid.model, weight)
        gamma = tune_gamma(mixed_valid, valid.labels, prior)
        mixed_test = geometric_mixture(test.base, test.model, weight)
        mixture[weight] = (
            macro_f1(mixed_valid, valid.labels, prior, gamma),
            macro_f1(mixed_test, test.labels, prior, gamma),
        )
    row["mixture"] = mixture
    return row


def report(rows: dict[tuple[int, int], dict], classes: list[str], baseline: str) -> str:
    """Markdown: the per-run table and the mixture table (fold means per seed, mean +- std over seeds)."""
    lines = [
        f"| fold | seed | model F1 (gamma) | model oracle F1 (gamma) | {baseline} F1 (gamma) "
        f"| {baseline} oracle F1 | log-loss model / {baseline} | decisions differ | right there: model / "
        f"{baseline} | F1 per type ({', '.join(classes)}): model / {baseline} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (fold, seed), r in sorted(rows.items()):
        m, b, d = r["model"], r["base"], r["departures"]
        per_type = " / ".join(" ".join(f"{x:.3f}" for x in who["per_class"]) for who in (m, b))
        cells = [
            f"{m['f1']:.4f} ({m['gamma']:.2f})",
            f"{m['oracle_f1']:.4f} ({m['oracle_gamma']:.2f})",
            f"{b['f1']:.4f} ({b['gamma']:.2f})",
            f"{b['oracle_f1']:.4f}",
            f"{m['log_loss']:.4f} / {b['log_loss']:.4f}",
            f"{d['share']:.1%}",
            f"{d['model_right']:.2f} / {d['base_right']:.2f}",
            per_type,
        ]
        lines.append(f"| {fold} | {seed} | " + " | ".join(cells) + " |")
    seeds = sorted({seed for _, seed in rows})
    folds = sorted({fold for fold, _ in rows})

    def mean_std(values: list[float]) -> str:
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return f"{np.mean(values):.4f} ± {spread:.4f}"

    def fold_means(pick) -> list[float]:
        return [float(np.mean([pick(rows[f, s]) for f in folds])) for s in seeds]

    lines += [
        "",
        f"Fold means, mean ± std over seeds: the model's test macro-F1 at its validation gamma "
        f"{mean_std(fold_means(lambda r: r['model']['f1']))}, at the oracle gamma "
        f"{mean_std(fold_means(lambda r: r['model']['oracle_f1']))}; {baseline} "
        f"{mean_std(fold_means(lambda r: r['base']['f1']))} (oracle "
        f"{mean_std(fold_means(lambda r: r['base']['oracle_f1']))}).",
        "",
        f"| w ({baseline}^(1-w) · model^w) | validation macro-F1 | test macro-F1 |",
        "|---|---|---|",
    ]
    for weight in MIXTURE_WEIGHTS:
        valid = fold_means(lambda r, w=weight: r["mixture"][w][0])
        test = fold_means(lambda r, w=weight: r["mixture"][w][1])
        lines.append(f"| {weight:.2f} | {mean_std(valid)} | {mean_std(test)} |")
    return "\n".join(lines)


def read_runs(directory: Path) -> dict[tuple[int, int], str]:
    """``{(fold, seed): checkpoint path}`` of the journey_cv runs kept in ``directory``."""
    runs = {}
    for path in sorted(directory.glob("fold*_seed*.json")):
        match = RUN_FILE.fullmatch(path.name)
        if match:
            checkpoint = json.loads(path.read_text()).get("checkpoint")
            if not checkpoint:
                raise ValueError(f"{path}: no 'checkpoint' in the run's summary")
            runs[int(match[1]), int(match[2])] = checkpoint
    if not runs:
        raise ValueError(f"{directory}: no fold<k>_seed<s>.json of benchmarks/journey_cv.py in it")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path, help="the --out folder of benchmarks/journey_cv.py")
    parser.add_argument("--baseline", default="markov")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, classes = {}, []
    for key, checkpoint in read_runs(args.directory).items():
        scored = score_run(checkpoint, args.baseline)
        rows[key], classes = run_row(scored), scored.classes
    print(report(rows, classes, args.baseline))


if __name__ == "__main__":
    main()
