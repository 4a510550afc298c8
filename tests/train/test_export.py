"""Export: ONNX parity with torch, the bundle format and its checks, FAISS top-K, MLflow registry, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mlflow
from shopformer.data.split import TRAIN
from shopformer.models.baselines import MostPopular, Transition
from shopformer.models.bert4rec import BERT4Rec
from shopformer.models.gru4rec import GRU4Rec
from shopformer.models.sasrec import SASRec
from shopformer.serve.bundle import MANIFEST_KEYS, BundleError, open_bundle, verify_bundle
from shopformer.serve.index import read_index, search
from shopformer.serve.onnx_session import onnx_session
from shopformer.train.bundle_export import eval_histories, export_bundle
from shopformer.train.checkpoint import checkpoint_config, load_checkpoint, restore_model
from shopformer.train.config import build_datamodule
from shopformer.train.export import main
from shopformer.train.onnx_export import (
    ExportError,
    encode_onnx,
    encode_torch,
    export_encoder,
    random_histories,
)
from tests.train.runs import compose_train

MAX_LEN = 20  # datamodule.max_len of the small runs
TOL = 1e-4


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    """400 synthetic users, 150 items, with the event-type and time-gap channels."""
    cfg = compose_train(tmp_path_factory.mktemp("data"), "datamodule.gap_buckets=true")
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    return datamodule


@pytest.fixture(scope="module")
def channel_bundle(dm, tmp_path_factory):
    """SASRec with event types and time gaps, exported as a whole bundle."""
    torch.manual_seed(0)
    model = SASRec(
        dm.n_items, dim=16, max_len=MAX_LEN, n_event_types=dm.n_event_types, n_gap_buckets=dm.n_gap_buckets
    )
    out = tmp_path_factory.mktemp("bundles") / "sasrec-channels"
    export_bundle(
        model,
        dm.data.item_vocab,
        out,
        name="test-sasrec",
        version="7",
        metrics={"test/ndcg_10": 0.5},
        event_vocab=dm.data.event_vocab,
        histories=eval_histories(dm),
        commit="abc",
    )
    return model.eval(), out


@pytest.fixture(scope="module")
def trained(sasrec_run):
    """The tracked SASRec run's model (restored from its checkpoint), datamodule and bundle."""
    summary, _ = sasrec_run
    checkpoint = load_checkpoint(summary["checkpoint"])
    cfg = checkpoint_config(checkpoint)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    return restore_model(checkpoint, cfg, datamodule), datamodule, Path(summary["bundle"]), summary


def assert_parity(model, session, min_len: int, real: dict[str, np.ndarray]) -> float:
    """ONNX == torch (< TOL) on random and real histories, several lengths and batch sizes."""
    worst = 0.0
    for length in sorted({min_len, 2, 11, MAX_LEN}):
        for batch in (1, 3, 64):
            cases = [random_histories(model, batch, length, seed=length * batch, pad=True)]
            cases.append({k: v[:batch, -length:] for k, v in real.items()})
            for histories in cases:
                diff = np.abs(encode_onnx(session, histories, min_len) - encode_torch(model, histories)).max()
                assert diff < TOL, (type(model).__name__, length, batch, diff)
                worst = max(worst, float(diff))
    # Left padding does not change the query: a history alone == the same history padded to max_len.
    short = random_histories(model, 3, 5, seed=1)
    padded = {k: np.pad(v, ((0, 0), (MAX_LEN - 5, 0))) for k, v in short.items()}
    np.testing.assert_allclose(encode_onnx(session, short), encode_onnx(session, padded), atol=TOL)
    return worst


# -- ONNX parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [BERT4Rec, GRU4Rec])
def test_onnx_parity_bert4rec_gru4rec(cls, dm, tmp_path):
    torch.manual_seed(0)
    model = cls(dm.n_items, dim=16, max_len=MAX_LEN, n_event_types=dm.n_event_types).eval()
    exported = export_encoder(model, tmp_path / "encoder.onnx", MAX_LEN)
    assert exported.inputs == ["item_ids", "event_types"] and exported.min_len == 1
    session = onnx_session(tmp_path / "encoder.onnx")
    assert [i.name for i in session.get_inputs()] == exported.inputs
    assert session.get_inputs()[0].shape[0] != 1 and isinstance(session.get_inputs()[0].shape[1], str)
    assert_parity(model, session, exported.min_len, eval_histories(dm, "valid", 64))


def test_onnx_parity_sasrec_with_channels(channel_bundle, dm):
    model, out = channel_bundle
    manifest = verify_bundle(out)
    assert manifest["inputs"] == ["item_ids", "event_types", "gap_buckets"]
    assert manifest["event_vocab"] == dm.data.event_vocab and manifest["event_vocab"][0] == "<pad>"
    session = onnx_session(out / "encoder.onnx")
    assert_parity(model, session, manifest["min_len"], eval_histories(dm, "valid", 64))
    assert manifest["export"]["parity_max_abs_diff"] < TOL
    assert manifest["index"]["recall"]["queries"] == "histories"


