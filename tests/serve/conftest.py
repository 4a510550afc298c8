"""Small serving bundles built without torch: a hand-made ONNX encoder over random item vectors.

The encoder is ``query = mean over non-pad positions of (E[item] + T[event] + G[gap]) + E[last item]``
with ``E`` = the bundle's item table, so a numpy reference (:meth:`TestBundle.query`) is exact and
the last-item term makes left padding matter. Reused by other tests through :func:`make_bundle`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from shopformer.data.features import N_GAP_BUCKETS, gap_buckets
from shopformer.serve.bundle import read_manifest, write_manifest
from shopformer.serve.index import build_index, write_index

EVENT_VOCAB = ["<pad>", "view", "cart", "purchase"]
CATEGORIES = ["c0", "c1", "c2", "c3", "c4", "c5"]


@dataclass
class TestBundle:
    """A bundle directory and what a numpy reference needs to score it."""

    __test__ = False  # not a test class

    path: Path
    items: np.ndarray  # [n_items, D], row 0 zero
    events: np.ndarray | None  # [len(EVENT_VOCAB), D]
    gaps: np.ndarray | None  # [N_GAP_BUCKETS, D]
    vocab: pd.DataFrame
    max_len: int

    @property
    def raw_ids(self) -> np.ndarray:
        return self.vocab["item_id"].to_numpy()

    def internal(self, raw: list) -> np.ndarray:
        lookup = {r: i + 1 for i, r in enumerate(self.raw_ids.tolist())}
        return np.array([lookup[r] for r in raw], dtype=np.int64)

    def query(
        self, raw: list, events: list[str] | None = None, stamps: list[int] | None = None
    ) -> np.ndarray:
        """The encoder's output for a history of known raw ids, in numpy."""
        ids = self.internal(raw)
        tokens = self.items[ids]
        if self.events is not None:
            names = events or ["view"] * len(ids)
            tokens = tokens + self.events[[EVENT_VOCAB.index(n) for n in names]]
        if self.gaps is not None:
            starts = np.zeros(len(ids), dtype=bool)
            starts[0] = True
            tokens = tokens + self.gaps[gap_buckets(np.asarray(stamps), starts)]
        tokens = tokens[-self.max_len :]
        return (tokens.mean(axis=0) + self.items[ids[-1]]).astype(np.float32)

    def top_k(self, query: np.ndarray, k: int, exclude=(), mask=None, boost=None) -> list:
        """Brute-force top-k raw ids over the whole catalogue (optionally masked / boosted)."""
        scores = (self.items[1:] @ query).astype(np.float64)
        if boost is not None:
            scores = scores + boost
        eligible = np.ones(len(scores), dtype=bool) if mask is None else mask.copy()
        eligible[np.asarray(list(exclude), dtype=np.int64) - 1] = False
        order = [i for i in np.argsort(-scores, kind="stable") if eligible[i]]
        return [self.raw_ids[i] for i in order[:k]]


