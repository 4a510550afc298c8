"""GRU4Rec (Hidasi et al., 2016): a recurrent baseline under the same dot-product contract."""

from __future__ import annotations

import torch
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
        init_std: float | None = None,
    ) -> None:
        super().__init__(n_items, dim)
        self.max_len = max_len
        self.embed = TokenEmbedding(n_items, dim, max_len, n_event_types, n_gap_buckets, dropout)
        self.embed.positions.weight.data.zero_()
        self.embed.positions.weight.requires_grad_(False)  # order comes from the recurrence
        self.gru = nn.GRU(dim, hidden, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self.project = nn.Linear(hidden, dim)
        self.dropout = Dropout(dropout)
        self.reset_parameters(init_std)

    def forward(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        x = self.embed(item_ids, event_types, gap_buckets)
        # Left padding would feed the GRU pads before the history (its biases move the state),
        # so run it on right-aligned rows and move the states back. Plain gathers: ONNX-friendly.
        length = item_ids.shape[1]
        real = item_ids != 0
        n_pad = length - real.sum(dim=1, keepdim=True)
        steps = torch.arange(length, device=item_ids.device).unsqueeze(0)
        to_right = (steps + n_pad).clamp(max=length - 1)
        states, _ = self.gru(x.gather(1, to_right.unsqueeze(-1).expand_as(x)))
        back = (steps - n_pad).clamp(min=0)
        states = states.gather(1, back.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        return self.project(self.dropout(states)) * real.unsqueeze(-1)

    def item_vectors(self) -> Tensor:
        return self.embed.items.weight[: self.n_items]