def test_onnx_parity_trained_sasrec(trained):
    model, datamodule, bundle, _ = trained
    manifest = verify_bundle(bundle)
    assert manifest["inputs"] == ["item_ids"] and manifest["max_len"] == MAX_LEN
    session = onnx_session(bundle / "encoder.onnx")
    assert_parity(model, session, manifest["min_len"], eval_histories(datamodule, "test", 64))


@pytest.mark.parametrize("cls", [MostPopular, Transition])
def test_baselines_export(cls, dm, tmp_path):
    data = dm.data
    model = cls(dm.n_items).fit(data.item[data.role == TRAIN], data.seq[data.role == TRAIN])
    ivf = cls is Transition  # 151-dim vectors: an IVF index with a measured recall
    out = export_bundle(
        model,
        data.item_vocab,
        tmp_path / "bundle",
        name="baseline",
        version="1",
        histories=eval_histories(dm),
        max_len=MAX_LEN,
        index_factory="IVF8,Flat" if ivf else "Flat",
        index_params={"nprobe": 2} if ivf else {},
    )
    bundle = open_bundle(out)
    assert bundle.manifest["model"]["class"] == cls.__name__ and bundle.manifest["inputs"] == ["item_ids"]
    assert bundle.manifest["export"]["parity_max_abs_diff"] < TOL
    recall = bundle.manifest["index"]["recall"]
    assert recall["k"] == 100 and 0.0 < recall["value"] <= 1.0 and recall["n_queries"] == len(dm.test_set)
    if ivf:
        assert bundle.manifest["index"]["params"] == {"nprobe": 2}
        assert read_index(out / "index.faiss").nprobe == 2  # search parameters travel in the file


def test_export_without_histories_and_refusals(dm, tmp_path):
    data = dm.data
    popular = MostPopular(dm.n_items).fit(data.item[data.role == TRAIN], data.seq[data.role == TRAIN])
    manifest = open_bundle(
        export_bundle(popular, data.item_vocab, tmp_path / "pop", name="p", version="1", max_len=MAX_LEN)
    ).manifest
    assert manifest["index"]["recall"]["queries"] == "item_vectors" and manifest["export"]["parity_n"] == 64
    with pytest.raises(ExportError, match="max_len"):
        export_bundle(popular, data.item_vocab, tmp_path / "x", name="p", version="1")
    with_events = SASRec(dm.n_items, dim=8, max_len=MAX_LEN, n_event_types=dm.n_event_types)
    with pytest.raises(ExportError, match="event_vocab"):
        export_bundle(with_events, data.item_vocab, tmp_path / "x", name="s", version="1")
    with pytest.raises(ExportError, match="another dataset"):
        export_bundle(
            SASRec(20, dim=8, max_len=MAX_LEN), data.item_vocab, tmp_path / "x", name="s", version="1"
        )
    assert not (tmp_path / "x").exists()


# -- the bundle --------------------------------------------------------------------------------------


def test_bundle_files_and_manifest(channel_bundle, dm):
    model, out = channel_bundle
    bundle = open_bundle(out)
    manifest = bundle.manifest
    assert set(MANIFEST_KEYS) <= set(manifest)
    assert (manifest["name"], manifest["version"], manifest["git_commit"]) == ("test-sasrec", "7", "abc")
    assert manifest["model"]["class"] == "SASRec" and manifest["metrics"] == {"test/ndcg_10": 0.5}
    assert (manifest["n_items"], manifest["dim"], manifest["max_len"]) == (dm.n_items, 16, MAX_LEN)
    assert isinstance(manifest["opset"], int) and manifest["opset"] >= 18
    assert manifest["index"]["factory"] == "Flat" and manifest["index"]["metric"] == "inner_product"
    assert manifest["index"]["recall"]["value"] == 1.0
    listed = {p.name for p in out.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == listed == {"encoder.onnx", "items.npy", "index.faiss", "vocab.parquet"}
    for name, entry in manifest["files"].items():
        content = (out / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    items = np.load(out / "items.npy", allow_pickle=False)
    assert items.dtype == np.float32 and items.flags.c_contiguous
    np.testing.assert_array_equal(items, model.item_vectors().detach().numpy())
    vocab = bundle.vocab
    assert list(vocab.columns[:2]) == ["item", "item_id"] and {"category", "price", "in_stock"} <= set(vocab)
    assert vocab["item"].dtype == np.int64
    assert vocab["item_id"].tolist() == dm.data.item_vocab["item_id"].tolist()
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary directory left


def test_tampered_or_incomplete_bundle_is_refused(channel_bundle, tmp_path):
    _, out = channel_bundle
    tampered = shutil.copytree(out, tmp_path / "tampered")
    data = bytearray((tampered / "items.npy").read_bytes())
    data[-1] ^= 0x01
    (tampered / "items.npy").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="items.npy"):
        open_bundle(tampered)
    incomplete = shutil.copytree(out, tmp_path / "incomplete")
    (incomplete / "index.faiss").unlink()
    with pytest.raises(BundleError, match="index.faiss"):
        open_bundle(incomplete)


def test_existing_directory_is_not_overwritten(channel_bundle, dm):
    model, out = channel_bundle
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(model, dm.data.item_vocab, out, name="x", version="1")
    verify_bundle(out)


def test_flat_index_top_k_equals_torch_full_ranking(trained):
    model, datamodule, bundle_dir, _ = trained
    bundle = open_bundle(bundle_dir)
    histories = eval_histories(datamodule, "test", 1000)
    queries = encode_onnx(onnx_session(bundle.encoder_path), histories, bundle.manifest["min_len"])
    scores, ids = search(read_index(bundle_dir / "index.faiss"), queries, 20)
    with torch.no_grad():
        full = model.score(torch.from_numpy(histories["item_ids"]))
    full[:, 0] = -torch.inf  # padding is never recommended (not in the index)
    expected_scores, expected_ids = full.topk(20, dim=1)
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-4)
    differ = (ids != expected_ids.numpy()).any(axis=1)
    # Ids agree except where two scores tie to float precision (their order is arbitrary).
    near_tie = (np.diff(expected_scores.numpy(), axis=1) > -1e-5).any(axis=1)
    assert not (differ & ~near_tie).any() and differ.mean() < 0.05


