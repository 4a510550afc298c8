"""The model contract: every retrieval model is an encoder plus an item table, scored by dot product."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shopformer.models.ranking_metrics import ItemScorer


class SequenceRecommender(nn.Module):
    """Encoder that turns a left-padded history into a query ``q`` [B, D]; item ``i`` scores ``q · E[i]``.

    Subclasses implement :meth:`forward` (hidden states at every position, used in
    training) and :meth:`encode` (one query per history, used in evaluation,
    export and serving) and expose :meth:`item_vectors` (``E``, [n_items, D], row 0 = padding).
    ``objective`` tells the datamodule which training batches the model needs.
    """

    objective = "next_item"

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.n_items, self.dim = n_items, dim

    def forward(
        self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def encode(
        self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None
    ) -> Tensor:
        """Query vector for the item that follows each history: [B, L] -> [B, D]."""
        return self.forward(item_ids, event_types, gap_buckets)[:, -1]

    def item_vectors(self) -> Tensor:
        raise NotImplementedError

    def item_scorer(self) -> Tensor | ItemScorer:
        """What evaluation ranks the catalogue with: the item table (``E``), or an
        :class:`~shopformer.models.ranking_metrics.ItemScorer` for a model scored by lookup."""
        return self.item_vectors()

    def reset_parameters(self, init_std: float | None = None) -> None:
        """Initialise every matrix, padding rows zeroed.

        ``init_std=None``: Xavier-normal (the original SASRec code). A number: normal(0, std)
        for matrices and zero biases (BERT / RecBole / the SASRec+CE study), which starts
        each residual branch near zero.
        """
        for name, param in self.named_parameters():
            if not param.requires_grad or "gru" in name:
                continue
            if param.dim() > 1:
                if init_std is None:
                    nn.init.xavier_normal_(param)
                else:
                    nn.init.normal_(param, 0.0, init_std)
            elif init_std is not None and name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(param)
        for module in self.modules():
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @torch.no_grad()
    def score(self, item_ids: Tensor, **channels: Tensor) -> Tensor:
        """Scores of every item for each history, [B, n_items] (small catalogues / tests)."""
        queries, items = self.encode(item_ids, **channels), self.item_scorer()
        if isinstance(items, ItemScorer):
            return items.scores(queries, 0, items.shape[0])
        return queries @ items.T
