"""``shopformer-compare``: the tracked runs side by side, or two runs key by key (``key=value``, no Hydra).

    shopformer-compare [experiment=NAME] [dataset=NAME] [model=NAME] [tag.KEY=VALUE ...]
        [sort=test/ndcg_10] [order=desc|asc] [limit=50] [format=table|markdown|csv] [output=FILE]
    shopformer-compare RUN_A RUN_B [format=table|markdown|csv] [output=FILE]

The table has one row per run: short id, name, model, dataset, loss, the hyper-parameters that differ
between the runs shown, test NDCG@10 / HR@10 / MRR@10 / coverage@10 (and revenue / in-stock /
diversity / novelty @10 when a run has them), epochs, wall time and git commit. Runs on different
datasets (tag ``dataset_hash``) are never ranked together: each dataset gets a table under a header
line of its own (CSV: one table with a ``dataset_hash`` column).
``sort`` takes any metric (``test/ndcg_10``, or ``ndcg@10`` for short); without it, newest first.
``model`` matches the ``model`` tag (the model's class, any case), ``dataset`` the dataset's name.
Two run ids (or unique prefixes) print the config keys that differ and the test metrics (A, B, B-A);
when both runs logged their per-query test ranks (``eval/test_ranks.parquet``) on the same test
queries, each HR / NDCG / MRR @K difference gets its paired bootstrap 95 % interval (``resamples=``,
1000 by default): a lead whose interval holds 0 is not told apart from the luck of the test set.

The store is ``MLFLOW_TRACKING_URI``, else ``mlflow/mlflow.db`` of the working directory, as for
``shopformer-train``. Torch-free; MLflow is imported when the command runs. A bad argument, an unknown
run, experiment or sort key prints one line and exits with status 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopformer.errors import ConfigError, DataError, exit_on_user_error, one_line
from shopformer.models.query_ranks import ARTIFACT, ARTIFACT_DIR, QueryRanks, paired_differences
from shopformer.train.compare_table import (
    FORMATS,
    Paired,
    RunRow,
    diff_document,
    interval_metrics,
    run_row,
    runs_document,
)
from shopformer.train.tracking_uri import default_tracking_uri

PROG = "shopformer-compare"
USAGE = (
    f"usage: {PROG} [experiment=NAME] [dataset=NAME] [model=NAME] [tag.KEY=VALUE ...] "
    "[sort=METRIC] [order=desc|asc] [limit=50] [format=table|markdown|csv] [output=FILE]  |  "
    f"{PROG} RUN_A RUN_B [resamples=1000] [format=...] [output=FILE]"
)
ARGS: dict[str, tuple[type, Any]] = {  # name -> (type, default)
    "experiment": (str, ""),
    "dataset": (str, ""),
    "model": (str, ""),
    "sort": (str, ""),
    "order": (str, "desc"),
    "limit": (int, 50),
    "format": (str, "table"),
    "output": (str, ""),
    "resamples": (int, 1000),
}
TABLE_ONLY = ("experiment", "dataset", "model", "sort", "order", "limit")
TAG = "tag."
RUN_ID = re.compile(r"[0-9a-f]{1,32}")


class UsageError(ConfigError):
    """A command line that cannot be run."""


@dataclass
class Request:
    """The parsed command line: options, ``tag.KEY=VALUE`` filters and run ids (diff mode)."""

    options: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    given: set[str] = field(default_factory=set)


def parse_args(argv: Sequence[str]) -> Request:
    """``key=value`` options, ``tag.KEY=VALUE`` filters, bare run ids."""
    request = Request(options={name: default for name, (_, default) in ARGS.items()})
    for arg in argv:
        name, sep, raw = arg.removeprefix("--").partition("=")
        if not sep:
            request.runs.append(arg.lower())
        elif name.startswith(TAG) and len(name) > len(TAG):
            request.tags[name[len(TAG) :]] = raw
        elif name in ARGS:
            request.options[name] = _typed(name, raw, ARGS[name][0])
            request.given.add(name)
        else:
            raise UsageError(f"unknown argument {name!r}; {USAGE}")
    check(request)
    return request


def _typed(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise UsageError(f"{name} must be {kind.__name__}, got {raw!r}") from None


def check(request: Request) -> None:
    """Refuse option values and combinations that cannot be honoured."""
    options = request.options
    if options["format"] not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {options['format']!r}")
    if options["order"] not in ("desc", "asc"):
        raise UsageError(f"order must be desc or asc, got {options['order']!r}")
    if options["limit"] < 1:
        raise UsageError(f"limit must be positive, got {options['limit']}")
    if options["resamples"] < 2:
        raise UsageError(f"resamples must be at least 2, got {options['resamples']}")
    if request.runs:
        check_pair(request)
    elif "resamples" in request.given:
        raise UsageError("resamples is for the comparison of two runs (RUN_A RUN_B)")


def check_pair(request: Request) -> None:
    """Refuse a two-run comparison that is not one: a count other than two, a non-id, table filters."""
    if len(request.runs) != 2:
        raise UsageError(f"give two run ids to compare, got {len(request.runs)}: {' '.join(request.runs)}")
    bad = [r for r in request.runs if not RUN_ID.fullmatch(r)]
    if bad:
        raise UsageError(f"{bad[0]!r} is not a run id (hexadecimal, a prefix is enough)")
    table_only = sorted(request.given.intersection(TABLE_ONLY)) + [TAG + t for t in request.tags]
    if table_only:
        raise UsageError(f"{', '.join(table_only)} filter(s) the table, not a comparison of two runs")


def sort_metric(sort: str) -> str:
    """The MLflow metric of ``sort``: ``ndcg@10`` is ``test/ndcg_10``; a name with a ``/`` is as given."""
    if not sort or "/" in sort:
        return sort
    return f"test/{sort.replace('@', '_')}" if "@" in sort else sort


def quoted(value: str, what: str) -> str:
    """``value`` as a string literal of an MLflow filter."""
    if "'" in value or "`" in value:
        raise UsageError(f"{what}: quotes are not allowed in a filter value, got {value!r}")
    return f"'{value}'"


def unquoted(key: str) -> str:
    """A tag name for a filter (between backticks)."""
    quoted(key, "tag")
    return key


def filter_string(request: Request) -> str:
    """The MLflow filter of the table's ``dataset``, ``model`` and ``tag.KEY`` options."""
    options = request.options
    clauses = [f"tags.`{unquoted(k)}` = {quoted(v, TAG + k)}" for k, v in request.tags.items()]
    if options["dataset"]:
        clauses.append(f"tags.dataset = {quoted(options['dataset'], 'dataset')}")
    if options["model"]:
        clauses.append(f"tags.model ILIKE {quoted(options['model'], 'model')}")
    return " AND ".join(clauses)


