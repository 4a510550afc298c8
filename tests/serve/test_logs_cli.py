"""``shopformer-logs``: impressions + feedback joined into one row per shown item, and its bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopformer.serve.log_schemas import (
    FEEDBACK_SCHEMA,
    IMPRESSION_SCHEMA,
    feedback_row,
    impression_row,
    record_batch,
)
from shopformer.serve.logs_cli import main

T0 = 1.8e9


def impression(request_id: str, shown: list, propensities: list | None, slate: float | None = None) -> dict:
    return impression_row(
        request_id=request_id,
        model_name="sasrec",
        model_version="3",
        policy="greedy",
        policy_version="1",
        session_items=[1, 2],
        candidates=[10, 11, 12, 13],
        candidate_scores=[0.4, 0.3, 0.2, 0.1],
        shown=shown,
        propensities=propensities,
        slate_propensity=slate,
        filters={"in_stock": True},
        time=T0,
    )


def feedback(request_id: str, item, event: str, revenue: float = 0.0) -> dict:
    return feedback_row(request_id=request_id, item_id=item, event=event, revenue=revenue, time=T0 + 5)


def write(directory: Path, kind: str, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind}-20270115T080000Z-0000.parquet"
    table = (
        pa.Table.from_pylist(rows) if schema is None else pa.Table.from_batches([record_batch(rows, schema)])
    )
    pq.write_table(table, path)
    return path


@pytest.fixture
def logs(tmp_path) -> tuple[Path, Path]:
    impressions = [
        impression("q1", [10, 11, 12], [0.5, 0.3, 0.2], slate=0.03),
        impression("q2", [11, 13], None),
        impression("q3", [], []),
    ]
    events = [
        feedback("q1", 11, "click"),
        feedback("q1", 11, "cart"),
        feedback("q1", 11, "purchase", 20.0),
        feedback("q1", 11, "purchase", 5.0),
        feedback("q1", 12, "purchase", 7.0),  # a purchase without a logged click stays click = 0
        feedback("q2", "13", "click"),
        feedback("q2", 99, "click"),  # not shown in q2
        feedback("nope", 10, "click"),  # no such request
        feedback("nope", 11, "click"),
        {**feedback("q1", 10, "click"), "event": "view"},  # not an event we know
    ]
    write(tmp_path / "imp", "impressions", impressions, IMPRESSION_SCHEMA)
    write(tmp_path / "fb", "feedback", events, FEEDBACK_SCHEMA)
    return tmp_path / "imp", tmp_path / "fb"


def run(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code)


def test_join_gives_one_row_per_shown_item_with_its_rewards(logs, tmp_path, capsys):
    out = tmp_path / "out" / "bandit.parquet"
    assert run("join", "--impressions", str(logs[0]), "--feedback", str(logs[1]), "--out", str(out)) == 0
    table = pq.read_table(out).to_pylist()
    got = [
        (r["request_id"], r["position"], r["item_id"], r["click"], r["cart"], r["purchase"], r["revenue"])
        for r in table
    ]
    assert got == [
        ("q1", 1, "10", 0, 0, 0, 0.0),
        ("q1", 2, "11", 1, 1, 1, 25.0),
        ("q1", 3, "12", 0, 0, 1, 7.0),
        ("q2", 1, "11", 0, 0, 0, 0.0),
        ("q2", 2, "13", 1, 0, 0, 0.0),
    ]
    assert [r["propensity"] for r in table[:3]] == [0.5, 0.3, 0.2]
    assert all(math.isnan(r["propensity"]) for r in table[3:])  # q2 logged no propensities
    assert [r["slate_propensity"] for r in table] == [0.03] * 3 + [None] * 2
    assert [r["n_feedback"] for r in table] == [0, 4, 1, 0, 1]
    assert [r["reward"] for r in table] == [0, 1, 0, 0, 1]  # --reward defaults to click
    assert table[0]["session_items"] == ["1", "2"] and table[0]["filters"] == '{"in_stock":true}'
    assert table[0]["policy"] == "greedy" and table[0]["model_version"] == "3" and table[0]["k"] == 3
    printed = capsys.readouterr().out
    assert "5 shown items of 2 requests: CTR 40.00%, cart 20.00%, conversion 40.00%" in printed
    assert "revenue 32.00" in printed
    assert "2 feedback rows name a request id no impression has (e.g. 'nope')" in printed
    assert "1 feedback rows name an item their request did not show (e.g. request 'q2', item '99')" in printed
    assert "dropped 1 feedback rows whose event is not click|cart|purchase: 'view' (1)" in printed


def test_reward_names_the_column(logs, tmp_path):
    out = tmp_path / "bandit.parquet"
    argv = ["join", "--impressions", str(logs[0]), "--feedback", str(logs[1]), "--out", str(out)]
    assert run(*argv, "--reward", "revenue") == 0
    assert pq.read_table(out).column("reward").to_pylist() == [0, 25, 7, 0, 0]


def test_summary_describes_each_segment(logs, capsys):
    assert run("summary", str(logs[0])) == 0
    printed = capsys.readouterr().out
    assert "impressions-20270115T080000Z-0000.parquet  3 rows  3 requests" in printed
    assert "policies: greedy@1  models: sasrec@3" in printed
    assert run("summary", str(logs[1])) == 0
    assert "events: click 5, purchase 3, cart 1, view 1" in capsys.readouterr().out


def bad_feedback(tmp_path: Path, column: str, values: list | None) -> Path:
    """A feedback segment of two rows with ``column`` replaced by ``values`` (None: without it)."""
    table = pa.Table.from_pylist([feedback("q1", 10, "click")] * 2, schema=FEEDBACK_SCHEMA)
    if values is None:
        table = table.drop_columns([column])
    else:
        table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
    return write(tmp_path / "bad", "feedback", table.to_pylist())


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "no such log directory"),
        ("empty", "no feedback log segments (feedback-*.parquet)"),
        ("no_event", "feedback-20270115T080000Z-0000.parquet: no column 'event'"),
        ("revenue", "feedback-20270115T080000Z-0000.parquet: column 'revenue' holds 'abc', not a double"),
        ("reward", "argument --reward: invalid choice: 'clicks'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(logs, tmp_path, capsys, case, expected):
    feedback_dir, reward = str(tmp_path / "bad"), "click"
    if case == "empty":
        (tmp_path / "bad").mkdir()
    elif case == "no_event":
        bad_feedback(tmp_path, "event", None)
    elif case == "revenue":
        bad_feedback(tmp_path, "revenue", ["12.5", "abc"])
    elif case == "reward":
        feedback_dir, reward = str(logs[1]), "clicks"
    argv = [
        "join",
        "--impressions",
        str(logs[0]),
        "--feedback",
        feedback_dir,
        "--out",
        str(tmp_path / "o.parquet"),
    ]
    assert run(*argv, "--reward", reward) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("shopformer-logs: error: ")
    assert expected in err