# -- training run, MLflow, CLI ----------------------------------------------------------------------


def test_training_run_exports_logs_and_registers(trained, mlflow_store, tmp_path):
    _, _, bundle_dir, summary = trained
    assert summary["bundle"] == str(bundle_dir) and bundle_dir.name == "bundle"
    manifest = verify_bundle(bundle_dir)
    registered = summary["registered_model"]
    assert registered["name"] == "shopformer-train" and registered["alias"] == "champion"
    assert (manifest["name"], manifest["version"]) == (registered["name"], registered["version"])
    assert manifest["run_id"] == summary["run_id"] and manifest["metrics"]["test/ndcg_10"] == pytest.approx(
        summary["test"]["ndcg@10"], abs=1e-6
    )
    client = mlflow.MlflowClient()
    logged = {Path(a.path).name for a in client.list_artifacts(summary["run_id"], "bundle")}
    assert logged == {"manifest.json", *manifest["files"]}
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.run_id == summary["run_id"] and version.source == f"runs:/{summary['run_id']}/bundle"
    for uri in (registered["uri"], f"models:/{registered['name']}@champion"):
        target = tmp_path / uri.replace(":", "_").replace("/", "_").replace("@", "_")
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
        assert verify_bundle(local)["version"] == registered["version"]
    tags = client.get_run(summary["run_id"]).data.tags
    assert tags["registered_model"] == f"{registered['name']}/{registered['version']}"


def test_export_cli_writes_an_hnsw_bundle(sasrec_run, tmp_path, capsys, monkeypatch):
    summary, run_tmp = sasrec_run
    out = tmp_path / "hnsw"
    argv = [
        "shopformer-export",
        f"ckpt={summary['checkpoint']}",
        f"out={out}",
        "index=hnsw",
        "index.params.efSearch=64",
        "version=v1",
        f"paths.cache_dir={run_tmp / 'cache'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # stdout holds the JSON line only (the exporter's chatter goes elsewhere)
    line = json.loads(lines[0])
    assert line["bundle"] == str(out) and line["version"] == "v1" and line["name"] == "shopformer-train"
    manifest = verify_bundle(out)
    assert manifest["index"]["factory"] == "HNSW64"
    assert manifest["index"]["params"] == {"efSearch": 64, "efConstruction": 200}
    assert manifest["index"]["recall"]["value"] > 0.8
    assert manifest["metrics"] and all(k.startswith("val/") for k in manifest["metrics"])
    assert manifest["git_commit"] == verify_bundle(summary["bundle"])["git_commit"]


def test_export_cli_bad_index_is_one_line_error(sasrec_run, tmp_path):
    summary, run_tmp = sasrec_run
    exe = Path(sys.executable).with_name("shopformer-export")
    args = [
        f"ckpt={summary['checkpoint']}",
        f"out={tmp_path / 'bad'}",
        "index.factory=Bogus99",
        f"paths.cache_dir={run_tmp / 'cache'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "Bogus99" in last
    assert not (tmp_path / "bad").exists()


def test_serving_loads_the_registered_bundle_and_agrees_with_torch(trained):
    from shopformer.serve.recommender import Recommender

    model, datamodule, _, summary = trained
    recommender = Recommender.load(f"models:/{summary['registered_model']['name']}@champion")
    histories = eval_histories(datamodule, "test", 5)["item_ids"]
    raw = datamodule.data.item_vocab["item_id"].to_numpy()
    for history in histories:
        known = history[history > 0]
        served = recommender.recommend(raw[known - 1].tolist(), k=10, exclude_seen=False)
        with torch.no_grad():
            scores = model.score(torch.from_numpy(known[None]))[0]
        scores[0] = -torch.inf
        assert [item for item, _ in served.items] == raw[scores.topk(10).indices.numpy() - 1].tolist()
