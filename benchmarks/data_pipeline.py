"""Data pipeline speed and memory: preprocessing + split of ML-1M, one epoch of batches, synthetic generation.

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/data_pipeline.py

Each measurement runs in a fresh child process, so its peak memory is its own.
Batches are compared side by side with a 2-layer self-attention forward pass
(d=64, 1 head, causal) over the same batches: the data side must be faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

CHILD = "--child"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_preprocess() -> dict:
    from shopformer.data.preprocess import PreprocessConfig
    from shopformer.data.sources import MovieLensChronoSource
    from shopformer.data.split import LeaveOneOut
    from shopformer.data.store import DatasetSpec, build

    base = peak_rss_mb()
    spec = DatasetSpec(
        "ml1m_ratings",
        MovieLensChronoSource(),
        preprocess=PreprocessConfig(dedupe_consecutive=False, min_item_count=5),
        split=LeaveOneOut(),
    )
    started = time.perf_counter()
    ds = build(spec)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
        "above_imports_mb": peak_rss_mb() - base,
        "events": int(len(ds.item)),
        "items": ds.n_items - 1,
    }


def measure_batches(max_len: int, batch_size: int) -> dict:
    import torch

    from shopformer.data.datamodule import SequenceDataModule
    from shopformer.data.sources import SasrecTxtSource
    from shopformer.data.store import DatasetSpec

    dm = SequenceDataModule(
        DatasetSpec("ml1m", SasrecTxtSource()), cache_dir=None, max_len=max_len, batch_size=batch_size
    )
    dm.setup()
    torch.manual_seed(0)
    started = time.perf_counter()
    batches = list(dm.train_dataloader())
    build_seconds = time.perf_counter() - started
    n_seq = sum(len(b["item_ids"]) for b in batches)

    encoder = reference_encoder(dm.n_items)
    with torch.inference_mode():
        encoder(batches[0]["item_ids"])  # warm-up
        started = time.perf_counter()
        for batch in batches:
            encoder(batch["item_ids"])
        forward_seconds = time.perf_counter() - started
    return {
        "batches": len(batches),
        "sequences": n_seq,
        "build_seconds": build_seconds,
        "forward_seconds": forward_seconds,
        "peak_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }


def reference_encoder(n_items: int, dim: int = 64, layers: int = 2):
    """A SASRec-sized causal self-attention stack, standing in as the batch consumer."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
            self.positions = nn.Embedding(512, dim)
            layer = nn.TransformerEncoderLayer(dim, 1, dim, dropout=0.0, batch_first=True)
            self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        def forward(self, ids):
            length = ids.shape[1]
            x = self.items(ids) + self.positions(torch.arange(length))
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
            return self.blocks(x, mask=causal)

    return Encoder().eval()


def measure_synthetic(n_users: int) -> dict:
    from shopformer.data.synthetic import SyntheticConfig, generate

    started = time.perf_counter()
    events, _ = generate(SyntheticConfig(n_users=n_users))
    return {"seconds": time.perf_counter() - started, "events": len(events), "peak_mb": peak_rss_mb()}


def child(name: str, args: argparse.Namespace) -> None:
    if name == "preprocess":
        result = measure_preprocess()
    elif name == "batches":
        result = measure_batches(args.max_len, args.batch_size)
    else:
        result = measure_synthetic(args.synthetic_users)
    print(json.dumps(result))


def run_child(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, CHILD, name, "--max-len", str(args.max_len)]
    cmd += ["--batch-size", str(args.batch_size), "--synthetic-users", str(args.synthetic_users)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(CHILD, dest="child")
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--synthetic-users", type=int, default=36_000)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return

    pre = run_child("preprocess", args)
    bat = run_child("batches", args)
    syn = run_child("synthetic", args)
    seq_per_s_build = bat["sequences"] / bat["build_seconds"]
    seq_per_s_fwd = bat["sequences"] / bat["forward_seconds"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {bat['threads']}; {time.strftime('%Y-%m-%d')}"
    )
    print("| step | time | throughput | peak RSS |")
    print("|---|---|---|---|")
    print(
        f"| ML-1M ratings_chrono -> preprocess (min item count 5) + leave-one-out "
        f"({pre['events']:,} events, {pre['items']:,} items) | {pre['seconds']:.2f} s | "
        f"{pre['events'] / pre['seconds'] / 1e6:.2f} M events/s | {pre['peak_mb']:.0f} MB "
        f"({pre['above_imports_mb']:.0f} MB above imports) |"
    )
    print(
        f"| one epoch of training batches, ML-1M, batch {args.batch_size}, max_len {args.max_len} "
        f"({bat['batches']} batches) | {bat['build_seconds']:.3f} s | {seq_per_s_build:,.0f} seq/s | "
        f"{bat['peak_mb']:.0f} MB |"
    )
    print(
        f"| same batches through a 2-layer causal self-attention forward (d=64, inference) | "
        f"{bat['forward_seconds']:.2f} s | {seq_per_s_fwd:,.0f} seq/s | |"
    )
    print(
        f"| synthetic generator | {syn['seconds']:.2f} s | {syn['events']:,} events "
        f"({syn['events'] / syn['seconds'] / 1e6:.2f} M/s) | {syn['peak_mb']:.0f} MB |"
    )
    print(
        f"batches are built {seq_per_s_build / seq_per_s_fwd:.0f}x faster than the forward pass consumes them"
    )


if __name__ == "__main__":
    main()
