"""Batch scoring's business report: in-stock share, category diversity and mean price of the lists it
wrote; ``filters`` (``shopformer-recommend filters=...``) constrain them, and an in-stock filter gives an
in-stock share of exactly 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopformer.serve.batch_scoring import SessionTable, score_sessions
from shopformer.serve.cli import recommend_main
from shopformer.serve.recommender import Recommender
from shopformer.serve.rules import FilterError
from tests.serve.conftest import make_bundle

K = 10


def sessions(bundle, n: int = 40, seed: int = 0) -> SessionTable:
    rng = np.random.default_rng(seed)
    raw = bundle.raw_ids
    histories = [raw[rng.integers(0, len(raw), rng.integers(2, 6))].tolist() for _ in range(n)]
    return SessionTable("session_id", pd.Series(range(n)), histories, None, None)


def expected_report(frame: pd.DataFrame, vocab: pd.DataFrame) -> dict[str, float]:
    """The report, computed directly from the written rows and the item table."""
    rows = frame.merge(vocab, on="item_id", how="left")
    per_session = rows.groupby("session_id")
    prices = per_session["price"].mean().dropna()  # NaN prices left out; lists without any dropped
    return {
        "in_stock": float(per_session["in_stock"].mean().mean()),
        "diversity": float((per_session["category"].nunique() / K).mean()),
        "mean_price": float(prices.mean()),
    }


def test_in_stock_filter_gives_an_in_stock_share_of_one(bundle, recommender):
    table = sessions(bundle)
    plain, plain_report = score_sessions(recommender, table, k=K)
    stocked, stocked_report = score_sessions(recommender, table, k=K, filters={"in_stock": True})
    assert stocked_report.lists["in_stock"] == 1.0
    assert 0.5 < plain_report.lists["in_stock"] < 1.0  # the unfiltered model recommends sold-out items
    assert stocked.merge(bundle.vocab, on="item_id")["in_stock"].all()
    for frame, report in ((plain, plain_report), (stocked, stocked_report)):
        assert set(report.lists) == {"in_stock", "diversity", "mean_price"}
        for name, value in expected_report(frame, bundle.vocab).items():
            assert report.lists[name] == pytest.approx(value, rel=1e-12), name


def test_report_has_only_what_the_item_table_allows(tmp_path):
    bare = make_bundle(tmp_path / "bare", drop_attributes=("in_stock", "price", "category"))
    rec = Recommender.load(bare.path)
    frame, report = score_sessions(rec, sessions(bare, n=5), k=K)
    assert len(frame) == 5 * K and report.lists == {}
    with pytest.raises(FilterError, match="filters.in_stock: this bundle's item table has no 'in_stock'"):
        score_sessions(rec, sessions(bare, n=5), k=K, filters={"in_stock": True})


def run_cli(capsys, *args) -> tuple[int, str]:
    code = recommend_main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_recommend_cli_filters(bundle, tmp_path, capsys):
    raw = bundle.raw_ids
    histories = [raw[[1, 2, 3]].tolist(), raw[[40, 41]].tolist(), raw[[7]].tolist()]
    pd.DataFrame({"session_id": ["a", "b", "c"], "items": histories}).to_parquet(tmp_path / "in.parquet")
    common = [f"bundle={bundle.path}", f"input={tmp_path / 'in.parquet'}", f"output={tmp_path / 'o.parquet'}"]
    code, err = run_cli(capsys, *common, 'filters={"in_stock": true}')
    assert code == 0, err
    assert "recommended lists: in-stock share 1.000, category diversity" in err and "mean price" in err
    out = pd.read_parquet(tmp_path / "o.parquet").merge(bundle.vocab, on="item_id")
    assert len(out) == 30 and out["in_stock"].all()
    code, err = run_cli(capsys, *common, "filters={in_stock: true}")
    assert code == 2 and err.count("\n") == 1 and "filters='{in_stock: true}': not JSON" in err
    code, err = run_cli(capsys, *common, "filters=[1]")
    assert code == 2 and err.count("\n") == 1 and "expected a JSON object" in err
    code, err = run_cli(capsys, *common, 'filters={"colour": "red"}')
    assert code == 2 and err.count("\n") == 1 and "filters.colour: unknown filter" in err