class Store:
    """The tracking store, through MLflow's client; its errors become one-line user errors."""

    def __init__(self, uri: str) -> None:
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise UsageError(f"no tracking store at {uri} (set MLFLOW_TRACKING_URI, or train a run first)")
        from mlflow import MlflowClient  # lazy: mlflow takes seconds to import

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    @contextmanager
    def errors(self) -> Iterator[None]:
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            raise UsageError(f"tracking store {self.uri}: {one_line(exc)[:300]}") from None

    def experiment_ids(self, name: str = "") -> list[str]:
        """The id of experiment ``name``; every experiment's without a name."""
        if not name:
            return [e.experiment_id for e in self.client.search_experiments()]
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            known = ", ".join(sorted(e.name for e in self.client.search_experiments())) or "none"
            raise UsageError(f"no experiment {name!r} in {self.uri} (experiments: {known})")
        return [experiment.experiment_id]

    def runs(self, request: Request) -> list[Any]:
        """The runs of the table: filtered, sorted and limited by the store."""
        options = request.options
        metric = sort_metric(options["sort"])
        direction = options["order"].upper()
        order = [f"metrics.`{metric}` {direction}"] if metric else []
        return self.client.search_runs(
            self.experiment_ids(options["experiment"]),
            filter_string(request),
            max_results=options["limit"],
            order_by=[*order, f"attributes.start_time {'DESC' if metric else direction}"],
        )

    def run(self, ref: str) -> Any:
        """The run whose id is ``ref`` or starts with it (one only)."""
        runs = self.client.search_runs(
            self.experiment_ids(), f"attributes.run_id LIKE '{ref}%'", max_results=3
        )
        if not runs:
            raise UsageError(f"no run {ref!r} in {self.uri}")
        if len(runs) > 1:
            ids = ", ".join(r.info.run_id[:12] for r in runs)
            raise UsageError(f"run id {ref!r} matches several runs ({ids}); give more of it")
        return runs[0]

    def query_ranks(self, run_id: str) -> QueryRanks | None:
        """The run's per-query test ranks (a QueryRanks), None when it logged none."""
        import tempfile

        from mlflow.exceptions import MlflowException

        if not any(f.path == ARTIFACT for f in self.client.list_artifacts(run_id, ARTIFACT_DIR)):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, ARTIFACT, tmp)
            except (MlflowException, OSError) as exc:
                reason = one_line(exc)[:200]
                raise UsageError(f"run {run_id[:8]}: cannot read {ARTIFACT}: {reason}") from None
            return QueryRanks.read(path)


