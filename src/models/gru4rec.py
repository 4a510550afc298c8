"""GRU4Rec (Hidasi et al., 2016): a recurrent baseline under the same dot-product contract."""

from __future__ import annotations

from torch import Tensor, nn

from shopformer.models.base import SequenceRecommender
from shopformer.models.dropout import Dropout
from shopformer.models.embedding import TokenEmbedding


class GRU4Rec(SequenceRecommender):
    """Embeds the history, runs a GRU, projects each state into the item space."""

    objective = "next_item"

    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 200,
        hidden: int = 128,
        n_layers: int = 1,
        dropout: float = 0.1,
        n_event_types: int = 0,
        n_gap_buckets: int = 0,
    ) -> None:
        super().__init__(n_items, dim)
        self.max_len = max_len
        self.embed = TokenEmbedding(n_items, dim, max_len, n_event_types, n_gap_buckets, dropout)
        self.embed.positions.weight.data.zero_()
        self.embed.positions.weight.requires_grad_(False)  # order comes from the recurrence
        self.gru = nn.GRU(dim, hidden, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self.project = nn.Linear(hidden, dim)
        self.dropout = Dropout(dropout)
        self.reset_parameters()

    def forward(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        states, _ = self.gru(self.embed(item_ids, event_types, gap_buckets))
        return self.project(self.dropout(states))

    def item_vectors(self) -> Tensor:
        return self.embed.items.weight[: self.n_items]
