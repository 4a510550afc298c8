"""BERT4Rec (Sun et al., 2019): bidirectional self-attention trained by masked-item prediction."""

from __future__ import annotations

import torch
from torch import Tensor

from shopformer.models.attention import TransformerEncoder
from shopformer.models.base import SequenceRecommender
from shopformer.models.embedding import TokenEmbedding


class BERT4Rec(SequenceRecommender):
    """The mask token is id ``n_items``; inference appends it after the history and reads its state."""

    objective = "masked"

    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 200,
        n_blocks: int = 2,
        heads: int = 2,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        pre_norm: bool = False,
        n_event_types: int = 0,
        n_gap_buckets: int = 0,
        init_std: float | None = None,
        norm: str | None = None,
        positions: str = "end",
    ) -> None:
        super().__init__(n_items, dim)
        self.max_len, self.mask_id = max_len, n_items
        self.embed = TokenEmbedding(
            n_items + 1, dim, max_len, n_event_types, n_gap_buckets, dropout, positions=positions
        )
        self.encoder = TransformerEncoder(
            dim,
            n_blocks,
            heads,
            ffn_dim or 4 * dim,
            dropout,
            causal=False,
            pre_norm=pre_norm,
            norm=norm,
            attn_dropout=attn_dropout,
        )
        self.reset_parameters(init_std)

    def forward(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        return self.encoder(self.embed(item_ids, event_types, gap_buckets), item_ids)

    def encode(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        keep = self.max_len - 1
        item_ids = _append(item_ids[:, -keep:], self.mask_id)
        event_types = None if event_types is None else _append(event_types[:, -keep:], 0)
        gap_buckets = None if gap_buckets is None else _append(gap_buckets[:, -keep:], 0)
        x = self.embed(item_ids, event_types, gap_buckets)
        return self.encoder(x, item_ids, last_only=True)[:, -1]

    def item_vectors(self) -> Tensor:
        return self.embed.items.weight[: self.n_items]


def _append(values: Tensor, token: int) -> Tensor:
    column = torch.full((values.shape[0], 1), token, dtype=values.dtype, device=values.device)
    return torch.cat([values, column], dim=1)
