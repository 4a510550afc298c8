"""SASRec training / evaluation speed on ML-1M: seconds per epoch and sequences per second, side by side.

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/train_throughput.py [--epochs 1]

Configuration (issue 3): 2 blocks, 1 head, d=64, max_len 200, batch 128, dropout 0.2,
full softmax over all 3,416 items, one sequence per user per epoch, loss at every
non-padding position. Variants, each through Lightning's Trainer like a real run:

- naive: every batch padded to 200, random batches, logits materialised (``F.cross_entropy``)
- shopformer: batches trimmed to their longest history, length-bucketed, chunked fused CE
- shopformer + bf16: the same under ``precision="bf16-mixed"`` (CPU autocast)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import lightning as L
import torch
import torch.nn.functional as F

from shopformer.data.datamodule import SequenceDataModule
from shopformer.data.sources import SasrecTxtSource
from shopformer.data.store import DatasetSpec
from shopformer.models.losses import FullCrossEntropy, NextItemLoss
from shopformer.models.sasrec import SASRec
from shopformer.train.module import RecommenderModule


class MaterialisedCrossEntropy(NextItemLoss):
    """The textbook loss: full [N, n_items] logits, then cross entropy."""

    def forward(self, hidden, targets, items):
        logits = hidden @ items.T
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits.float(), targets)


def datamodule(optimised: bool, spec: DatasetSpec | None = None, max_len: int = 200) -> SequenceDataModule:
    dm = SequenceDataModule(
        spec or DatasetSpec("ml1m", SasrecTxtSource()),
        cache_dir=os.environ.get("SHOPFORMER_CACHE", ".cache/shopformer"),
        max_len=max_len,
        batch_size=128,
        eval_batch_size=512,
        trim_batches=optimised,
        length_bucketing=optimised,
    )
    dm.setup()
    return dm


def measure(
    name: str,
    optimised: bool,
    precision: str,
    epochs: int,
    accelerator: str = "cpu",
    compile: bool = False,
    spec: DatasetSpec | None = None,
    max_len: int = 200,
) -> dict:
    """One variant's training and evaluation speed (``spec``: another dataset, for dry runs)."""
    L.seed_everything(0, verbose=False)
    dm = datamodule(optimised, spec, max_len)
    model = SASRec(dm.n_items, dim=64, max_len=max_len, n_blocks=2, heads=1, dropout=0.2)
    if compile:
        model = torch.compile(model)
    loss = FullCrossEntropy() if optimised else MaterialisedCrossEntropy()
    module = RecommenderModule(model, loss)  # AdamW, lr 1e-3 (default_optimizer)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=epochs,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_seconds = (time.perf_counter() - started) / epochs
    positions = sum(int((b["targets"] > 0).sum()) for b in dm.train_dataloader())
    eval_trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    eval_trainer.validate(module, datamodule=dm, verbose=False)
    eval_seconds = time.perf_counter() - started
    return {
        "variant": name,
        "epoch_s": train_seconds,
        "train_seq_s": len(dm.train_set) / train_seconds,
        "positions_s": positions / train_seconds,
        "eval_seq_s": len(dm.valid_set) / eval_seconds,
        "val_ndcg10": module.last_metrics["val"]["ndcg@10"],
    }


def machine() -> str:
    """The processor (and GPU) the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"machine: {cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--accelerator", default="cpu", help="cpu | gpu")
    parser.add_argument("--compile", action="store_true", help="also a torch.compile'd bf16 variant")
    args = parser.parse_args()
    variants = [
        ("shopformer", True, "32-true", False),
        ("shopformer + bf16 autocast", True, "bf16-mixed", False),
    ]
    if args.compile:
        variants.append(("shopformer + bf16 + torch.compile", True, "bf16-mixed", True))
    if not args.skip_naive:
        variants.insert(0, ("naive (padded, materialised logits)", False, "32-true", False))
    rows = [
        measure(name, opt, precision, args.epochs, args.accelerator, compiled)
        for name, opt, precision, compiled in variants
    ]
    print(f"{machine()}; {time.strftime('%Y-%m-%d')}; epochs per variant: {args.epochs}")
    print("| variant | s / epoch | train seq/s | train positions/s | eval seq/s | val NDCG@10 after |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['epoch_s']:.1f} | {r['train_seq_s']:.0f} | {r['positions_s']:,.0f} | "
            f"{r['eval_seq_s']:.0f} | {r['val_ndcg10']:.4f} |"
        )
    base = rows[0]["epoch_s"]
    for r in rows[1:]:
        print(f"{r['variant']}: {base / r['epoch_s']:.2f}x the speed of {rows[0]['variant']}")


if __name__ == "__main__":
    main()
