"""The LightningModule of the journey model: multi-task training, per-prefix evaluation of every head."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from shopformer.data.journey.batches import LABELS
from shopformer.models.journey.classification_metrics import JourneyPredictions, journey_metrics, tune_gamma
from shopformer.models.journey.loss import JourneyLoss, head_logits_to_probs
from shopformer.models.journey.model import JourneyModel
from shopformer.train.base_module import OptimizerFactory, TrainingModule
from shopformer.train.schedule import LRSchedule

SPLITS = ("val", "test")


class JourneyModule(TrainingModule):
    """Trains ``model`` with the multi-task ``loss`` (optimiser and schedule as every task's).

    Evaluation scores every labelled prefix at its last event and computes the metrics of
    :mod:`shopformer.models.journey.classification_metrics` once per epoch; ``<split>/loss`` is the
    weighted sum of the heads' log-losses (the training objective without the next-item term). Each
    validation sets the next-event decision ``gamma`` (best validation macro-F1); testing uses the latest
    one, so validate the checkpoint before testing it. The probabilities of the last evaluation stay in
    ``last_predictions`` (for plots and the baselines' comparison).
    """

    def __init__(
        self,
        model: JourneyModel,
        loss: JourneyLoss,
        prior: Sequence[float] | None = None,
        optimizer: OptimizerFactory | None = None,
        schedule: LRSchedule | None = None,
    ) -> None:
        super().__init__(model, loss, optimizer, schedule)
        self.save_hyperparameters(ignore=["model", "loss", "prior", "optimizer", "schedule"])
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        self.gamma = 0.0  # plain argmax until a validation has chosen one
        self._outputs: dict[str, list[dict[str, np.ndarray]]] = {split: [] for split in SPLITS}
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.last_predictions: dict[str, tuple[JourneyPredictions, dict[str, np.ndarray]]] = {}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        hidden = self.model(batch["item_ids"], **self.channels(batch))
        total, parts = self.loss(self.model, hidden, batch)
        size = int((batch["item_ids"] != 0).sum())
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        for name, value in parts.items():
            self.log(f"train/{name}_loss", value, batch_size=size)
        return total

    def _eval_step(self, split: str, batch: dict[str, Tensor]) -> None:
        hidden = self.model.encode(batch["item_ids"], **self.channels(batch))
        event, conversion, abandonment = head_logits_to_probs(self.model.heads(hidden, batch["item_ids"]))
        out = {"next_event_p": event, "conversion_p": conversion, "abandonment_p": abandonment}
        out.update({name: batch[name] for name in LABELS})
        self._outputs[split].append({k: v.detach().cpu().numpy() for k, v in out.items()})

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_epoch_end(self, split: str) -> None:
        outputs, self._outputs[split] = self._outputs[split], []
        if not outputs:
            return
        joined = {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}
        predictions = JourneyPredictions(
            joined["next_event_p"], joined["conversion_p"], joined["abandonment_p"]
        )
        labels = {name: joined[name] for name in LABELS}
        if split == "val":
            self.gamma = tune_gamma(predictions.next_event, labels["next_event"], self.prior)
        values = journey_metrics(predictions, **labels, prior=self.prior, gamma=self.gamma)
        values["loss"] = weighted_log_loss(values, self.loss.weights)
        self.last_metrics[split] = values
        self.last_predictions[split] = (predictions, labels)
        logged = {f"{split}/{k}": float(v) for k, v in values.items() if np.isfinite(v)}
        self.log_dict(logged)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


def weighted_log_loss(metrics: dict[str, float], weights: dict[str, float]) -> float:
    """The heads' log-losses summed with the training weights (heads without labels count 0)."""
    total = 0.0
    for head in ("next_event", "conversion", "abandonment"):
        value = metrics.get(f"{head}_log_loss", float("nan"))
        if weights.get(head, 0.0) > 0 and np.isfinite(value):
            total += weights[head] * value
    return total