def encoder_graph(items: np.ndarray, events: np.ndarray | None, gaps: np.ndarray | None) -> onnx.ModelProto:
    """ONNX (opset 18) for the encoder described in the module docstring."""
    inputs, inits, nodes, terms = [], [numpy_helper.from_array(items, "E")], [], ["emb_item"]
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    inits += [axes, one]
    for name, table, key in (
        ("item_ids", items, "E"),
        ("event_types", events, "T"),
        ("gap_buckets", gaps, "G"),
    ):
        if table is None:
            continue
        inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"]))
        if key != "E":
            inits.append(numpy_helper.from_array(table, key))
            terms.append(f"emb_{key}")
        nodes.append(helper.make_node("Gather", [key, name], ["emb_item" if key == "E" else f"emb_{key}"]))
    total = terms[0]
    for j, term in enumerate(terms[1:]):
        nodes.append(helper.make_node("Add", [total, term], [f"sum{j}"]))
        total = f"sum{j}"
    starts = numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_start")
    ends = numpy_helper.from_array(np.array([2**62], dtype=np.int64), "last_end")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    inits += [starts, ends, zero]
    nodes += [
        helper.make_node("ReduceSum", [total, "axis1"], ["pooled"], keepdims=0),
        helper.make_node("Greater", ["item_ids", "zero"], ["is_item"]),
        helper.make_node("Cast", ["is_item"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["pooled", "count1"], ["mean"]),
        helper.make_node("Slice", ["item_ids", "last_start", "last_end", "axis1"], ["last_id"]),
        helper.make_node("Gather", ["E", "last_id"], ["last_emb"]),
        helper.make_node("ReduceSum", ["last_emb", "axis1"], ["last"], keepdims=0),
        helper.make_node("Add", ["mean", "last"], ["query"]),
    ]
    output = helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", items.shape[1]])
    graph = helper.make_graph(nodes, "handmade_encoder", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def make_bundle(
    path: Path,
    *,
    n_items: int = 300,
    dim: int = 16,
    max_len: int = 20,
    journey: bool = False,
    str_ids: bool = False,
    seed: int = 0,
    version: str = "1",
    drop_attributes: tuple[str, ...] = (),
) -> TestBundle:
    """Write a complete, hashed bundle to ``path`` (``journey``: the encoder also takes event types
    and gap buckets; ``str_ids``: raw ids are strings ``sku-0001``...)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    items = rng.normal(size=(n_items, dim)).astype(np.float32)
    items[0] = 0.0
    events = gaps = None
    if journey:
        events = rng.normal(scale=0.5, size=(len(EVENT_VOCAB), dim)).astype(np.float32)
        gaps = rng.normal(scale=0.5, size=(N_GAP_BUCKETS, dim)).astype(np.float32)
        events[0] = gaps[0] = 0.0
    onnx.save(encoder_graph(items, events, gaps), path / "encoder.onnx")
    np.save(path / "items.npy", items)
    write_index(build_index(items, "Flat"), path / "index.faiss")
    internal = np.arange(1, n_items)
    raw = [f"sku-{i:04d}" for i in internal] if str_ids else (1000 + 3 * internal).tolist()
    price = rng.uniform(1, 100, size=n_items - 1)
    price[::17] = np.nan  # some items have no price
    vocab = pd.DataFrame(
        {
            "item": internal.astype(np.int32),
            "item_id": raw,
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in internal],
            "price": price,
            "in_stock": rng.random(n_items - 1) < 0.8,
            "new_arrival": rng.random(n_items - 1) < 0.15,
        }
    ).drop(columns=list(drop_attributes))
    vocab.to_parquet(path / "vocab.parquet", index=False)
    inputs = ["item_ids", "event_types", "gap_buckets"] if journey else ["item_ids"]
    write_manifest(
        path,
        {
            "name": "handmade-journey" if journey else "handmade",
            "version": version,
            "created": "2026-01-01T00:00:00Z",
            "git_commit": "test",
            "model": {"class": "HandMade", "config": {"dim": dim}},
            "metrics": {},
            "n_items": n_items,
            "dim": dim,
            "max_len": max_len,
            "min_len": 2,
            "opset": 18,
            "inputs": inputs,
            "event_vocab": EVENT_VOCAB if journey else [],
            "index": {"factory": "Flat", "metric": "inner_product", "params": {}, "recall": None},
        },
    )
    return TestBundle(path, items, events, gaps, vocab, max_len)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> TestBundle:
    """Integer raw ids, encoder over item ids only."""
    return make_bundle(tmp_path_factory.mktemp("bundles") / "plain")


@pytest.fixture(scope="session")
def journey_bundle(tmp_path_factory) -> TestBundle:
    """String raw ids, encoder over item ids, event types and time-gap buckets."""
    return make_bundle(tmp_path_factory.mktemp("bundles") / "journey", journey=True, str_ids=True, seed=1)


@pytest.fixture(scope="session")
def recommender(bundle):
    from shopformer.serve.recommender import Recommender

    return Recommender.load(bundle.path)


@pytest.fixture(scope="session")
def journey_recommender(journey_bundle):
    from shopformer.serve.recommender import Recommender

    return Recommender.load(journey_bundle.path)


def journey_graph(bundle: TestBundle, heads: np.ndarray) -> onnx.ModelProto:
    """mean over real tokens of E[item] + T[event] + G[gap] -> softmax(h @ heads[:, :3]), sigmoid(...)."""
    inits = [
        numpy_helper.from_array(bundle.items, "E"),
        numpy_helper.from_array(bundle.events, "T"),
        numpy_helper.from_array(bundle.gaps, "G"),
        numpy_helper.from_array(heads, "W"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([3, 1, 1], dtype=np.int64), "split3"),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("item_ids", "event_types", "gap_buckets")
    ]
    nodes = [
        helper.make_node("Gather", ["E", "item_ids"], ["e"]),
        helper.make_node("Gather", ["T", "event_types"], ["t"]),
        helper.make_node("Gather", ["G", "gap_buckets"], ["g"]),
        helper.make_node("Add", ["e", "t"], ["et"]),
        helper.make_node("Add", ["et", "g"], ["tokens"]),
        helper.make_node("ReduceSum", ["tokens", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("Greater", ["item_ids", "zero"], ["is_item"]),
        helper.make_node("Cast", ["is_item"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["pooled", "count1"], ["mean"]),
        helper.make_node("MatMul", ["mean", "W"], ["logits"]),
        helper.make_node("Split", ["logits", "split3"], ["z_event", "z_conv", "z_aband"], axis=1),
        helper.make_node("Softmax", ["z_event"], ["event_probs"], axis=1),
        helper.make_node("Sigmoid", ["z_conv"], ["p_conv"]),
        helper.make_node("Sigmoid", ["z_aband"], ["p_aband"]),
        helper.make_node("Squeeze", ["p_conv", "axis1"], ["conversion"]),
        helper.make_node("Squeeze", ["p_aband", "axis1"], ["abandonment"]),
    ]
    outputs = [
        helper.make_tensor_value_info("event_probs", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("conversion", TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info("abandonment", TensorProto.FLOAT, ["batch"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "journey", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def scored_journey(journey_bundle, tmp_path_factory):
    """(bundle with journey.onnx, its heads matrix, a Recommender on it)."""
    from shopformer.serve.recommender import Recommender

    path = tmp_path_factory.mktemp("journey") / "bundle"
    shutil.copytree(journey_bundle.path, path)
    heads = np.random.default_rng(5).normal(size=(journey_bundle.items.shape[1], 5)).astype(np.float32)
    onnx.save(journey_graph(journey_bundle, heads), path / "journey.onnx")
    manifest = read_manifest(path)
    manifest["journey"] = {"event_classes": EVENT_VOCAB[1:], "min_len": 1, "labels": {"cart_event": "cart"}}
    write_manifest(path, manifest)
    return journey_bundle, heads, Recommender.load(path), path
