"""The journey model: the recommenders' causal encoder over (item, event type, time-gap) tokens, with heads
for the next event type, session conversion and cart abandonment, plus the next-item head (tied items).

It keeps the :class:`SequenceRecommender` contract (``encode`` / ``item_vectors``), so the same bundle
serves next-item retrieval; :meth:`JourneyModel.journey` is what ``journey.onnx`` computes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from shopformer.data.features import gap_bucket_seconds
from shopformer.models.attention import TransformerEncoder
from shopformer.models.base import SequenceRecommender
from shopformer.models.embedding import TokenEmbedding

STATISTICS_USES = (None, "tokens", "outcomes", "heads")


class JourneyLogits(NamedTuple):
    """Head outputs for hidden states [..., D]: next event [..., C], conversion [...], abandonment [...]."""

    next_event: Tensor
    conversion: Tensor
    abandonment: Tensor


class JourneyModel(SequenceRecommender):
    """Causal self-attention encoder with journey heads.

    Items seen fewer than ``min_item_count`` times in training share one learned "rare item" token
    (:meth:`set_known_items`): on short real logs most items are seen once or never, and their
    untrained embeddings would be noise. ``item_dropout`` swaps known items for that token during
    training, so it stays meaningful. ``head_hidden`` > 0 puts a GELU layer before the heads.
    ``scale_items`` multiplies item embeddings by sqrt(dim) (SASRec's habit); off by default, as it
    lets the item channel drown the event-type and time-gap channels this model is about.
    ``category_buckets`` > 0 adds an embedding of each item's category (:meth:`set_item_categories`),
    which rare and unseen items keep: the item table's attribute, baked into the model, so the inputs
    stay the same token channels.
    ``category_statistics`` uses what the training log says about each item's category
    (:meth:`set_item_statistics`): how often its events were of each type, against all events, and how
    many there were. A category's statistics carry over to items never seen in training, which an
    embedding per category (``category_buckets``) learns from too few events. ``"tokens"`` adds their
    projection to every token; ``"outcomes"`` gives them (the current item's, and their mean over the
    prefix) to the conversion and abandonment heads only, so the next-event head is left as it was;
    ``"heads"`` gives them to every head.
    ``session_counts`` adds a projection of counts computed from the inputs to every hidden state:
    events of each type so far, events so far, earlier events on the same item, and (with the gap
    channel) the time since the window's first event, summed from typical gaps of the buckets.
    Softmax attention averages and cannot count, yet counts (how many views, how often this item came
    back) are what purchase intent shows in; the item channel of a short log cannot carry revisits
    either, since rare items share one token.
    """

    objective = "journey"

    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 50,
        n_blocks: int = 2,
        heads: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.2,
        attn_dropout: float = 0.0,
        norm: str = "pre",
        activation: str = "gelu",
        n_event_types: int = 0,
        n_gap_buckets: int = 0,
        positions: str = "start",
        init_std: float | None = 0.02,
        head_hidden: int = 0,
        item_dropout: float = 0.0,
        min_item_count: int = 1,
        scale_items: bool = False,
        category_buckets: int = 0,
        session_counts: bool = False,
        category_statistics: str | None = None,
    ) -> None:
        if n_event_types < 2:
            raise ValueError(
                "the journey model needs the event-type channel (n_event_types >= 2): "
                "set features.event_types=true"
            )
        super().__init__(n_items, dim)
        self.max_len, self.n_event_classes = max_len, n_event_types - 1
        self.item_dropout, self.min_item_count = item_dropout, min_item_count
        self.rare_token = n_items  # one extra row of the item table
        self.embed = TokenEmbedding(
            n_items + 1, dim, max_len, n_event_types, n_gap_buckets, dropout, scale_items, positions
        )
        self.encoder = TransformerEncoder(
            dim,
            n_blocks,
            heads,
            ffn_dim or 4 * dim,
            dropout,
            causal=True,
            pre_norm=norm != "post",
            norm=norm,
            attn_dropout=attn_dropout,
            activation=activation,
        )
        self.trunk = nn.Sequential(nn.Linear(dim, head_hidden), nn.GELU()) if head_hidden else nn.Identity()
        width = head_hidden or dim
        self.event_head = nn.Linear(width, self.n_event_classes)
        self.outcome_head = nn.Linear(width, 2)  # conversion, abandonment
        self.categories = nn.Embedding(category_buckets, dim, padding_idx=0) if category_buckets else None
        self.counts = nn.Linear(self.n_event_classes + 3, dim) if session_counts else None
        n_statistics = self.n_event_classes + 1
        if isinstance(category_statistics, bool):  # true: the per-token use
            category_statistics = "tokens" if category_statistics else None
        if category_statistics not in STATISTICS_USES:
            raise ValueError(
                f"category_statistics must be one of {STATISTICS_USES}, got {category_statistics!r}"
            )
        self.statistics_use = category_statistics
        # tokens: each token's own statistics; outcomes / heads: the current item's and the prefix mean
        width_in = n_statistics * (1 if category_statistics == "tokens" else 2)
        self.statistics = nn.Linear(width_in, dim, bias=False) if category_statistics else None
        # Typical seconds per gap bucket, for the elapsed-time count (a constant, not a parameter).
        seconds = torch.zeros(max(n_gap_buckets, 1))
        if n_gap_buckets:
            table = torch.as_tensor(gap_bucket_seconds(), dtype=torch.float32)
            seconds[: min(len(table), n_gap_buckets)] = table[:n_gap_buckets]
        self.register_buffer("gap_seconds", seconds, persistent=False)
        # Internal item id -> embedding row: itself, or the rare-item token (set by set_known_items);
        # and -> category code (0 = none; set by set_item_categories).
        self.register_buffer("item_token", torch.arange(n_items), persistent=True)
        self.register_buffer("item_category", torch.zeros(n_items, dtype=torch.long), persistent=True)
        # Internal item id -> its category's training statistics (zeros: unknown; set_item_statistics).
        # None without the option, so checkpoints made before it existed still load.
        statistics = torch.zeros(n_items, n_statistics) if category_statistics else None
        self.register_buffer("item_statistics", statistics, persistent=True)
        self.reset_parameters(init_std)

    @torch.no_grad()
    def set_known_items(self, train_counts) -> None:
        """Map items with fewer than ``min_item_count`` training events to the rare-item token."""
        counts = torch.as_tensor(train_counts, device=self.item_token.device)
        if counts.shape != (self.n_items,):
            raise ValueError(f"train_counts must have {self.n_items} entries, got {tuple(counts.shape)}")
        known = counts >= self.min_item_count
        known[0] = True  # padding stays 0
        ids = torch.arange(self.n_items, device=self.item_token.device)
        self.item_token.copy_(torch.where(known, ids, torch.full_like(ids, self.rare_token)))

    @torch.no_grad()
    def set_item_categories(self, codes) -> None:
        """Each item's category code in ``[0, category_buckets)`` (0: none or too rare to have its own)."""
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.item_category.device)
        buckets = 0 if self.categories is None else self.categories.num_embeddings
        if codes.shape != (self.n_items,) or (
            codes.numel() and (codes.min() < 0 or codes.max() >= max(buckets, 1))
        ):
            raise ValueError(f"category codes must be {self.n_items} values in [0, {buckets})")
        self.item_category.copy_(codes)

    @torch.no_grad()
    def set_item_statistics(self, statistics) -> None:
        """Per item id, its category's training statistics [n_items, n_event_classes + 1]
        (:meth:`JourneyDataModule.category_statistics`); zeros for padding and unknown categories."""
        if self.statistics is None:
            raise ValueError("set_item_statistics needs category_statistics=tokens, outcomes or heads")
        values = torch.as_tensor(statistics, dtype=torch.float32, device=self.item_statistics.device)
        if values.shape != self.item_statistics.shape or not torch.isfinite(values).all():
            raise ValueError(
                f"item statistics must be finite, shape {tuple(self.item_statistics.shape)}, "
                f"got {tuple(values.shape)}"
            )
        self.item_statistics.copy_(values)

    def _embed(self, item_ids: Tensor, event_types: Tensor | None, gap_buckets: Tensor | None) -> Tensor:
        x = self.embed(self._tokens(item_ids), event_types, gap_buckets)
        if self.categories is not None:
            x = x + self.categories(self.item_category[item_ids])
        if self.statistics_use == "tokens":
            x = x + self.statistics(self.item_statistics[item_ids])
        return x

    def statistics_context(self, item_ids: Tensor | None, last_only: bool = False) -> Tensor | None:
        """What ``category_statistics="outcomes"`` (or ``"heads"``) adds to the heads' input: a projection
        of the current item's statistics and of their mean over the prefix, [B, L, D] (or [B, D] for the
        last position); None for the other uses."""
        if self.statistics_use not in ("outcomes", "heads"):
            return None
        if item_ids is None:
            raise ValueError(
                f"category_statistics={self.statistics_use!r}: heads() needs the histories' item_ids"
            )
        real = (item_ids != 0).unsqueeze(-1).float()
        current = self.item_statistics[item_ids]
        mean = (current * real).cumsum(dim=1) / real.cumsum(dim=1).clamp_min(1.0)
        features = torch.cat([current, mean], dim=-1)
        return self.statistics(features[:, -1] if last_only else features)

    def _tokens(self, item_ids: Tensor) -> Tensor:
        tokens = self.item_token[item_ids]
        if self.training and self.item_dropout > 0:
            drop = (torch.rand(item_ids.shape, device=item_ids.device) < self.item_dropout) & (item_ids != 0)
            tokens = torch.where(drop, torch.full_like(tokens, self.rare_token), tokens)
        return tokens

    def session_count_features(
        self, item_ids: Tensor, event_types: Tensor, gap_buckets: Tensor | None = None
    ) -> Tensor:
        """log1p counts at each position [B, L, C + 3]: events of each type up to and including it,
        events up to it, earlier events on the same item, and minutes since the window's first event
        (0 without the gap channel); zero at padding."""
        real = (item_ids != 0).unsqueeze(-1)
        classes = torch.arange(1, self.n_event_classes + 1, device=event_types.device)
        by_type = (event_types.unsqueeze(-1) == classes).float().cumsum(dim=1)
        length = real.float().cumsum(dim=1)
        length_idx = item_ids.shape[1]
        earlier = torch.ones(length_idx, length_idx, device=item_ids.device, dtype=torch.bool).tril(-1)
        same = (item_ids.unsqueeze(2) == item_ids.unsqueeze(1)) & earlier
        repeats = same.float().sum(dim=2, keepdim=True)
        if gap_buckets is None:
            minutes = torch.zeros_like(repeats)
        else:  # the window's first real event starts the clock
            gaps = self.gap_seconds[gap_buckets.long()] * (length > 1).squeeze(-1)
            minutes = gaps.cumsum(dim=1).unsqueeze(-1) / 60.0
        return torch.log1p(torch.cat([by_type, length, repeats, minutes], dim=-1)) * real

    def _add_counts(
        self, hidden: Tensor, item_ids: Tensor, event_types: Tensor | None, gap_buckets: Tensor | None
    ) -> Tensor:
        if self.counts is None or event_types is None:
            return hidden
        features = self.session_count_features(item_ids, event_types, gap_buckets)
        if hidden.dim() == 2:  # encode: the last position only
            features = features[:, -1]
        return hidden + self.counts(features)

    def forward(
        self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None
    ) -> Tensor:
        """Hidden states [B, L, D]; padding positions are zero."""
        hidden = self.encoder(self._embed(item_ids, event_types, gap_buckets), item_ids)
        if self.counts is not None:
            hidden = self._add_counts(hidden, item_ids, event_types, gap_buckets) * (item_ids != 0).unsqueeze(
                -1
            )
        return hidden

    def encode(
        self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None
    ) -> Tensor:
        x = self._embed(item_ids, event_types, gap_buckets)
        hidden = self.encoder(x, item_ids, last_only=True)[:, -1]
        return self._add_counts(hidden, item_ids, event_types, gap_buckets)

    def heads(self, hidden: Tensor, item_ids: Tensor | None = None) -> JourneyLogits:
        """Logits of every head for hidden states [..., D] ([B, L, D] or the last position's [B, D]) of
        the histories ``item_ids`` [B, L] (needed with ``category_statistics`` outcomes or heads)."""
        context = self.statistics_context(item_ids, last_only=hidden.dim() == 2)
        h = self.trunk(hidden + context if self.statistics_use == "heads" else hidden)
        outcome_input = self.trunk(hidden + context) if self.statistics_use == "outcomes" else h
        outcome = self.outcome_head(outcome_input)
        return JourneyLogits(self.event_head(h), outcome[..., 0], outcome[..., 1])

    def journey(
        self, item_ids: Tensor, event_types: Tensor, gap_buckets: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Probabilities after each history's last event: next event type [B, C] (sums to 1),
        conversion [B], abandonment [B]."""
        logits = self.heads(self.encode(item_ids, event_types, gap_buckets), item_ids)
        return (
            torch.softmax(logits.next_event, dim=-1),
            torch.sigmoid(logits.conversion),
            torch.sigmoid(logits.abandonment),
        )

    def item_vectors(self) -> Tensor:
        """Each item's embedding row (rare items share the rare-item row), [n_items, D]."""
        return self.embed.items.weight[self.item_token]
