"""shopformer-compare on three small tracked runs: the table, its filters and formats, two-run diffs,
runs of different datasets kept apart, one-line errors."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import numpy as np
import pytest

from shopformer.models.query_ranks import QueryRanks
from shopformer.train.compare import main, paired_intervals
from shopformer.train.compare_table import RunRow, diff_document, runs_document
from shopformer.train.evaluate import evaluate

EXPERIMENT = "experiment=compare"


def compare(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the one aligned table in ``text`` (cells contain no spaces here)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    rows = [line.split() for line in lines[start + 2 :] if line.strip()]
    return lines[start].split(), rows


def after_rule(text: str) -> list[str]:
    """The non-empty lines below a table's ``----`` rule."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---"))
    return [line for line in lines[start + 1 :] if line.strip()]


def fails(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("shopformer-compare: error: ")
    return err


def test_table_shows_exactly_the_keys_that_differ(compared_runs, capsys):
    a, b, baseline = compared_runs
    text = compare(capsys, EXPERIMENT)
    assert text.startswith(f"== dataset synthetic (hash {a['dataset']['hash']}): 3 run(s), newest first")
    header, rows = table(text)
    assert header[header.index("loss") + 1 : header.index("ndcg@10")] == ["model.dropout"]
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(by_id) == {s["run_id"][:8] for s in compared_runs}
    first, second, fitted = (by_id[s["run_id"][:8]] for s in compared_runs)
    assert (first["loss"], first["model.dropout"]) == ("FullCrossEntropy", "0.2")
    assert (second["loss"], second["model.dropout"]) == ("BinaryCrossEntropy", "0.1")
    assert (fitted["model"], fitted["loss"], fitted["model.dropout"], fitted["epochs"]) == (
        "MostPopular",
        "-",
        "-",
        "0",
    )
    assert float(first["ndcg@10"]) == pytest.approx(a["test"]["ndcg@10"], abs=1e-4) and first["epochs"] == "2"
    assert rows[0][0] == baseline["run_id"][:8]  # newest first


def test_business_metrics_are_columns_when_runs_have_them(compared_runs, capsys):
    a, _, baseline = compared_runs
    header, rows = table(compare(capsys, EXPERIMENT))
    business = ["revenue@10", "in_stock@10", "diversity@10", "novelty@10"]
    assert header[header.index("coverage@10") + 1 : header.index("epochs")] == business
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    for summary in (a, baseline):
        cells = by_id[summary["run_id"][:8]]
        for name in business:
            assert float(cells[name]) == pytest.approx(summary["test"][name], abs=1e-4), name

    def row(metrics: dict[str, float]) -> RunRow:
        return RunRow("a1", "r", "SASRec", "ml1m", "h", "FullCrossEntropy", {}, metrics, {})

    plain = runs_document([row({"test/ndcg_10": 0.3})], "table", None, "desc")
    assert "ndcg@10" in plain and "revenue@10" not in plain and "novelty@10" not in plain
    mixed = runs_document([row({"test/ndcg_10": 0.3}), row({"test/novelty_10": 0.4})], "table", None, "desc")
    assert "novelty@10" in mixed and "revenue@10" not in mixed


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sorted_by_a_metric(compared_runs, capsys, order):
    _, rows = table(compare(capsys, EXPERIMENT, "sort=ndcg@10", f"order={order}"))
    ranked = sorted(compared_runs, key=lambda s: s["test"]["ndcg@10"], reverse=order == "desc")
    assert [r[0] for r in rows] == [s["run_id"][:8] for s in ranked]
    header, rows = table(compare(capsys, EXPERIMENT, "sort=val/ndcg_10", "limit=2"))
    assert header[-4] == "val/ndcg_10" and len(rows) == 2  # the sort metric gets a column


def test_filters(compared_runs, capsys):
    a, b, baseline = compared_runs
    _, rows = table(compare(capsys, EXPERIMENT, "model=sasrec"))  # the class, any case
    assert {r[0] for r in rows} == {a["run_id"][:8], b["run_id"][:8]}
    _, rows = table(compare(capsys, EXPERIMENT, "model=MostPopular", "dataset=synthetic"))
    assert [r[0] for r in rows] == [baseline["run_id"][:8]]
    _, rows = table(
        compare(capsys, EXPERIMENT, f"tag.dataset_hash={a['dataset']['hash']}", "tag.model=SASRec")
    )
    assert len(rows) == 2
    assert compare(capsys, EXPERIMENT, "dataset=beauty").startswith("no runs in ")


def test_markdown_and_csv(compared_runs, capsys, tmp_path):
    a, b, _ = compared_runs
    text = compare(capsys, EXPERIMENT, "format=markdown", "model=sasrec")
    assert text.startswith("### dataset synthetic")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[1].startswith("|---|") and len(lines) == 4  # header, rule, two runs
    assert "| model.dropout |" in lines[0]
    out = tmp_path / "runs.csv"
    assert compare(capsys, EXPERIMENT, "format=csv", f"output={out}").strip() == f"wrote {out}"
    records = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["run"] for r in records} == {s["run_id"] for s in compared_runs}  # whole ids
    assert {r["dataset_hash"] for r in records} == {a["dataset"]["hash"]}
    by_id = {r["run"]: r for r in records}
    assert float(by_id[b["run_id"]]["ndcg@10"]) == pytest.approx(b["test"]["ndcg@10"], abs=1e-6)


