"""Checkpoints and bundles written before the restructure (commit 85a0e90) still load, evaluate,
export and serve. The fixtures in tests/fixtures/legacy_85a0e90 were made by its make.sh with that
commit's code: a tiny SASRec and a tiny journey model on the synthetic data, with their run lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class

from shopformer.serve.bundle import verify_bundle
from shopformer.serve.recommender import Recommender
from shopformer.train.checkpoint import checkpoint_config, load_checkpoint
from shopformer.train.config import CONF_DIR
from shopformer.train.evaluate import evaluate
from shopformer.train.export import export_checkpoint

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_85a0e90"
SESSION = {"items": None, "event_types": ["view", "view", "cart"], "timestamps": [1000, 1060, 1200]}


def run_line(name: str) -> dict:
    return json.loads((LEGACY / f"{name}_run.json").read_text())


@pytest.mark.parametrize("name", ["sasrec", "journey"])
def test_old_checkpoints_load_into_todays_config_shape(name):
    cfg = checkpoint_config(load_checkpoint(LEGACY / f"{name}.ckpt"))
    assert "module" in cfg and "task" in cfg and "lit_module" in cfg  # upgraded, the old node kept
    assert get_class(cfg.task._target_).name == ("journey" if name == "journey" else "next_item")
    assert cfg.optimizer.lr == cfg.module.lr
    # The _target_ paths the old config names still resolve (re-exports where code moved).
    for node in ("model", "datamodule"):
        assert get_class(cfg[node]._target_)
    if name == "journey":
        assert get_class(cfg.datamodule._target_).__module__ == "shopformer.data.journey.datamodule"
        assert get_class(cfg.datamodule.split._target_) and get_class(cfg.datamodule.labels._target_)


def test_old_sasrec_checkpoint_evaluates_to_its_own_test_metrics(tmp_path):
    result = evaluate(LEGACY / "sasrec.ckpt", "test", ["all_items"], "cpu", str(tmp_path))
    expected = run_line("sasrec")["test"]
    for key in ("hr@10", "ndcg@10", "mrr@20", "hr@100", "coverage@10"):
        assert result["all_items"][key] == pytest.approx(expected[key], abs=1e-6)


def test_old_journey_checkpoint_evaluates_to_its_own_test_metrics(tmp_path):
    result = evaluate(LEGACY / "journey.ckpt", "test", ["all_items"], "cpu", str(tmp_path))
    expected = run_line("journey")["test"]
    for key in ("conversion_roc_auc", "next_event_macro_f1", "abandonment_roc_auc", "conversion_log_loss"):
        assert result["heads"][key] == pytest.approx(expected[key], abs=1e-6)


# the journey export (17 s: ONNX export and parity of three heads) runs with -m slow; SASRec's always
@pytest.mark.parametrize("name", ["sasrec", pytest.param("journey", marks=pytest.mark.slow)])
def test_old_checkpoints_export_to_a_bundle_that_serves(name, tmp_path):
    ckpt, out = LEGACY / f"{name}.ckpt", tmp_path / "bundle"
    overrides = [f"ckpt={ckpt}", f"out={out}", f"paths.cache_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        summary = export_checkpoint(compose("export", overrides=overrides))
    manifest = verify_bundle(summary["bundle"])
    assert ("journey" in manifest) == (name == "journey")
    old = json.loads((LEGACY / f"{name}_bundle" / "manifest.json").read_text())
    assert manifest["n_items"] == old["n_items"] and manifest["inputs"] == old["inputs"]
    answer_a_session(Path(summary["bundle"]), journey=name == "journey")


@pytest.mark.parametrize("name", ["sasrec", "journey"])
def test_old_bundles_verify_and_serve(name):
    bundle = LEGACY / f"{name}_bundle"
    verify_bundle(bundle)
    answer_a_session(bundle, journey=name == "journey")


def answer_a_session(bundle: Path, journey: bool) -> None:
    rec = Recommender.load(bundle)
    raw = rec.raw_ids[:3].tolist()
    session = {**SESSION, "items": raw} if "event_types" in rec.inputs else {"items": raw}
    answer = rec.recommend(**session, k=5)
    assert len(answer.items) == 5 and not answer.unknown_items
    if journey:
        (score,) = rec.journey_batch([session])
        assert score.event_probs and sum(score.event_probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= score.conversion <= 1.0
