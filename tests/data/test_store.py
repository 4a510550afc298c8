"""The processed-dataset cache: Parquet + vocab + meta.json, keyed by config hash, no pickle."""

from __future__ import annotations

import json

import numpy as np

from shopformer.data.preprocess import PreprocessConfig
from shopformer.data.sources import SyntheticSource, TabularSource
from shopformer.data.split import Temporal
from shopformer.data.store import DatasetSpec, load_or_build


def spec(**kw) -> DatasetSpec:
    return DatasetSpec("syn", SyntheticSource(n_users=200, n_items=150, seed=1), **kw)


def test_second_run_loads_from_cache_and_round_trips(tmp_path):
    first, path, cached = load_or_build(spec(), tmp_path)
    assert not cached and path.parent == tmp_path
    assert sorted(p.name for p in path.iterdir()) == [
        "events.parquet",
        "meta.json",
        "sequences.parquet",
        "vocab.parquet",
    ]
    second, path2, cached2 = load_or_build(spec(), tmp_path)
    assert cached2 and path2 == path
    for name in ("seq", "item", "event", "ts", "session", "role"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert second.item_vocab.equals(first.item_vocab)
    assert second.meta["event_vocab"] == first.meta["event_vocab"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["config_hash"] in path.name


def test_changed_config_rebuilds(tmp_path):
    _, a, _ = load_or_build(spec(), tmp_path)
    _, b, cached = load_or_build(spec(preprocess=PreprocessConfig(min_item_count=3)), tmp_path)
    _, c, _ = load_or_build(spec(split=Temporal()), tmp_path)
    assert not cached and len({a, b, c}) == 3


def test_changed_input_file_rebuilds(tmp_path):
    csv = tmp_path / "events.csv"
    csv.write_text("user_id,item_id,timestamp\n1,1,1\n1,2,2\n1,3,3\n")
    s = DatasetSpec("csv", TabularSource(path=str(csv)))
    _, first, _ = load_or_build(s, tmp_path / "cache")
    csv.write_text("user_id,item_id,timestamp\n1,1,1\n1,2,2\n1,3,3\n1,4,4\n")
    ds, second, cached = load_or_build(s, tmp_path / "cache")
    assert not cached and first != second and len(ds.item) == 4


def test_cache_has_no_pickles(tmp_path):
    _, path, _ = load_or_build(spec(), tmp_path)
    for file in path.iterdir():
        head = file.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"\x80\x05", f"{file} looks like a pickle"


def test_synthetic_cache_key_follows_the_generator_version(monkeypatch):
    from shopformer.data import sources
    from shopformer.data.sources import SyntheticSource

    spec = DatasetSpec("syn", SyntheticSource(n_users=50, seed=1))
    before = spec.config_hash()
    monkeypatch.setattr(sources, "GENERATOR_VERSION", sources.GENERATOR_VERSION + 1)
    assert spec.config_hash() != before
