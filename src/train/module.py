"""The LightningModule: next-item or masked-item training and full-ranking evaluation of any model.

Besides the metrics it keeps what the run's plots need (``train/run_plots.py``): the mean training
loss and validation NDCG@10 of every epoch (``learning_curve``), and the top-10 item ids of every test
query with its target (:meth:`RecommenderModule.test_recommendations`).

The business metrics (revenue, in-stock share, diversity, novelty @K) come with the accuracy ones when
the datamodule knows the item table: :meth:`RecommenderModule.attach_data` hands its attributes and
training counts to the accumulators at setup.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from shopformer.models.base import SequenceRecommender
from shopformer.models.business_metrics import ItemFacts
from shopformer.models.losses import NextItemLoss
from shopformer.models.query_ranks import QueryRanks
from shopformer.models.ranking_metrics import FullRankingMetrics
from shopformer.train.base_module import OptimizerFactory, TrainingModule
from shopformer.train.schedule import LRSchedule

RECOMMENDED_K = 10  # the test recommendations kept per query (popularity-bias plot)


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
        # epoch -> {"train/loss": mean over the epoch's steps, "val/ndcg_10": ...}, of this fit only
        self.learning_curve: dict[int, dict[str, float]] = {}
        self._loss_sum: Tensor | None = None  # this epoch's summed training loss (stays on the device)
        self._loss_steps = 0
        self._test_top: list[Tensor] = []
        self._test_targets: list[Tensor] = []
        # split -> the last evaluation's per-query (position, sequence, target, rank) batches
        self._query_ranks: dict[str, list[tuple[Tensor, ...]]] = {"val": [], "test": []}
        # The popularity baseline on the same validation queries (``popularity_val``: its metrics, from
        # the first validation of fitting): is the model learning more than item popularity?
        self.popularity_val: dict[str, float] = {}
        self._popularity: Tensor | None = None  # training counts per item id, [n_items, 1]
        self._popularity_metrics = FullRankingMetrics(model.n_items, (10,), eval_chunk_size, exclude_seen)

    def attach_data(self, datamodule) -> None:
        """Also give the evaluation the item attributes and training popularity (business metrics)."""
        super().attach_data(datamodule)
        if datamodule is None or not hasattr(datamodule, "item_attributes"):
            return
        counts = datamodule.train_item_counts()
        facts = ItemFacts.from_arrays(datamodule.item_attributes(), counts)
        for metrics in self.metrics.values():
            metrics.set_attributes(facts)
        if len(counts) == self.model.n_items:
            self._popularity = torch.as_tensor(counts, dtype=torch.float32).unsqueeze(1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        hidden = self.model(batch["item_ids"], **self.channels(batch))
        mask = batch["targets"] > 0
        loss = self.loss(hidden[mask], batch["targets"][mask], self.model.item_vectors())
        self.log("train/loss", loss, prog_bar=True, batch_size=int(mask.sum()))
        step_loss = loss.detach().float()  # summed without a device sync: read once per epoch
        self._loss_sum = step_loss if self._loss_sum is None else self._loss_sum + step_loss
        self._loss_steps += 1
        return loss

    def _eval_step(self, split: str, batch: dict[str, Tensor]) -> None:
        queries = self.model.encode(batch["item_ids"], **self.channels(batch))
        items = self.model.item_scorer()
        items = items.float() if isinstance(items, Tensor) else items  # or a catalogue scored by lookup
        ranks = self.metrics[split].update(queries.float(), items, batch["target"], batch.get("seen_items"))
        if "position" in batch:  # kept for a paired comparison of two runs query by query
            keys = (batch["position"], batch["seq_index"], batch["target"], ranks)
            self._query_ranks[split].append(tuple(t.to("cpu", torch.int64) for t in keys))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)
        if self._popularity is not None and not self.popularity_val and self._fitting():
            target = batch["target"]
            ones = torch.ones(len(target), 1, device=target.device)
            popularity = self._popularity.to(target.device)
            self._popularity_metrics.update(ones, popularity, target, batch.get("seen_items"))

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)
        top = self.metrics["test"].last_top  # the top-K the metrics ranked anyway: no second scoring
        self._test_top.append(top[:, :RECOMMENDED_K].to("cpu", torch.int32))
        self._test_targets.append(batch["target"].to("cpu", torch.int32))

    def on_test_epoch_start(self) -> None:
        self._test_top, self._test_targets = [], []
        self._query_ranks["test"] = []

    def on_validation_epoch_start(self) -> None:
        self._query_ranks["val"] = []

    def query_ranks(self, split: str = "test") -> QueryRanks | None:
        """Every query of the last ``split`` evaluation with its target's rank (this process's queries
        only under DDP); None when there was none."""
        parts = self._query_ranks[split]
        if not parts:
            return None
        return QueryRanks.of(*(torch.cat(column).numpy() for column in zip(*parts, strict=True)))

    def test_recommendations(self) -> tuple[np.ndarray, np.ndarray]:
        """Top-10 item ids [N, 10] (0: no item) and target ids [N] of the last test (this rank's queries)."""
        if not self._test_top:
            return np.zeros((0, RECOMMENDED_K), np.int32), np.zeros(0, np.int32)
        return torch.cat(self._test_top).numpy(), torch.cat(self._test_targets).numpy()

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_steps = None, 0  # not the steps precision=auto timed before fitting

    def on_train_epoch_end(self) -> None:
        if self._loss_sum is not None:
            mean = float(self._loss_sum) / self._loss_steps
            self.learning_curve.setdefault(self.current_epoch, {})["train/loss"] = mean

    def _eval_epoch_end(self, split: str) -> None:
        metrics = self.metrics[split]
        if self.trainer.world_size > 1:
            metrics = gathered(self, metrics)
        values = metrics.compute()
        self.metrics[split].reset()
        self.last_metrics[split] = values
        if split == "val" and self._fitting() and "ndcg@10" in values:
            self.learning_curve.setdefault(self.current_epoch, {})["val/ndcg_10"] = values["ndcg@10"]
            if not self.popularity_val:
                self.popularity_val = self._popularity_reference()
        # MLflow allows no '@' in metric names: ndcg@10 is logged as <split>/ndcg_10.
        logged = {f"{split}/{k.replace('@', '_')}": v for k, v in values.items() if k != "n"}
        self.log_dict(logged)

    def _popularity_reference(self) -> dict[str, float]:
        """The popularity baseline's metrics on the validation queries just seen ({} without any)."""
        metrics = self._popularity_metrics
        if self.trainer.world_size > 1:
            metrics = gathered(self, metrics)
        values = metrics.compute()
        self._popularity_metrics.reset()
        return values if values.get("n") else {}

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _fitting(self) -> bool:
        return self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking


def gathered(module: L.LightningModule, metrics: FullRankingMetrics) -> FullRankingMetrics:
    """Merge the accumulators of every rank (DDP) into one."""
    gathered = {k: module.all_gather(v.to(module.device)) for k, v in metrics.state().items()}
    merged = FullRankingMetrics(
        metrics.n_items, metrics.ks, metrics.chunk_size, metrics.exclude_seen, metrics.attributes
    )
    for rank in range(module.trainer.world_size):
        merged.merge({k: v[rank].cpu() for k, v in gathered.items()})
    return merged
