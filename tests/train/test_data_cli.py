"""shopformer-data: real-dataset counts (in process) and one-line errors (as a real command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from shopformer.train.config import CONF_DIR
from shopformer.train.data_cli import prepare


def run_prepare(tmp_path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("prepare", overrides=[f"paths.cache_dir={tmp_path}", *overrides])
    return prepare(cfg)


def test_ml1m_counts_equal_the_file(shared_data, tmp_path, capsys):
    stats = run_prepare(tmp_path, "data=ml1m", "check_batches=false")
    assert (stats["users"], stats["items"], stats["interactions"]) == (6_040, 3_416, 999_611)
    assert stats["split"]["test_targets"] == stats["split"]["valid_targets"] == 6_040
    out = capsys.readouterr().out
    assert "999,611" in out and "3,416" in out and "6,040" in out


def test_taobao_counts_match_source_md(shared_data, tmp_path):
    stats = run_prepare(tmp_path, "data=taobao", "check_batches=false")
    assert stats["event_types"] == {"view": 98_361, "cart": 6_063, "fav": 3_383, "purchase": 2_493}
    assert (stats["users"], stats["sessions"], stats["items"]) == (66_454, 70_977, 84_793)


def test_ml1m_ratings_with_item_filter_equals_sasrec_file(shared_data, tmp_path):
    stats = run_prepare(tmp_path, "data=ml1m_ratings", "check_batches=false")
    assert (stats["users"], stats["items"], stats["interactions"]) == (6_040, 3_416, 999_611)
    assert stats["preprocessing"]["rows read"] == 1_000_209


def test_csv_with_column_mapping(tmp_path):
    csv = tmp_path / "shop.csv"
    csv.write_text(
        "customer,sku,ts,kind\n"
        + "".join(
            f"c{u},p{(u * 7 + i) % 13},{1_700_000_000 + 60 * i},{'view' if i % 3 else 'cart'}\n"
            for u in range(20)
            for i in range(6)
        )
    )
    stats = run_prepare(
        tmp_path,
        "data=csv",
        f"data.path={csv}",
        "data.columns.user_id=customer",
        "data.columns.item_id=sku",
        "data.columns.timestamp=ts",
        "+data.columns.event_type=kind",
    )
    assert stats["users"] == 20 and stats["interactions"] == 120
    assert set(stats["event_types"]) == {"view", "cart"}


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("shopformer-data")
    env = {**os.environ, "SHOPFORMER_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [str(exe), *args, f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("user_id,timestamp\n1,5\n", ["missing column 'item_id'"]),
        ("user_id,item_id,timestamp\n1,4,5\n2,,6\n", ["'item_id'", "null ids", "line 3"]),
        ("user_id,item_id,timestamp\n1,4,5\n2,3,tomorrow\n", ["'timestamp'", "'tomorrow'"]),
    ],
)
def test_bad_csv_gives_one_clear_line(tmp_path, content, expected):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = cli(tmp_path, "data=csv", f"data.path={bad}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: {bad}")
    for fragment in expected:
        assert fragment in lines[0]
