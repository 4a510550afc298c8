"""The journey model's multi-task loss: a weighted sum of per-head means over the labelled positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shopformer.data.journey.labels import IGNORE
from shopformer.models.journey.model import JourneyModel
from shopformer.models.losses import NextItemLoss

HEADS = ("next_event", "conversion", "abandonment", "next_item")


class JourneyLoss(nn.Module):
    """``sum_h weight_h * mean loss of head h`` over positions where head h has a label.

    Cross-entropy for the next event type, binary cross-entropy for conversion and abandonment,
    and ``item_loss`` (any next-item loss) for the next item when its weight is above 0. A head
    with no label in the batch adds nothing (a zero that keeps the graph connected).
    """

    def __init__(
        self,
        next_event: float = 1.0,
        conversion: float = 1.0,
        abandonment: float = 1.0,
        next_item: float = 0.0,
        item_loss: NextItemLoss | None = None,
    ) -> None:
        super().__init__()
        self.weights = {"next_event": next_event, "conversion": conversion, "abandonment": abandonment}
        self.weights["next_item"] = next_item
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"journey loss weights must be >= 0, got {self.weights}")
        if next_item > 0 and item_loss is None:
            raise ValueError("a next_item weight above 0 needs an item_loss")
        self.item_loss = item_loss

    def set_item_counts(self, counts: Tensor) -> None:
        if self.item_loss is not None:
            self.item_loss.set_item_counts(counts)

    def forward(
        self, model: JourneyModel, hidden: Tensor, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(weighted total, per-head mean losses) for hidden states [B, L, D] and the batch labels."""
        logits = model.heads(hidden, batch["item_ids"])
        zero = hidden.sum() * 0.0
        parts: dict[str, Tensor] = {}
        mask = batch["next_event"] != IGNORE
        if self.weights["next_event"] > 0:
            parts["next_event"] = (
                F.cross_entropy(logits.next_event[mask].float(), batch["next_event"][mask])
                if mask.any()
                else zero
            )
        for name in ("conversion", "abandonment"):
            if self.weights[name] <= 0:
                continue
            mask = batch[name] != IGNORE
            parts[name] = (
                F.binary_cross_entropy_with_logits(
                    getattr(logits, name)[mask].float(), batch[name][mask].float()
                )
                if mask.any()
                else zero
            )
        if self.weights["next_item"] > 0:
            mask = batch["targets"] > 0
            parts["next_item"] = (
                self.item_loss(hidden[mask], batch["targets"][mask], model.item_vectors())
                if mask.any()
                else zero
            )
        total = sum((self.weights[name] * value for name, value in parts.items()), zero)
        return total, parts


def head_logits_to_probs(logits) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax / sigmoid of :class:`~shopformer.models.journey.JourneyLogits`."""
    return (
        torch.softmax(logits.next_event.float(), dim=-1),
        torch.sigmoid(logits.conversion.float()),
        torch.sigmoid(logits.abandonment.float()),
    )