def test_two_runs_by_prefix(compared_runs, capsys):
    a, b, _ = compared_runs
    text = compare(capsys, a["run_id"][:6], b["run_id"][:10])
    config, metrics = text.split("\nmetrics\n")
    assert config.splitlines()[3] == "config that differs"
    keys = {line.split()[0] for line in after_rule(config)}
    assert keys - {"tag.git_commit"} == {"loss._target_", "loss.chunk_size", "model.dropout"}
    row = next(line.split() for line in after_rule(metrics) if line.startswith("test/ndcg_10 "))
    x, y = a["test"]["ndcg@10"], b["test"]["ndcg@10"]
    assert [float(v) for v in row[1:4]] == pytest.approx([x, y, y - x], abs=2e-4)
    low, high = (float(v) for v in row[4:6])  # the paired bootstrap interval of B-A
    assert low <= y - x + 1e-4 and y - x - 1e-4 <= high and low < high
    assert f"over the {a['test']['n']:,} test queries both runs ranked" in text
    assert "note: different datasets" not in text
    csv_text = compare(capsys, a["run_id"], b["run_id"], "format=csv", "resamples=50")
    records = list(csv.DictReader(io.StringIO(csv_text)))
    assert {"config", "metric"} == {r["section"] for r in records}
    ndcg = next(r for r in records if r["key"] == "test/ndcg_10")
    assert float(ndcg["95% low"]) <= float(ndcg["B-A"]) <= float(ndcg["95% high"])
    coverage = next(r for r in records if r["key"] == "test/coverage_10")  # not a per-query metric
    assert coverage["95% low"] == "-"


def test_each_run_logs_its_per_query_test_ranks(compared_runs):
    """The ranks behind the intervals are those of the run's own test: their mean is its NDCG@10."""
    for summary in compared_runs:
        ranks = QueryRanks.read(summary["query_ranks"])
        assert len(ranks) == summary["test"]["n"]
        for metric in ("ndcg@10", "hr@20", "mrr@10"):
            assert ranks.values(metric).mean() == pytest.approx(summary["test"][metric], abs=1e-6)


def test_eval_writes_each_protocols_per_query_ranks(compared_runs, tmp_path):
    sasrec = compared_runs[0]
    result = evaluate(sasrec["checkpoint"], "test", ["all_items", "exclude_seen"], "cpu", ranks_dir=tmp_path)
    for protocol in ("all_items", "exclude_seen"):
        ranks = QueryRanks.read(tmp_path / f"{protocol}.parquet")
        assert result[protocol]["query_ranks"] == str(tmp_path / f"{protocol}.parquet")
        assert ranks.values("ndcg@10").mean() == pytest.approx(result[protocol]["ndcg@10"], abs=1e-6)
    run_own = QueryRanks.read(sasrec["query_ranks"])
    assert np.array_equal(run_own.position, ranks.position)  # the same queries: they pair


