"""The LightningModule: next-item or masked-item training and full-ranking evaluation of any model."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from torch import Tensor

from shopformer.models.base import SequenceRecommender
from shopformer.models.losses import NextItemLoss
from shopformer.models.ranking_metrics import FullRankingMetrics
from shopformer.train.base_module import OptimizerFactory, TrainingModule
from shopformer.train.schedule import LRSchedule


class RecommenderModule(TrainingModule):
    """Trains ``model`` with ``loss`` (next-item or masked-item targets); ranks the whole catalogue."""

    def __init__(
        self,
        model: SequenceRecommender,
        loss: NextItemLoss | None,
        optimizer: OptimizerFactory | None = None,
        schedule: LRSchedule | None = None,
        ks: Sequence[int] = (10, 20, 100),
        exclude_seen: bool = False,
        eval_chunk_size: int = 65536,
    ) -> None:
        super().__init__(model, loss, optimizer, schedule)
        self.save_hyperparameters(ignore=["model", "loss", "optimizer", "schedule"])
        self.ks = tuple(ks)
        self.metrics = {
            split: FullRankingMetrics(model.n_items, self.ks, eval_chunk_size, exclude_seen)
            for split in ("val", "test")
        }
        self.last_metrics: dict[str, dict[str, float]] = {}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        hidden = self.model(batch["item_ids"], **self.channels(batch))
        mask = batch["targets"] > 0
        loss = self.loss(hidden[mask], batch["targets"][mask], self.model.item_vectors())
        self.log("train/loss", loss, prog_bar=True, batch_size=int(mask.sum()))
        return loss

    def _eval_step(self, split: str, batch: dict[str, Tensor]) -> None:
        queries = self.model.encode(batch["item_ids"], **self.channels(batch))
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
            metrics = gathered(self, metrics)
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


def gathered(module: L.LightningModule, metrics: FullRankingMetrics) -> FullRankingMetrics:
    """Merge the accumulators of every rank (DDP) into one."""
    gathered = {k: module.all_gather(v.to(module.device)) for k, v in metrics.state().items()}
    merged = FullRankingMetrics(metrics.n_items, metrics.ks, metrics.chunk_size, metrics.exclude_seen)
    for rank in range(module.trainer.world_size):
        merged.merge({k: v[rank].cpu() for k, v in gathered.items()})
    return merged
