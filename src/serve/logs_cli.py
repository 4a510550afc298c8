"""``shopformer-logs``: the serving logs as bandit feedback (``join``) and at a glance (``summary``).

``join`` writes one row per shown item: the impression's request, model, policy and arm, the item's
1-based ``position``, its ``propensity`` (and the list's ``slate_propensity``), and what the user did
with that item in that request: ``click``, ``cart``, ``purchase`` (0/1, as logged: a purchase does not
imply a click), ``revenue`` (summed), ``n_feedback`` and ``reward`` (the column ``--reward`` names).
Feedback naming an unknown request id or an item the request did not show is counted and reported,
never joined; feedback with an event other than click, cart or purchase is counted and dropped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shopformer.errors import ConfigError, UserError, exit_on_user_error, one_line
from shopformer.serve.event_log import read_log, read_segment, segment_paths
from shopformer.serve.log_journal import JOURNAL, iso, write_parquet
from shopformer.serve.log_schemas import EVENTS, FEEDBACK_SCHEMA, IMPRESSION_SCHEMA

PROG = "shopformer-logs"
REWARDS = (*EVENTS, "revenue")
CARRIED = ("request_id", "time", "model_name", "model_version", "policy", "policy_version", "arm", "unit")
TRAILING = ("slate_propensity", "session_items", "filters", "k")
KEY = ["request_id", "item_id"]


@dataclass
class JoinReport:
    """What the join saw, as the lines the command prints."""

    lines: list[str] = field(default_factory=list)
    unknown_requests: int = 0
    not_shown: int = 0
    bad_events: int = 0


def shown_items(impressions: pa.Table) -> pa.Table:
    """One row per shown item of each impression: position (1-based), item_id and its propensity."""
    shown = impressions.column("shown").combine_chunks()
    props = impressions.column("propensities").combine_chunks()
    n_shown = pc.list_value_length(shown).fill_null(0).to_numpy()
    n_props = pc.list_value_length(props).fill_null(0).to_numpy()
    parents = pc.list_parent_indices(shown).to_numpy()
    # flatten() skips null lists, so each list starts at the running sum of the lengths before it
    position = np.arange(len(parents)) - (np.cumsum(n_shown) - n_shown)[parents] + 1
    values = props.flatten().to_numpy(zero_copy_only=False)
    at = (np.cumsum(n_props) - n_props)[parents] + position - 1
    usable = n_props[parents] == n_shown[parents]  # a list without one value per slot says nothing
    propensity = np.full(len(parents), np.nan)
    propensity[usable] = values[at[usable]]
    rows = impressions.select([c for c in CARRIED if c in impressions.column_names]).take(parents)
    rows = rows.append_column("position", pa.array(position, pa.int32()))
    rows = rows.append_column("item_id", shown.flatten())
    rows = rows.append_column("propensity", pa.array(propensity, pa.float64()))
    for name in TRAILING:
        rows = rows.append_column(name, impressions.column(name).take(parents))
    return rows


def clean_events(feedback: pd.DataFrame, report: JoinReport) -> pd.DataFrame:
    """Feedback rows with a known event; the others are counted and named by value."""
    bad = ~feedback["event"].isin(EVENTS)
    if bad.any():
        counts = feedback.loc[bad, "event"].value_counts(dropna=False)
        named = ", ".join(f"{value!r} ({n:,})" for value, n in counts.head(5).items())
        report.bad_events = int(bad.sum())
        report.lines.append(
            f"dropped {report.bad_events:,} feedback rows whose event is not {'|'.join(EVENTS)}: {named}"
        )
    return feedback.loc[~bad]


def match_feedback(feedback: pd.DataFrame, keys: pd.DataFrame, report: JoinReport) -> pd.DataFrame:
    """The feedback rows about an item their request showed; the others counted with an example."""
    known = feedback["request_id"].isin(keys["request_id"])
    if (~known).any():
        report.unknown_requests = int((~known).sum())
        example = feedback.loc[~known, "request_id"].iloc[0]
        report.lines.append(
            f"{report.unknown_requests:,} feedback rows name a request id no impression has "
            f"(e.g. {example!r})"
        )
    pairs = pd.MultiIndex.from_frame(feedback[KEY])
    shown = pairs.isin(pd.MultiIndex.from_frame(keys[KEY]))
    stray = known & ~shown
    if stray.any():
        report.not_shown = int(stray.sum())
        request, item = feedback.loc[stray, KEY].iloc[0]
        report.lines.append(
            f"{report.not_shown:,} feedback rows name an item their request did not show "
            f"(e.g. request {request!r}, item {item!r})"
        )
    return feedback.loc[shown]


def rewards(feedback: pd.DataFrame) -> pd.DataFrame:
    """Per (request_id, item_id): click/cart/purchase as 0/1, revenue summed, n_feedback."""
    flags = pd.DataFrame({event: (feedback["event"] == event).astype("int8") for event in EVENTS})
    flags[KEY] = feedback[KEY].to_numpy()
    flags["revenue"] = feedback["revenue"].fillna(0.0).to_numpy()
    flags["n_feedback"] = 1
    grouped = flags.groupby(KEY, sort=False)
    out = grouped[list(EVENTS)].max().join(grouped[["revenue", "n_feedback"]].sum())
    return out.reset_index()


def join(impressions: pa.Table, feedback: pa.Table, reward: str = "click") -> tuple[pa.Table, JoinReport]:
    """The bandit-feedback table (see the module docstring) and the report of what did not join."""
    if reward not in REWARDS:
        raise ConfigError(f"--reward: {reward!r} is not one of {', '.join(REWARDS)}")
    report = JoinReport()
    rows = shown_items(impressions)
    keys = rows.select(KEY).to_pandas()
    events = clean_events(feedback.select(["request_id", "item_id", "event", "revenue"]).to_pandas(), report)
    per_item = rewards(match_feedback(events, keys, report))
    merged = keys.merge(per_item, on=KEY, how="left")  # a left merge keeps the left order
    for name, dtype in (*((e, "int8") for e in EVENTS), ("revenue", "float64"), ("n_feedback", "int32")):
        rows = rows.append_column(name, pa.array(merged[name].fillna(0).astype(dtype).to_numpy()))
    rows = rows.append_column("reward", pa.array(merged[reward].fillna(0).astype("float64").to_numpy()))
    repeated = int(impressions.num_rows - pc.count_distinct(impressions.column("request_id")).as_py())
    if repeated:
        report.lines.append(f"{repeated:,} impressions repeat an earlier request id; each gets that feedback")
    return rows, report


def join_summary(table: pa.Table, reward: str) -> str:
    """One line: shown items, requests, CTR, cart rate, conversion, revenue."""
    n = max(table.num_rows, 1)
    rate = {e: pc.sum(table.column(e)).as_py() or 0 for e in EVENTS}
    revenue = pc.sum(table.column("revenue")).as_py() or 0.0
    requests = pc.count_distinct(table.column("request_id")).as_py()
    return (
        f"{table.num_rows:,} shown items of {requests:,} requests: CTR {rate['click'] / n:.2%}, "
        f"cart {rate['cart'] / n:.2%}, conversion {rate['purchase'] / n:.2%} (per shown item), "
        f"revenue {revenue:,.2f}; reward = {reward}"
    )


def run_join(args: argparse.Namespace) -> None:
    impressions = read_log(args.impressions, "impressions", schema=IMPRESSION_SCHEMA)
    feedback = read_log(args.feedback, "feedback", schema=FEEDBACK_SCHEMA)
    table, report = join(impressions, feedback, args.reward)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(table, out)
    except OSError as exc:
        raise UserError(f"--out {out}: {one_line(exc)}") from None
    print(join_summary(table, args.reward))
    for line in report.lines:
        print(line)
    print(f"wrote {out}")


def segment_line(path: Path) -> tuple[str, pa.Table]:
    """One segment's line: rows, requests, time span, and what it holds (policies, models, events)."""
    table = read_segment(path)
    parts = [f"{path.name}{' (open)' if path.suffix == JOURNAL else ''}", f"{table.num_rows:,} rows"]
    if "request_id" in table.column_names:
        parts.append(f"{pc.count_distinct(table.column('request_id')).as_py():,} requests")
    if "time" in table.column_names and table.num_rows:
        span = pc.min_max(table.column("time")).as_py()
        parts.append(f"{iso(span['min'])} .. {iso(span['max'])}")
    parts += described(table)
    return "  ".join(parts), table


