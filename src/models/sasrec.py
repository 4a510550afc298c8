"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence, tied item embeddings."""

from __future__ import annotations

from torch import Tensor, nn

from shopformer.models.attention import TransformerEncoder
from shopformer.models.base import SequenceRecommender
from shopformer.models.embedding import TokenEmbedding


class SASRec(SequenceRecommender):
    """Next-item model; the hidden state at each position is the query for the next item."""

    objective = "next_item"

    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 200,
        n_blocks: int = 2,
        heads: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.2,
        attn_dropout: float = 0.0,
        pre_norm: bool = True,
        activation: str = "relu",
        n_event_types: int = 0,
        n_gap_buckets: int = 0,
        tied_embeddings: bool = True,
        init_std: float | None = None,
        norm: str | None = None,
        positions: str = "end",
    ) -> None:
        super().__init__(n_items, dim)
        self.max_len = max_len
        self.embed = TokenEmbedding(
            n_items, dim, max_len, n_event_types, n_gap_buckets, dropout, scale=True, positions=positions
        )
        self.encoder = TransformerEncoder(
            dim,
            n_blocks,
            heads,
            ffn_dim or dim,
            dropout,
            causal=True,
            pre_norm=pre_norm,
            norm=norm,
            attn_dropout=attn_dropout,
            activation=activation,
        )
        # gSASRec found a separate output table converges faster; tied is the SASRec original.
        self.output_items = None if tied_embeddings else nn.Embedding(n_items, dim, padding_idx=0)
        self.reset_parameters(init_std)

    def forward(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        return self.encoder(self.embed(item_ids, event_types, gap_buckets), item_ids)

    def encode(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        x = self.embed(item_ids, event_types, gap_buckets)
        return self.encoder(x, item_ids, last_only=True)[:, -1]

    def item_vectors(self) -> Tensor:
        table = self.embed.items if self.output_items is None else self.output_items
        return table.weight[: self.n_items]
