"""The synthetic shop as an environment whose click, purchase and revenue probabilities are known exactly.

Built from the :class:`~shopformer.data.synthetic.SyntheticConfig` that produced a model's training
data (raw item ids ``ITEM_ID_OFFSET + i`` match its catalogue). Visitors are cut from sessions browsed
in the config's own world; for a visitor x the relevance rho(i | x) is the planted chance that the next
view is i (:func:`~shopformer.data.synthetic_world.next_view_probs`). Shown at 0-based slot p, item i is

- clicked with ``theta_p * attract(rho(i | x))`` (:mod:`shopformer.offpolicy.click_model`);
- then bought with ``in_stock(i) * [i not carted yet] * sigmoid(cart) * sigmoid(convert)``, the
  generator's add-to-cart step and its checkout as if i were the session's only cart (no hesitation)::

      cart    = logit(cart_rate) + u_cart[user] + 0.5 / (1 + js) * intent - 0.8 * rel_price(i) + [i seen]
      convert = logit(purchase_rate) + u_purchase[user] / (1 + js) + (0.6 + 1.5 js) * intent
                - (0.5 + 1.5 js) * rel_price(i)

  (js = journey_signal; the generator's intercept is calibrated over its sessions, here it is the
  plain log-odds of purchase_rate); a purchase earns the item's price.

Rewards are per shown slot: a policy's value is the mean over visitors and slots.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from shopformer.data.synthetic import (
    ITEM_ID_OFFSET,
    MAX_SESSION_VIEWS,
    USER_ID_OFFSET,
    SyntheticConfig,
    browse,
)
from shopformer.data.synthetic_sampling import log_odds, sigmoid
from shopformer.data.synthetic_world import next_view_probs, world_of
from shopformer.errors import UserError
from shopformer.offpolicy.click_model import PositionBasedClicks

REWARDS = ("click", "purchase", "revenue")
_DENSE_CELLS = 1 << 22  # catalogue-wide relevance is computed in blocks of about this many cells


@dataclass(frozen=True, eq=False)
class Contexts:
    """n visitors, each in the middle of a session (items by catalogue index, oldest first).

    history[j, :length[j]] are the views so far (-1 after), carts[j, t] whether view t was carted,
    last_cart[j] the latest carted item (-1: none), intent[j] the session's hidden intent and
    next_item[j] the view that came next in the simulation (a draw from the truth).
    """

    user: np.ndarray
    intent: np.ndarray
    history: np.ndarray
    carts: np.ndarray
    length: np.ndarray
    last_cart: np.ndarray
    next_item: np.ndarray

    def __len__(self) -> int:
        return int(self.user.size)

    @property
    def last_item(self) -> np.ndarray:
        """Catalogue index of each visitor's latest view."""
        return self.history[np.arange(len(self)), self.length - 1]

    @property
    def user_ids(self) -> np.ndarray:
        """Raw user ids (as in the generated events)."""
        return USER_ID_OFFSET + self.user

    @property
    def next_ids(self) -> np.ndarray:
        """Raw id of the view that came next."""
        return ITEM_ID_OFFSET + self.next_item

    def sessions(self) -> list[np.ndarray]:
        """Each visitor's views so far as raw item ids, oldest first."""
        return [ITEM_ID_OFFSET + h[:t] for h, t in zip(self.history, self.length, strict=True)]

    def take(self, index: np.ndarray) -> Contexts:
        """The visitors at ``index``."""
        return Contexts(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


class Outcomes(NamedTuple):
    """Sampled outcome of every shown slot: clicked, bought (only after a click), revenue earned."""

    clicks: np.ndarray
    purchases: np.ndarray
    revenue: np.ndarray


class Simulator:
    """Visitors, exact click/purchase probabilities, sampled feedback and true policy values."""

    def __init__(self, config: SyntheticConfig, clicks: PositionBasedClicks | None = None) -> None:
        self.config = config
        self.world = world_of(config)
        self.clicks = clicks or PositionBasedClicks()
        self.item_ids = ITEM_ID_OFFSET + np.arange(self.world.n_items)

    # --- visitors
    def contexts(self, n: int, seed: int = 0) -> Contexts:
        """n visitors: random users browsing sessions in the world, cut at a uniform point (>= 1 view)."""
        if n < 1:
            raise UserError(f"need at least one context, got n={n}")
        rng = np.random.default_rng(seed)
        user = rng.integers(0, self.world.n_users, n)
        length = np.minimum(rng.geometric(1.0 / self.config.mean_session_views, n), MAX_SESSION_VIEWS)
        intent = rng.normal(0.0, 1.0, n)
        cut = 1 + (rng.random(n) * length).astype(np.int64)
        browsed = browse(self.world, user, intent, cut + 1, rng)  # one view past the cut: the next view
        rows = np.arange(n)
        before = np.arange(browsed.views.shape[1] - 1) < cut[:, None]
        views = browsed.views[:, :-1].astype(np.int64)
        carts = browsed.carts[:, :-1] & before
        latest = carts.shape[1] - 1 - np.argmax(carts[:, ::-1], axis=1)
        return Contexts(
            user=user,
            intent=intent,
            history=np.where(before, views, -1),
            carts=carts,
            length=cut,
            last_cart=np.where(carts.any(axis=1), views[rows, latest], -1),
            next_item=browsed.views[rows, cut].astype(np.int64),
        )

    # --- the truth
    def index_of(self, raw_ids: np.ndarray) -> np.ndarray:
        """Catalogue index of raw item ids; unknown ids are a :class:`UserError`."""
        raw = np.asarray(raw_ids)
        index = raw.astype(np.int64) - ITEM_ID_OFFSET
        bad = (index < 0) | (index >= self.world.n_items)
        if bad.any():
            raise UserError(f"item id {raw[bad].flat[0]} is not in the synthetic catalogue")
        return index

    def relevance(self, contexts: Contexts, items: np.ndarray | None = None) -> np.ndarray:
        """rho(i | x): the planted chance that visitor x views i next, for raw ``items`` (n, m).

        With ``items`` None: (n, n_items) over the catalogue (in ``item_ids`` order).
        """
        c = contexts
        index = None if items is None else self._grid(c, items)
        return next_view_probs(self.world, c.user, c.intent, c.history, c.length, c.last_cart, index)

    def probabilities(
        self, contexts: Contexts, items: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(P(click), P(purchase | click)) of raw ``items`` (n, m) shown at 0-based ``positions``."""
        attract, buy, _ = self._item_terms(contexts, items)
        return self.clicks.examination(positions) * attract, buy

    def feedback(self, contexts: Contexts, shown: np.ndarray, seed: int = 0) -> Outcomes:
        """Clicks, purchases and revenue of showing raw ``shown`` (n, k) in slot order, slot by slot."""
        attract, buy, price = self._item_terms(contexts, shown)
        p_click = self.clicks.examination(np.arange(shown.shape[1])) * attract
        rng = np.random.default_rng(seed)
        clicks = rng.random(p_click.shape) < p_click
        purchases = clicks & (rng.random(p_click.shape) < buy)
        return Outcomes(clicks, purchases, np.where(purchases, price, 0.0))

    def true_value(
        self, contexts: Contexts, candidates: np.ndarray, marginals: np.ndarray
    ) -> dict[str, float]:
        """Exact expected click, purchase and revenue per shown slot of a stochastic policy.

        ``marginals[x, c, p]`` is the chance that the policy shows candidate ``candidates[x, c]`` (raw
        id) at slot p; for every visitor and slot it sums to 1 over the candidates.
        """
        marginals = np.asarray(marginals, dtype=np.float64)
        n, n_cand = np.shape(candidates)
        if marginals.ndim != 3 or marginals.shape[:2] != (n, n_cand):
            raise UserError(f"marginals must have shape ({n}, {n_cand}, k), got {marginals.shape}")
        if (marginals < 0).any() or not np.allclose(marginals.sum(axis=1), 1.0, atol=1e-6):
            raise UserError("marginals must be >= 0 and sum to 1 over the candidates for every slot")
        shown = np.einsum("ncp,rnc->rnp", marginals, self._rewards(contexts, candidates))
        return self._per_slot(shown)

    def true_value_of_slates(self, contexts: Contexts, slates: np.ndarray) -> dict[str, float]:
        """Exact expected click, purchase and revenue per shown slot of raw ``slates`` (n, k)."""
        return self._per_slot(self._rewards(contexts, slates))

    # --- an oracle model
    def scores(
        self, contexts: Contexts, noise: float = 0.0, seed: int = 0, n_candidates: int = 50
    ) -> tuple[np.ndarray, np.ndarray]:
        """A model of tunable quality: the top ``n_candidates`` raw ids by log rho + noise * N(0, 1).

        Returns (candidates, scores), both (n, n_candidates), best first.
        """
        if noise < 0:
            raise UserError(f"noise must be >= 0, got {noise}")
        n_items = self.world.n_items
        if not 1 <= n_candidates <= n_items:
            raise UserError(f"n_candidates must be in [1, {n_items}], got {n_candidates}")
        rng = np.random.default_rng(seed)
        n = len(contexts)
        block = max(1, _DENSE_CELLS // n_items)
        top = np.empty((n, n_candidates), dtype=np.int64)
        best = np.empty((n, n_candidates))
        for lo in range(0, n, block):
            part = contexts.take(np.arange(lo, min(lo + block, n)))
            score = np.log(np.maximum(self.relevance(part), 1e-300))
            if noise > 0:
                score += noise * rng.standard_normal(score.shape)
            pick = np.argpartition(-score, n_candidates - 1, axis=1)[:, :n_candidates]
            value = np.take_along_axis(score, pick, axis=1)
            order = np.argsort(-value, axis=1, kind="stable")
            top[lo : lo + part.user.size] = np.take_along_axis(pick, order, axis=1)
            best[lo : lo + part.user.size] = np.take_along_axis(value, order, axis=1)
        return ITEM_ID_OFFSET + top, best

    # --- internals
    def _grid(self, contexts: Contexts, items: np.ndarray) -> np.ndarray:
        index = self.index_of(items)
        if index.ndim != 2 or index.shape[0] != len(contexts):
            raise UserError(f"items must have shape ({len(contexts)}, m), got {index.shape}")
        return index

    def _item_terms(self, contexts: Contexts, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per visitor and raw item (n, m): attraction, P(purchase | click), price."""
        c, w = contexts, self.world
        index = self._grid(c, items)
        rho = next_view_probs(w, c.user, c.intent, c.history, c.length, c.last_cart, index)
        seen = _member(c, index, c.history >= 0, w.n_items)
        already = _member(c, index, c.carts, w.n_items)
        js = w.journey_signal
        cart = w.cart_logit(c.user[:, None], c.intent[:, None], index, seen)
        convert = (
            log_odds(self.config.purchase_rate)
            + (w.u_purchase[c.user] / (1.0 + js) + (0.6 + 1.5 * js) * c.intent)[:, None]
            - (0.5 + 1.5 * js) * w.rel_price[index]
        )
        buy = (w.in_stock[index] & ~already) * sigmoid(cart) * sigmoid(convert)
        return self.clicks.attraction(rho), buy, w.price[index]

    def _rewards(self, contexts: Contexts, items: np.ndarray) -> np.ndarray:
        """(3, n, m) expected click, purchase and revenue of items at a slot looked at for sure."""
        attract, buy, price = self._item_terms(contexts, items)
        return attract * np.stack([np.ones_like(buy), buy, buy * price])

    def _per_slot(self, reward: np.ndarray) -> dict[str, float]:
        """Mean over visitors of (3, n, k) rewards whose slot factor theta_p is still to apply."""
        theta = self.clicks.examination(np.arange(reward.shape[-1]))
        return {name: float((r * theta).mean()) for name, r in zip(REWARDS, reward, strict=True)}


def _member(contexts: Contexts, index: np.ndarray, where: np.ndarray, n_items: int) -> np.ndarray:
    """Whether item ``index[j, m]`` is among visitor j's views at the positions ``where`` marks."""
    rows, cols = np.nonzero(where)
    keys = np.unique(rows * n_items + contexts.history[rows, cols])
    query = np.arange(len(contexts))[:, None] * n_items + index
    if keys.size == 0:
        return np.zeros(index.shape, dtype=bool)
    at = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return keys[at] == query
