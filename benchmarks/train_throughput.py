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


def datamodule(optimised: bool) -> SequenceDataModule:
    dm = SequenceDataModule(
        DatasetSpec("ml1m", SasrecTxtSource()),
        cache_dir=os.environ.get("SHOPFORMER_CACHE", ".cache/shopformer"),
        max_len=200,
        batch_size=128,
        eval_batch_size=512,
        trim_batches=optimised,
        length_bucketing=optimised,
    )
    dm.setup()
    return dm


def measure(name: str, optimised: bool, precision: str, epochs: int) -> dict:
    L.seed_everything(0, verbose=False)
    dm = datamodule(optimised)
    model = SASRec(dm.n_items, dim=64, max_len=200, n_blocks=2, heads=1, dropout=0.2)
    loss = FullCrossEntropy() if optimised else MaterialisedCrossEntropy()
    module = RecommenderModule(model, loss)  # AdamW, lr 1e-3 (default_optimizer)
    trainer = L.Trainer(
        accelerator="cpu",
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
        accelerator="cpu",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    variants = [("shopformer", True, "32-true"), ("shopformer + bf16 autocast", True, "bf16-mixed")]
    if not args.skip_naive:
        variants.insert(0, ("naive (padded, materialised logits)", False, "32-true"))
    rows = [measure(name, opt, precision, args.epochs) for name, opt, precision in variants]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {time.strftime('%Y-%m-%d')}; epochs per variant: {args.epochs}"
    )
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