def described(table: pa.Table) -> list[str]:
    """The distinct policies and models of an impression segment, the event counts of a feedback one."""
    frame = table.select(
        [
            c
            for c in ("policy", "policy_version", "model_name", "model_version", "event")
            if c in table.column_names
        ]
    ).to_pandas()
    out = []
    for label, name, version in (
        ("policies", "policy", "policy_version"),
        ("models", "model_name", "model_version"),
    ):
        if name in frame and version in frame:
            pairs = (frame[name].astype(str) + "@" + frame[version].astype(str)).unique()
            out.append(f"{label}: {', '.join(sorted(pairs))}")
    if "event" in frame:
        counts = frame["event"].value_counts()
        out.append("events: " + ", ".join(f"{e} {n:,}" for e, n in counts.items()))
    return out


def run_summary(args: argparse.Namespace) -> None:
    paths = segment_paths(args.directory, args.kind or "*", include_open=True)
    for kind in sorted({p.name.split("-", 1)[0] for p in paths}):
        rows = requests = 0
        for path in (p for p in paths if p.name.split("-", 1)[0] == kind):
            line, table = segment_line(path)
            print(line)
            rows += table.num_rows
            if "request_id" in table.column_names:
                requests += pc.count_distinct(table.column("request_id")).as_py()
        print(f"{kind}: {rows:,} rows, {requests:,} requests (summed over segments)")


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line user errors (exit code 2, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def parser() -> Parser:
    top = Parser(prog=PROG, description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    joined = commands.add_parser("join", help="one row per shown item with its reward, as Parquet")
    joined.add_argument("--impressions", required=True, help="the impression log's directory")
    joined.add_argument("--feedback", required=True, help="the feedback log's directory")
    joined.add_argument("--out", required=True, help="the Parquet file to write")
    joined.add_argument(
        "--reward", default="click", choices=REWARDS, help="the reward column (default click)"
    )
    summary = commands.add_parser("summary", help="rows, requests, time span, policies, models per segment")
    summary.add_argument("directory")
    summary.add_argument("--kind", default="", help="only this log (impressions, feedback)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """``shopformer-logs join|summary``."""
    with exit_on_user_error(PROG):
        args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        (run_join if args.command == "join" else run_summary)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