def test_runs_without_per_query_ranks_are_compared_without_intervals(compared_runs):
    class NoRanks:
        def query_ranks(self, run_id):
            return None

    a, b = (RunRow(r, r, "m", "d", "h", "-", {}, {"test/ndcg_10": 0.1}, {}) for r in ("aaaa1111", "bbbb2222"))
    paired = paired_intervals(NoRanks(), a, b, 100)
    assert paired.note.startswith("no intervals: run aaaa1111 and bbbb2222 logged no per-query ranks")
    text = diff_document(a, b, "table", paired)
    assert "95% low" not in text and paired.note in text

    class SameRanks:
        def query_ranks(self, run_id):
            return QueryRanks.of([1, 2], [1, 2], [3, 4], [0, 5])

    coverage = {"test/coverage_10": 0.5}
    c, d = (RunRow(r, r, "m", "d", "h", "-", {}, coverage, {}) for r in ("cccc3333", "dddd4444"))
    assert "share no test HR / NDCG / MRR" in paired_intervals(SameRanks(), c, d, 100).note


def test_runs_of_different_datasets_are_never_ranked_together():
    def row(run_id: str, dataset: str, ndcg: float) -> RunRow:
        return RunRow(
            run_id,
            "r",
            "SASRec",
            dataset,
            f"{dataset}-hash",
            "FullCrossEntropy",
            {},
            {"test/ndcg_10": ndcg},
            {},
        )

    rows = [row("a1", "ml1m", 0.3), row("b1", "beauty", 0.2), row("a2", "ml1m", 0.1)]
    lines = runs_document(rows, "table", "test/ndcg_10", "desc").splitlines()
    assert lines[0].startswith("2 datasets: each is ranked on its own")
    headers = [i for i, line in enumerate(lines) if line.startswith("== dataset")]
    assert [lines[i].split()[2] for i in headers] == ["ml1m", "beauty"]
    ml1m = [line.split()[0] for line in lines[headers[0] : headers[1]] if line.startswith(("a", "b"))]
    assert ml1m == ["a1", "a2"]
    records = list(csv.DictReader(io.StringIO(runs_document(rows, "csv", "test/ndcg_10", "desc"))))
    assert [(r["run"], r["dataset_hash"]) for r in records] == [
        ("a1", "ml1m-hash"),
        ("a2", "ml1m-hash"),
        ("b1", "beauty-hash"),
    ]


def test_one_line_errors(compared_runs, capsys, monkeypatch):
    assert "no run 'fffffff'" in fails(capsys, "fffffff", compared_runs[0]["run_id"])
    assert "'x-1' is not a run id" in fails(capsys, "x-1", "abc")
    assert "give two run ids" in fails(capsys, "abc")
    assert "sort: no run has the metric 'test/nope'" in fails(capsys, EXPERIMENT, "sort=test/nope")
    assert "unknown argument 'colour'" in fails(capsys, "colour=red")
    assert "no experiment 'nope'" in fails(capsys, "experiment=nope")
    assert "format must be one of" in fails(capsys, "format=html")
    assert "filter(s) the table" in fails(capsys, "abc", "def", "sort=hr@10")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent/mlflow.db")
    assert "no tracking store at" in fails(capsys)


def test_import_needs_neither_torch_nor_mlflow():
    heavy = "{'torch', 'lightning', 'mlflow'}"
    code = f"import sys, shopformer.train.compare; print(sorted({heavy} & sys.modules.keys()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_runs_popularity_reference_is_the_popularity_baselines_validation_score(compared_runs):
    """What the convergence verdict compares the model with: popularity on the same validation queries."""
    sasrec, _, baseline = compared_runs
    scored = evaluate(baseline["checkpoint"], "valid", ["all_items"], "cpu")["all_items"]["ndcg@10"]
    assert sasrec["valid"]["val/popularity_ndcg_10"] == pytest.approx(scored, abs=1e-6)
    assert scored > 0.0
    # Two epochs of a 16-wide SASRec on 300 users: below popularity it cannot be called converged.
    assert not (sasrec["valid"]["val/ndcg_10"] <= scored and sasrec["converged"])
