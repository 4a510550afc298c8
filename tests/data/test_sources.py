"""Every adapter on its real file in ../shared/data, checked against the counts in SOURCE.md."""

from __future__ import annotations

import pytest

from shopformer.data.schema import DataSourceNotFound
from shopformer.data.sources import (
    MovieLens100kSource,
    MovieLensChronoSource,
    S3RecTxtSource,
    SasrecTxtSource,
    TaobaoSource,
    YoochooseSource,
)


def counts(table) -> tuple[int, int, int]:
    ev = table.events
    key = "user_id" if "user_id" in ev else "session_id"
    return len(ev), ev[key].nunique(), ev["item_id"].nunique()


def test_sasrec_ml1m(shared_data):
    table = SasrecTxtSource().load()
    assert counts(table) == (999_611, 6_040, 3_416)
    assert not table.has_timestamps
    first_user = table.events[table.events["user_id"] == 1]
    assert list(first_user["timestamp"]) == list(range(len(first_user)))


def test_movielens_ratings_chrono(shared_data):
    table = MovieLensChronoSource().load()
    assert counts(table) == (1_000_209, 6_040, 3_706)
    assert not table.has_timestamps
    per_user = table.events.groupby("user_id")["timestamp"]
    assert (per_user.diff().dropna() == 1).all()


def test_movielens_100k_has_real_time(shared_data):
    table = MovieLens100kSource().load()
    assert counts(table) == (100_000, 943, 1_682)
    assert table.has_timestamps
    ts = table.events["timestamp"]
    assert ts.min() == 874724710 and ts.max() == 893286638  # 1997-09-20 .. 1998-04-22
    assert (table.events.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()


def test_movielens_100k_rating_filter_is_reported(shared_data):
    table = MovieLens100kSource(min_rating=4).load()
    assert len(table.events) == 34_174 + 21_201
    assert table.dropped == {"rating below 4": 6_110 + 11_370 + 27_145}


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("Beauty.txt", (198_502, 22_363, 12_101)),
        ("Sports_and_Outdoors.txt", (296_337, 35_598, 18_357)),
        ("Toys_and_Games.txt", (167_597, 19_412, 11_924)),
        ("Yelp.txt", (316_354, 30_431, 20_033)),
    ],
)
def test_s3rec_files(shared_data, file, expected):
    table = S3RecTxtSource(path=f"amazon-yelp-s3rec/{file}").load()
    assert counts(table) == expected
    assert not table.has_timestamps


def test_yoochoose(shared_data):
    table = YoochooseSource().load()
    ev = table.events
    assert len(ev) == 70_278 + 13_568
    assert ev["session_id"].nunique() == 17_794 + 3_416
    assert "user_id" not in ev and table.has_timestamps
    assert (ev.groupby("session_id")["timestamp"].diff().dropna() >= 0).all()


def test_taobao_event_types_and_categories(shared_data):
    table = TaobaoSource().load()
    ev = table.events
    assert counts(table) == (110_300, 66_454, 84_793)
    assert ev["event_type"].value_counts().to_dict() == {
        "view": 98_361,
        "cart": 6_063,
        "fav": 3_383,
        "purchase": 2_493,
    }
    assert table.items is not None and len(table.items) == 84_793
    assert table.items["category"].nunique() == 3_913


def test_missing_file_says_where_it_looked_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPFORMER_DATA", str(tmp_path))
    with pytest.raises(DataSourceNotFound) as info:
        SasrecTxtSource().load()
    message = str(info.value)
    assert str(tmp_path / "ml-1m" / "ml-1m.txt") in message
    assert "SHOPFORMER_DATA" in message and "kang205/SASRec" in message
