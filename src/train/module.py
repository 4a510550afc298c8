"""The LightningModule: next-item or masked-item training and full-ranking evaluation of any model."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor

from shopformer.models.base import SequenceRecommender
from shopformer.models.losses import NextItemLoss
from shopformer.models.metrics import FullRankingMetrics
from shopformer.train.schedule import check_decay_start, lr_factor

CHANNELS = ("event_types", "gap_buckets")


class RecommenderModule(L.LightningModule):
    """Trains ``model`` with ``loss`` (AdamW, warm-up, constant, cosine decay); ranks the whole catalogue."""

    def __init__(
        self,
        model: SequenceRecommender,
        loss: NextItemLoss | None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.98),
        warmup_steps: int = 0,
        cosine: bool = False,
        min_lr_ratio: float = 0.0,
        decay_start: float = 0.0,
        ks: Sequence[int] = (10, 20, 100),
        exclude_seen: bool = False,
        eval_chunk_size: int = 65536,
    ) -> None:
        super().__init__()
        check_decay_start(decay_start)
        self.model, self.loss = model, loss
        self.save_hyperparameters(ignore=["model", "loss"])
        self.ks = tuple(ks)
        self.metrics = {
            split: FullRankingMetrics(model.n_items, self.ks, eval_chunk_size, exclude_seen)
            for split in ("val", "test")
        }
        self.last_metrics: dict[str, dict[str, float]] = {}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.loss is not None and datamodule is not None and hasattr(datamodule, "train_item_counts"):
            self.loss.set_item_counts(torch.as_tensor(datamodule.train_item_counts(), dtype=torch.float32))

    def _channels(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {name: batch[name] for name in CHANNELS if name in batch}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        hidden = self.model(batch["item_ids"], **self._channels(batch))
        mask = batch["targets"] > 0
        loss = self.loss(hidden[mask], batch["targets"][mask], self.model.item_vectors())
        self.log("train/loss", loss, prog_bar=True, batch_size=int(mask.sum()))
        return loss

    def _eval_step(self, split: str, batch: dict[str, Tensor]) -> None:
        queries = self.model.encode(batch["item_ids"], **self._channels(batch))
        self.metrics[split].update(
            queries.float(), self.model.item_vectors().float(), batch["target"], batch.get("seen_items")
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_epoch_end(self, split: str) -> None:
        metrics = self.metrics[split]
        if self.trainer.world_size > 1:
            metrics = _gathered(self, metrics)
        values = metrics.compute()
        self.metrics[split].reset()
        self.last_metrics[split] = values
        # MLflow allows no '@' in metric names: ndcg@10 is logged as <split>/ndcg_10.
        logged = {f"{split}/{k.replace('@', '_')}": v for k, v in values.items() if k != "n"}
        self.log_dict(logged)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain containers only, so the checkpoint loads with torch.load(weights_only=True).
        checkpoint["shopformer_config"] = getattr(self, "shopformer_config", None)
        checkpoint["shopformer_git_commit"] = getattr(self, "shopformer_git_commit", None)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return None
        hp = self.hparams
        optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        if not hp.warmup_steps and not hp.cosine:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        trainer = self.trainer

        def factor(_: int) -> float:
            # The trainer's global step, not the scheduler's own count: a run resumed from a
            # checkpoint saved without a scheduler (constant lr) still decays at the right step.
            return lr_factor(
                trainer.global_step,
                total,
                hp.warmup_steps,
                hp.cosine,
                hp.min_lr_ratio,
                hp.get("decay_start", 0.0),
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _gathered(module: L.LightningModule, metrics: FullRankingMetrics) -> FullRankingMetrics:
    """Merge the accumulators of every rank (DDP) into one."""
    gathered = {k: module.all_gather(v.to(module.device)) for k, v in metrics.state().items()}
    merged = FullRankingMetrics(metrics.n_items, metrics.ks, metrics.chunk_size, metrics.exclude_seen)
    for rank in range(module.trainer.world_size):
        merged.merge({k: v[rank].cpu() for k, v in gathered.items()})
    return merged