def paired_intervals(store: Store, a: RunRow, b: RunRow, resamples: int) -> Paired:
    """B-A of every ranking metric the two runs share, with paired bootstrap intervals from their
    per-query test ranks; or why there are none."""
    ranks = {row.short_id: store.query_ranks(row.run_id) for row in (a, b)}
    missing = [run for run, r in ranks.items() if r is None]
    if missing:
        runs = " and ".join(missing)
        return Paired(note=f"no intervals: run {runs} logged no per-query ranks ({ARTIFACT})")
    names = interval_metrics(a, b)
    if not names:
        return Paired(note="no intervals: the two runs share no test HR / NDCG / MRR metric")
    try:
        differences = paired_differences(ranks[b.short_id], ranks[a.short_id], list(names), resamples)
    except DataError as exc:
        return Paired(note=f"no intervals: {exc}")
    n = len(ranks[a.short_id])
    return Paired({names[m]: d for m, d in differences.items()}, n, resamples)


def check_sorted(rows: Sequence[RunRow], metric: str) -> None:
    """Refuse a sort metric that none of the runs has (a typo would rank by nothing)."""
    if metric and rows and not any(metric in r.metrics for r in rows):
        known = sorted({m for r in rows for m in r.metrics})
        raise UsageError(f"sort: no run has the metric {metric!r}; metrics: {', '.join(known)}")


def compare(request: Request, uri: str) -> str:
    """The text the command prints: the runs table, or the two runs' differences."""
    store = Store(uri)
    options = request.options
    with store.errors():
        if request.runs:
            runs = [store.run(ref) for ref in request.runs]
            a, b = (run_row(r) for r in runs)
            paired = paired_intervals(store, a, b, options["resamples"])
            return diff_document(a, b, options["format"], paired)
        rows = [run_row(r) for r in store.runs(request)]
    if not rows:
        return f"no runs in {uri} match {filter_string(request) or 'anything'}"
    metric = sort_metric(options["sort"])
    check_sorted(rows, metric)
    return runs_document(rows, options["format"], metric or None, options["order"])


def main(argv: Sequence[str] | None = None) -> int:
    """``shopformer-compare``: print (or write to ``output=``) the comparison."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    with exit_on_user_error(PROG):
        request = parse_args(argv)
        text = compare(request, default_tracking_uri())
        write(text, request.options["output"])
    return 0


def write(text: str, output: str) -> None:
    """``text`` on stdout, or into the file ``output``."""
    if not output:
        print(text)
        return
    try:
        Path(output).write_text(text + "\n")
    except OSError as exc:
        raise UsageError(f"output={output}: {one_line(exc)}") from None
    print(f"wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
