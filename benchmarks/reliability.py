"""Reliability in one table: fuzzed event logs, a load test with hot swaps and a soak, kill-and-resume,
training with the tracking store down.

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/reliability.py [--quick] [--skip ...]

Sections (each one or more rows of the table):

- ``fuzz``: random and adversarial tables through every file source and the preprocessing; every case
  either loads or fails with one ``DataError`` line (anything else is a crash); rows in = rows kept +
  rows reported dropped on every case that loads.
- ``serve``: one server worker under 32 closed-loop clients while the bundle is hot-swapped twice
  (``POST /admin/reload``): requests sent, failed, p50 / p99; then a soak, with the server's RSS
  before and after.
- ``resume``: a training run SIGKILLed mid-epoch and started again with the same command, against the
  same run never interrupted: largest difference of a test metric.
- ``tracking``: training with the MLflow store unreachable, read-only, broken mid-run (and, without
  ``--quick``, locked): runs completed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fault-injecting callbacks live in tests/train/

SMALL = [
    "data.source.n_users=1500",
    "data.source.n_items=300",
    "datamodule.max_len=30",
    "datamodule.batch_size=64",
    "trainer.precision=32-true",
    "export=false",
    "threads=1",
]


def processor() -> str:
    """The CPU model name."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[reliability] {message}", file=sys.stderr, flush=True)


