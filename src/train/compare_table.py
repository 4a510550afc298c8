"""The tables of ``shopformer-compare``: tracked runs as rows, grouped by dataset, and two runs diffed.

Plain data in, text out (aligned terminal table, Markdown or CSV): no MLflow import, no torch. A run
comes in as MLflow's ``Run`` (only its attributes are read) and becomes a :class:`RunRow`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("table", "markdown", "csv")
# The test metrics of every table: column -> MLflow metric.
METRICS = {
    "ndcg@10": "test/ndcg_10",
    "hr@10": "test/hr_10",
    "mrr@10": "test/mrr_10",
    "coverage@10": "test/coverage_10",
}
# Business metrics (models/business_metrics.py): columns shown when at least one run of the table has them.
BUSINESS_METRICS = {
    "revenue@10": "test/revenue_10",
    "in_stock@10": "test/in_stock_10",
    "diversity@10": "test/diversity_10",
    "novelty@10": "test/novelty_10",
}
# Parameters that say where a run wrote, not how it trained; and those shown in columns of their own.
WHERE = (
    "paths.",
    "logger.",
    "hydra.",
    "trainer.default_root_dir",
    "callbacks.model_checkpoint.dirpath",
    "callbacks.last_checkpoint.dirpath",
)
OWN_COLUMNS = ("model._target_", "loss._target_", "data.name")
DIFF_TAGS = ("dataset", "dataset_hash", "git_commit")  # tags the two-run diff compares too
MISSING = "-"
RANK_METRIC = re.compile(r"test/(hr|ndcg|mrr)_(\d+)")  # what per-query ranks give back, with an interval


@dataclass(frozen=True)
class Paired:
    """Paired bootstrap intervals of B-A (MLflow metric -> Difference) over ``queries`` shared test
    queries; or, without them, ``note``: why there are none."""

    differences: dict[str, Any] = field(default_factory=dict)
    queries: int = 0
    resamples: int = 0
    note: str = ""


def interval_metrics(a: RunRow, b: RunRow) -> dict[str, str]:
    """``ndcg@10`` -> ``test/ndcg_10`` for every HR / NDCG / MRR @K both runs logged."""
    shared = sorted(set(a.metrics) & set(b.metrics), key=by_cutoff)
    return {f"{m[1]}@{m[2]}": m[0] for m in map(RANK_METRIC.fullmatch, shared) if m}


@dataclass(frozen=True)
class RunRow:
    """What the tables show of one run."""

    run_id: str
    name: str
    model: str
    dataset: str
    dataset_hash: str
    loss: str
    params: dict[str, str] = field(repr=False)
    metrics: dict[str, float] = field(repr=False)
    tags: dict[str, str] = field(repr=False)
    epochs: int | None = None
    wall_s: float | None = None
    status: str = "FINISHED"

    @property
    def short_id(self) -> str:
        return self.run_id[:8]

    @property
    def commit(self) -> str:
        sha = self.tags.get("git_commit", "")
        return f"{sha[:8]}-dirty" if sha.endswith("-dirty") else sha[:8] or MISSING


def run_row(run: Any) -> RunRow:
    """A :class:`RunRow` of an MLflow ``Run``."""
    info, data = run.info, run.data
    metrics, params, tags = dict(data.metrics), dict(data.params), dict(data.tags)
    epochs = int(metrics["epoch"]) if "epoch" in metrics else None
    trained = bool(epochs) or "train/loss" in metrics  # a fitted baseline has a loss in its config only
    loss = params.get("loss._target_", MISSING).rsplit(".", 1)[-1] if trained else MISSING
    ended = info.end_time and info.start_time
    return RunRow(
        run_id=info.run_id,
        name=info.run_name or MISSING,
        model=tags.get("model") or params.get("model._target_", MISSING).rsplit(".", 1)[-1],
        dataset=tags.get("dataset", MISSING),
        dataset_hash=tags.get("dataset_hash", MISSING),
        loss=loss,
        params=params,
        metrics=metrics,
        tags=tags,
        epochs=epochs,
        wall_s=(info.end_time - info.start_time) / 1000 if ended else None,
        status=info.status,
    )


def hyperparameters(params: dict[str, str]) -> dict[str, str]:
    """``params`` without those that only say where the run wrote."""
    return {k: v for k, v in params.items() if not k.startswith(WHERE)}


def differing_keys(rows: Sequence[RunRow]) -> list[str]:
    """Hyper-parameters whose values differ between the runs that have them (a key only some runs
    have, e.g. an encoder's ``model.dim`` beside a baseline, counts only if those runs disagree)."""
    values: dict[str, set[str]] = {}
    for row in rows:
        for key, value in hyperparameters(row.params).items():
            values.setdefault(key, set()).add(value)
    return sorted(k for k, v in values.items() if len(v) > 1 and k not in OWN_COLUMNS)


def by_dataset(rows: Iterable[RunRow]) -> list[list[RunRow]]:
    """Runs grouped by dataset (name and hash), each group in the given order, groups by their first run."""
    groups: dict[tuple[str, str], list[RunRow]] = {}
    for row in rows:
        groups.setdefault((row.dataset, row.dataset_hash), []).append(row)
    return list(groups.values())


@dataclass
class Table:
    """Columns and rows of text cells; ``numeric``: the columns aligned right."""

    columns: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)

    def render(self, fmt: str) -> str:
        """The table as ``table`` (aligned text), ``markdown`` or ``csv``."""
        return {"table": self._aligned, "markdown": self._markdown, "csv": self._csv}[fmt]()

    def _aligned(self) -> str:
        widths = [max([len(c), *(len(r[i]) for r in self.rows)]) for i, c in enumerate(self.columns)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                c.rjust(w) if i in self.numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        return "\n".join([line(self.columns), line(["-" * w for w in widths]), *map(line, self.rows)])

    def _markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = ["---:" if i in self.numeric else "---" for i in range(len(self.columns))]
        return "\n".join([line(self.columns), "|" + "|".join(rule) + "|", *map(line, self.rows)])

    def _csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([self.columns, *self.rows])
        return out.getvalue().rstrip("\n")


def number(value: float | None, digits: int = 4, sign: bool = False) -> str:
    """A metric as text (``-`` when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``."""
    if seconds is None:
        return MISSING
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def wall_time(row: RunRow) -> str:
    """The run's duration, or its status while it runs (or when it failed)."""
    return duration(row.wall_s) if row.status == "FINISHED" else row.status.lower()


def metric_columns(sort: str | None, rows: Sequence[RunRow] = ()) -> dict[str, str]:
    """The metric columns: accuracy, the business metrics some of ``rows`` have, and the sort metric
    when it is not one of them."""
    business = {c: m for c, m in BUSINESS_METRICS.items() if any(m in r.metrics for r in rows)}
    columns = {**METRICS, **business}
    if sort and sort not in columns.values():
        return {**columns, sort: sort}
    return columns


def runs_table(rows: Sequence[RunRow], sort: str | None, keys: Sequence[str], for_csv: bool = False) -> Table:
    """One row per run: identity, the differing ``keys``, test metrics, epochs, wall time, commit.

    ``for_csv``: for programs rather than people: the whole run id, a ``dataset_hash`` column, seconds."""
    metrics = metric_columns(sort, rows)
    lead = ["dataset_hash"] if for_csv else []
    wall = "wall_s" if for_csv else "wall"
    columns = ["run", "name", "model", "dataset", *lead, "loss", *keys, *metrics, "epochs", wall, "commit"]
    first_metric = columns.index(next(iter(metrics)))
    body = []
    for r in rows:
        ident = [
            r.run_id if for_csv else r.short_id,
            r.name,
            r.model,
            r.dataset,
            *([r.dataset_hash] if for_csv else []),
        ]
        cells = [r.params.get(k, MISSING) for k in keys]
        scores = [number(r.metrics.get(m), 6 if for_csv else 4) for m in metrics.values()]
        epochs = MISSING if r.epochs is None else str(r.epochs)
        seconds = number(r.wall_s, 1) if for_csv else wall_time(r)
        commit = r.tags.get("git_commit", MISSING) if for_csv else r.commit
        body.append([*ident, r.loss, *cells, *scores, epochs, seconds, commit])
    numeric = set(range(first_metric, first_metric + len(metrics) + 2))
    return Table(columns, body, numeric)


def runs_document(rows: Sequence[RunRow], fmt: str, sort: str | None, order: str) -> str:
    """The runs, one table per dataset under a header line (CSV: one table with the dataset hash)."""
    groups = by_dataset(rows)
    if fmt == "csv":  # one table, the rows of each dataset together
        grouped = [row for group in groups for row in group]
        return runs_table(grouped, sort, differing_keys(rows), for_csv=True).render("csv")
    ranked = f"by {sort} ({order})" if sort else "newest first" if order == "desc" else "oldest first"
    parts = []
    if len(groups) > 1:
        parts.append(
            f"{len(groups)} datasets: each is ranked on its own "
            "(metrics on different test sets do not compare)"
        )
    for group in groups:
        first = group[0]
        named = (
            f"{first.dataset} (hash {first.dataset_hash})" if first.dataset_hash != MISSING else "not tagged"
        )
        header = f"dataset {named}: {len(group)} run(s), {ranked}"
        parts.append(f"### {header}" if fmt == "markdown" else f"== {header}")
        parts.append(runs_table(group, sort, differing_keys(group)).render(fmt))
    return "\n\n".join(parts)


def config_differences(a: RunRow, b: RunRow) -> list[tuple[str, str, str]]:
    """``(key, value A, value B)`` of every hyper-parameter and identity tag that differs."""
    pa, pb = hyperparameters(a.params), hyperparameters(b.params)
    pa.update({f"tag.{t}": a.tags[t] for t in DIFF_TAGS if t in a.tags})
    pb.update({f"tag.{t}": b.tags[t] for t in DIFF_TAGS if t in b.tags})
    keys = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
    return [(k, pa.get(k, MISSING), pb.get(k, MISSING)) for k in keys]


def metric_differences(a: RunRow, b: RunRow) -> list[tuple[str, float | None, float | None]]:
    """``(metric, A, B)`` of every test metric of either run, then epochs and wall seconds."""
    names = sorted((k for k in set(a.metrics) | set(b.metrics) if k.startswith("test/")), key=by_cutoff)
    out: list[tuple[str, float | None, float | None]] = [
        (n, a.metrics.get(n), b.metrics.get(n)) for n in names
    ]
    out.append(("epochs", a.epochs, b.epochs))
    out.append(("wall_s", a.wall_s, b.wall_s))
    return out


def by_cutoff(metric: str) -> tuple[str, int]:
    """Sort key: ``test/hr_10`` before ``test/hr_20`` before ``test/hr_100``."""
    name, _, k = metric.rpartition("_")
    return (name, int(k)) if k.isdigit() else (metric, 0)


def diff_tables(a: RunRow, b: RunRow, paired: Paired | None = None) -> tuple[Table, Table]:
    """The config keys that differ (key, A, B) and the metrics (metric, A, B, B-A, and the 95 %
    interval of B-A where ``paired`` has one)."""
    config = Table(["key", f"A {a.short_id}", f"B {b.short_id}"], [list(d) for d in config_differences(a, b)])
    intervals = paired.differences if paired else {}
    rows = []
    for name, x, y in metric_differences(a, b):
        digits = 0 if name == "epochs" else 1 if name == "wall_s" else 4
        delta = y - x if x is not None and y is not None else None
        row = [name, number(x, digits), number(y, digits), number(delta, digits, sign=True)]
        if intervals:
            d = intervals.get(name)
            row += [number(d.low, 4, sign=True), number(d.high, 4, sign=True)] if d else [MISSING, MISSING]
        rows.append(row)
    columns = ["metric", f"A {a.short_id}", f"B {b.short_id}", "B-A"]
    if intervals:
        columns += ["95% low", "95% high"]
    metrics = Table(columns, rows, set(range(1, len(columns))))
    return config, metrics


def interval_line(paired: Paired | None) -> str:
    """What the interval columns are, or why there are none ('' without a comparison of ranks)."""
    if paired is None:
        return ""
    if paired.note:
        return paired.note
    return (
        f"95% low / high: paired bootstrap interval of B-A over the {paired.queries:,} test queries both "
        f"runs ranked ({paired.resamples:,} resamples); an interval that holds 0 does not tell A and B apart"
    )


def diff_document(a: RunRow, b: RunRow, fmt: str, paired: Paired | None = None) -> str:
    """Two runs: who they are, a line when their datasets differ, then the two tables (with paired
    intervals of the ranking metrics when ``paired`` has them)."""
    config, metrics = diff_tables(a, b, paired)
    if fmt == "csv":
        width = len(metrics.columns)
        rows = [["config", *r, *[""] * (width - 3)] for r in config.rows]
        rows += [["metric", *r] for r in metrics.rows]
        return Table(["section", "key", "A", "B", "B-A", *metrics.columns[4:]], rows).render("csv")
    heading, bullet = ("### ", "- ") if fmt == "markdown" else ("", "")
    parts = [
        "\n".join(
            f"{bullet}{label} {r.run_id}  {r.name}  {r.model}  dataset {r.dataset} ({r.dataset_hash})"
            for label, r in (("A", a), ("B", b))
        )
    ]
    if a.dataset_hash != b.dataset_hash:
        parts.append(
            f"note: different datasets ({a.dataset} {a.dataset_hash} vs {b.dataset} {b.dataset_hash}): "
            "B-A compares metrics on different test sets"
        )
    parts.append(f"{heading}config that differs" if config.rows else "config: the same (apart from paths)")
    if config.rows:
        parts.append(config.render(fmt))
    parts += [f"{heading}metrics", metrics.render(fmt)]
    if interval_line(paired):
        parts.append(interval_line(paired))
    return "\n\n".join(parts)
