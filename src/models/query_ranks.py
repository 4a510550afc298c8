"""Per-query ranks of a full-ranking test, and the paired difference of two models on the same queries.

An aggregate NDCG@10 says who leads; whether the lead is more than the luck of the test set needs the
queries one by one. A test writes, for every query, its target event's position in the event table
(the key that pairs two runs of the same data), its sequence (queries of one sequence are resampled
together), its target item and the target's 0-based rank. Two such files of the same data give the
difference of any @K metric with a paired bootstrap interval (:mod:`shopformer.models.bootstrap`).

NumPy and pyarrow only: ``shopformer-compare`` and the leaderboard read these files without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shopformer.errors import DataError
from shopformer.models.bootstrap import Difference, group_rows, resample_rows

COLUMNS = ("position", "sequence", "target", "rank")
# Where a run keeps its test's ranks: the run directory's folder and MLflow artifact folder, the file.
ARTIFACT_DIR, FILE_NAME = "eval", "test_ranks.parquet"
ARTIFACT = f"{ARTIFACT_DIR}/{FILE_NAME}"
METRICS = ("ndcg", "hr", "mrr")


@dataclass(frozen=True)
class QueryRanks:
    """One test's queries, sorted by ``position`` (the target event's row in the event table)."""

    position: np.ndarray
    sequence: np.ndarray
    target: np.ndarray
    rank: np.ndarray

    @classmethod
    def of(cls, position, sequence, target, rank) -> QueryRanks:
        """From arrays in any order (e.g. batches concatenated); sorted by position."""
        arrays = [np.asarray(a, dtype=np.int64).ravel() for a in (position, sequence, target, rank)]
        if len({len(a) for a in arrays}) != 1:
            raise ValueError(f"{', '.join(COLUMNS)} need one value per query, got {[len(a) for a in arrays]}")
        order = np.argsort(arrays[0], kind="stable")
        return cls(*(a[order] for a in arrays))

    def __len__(self) -> int:
        return len(self.rank)

    def write(self, path: str | Path) -> Path:
        """The queries as a Parquet file (int64 columns ``position, sequence, target, rank``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({name: getattr(self, name) for name in COLUMNS})
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | Path) -> QueryRanks:
        """A file written by :meth:`write`; a DataError naming the file when it is not one."""
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DataError(f"{path}: not a per-query ranks file ({reason})") from None
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{path}: per-query ranks file without column(s) {', '.join(missing)}")
        return cls.of(*(table.column(c).to_numpy() for c in COLUMNS))

    def values(self, metric: str) -> np.ndarray:
        """Each query's ``metric`` (``ndcg@10``, ``hr@20``, ``mrr@10``): their mean is the test's figure."""
        name, k = parse_metric(metric)
        hit = self.rank < k
        if name == "hr":
            return hit.astype(np.float64)
        if name == "ndcg":
            return np.where(hit, 1.0 / np.log2(self.rank + 2.0), 0.0)
        return np.where(hit, 1.0 / (self.rank + 1.0), 0.0)


def parse_metric(metric: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; ValueError for anything else."""
    name, _, k = metric.partition("@")
    if name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric must be one of {', '.join(m + '@K' for m in METRICS)}, got {metric!r}")
    return name, int(k)


def paired_difference(
    a: QueryRanks, b: QueryRanks, metric: str = "ndcg@10", resamples: int = 1000, seed: int = 0
) -> Difference:
    """``metric(a) - metric(b)`` over their test queries, with a paired bootstrap 95 % interval
    (sequences resampled whole). Both must have ranked the same queries with the same targets: a
    DataError says how they differ otherwise (another split, another preprocessing)."""
    return paired_differences(a, b, [metric], resamples, seed)[metric]


def paired_differences(
    a: QueryRanks, b: QueryRanks, metrics: list[str], resamples: int = 1000, seed: int = 0
) -> dict[str, Difference]:
    """:func:`paired_difference` of several metrics at once, on the same resamples."""
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    same_queries(a, b)
    diffs = np.stack([a.values(m) - b.values(m) for m in metrics], axis=1)  # [queries, metrics]
    order, bounds = group_rows(a.sequence)
    rng = np.random.default_rng(seed)
    spread = np.stack([diffs[resample_rows(order, bounds, rng)].mean(axis=0) for _ in range(resamples)])
    low, high = np.quantile(spread, [0.025, 0.975], axis=0)
    sd = spread.std(axis=0, ddof=1)
    delta = diffs.mean(axis=0)
    return {
        m: Difference(float(delta[j]), float(sd[j]), float(low[j]), float(high[j]), resamples)
        for j, m in enumerate(metrics)
    }


def same_queries(a: QueryRanks, b: QueryRanks) -> None:
    """DataError unless ``a`` and ``b`` hold the same queries (positions, sequences and targets)."""
    if not len(a):
        raise DataError("no test queries to compare")
    if len(a) != len(b) or not np.array_equal(a.position, b.position):
        common = len(np.intersect1d(a.position, b.position))
        raise DataError(
            f"the two tests ranked different queries ({len(a):,} and {len(b):,}, {common:,} in common): "
            "another split or preprocessing"
        )
    wrong = np.flatnonzero((a.target != b.target) | (a.sequence != b.sequence))
    if len(wrong):
        i = wrong[0]
        raise DataError(
            f"the two tests' targets differ at {len(wrong):,} queries (first: event row {a.position[i]}, "
            f"item {a.target[i]} vs {b.target[i]}): another item vocabulary"
        )