def train(cwd: Path, *overrides: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``shopformer-train`` in ``cwd`` (outputs/, .cache/ and mlflow/ land there)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "shopformer.train", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def resume_rows(args: argparse.Namespace) -> list[list[Any]]:
    """SIGKILL mid-epoch, the same command again; its test metrics against an uninterrupted run."""
    rows = []
    for name, extra in (("SASRec", []), ("journey + EMA", ["experiment=journey_synthetic"])):
        with tempfile.TemporaryDirectory(prefix="reliability-resume-") as tmp:
            cwd, marker = Path(tmp), Path(tmp) / "killed"
            command = [
                *extra,
                *SMALL,
                f"trainer.max_epochs={args.resume_epochs}",
                "trainer.max_steps=-1",
                "trainer.min_steps=null",
                "logger=none",
                "task_name=resume",
                "+callbacks.killer._target_=tests.train.killer.KillOnce",
                f"+callbacks.killer.epoch={args.resume_epochs // 2}",
                "+callbacks.killer.batch=3",
                f"+callbacks.killer.marker={marker}",
            ]
            if extra:
                command = [
                    c for c in command if not c.startswith(("datamodule.max_len", "data.source.n_items"))
                ]
            marker.touch()
            started = time.perf_counter()
            reference = train(cwd, *command)
            reference_s = time.perf_counter() - started
            marker.unlink()
            killed = train(cwd, *command)
            resumed = train(cwd, *command)
            want, got = last_json(reference).get("test", {}), last_json(resumed).get("test", {})
            diff = max((abs(got[k] - v) for k, v in want.items() if k in got), default=float("nan"))
            resumed_note = "resuming" in resumed.stdout
            log(
                f"resume {name}: killed rc {killed.returncode}, resumed rc {resumed.returncode}, "
                f"max diff {diff:.2e}"
            )
            rows.append(
                [
                    f"kill-and-resume, {name}",
                    f"SIGKILL at epoch {args.resume_epochs // 2} batch 3 of {args.resume_epochs} "
                    f"(rc {killed.returncode}); same command again: "
                    f"{'resumed' if resumed_note else 'NOT resumed'}",
                    f"max abs test-metric difference {diff:.1e} over {len(want)} metrics",
                    "pass" if resumed_note and diff <= 1e-6 and len(got) == len(want) > 0 else "FAIL",
                    f"{reference_s:.0f} s / run",
                ]
            )
    return rows


def _lock(db: Path) -> sqlite3.Connection:
    sqlite3.connect(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def tracking_rows(args: argparse.Namespace) -> list[list[Any]]:
    """Training with the tracking store down in several ways: did the run complete, said once?"""
    cases: list[tuple[str, Callable[[Path], tuple[str, list[str], Any]]]] = [
        ("unreachable at start (HTTP, connection refused)", lambda d: ("http://127.0.0.1:9", [], None)),
        (
            "read-only at start (sqlite mode=ro)",
            lambda d: (
                f"sqlite:///file:{d / 'ro.db'}?mode=ro&uri=true",
                [],
                sqlite3.connect(d / "ro.db").close(),
            ),
        ),
        (
            "broken mid-run (store overwritten after epoch 1)",
            lambda d: (
                f"sqlite:///{d / 'm.db'}",
                [
                    "+callbacks.breaker._target_=tests.train.faults.BreakStore",
                    f"+callbacks.breaker.path={d / 'm.db'}",
                ],
                None,
            ),
        ),
    ]
    if not args.quick:
        cases += [
            (
                "locked for the whole run (another writer)",
                lambda d: (f"sqlite:///{d / 'l.db'}", [], _lock(d / "l.db")),
            ),
            (
                "locked mid-run (after epoch 1)",
                lambda d: (
                    f"sqlite:///{d / 'k.db'}",
                    [
                        "+callbacks.locker._target_=tests.train.faults.LockStore",
                        f"+callbacks.locker.path={d / 'k.db'}",
                    ],
                    None,
                ),
            ),
        ]
    rows = []
    for name, setup in cases:
        with tempfile.TemporaryDirectory(prefix="reliability-tracking-") as tmp:
            cwd = Path(tmp)
            uri, extra, holder = setup(cwd)
            started = time.perf_counter()
            proc = train(
                cwd, *SMALL, "trainer.max_epochs=2", f"logger.tracking_uri='{uri}'", "task_name=t", *extra
            )
            seconds = time.perf_counter() - started
            if isinstance(holder, sqlite3.Connection):
                holder.close()
            summary = last_json(proc)
            said = proc.stderr.count("tracking failed")
            ok = proc.returncode == 0 and summary.get("test") and said == 1 and "tracking" in summary
            log(f"tracking {name}: rc {proc.returncode}, said {said}x, {seconds:.0f} s")
            rows.append(
                [
                    f"tracking down: {name}",
                    f"exit {proc.returncode}; 'tracking failed' said {said}x",
                    f"test NDCG@10 {summary.get('test', {}).get('ndcg@10', float('nan')):.4f} "
                    "in the JSON line",
                    "pass" if ok else "FAIL",
                    f"{seconds:.0f} s",
                ]
            )
    return rows


def two_bundles(cwd: Path) -> tuple[Path, Path]:
    """Two SASRec bundles of the synthetic shop (seeds 0 and 1), to swap between."""
    bundles = []
    for seed in (0, 1):
        proc = train(
            cwd,
            *SMALL,
            "export=true",
            "trainer.max_epochs=1",
            "logger=none",
            f"seed={seed}",
            f"task_name=b{seed}",
        )
        if proc.returncode != 0:
            raise RuntimeError(f"training a bundle failed: {proc.stderr[-1500:]}")
        bundles.append(Path(last_json(proc)["bundle"]))
    return bundles[0], bundles[1]


def serve_rows(args: argparse.Namespace) -> list[list[Any]]:
    from reliability_serve import serve_rows as rows_of  # benchmarks/ is this script's directory

    with tempfile.TemporaryDirectory(prefix="reliability-serve-") as tmp:
        bundles = two_bundles(Path(tmp))
        log("serve: bundles ready; load test with two hot swaps, then the soak")
        return rows_of(bundles, args.load_seconds, args.soak_seconds, args.clients)


# -- fuzz: every file source and the preprocessing --------------------------------------------------


class Tally:
    """Counts of one fuzzed property: inputs, loads, clean one-line failures, crashes, row books."""

    def __init__(self) -> None:
        self.tried = self.loaded = self.refused = self.crashes = self.unbalanced = 0
        self.rows_in = self.kept = self.dropped = 0
        self.first_crash = ""

    def one(self, check: Callable[..., tuple[int, int, int] | None], **case: Any) -> None:
        try:
            books = check(**case)
        except Exception as exc:  # anything but a one-line DataError is a crash: counted, not raised
            self.tried += 1
            self.crashes += 1
            self.first_crash = self.first_crash or f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        self.tried += 1  # (an input the generator itself abandons never gets here)
        if books is None:
            self.refused += 1
            return
        self.loaded += 1
        rows_in, kept, dropped = books
        self.rows_in, self.kept, self.dropped = (
            self.rows_in + rows_in,
            self.kept + kept,
            self.dropped + dropped,
        )
        self.unbalanced += rows_in != kept + dropped


def one_line(exc: Exception, origin: str) -> None:
    """A refusal must be one short line naming the file (else it counts as a crash)."""
    message = str(exc)
    if "\n" in message or "\r" in message or origin not in message or len(message) >= 1000:
        raise AssertionError(f"not a one-line error naming {origin}: {message[:200]!r}")


def books_of(load: Callable[[], Any], origin: str, rows: int | None, config: Any, key: str):
    """Load and preprocess; (rows in, kept, reported dropped) or None when refused in one line."""
    from shopformer.data.preprocess import preprocess, unaccounted_rows
    from shopformer.errors import DataError

    try:
        table = load()
    except DataError as exc:
        one_line(exc, origin)
        return None
    loaded = (
        rows if rows is not None else len(table.events) + sum(table.dropped.values()),
        len(table.events),
    )
    load_dropped = sum(table.dropped.values())
    try:
        report = preprocess(table, config, key).report
    except DataError as exc:
        one_line(exc, table.origin)
        return loaded[0], loaded[1], load_dropped
    if unaccounted_rows(report):
        raise AssertionError(f"preprocessing lost {unaccounted_rows(report)} rows: {report}")
    dropped = sum(v for k, v in report.items() if k.startswith("dropped"))
    return loaded[0], report["events kept"], dropped


def tabular_case(table, file_format, sep, named, config, key):
    from shopformer.data.sources import TabularSource
    from tests.data import test_fuzz_sources as fz

    columns, rows = table
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"events.{file_format}"
        sep = "\t" if file_format == "tsv" else sep
        if file_format == "parquet":
            fz.write_parquet(path, columns, rows)
        else:
            fz.write_delimited(path, columns, rows, sep)
        source = TabularSource(path=str(path), sep=fz.SEPARATORS[sep] if named else "auto")
        return books_of(source.load, str(path), len(rows), config, key)


def named_case(kind, data, min_rating, config):
    from hypothesis import strategies as st

    from tests.data import test_fuzz_sources as fz

    sep, sizes = fz.LAYOUTS[kind]
    sizes = data.draw(st.sampled_from([sizes, sizes, (sizes[0] - 1 or 1, sizes[1] + 1)]))
    lines = data.draw(fz.lines_of(fz.tokens, sizes, sep))
    with tempfile.TemporaryDirectory() as tmp:
        load, _, rows = fz.named_case(Path(tmp), kind, lines, min_rating)
        return books_of(load, tmp, rows, config, "session" if kind == "yoochoose" else "user")


def bytes_case(content, header, suffix):
    from shopformer.data.preprocess import PreprocessConfig
    from shopformer.data.sources import TabularSource

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"events.{suffix}"
        path.write_bytes((b"user_id,item_id,timestamp\n" if header else b"") + content)
        return books_of(TabularSource(path=str(path)).load, str(path), None, PreprocessConfig(), "user")


def big_file_case(megabytes: int) -> tuple[str, float]:
    """A one-column file of ``megabytes`` MB: refused in one line (the error) and how long it took."""
    from shopformer.data.sources import TabularSource
    from shopformer.errors import DataError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ids.csv"
        line = b"1234567890\n"
        path.write_bytes(b"item_id\n" + line * (megabytes * 2**20 // len(line)))
        started = time.perf_counter()
        try:
            TabularSource(path=str(path)).load()
        except DataError as exc:
            one_line(exc, str(path))
            return str(exc).removeprefix(str(path)).strip(": ")[:60], time.perf_counter() - started
    raise AssertionError("a file without item timestamps loaded")


def fuzz_property(cases: dict[str, Any], check: Callable[..., Any], examples: int) -> Tally:
    """Run ``check`` on ``examples`` generated cases; their tally (nothing is raised)."""
    from hypothesis import given, settings

    from tests.data import test_fuzz_sources as fz

    tally = Tally()

    @settings(fz.fuzz(examples))
    @given(**cases)
    def run(**case: Any) -> None:
        tally.one(check, **case)

    run()
    return tally


def fuzz_rows(args: argparse.Namespace) -> list[list[Any]]:
    from hypothesis import strategies as st

    from tests.data import test_fuzz_sources as fz

    examples = 100 if args.quick else args.fuzz_examples
    properties = {
        "tabular files (csv, tsv, csv.gz, Parquet; 4 separators, sniffed or named)": (
            fz.tabular_cases,
            tabular_case,
        ),
        "named-dataset text files (6 layouts)": (fz.named_cases, named_case),
        "arbitrary bytes as CSV / Parquet": (
            dict(
                content=st.binary(max_size=400),
                header=st.booleans(),
                suffix=st.sampled_from(["csv", "parquet"]),
            ),
            bytes_case,
        ),
    }
    rows = []
    for name, (cases, check) in properties.items():
        started = time.monotonic()
        tally = fuzz_property(cases, check, examples)
        log(f"fuzz {name}: {tally.tried} inputs, {tally.crashes} crashes")
        result = (
            f"crashes {tally.crashes}; loaded {tally.loaded}, refused in one line {tally.refused}; rows in "
            f"{tally.rows_in:,} = kept {tally.kept:,} + reported dropped {tally.dropped:,} "
            f"(unbalanced cases: {tally.unbalanced})"
        )
        if tally.first_crash:
            result += f"; first crash: {tally.first_crash}"
        verdict = "pass" if tally.crashes == tally.unbalanced == 0 else "FAIL"
        rows.append(
            [f"fuzz: {name}", f"{tally.tried} inputs", result, verdict, f"{time.monotonic() - started:.0f} s"]
        )
    megabytes = 10 if args.quick else 100
    error, seconds = big_file_case(megabytes)
    rows.append(
        [
            f"fuzz: a {megabytes} MB one-column file",
            "load",
            f"refused in one line: '{error}'",
            "pass",
            f"{seconds:.1f} s",
        ]
    )
    return rows


SECTIONS = {"fuzz": fuzz_rows, "serve": serve_rows, "resume": resume_rows, "tracking": tracking_rows}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases; no 20-second sqlite lock waits")
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(SECTIONS))
    parser.add_argument("--resume-epochs", type=int, default=4)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--fuzz-examples", type=int, default=1000, help="generated inputs per fuzzed property"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log(f"processor: {processor()}; {os.cpu_count()} CPUs; python {platform.python_version()}")
    rows: list[list[Any]] = []
    for name, section in SECTIONS.items():
        if name not in args.skip:
            rows += section(args)
    print(f"processor: {processor()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(table(["check", "what was done", "result", "verdict", "time"], rows))
    return 0 if all(row[3] == "pass" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
