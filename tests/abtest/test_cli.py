"""``shopformer-ab`` end to end: event logs, per-unit tables, serving logs, power calculator, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopformer.abtest.cli import main
from shopformer.serve.log_schemas import (
    FEEDBACK_SCHEMA,
    IMPRESSION_SCHEMA,
    feedback_row,
    impression_row,
    record_batch,
)


def events(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """An event log: a view per user, a purchase (with revenue) for some."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arm = "A" if i % 2 else "B"
        rows.append((f"u{i}", arm, "view", "", 1_700_000_000 + i))
        if rng.random() < (0.10 if arm == "A" else 0.15):
            rows.append((f"u{i}", arm, "purchase", f"{rng.lognormal(3, 1):.2f}", 1_700_000_100 + i))
    return pd.DataFrame(rows, columns=["user_id", "arm", "event_type", "revenue", "time"])


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_event_log_readout_prints_the_report_and_writes_json_and_plots(tmp_path, capsys):
    frame = events()
    frame.to_csv(tmp_path / "events.csv", index=False)
    code, out, err = run(
        capsys,
        tmp_path / "events.csv",
        "--out",
        tmp_path / "r.json",
        "--plots",
        tmp_path / "plots",
        "--bootstrap",
        "200",
    )
    assert code == 0, err
    assert "conversion" in out and "revenue / visitor" in out and "B vs A" in out and "sample ratio" in out
    result = json.loads((tmp_path / "r.json").read_text())
    buyers = frame[frame["event_type"] == "purchase"]
    arms = {a["arm"]: a for a in result["arms"]}
    assert arms["A"]["units"] == arms["B"]["units"] == 200
    assert arms["A"]["conversions"] == (buyers["arm"] == "A").sum()
    revenue_a = buyers.loc[buyers["arm"] == "A", "revenue"].astype(float).sum() / 200
    assert arms["A"]["revenue_per_visitor"]["estimate"] == pytest.approx(revenue_a)
    conversion = [c for c in result["comparisons"] if c["metric"] == "conversion"][0]
    assert conversion["control"] == "A" and conversion["arm"] == "B"
    assert 0 <= conversion["difference"]["p_value"] <= 1
    assert [c["bootstrap"] is not None for c in result["comparisons"]] == [False, True, True]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "arms.png",
        "cumulative.png",
        "lift.png",
    ]


def test_per_unit_parquet_with_a_pre_period_file_for_some_units(tmp_path, capsys):
    rng = np.random.default_rng(1)
    units = pd.DataFrame(
        {
            "visitor": [f"v{i}" for i in range(300)],
            "variant": np.where(np.arange(300) < 150, "control", "treatment"),
            "converted": rng.random(300) < 0.2,
            "sales": np.round(rng.gamma(1, 20, 300), 2),
        }
    )
    pq.write_table(pa.Table.from_pandas(units), tmp_path / "units.parquet")
    pd.DataFrame({"visitor": [f"v{i}" for i in range(0, 300, 3)], "pre": rng.random(100)}).to_csv(
        tmp_path / "pre.csv", index=False
    )
    code, out, err = run(
        capsys, tmp_path / "units.parquet", "--unit", "visitor", "--arm", "variant", "--revenue", "sales",
        "--pre-period", tmp_path / "pre.csv", "--covariate", "pre", "--out", tmp_path / "r.json",
    )  # fmt: skip
    assert code == 0, err
    assert "CUPED used for 100 of 300 units; 200 without a pre-period value kept unadjusted" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["control"] == "control"
    assert result["cuped"]["units_without_covariate"] == 200
    assert result["comparisons"][0]["cuped"] is not None


def write_segment(directory, kind, rows, schema):
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_batches([record_batch(rows, schema)]),
        directory / f"{kind}-20250101T000000Z-000001.parquet",
    )


def serving_logs(root, with_unit: bool = False):
    impressions, feedback = [], []
    for i in range(60):
        arm = None if i >= 50 else ("A" if i % 2 else "B")  # the last 10: outside the experiment
        unit = f"user{i // 4 * 2 + i % 2}" if with_unit and arm else None  # mostly two requests a user
        impressions.append(
            impression_row(
                request_id=f"r{i}", model_name="m", model_version="1", policy="greedy", policy_version="1",
                session_items=["1"], candidates=["5", "6"], candidate_scores=[0.5, 0.4], shown=["5", "6"],
                arm=arm, unit=unit, time=1_700_000_000.0 + i,
            )
        )  # fmt: skip
        if i % 5 == 0:
            feedback.append(feedback_row(request_id=f"r{i}", item_id="5", event="purchase", revenue=20.0))
        feedback.append(feedback_row(request_id=f"r{i}", item_id="6", event="click"))
    feedback.append(feedback_row(request_id="elsewhere", item_id="6", event="purchase", revenue=5.0))
    write_segment(root / "impressions", "impressions", impressions, IMPRESSION_SCHEMA)
    write_segment(root / "feedback", "feedback", feedback, FEEDBACK_SCHEMA)


def test_serving_logs_each_request_is_a_unit(tmp_path, capsys):
    serving_logs(tmp_path / "logs")
    code, out, err = run(capsys, "--logs", tmp_path / "logs", "--out", tmp_path / "r.json")
    assert code == 0, err
    assert "unit: request_id (each request" in out
    assert "10 impressions without an arm" in out and "13 feedback rows for requests outside" in out
    result = json.loads((tmp_path / "r.json").read_text())
    arms = {a["arm"]: a for a in result["arms"]}
    assert arms["A"]["units"] == arms["B"]["units"] == 25
    # purchases on requests 0, 5, ..., 45: even ids (arm B) 0, 10, 20, 30, 40; odd (A) 5, 15, 25, 35, 45
    assert arms["A"]["conversions"] == arms["B"]["conversions"] == 5
    assert arms["B"]["revenue_per_visitor"]["estimate"] == pytest.approx(5 * 20.0 / 25)


def test_serving_logs_use_the_unit_column_when_present(tmp_path, capsys):
    serving_logs(tmp_path / "logs", with_unit=True)
    code, out, err = run(capsys, "--logs", tmp_path / "logs", "--out", tmp_path / "r.json")
    assert code == 0, err
    assert "unit: unit" in out
    arms = {a["arm"]: a for a in json.loads((tmp_path / "r.json").read_text())["arms"]}
    assert arms["A"]["units"] + arms["B"]["units"] == 26  # user0 .. user25


def test_power_calculator_both_directions(tmp_path, capsys):
    code, out, _ = run(capsys, "power", "--baseline", "0.1", "--mde", "0.01", "--out", tmp_path / "p.json")
    assert code == 0 and "14,751 control + 14,751 treatment" in out
    assert json.loads((tmp_path / "p.json").read_text())["units"] == [14_751, 14_751]
    code, out, _ = run(capsys, "power", "--baseline", "0.1", "--units", "29502")
    assert code == 0 and "detectable lift: 1 pp" in out
    code, out, _ = run(capsys, "power", "--baseline", "1.5", "--sd", "12", "--mde", "0.1", "--relative")
    assert code == 0 and "mean test" in out


def test_units_in_two_arms_are_dropped_and_counted(tmp_path, capsys):
    frame = events(100)
    frame.loc[len(frame)] = ["u1", "B", "view", "", 1_700_000_500]  # u1 was in A
    frame.to_csv(tmp_path / "events.csv", index=False)
    code, out, err = run(capsys, tmp_path / "events.csv")
    assert code == 0, err
    assert "1 units were assigned to more than one arm (e.g. 'u1' in A and B): left out" in out


def error_line(capsys, *args) -> str:
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shopformer-ab: error: "), err
    return lines[0]


def test_one_arm_is_a_clear_error(tmp_path, capsys):
    frame = events(50).assign(arm="A")
    frame.to_csv(tmp_path / "events.csv", index=False)
    line = error_line(capsys, tmp_path / "events.csv")
    assert (
        f"column 'arm' has one value 'A' in {len(frame):,} rows: an A/B readout needs at least two arms"
        in line
    )


def test_revenue_with_text_names_the_column_count_and_value_as_written(tmp_path, capsys):
    frame = events(50)
    buyers = frame.index[frame["event_type"] == "purchase"]
    frame.loc[buyers[0], "revenue"] = "12,50"
    frame.loc[buyers[1], "revenue"] = "EUR 3"
    frame.to_csv(tmp_path / "events.csv", index=False)
    line = error_line(capsys, tmp_path / "events.csv")
    assert "events.csv: column 'revenue' has 2 values that are not numbers (e.g. '12,50' in data row" in line


def test_missing_column_lists_the_file_columns(tmp_path, capsys):
    events(20).to_csv(tmp_path / "events.csv", index=False)
    line = error_line(capsys, tmp_path / "events.csv", "--unit", "visitor_id")
    assert (
        "no column 'visitor_id' (the unit id; --unit); the file has user_id, arm, event_type, revenue, time"
        in line
    )


def test_empty_and_header_only_files(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    assert "empty.csv: empty file" in error_line(capsys, tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("user_id,arm,revenue\n")
    assert "header.csv: no rows (columns: user_id, arm, revenue)" in error_line(
        capsys, tmp_path / "header.csv"
    )
    assert "no such file" in error_line(capsys, tmp_path / "missing.csv")


def test_bad_options_are_one_line(tmp_path, capsys):
    events(40).to_csv(tmp_path / "events.csv", index=False)
    assert "'Z' is not an arm" in error_line(capsys, tmp_path / "events.csv", "--control", "Z")
    assert "needs 2 positive weights" in error_line(capsys, tmp_path / "events.csv", "--split", "1/1/1")
    assert "one of them" in error_line(capsys)
    assert "not a conversion rate" in error_line(capsys, "power", "--baseline", "3", "--mde", "0.1")
    pd.DataFrame({"user_id": ["a", "b"], "arm": ["A", "B"], "converted": ["yes", "maybe"]}).to_csv(
        tmp_path / "units.csv", index=False
    )
    assert "column 'converted' has 1 values that are not 0/1" in error_line(capsys, tmp_path / "units.csv")


def test_a_covariate_column_with_gaps_is_counted_and_one_with_text_is_an_error(tmp_path, capsys):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(200)],
            "arm": np.where(np.arange(200) % 2, "A", "B"),
            "converted": (rng.random(200) < 0.3).astype(int),
            "pre": [f"{v:.3f}" if i % 4 else "" for i, v in enumerate(rng.random(200))],
            "time": pd.date_range("2025-03-01", periods=200, freq="h").strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    frame.to_csv(tmp_path / "units.csv", index=False)
    code, out, err = run(capsys, tmp_path / "units.csv", "--covariate", "pre", "--plots", tmp_path / "plots")
    assert code == 0, err
    assert "CUPED used for 150 of 200 units; 50 without a pre-period value kept unadjusted" in out
    assert (tmp_path / "plots" / "cumulative.png").is_file()  # ISO times read as times
    frame.loc[7, "pre"] = "high"
    frame.to_csv(tmp_path / "units.csv", index=False)
    line = error_line(capsys, tmp_path / "units.csv", "--covariate", "pre")
    assert "column 'pre' has 1 values that are not numbers (e.g. 'high' in data row 8)" in line
