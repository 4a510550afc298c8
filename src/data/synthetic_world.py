"""The hidden world of the synthetic shop (:mod:`shopformer.data.synthetic`) and its exact next-view law.

:func:`build_world` draws what stays fixed while sessions are simulated: items (category, popularity,
price, stock), the item successor graph, user category affinities and propensities. :func:`world_of`
rebuilds a config's world without generating events, and :func:`next_view_probs` is the exact
probability of each next view under the generator's browsing step (follow, revisit or fresh draw),
so that a simulator can know the truth the generator planted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from shopformer.data.synthetic_sampling import (
    CategorySampler,
    log_odds,
    sigmoid,
    successor_graph,
)

MAX_SESSION_VIEWS = 50
SUCCESSOR_DECAY = 0.6
REVISIT_PROB = 0.08
REVISIT_CART_PROB = 0.5
J_REVISIT = 1.0  # log-factor of the revisit rate per unit of intent (journey_signal)
J_BARGAIN = 1.5  # logit of keeping the cheaper of two fresh candidates, per unit of intent (journey_signal)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic dataset; identical configs give identical data.

    sessions_per_user and mean_session_views are means (each user has >= 1 session, each
    session >= 1 view, at most 50). follow_prob is the chance that the next view follows the
    item transition graph (each item has n_successors successors with decreasing weights).
    cart_rate is the base chance that an in-stock view is followed by add-to-cart; purchase_rate
    is the expected share of sessions with a cart that end in a purchase. start is the earliest
    possible timestamp (naive strings are read as UTC). journey_signal >= 0 scales the planted
    journey signal (see :mod:`shopformer.data.synthetic`); 0 leaves the stream exactly as without it.
    """

    n_users: int = 6000
    n_items: int = 3000
    n_categories: int = 40
    sessions_per_user: float = 4.0
    mean_session_views: float = 6.0
    follow_prob: float = 0.55
    n_successors: int = 5
    popularity_exponent: float = 1.1
    cart_rate: float = 0.12
    purchase_rate: float = 0.45
    in_stock_rate: float = 0.92
    start: str = "2026-01-01"
    seed: int = 0
    journey_signal: float = 0.0

    def __post_init__(self) -> None:
        if self.n_users < 1:
            raise ValueError("n_users must be >= 1")
        if self.n_categories < 1:
            raise ValueError("n_categories must be >= 1")
        if self.n_items < self.n_categories:
            raise ValueError("n_items must be >= n_categories")
        if self.n_successors < 1 or self.n_successors >= self.n_items:
            raise ValueError("n_successors must be in [1, n_items)")
        if self.sessions_per_user < 1:
            raise ValueError("sessions_per_user must be >= 1")
        if not 1 <= self.mean_session_views <= MAX_SESSION_VIEWS:
            raise ValueError(f"mean_session_views must be in [1, {MAX_SESSION_VIEWS}]")
        if self.popularity_exponent < 0:
            raise ValueError("popularity_exponent must be >= 0")
        if self.journey_signal < 0:
            raise ValueError("journey_signal must be >= 0")
        for name in ("follow_prob", "in_stock_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in ("cart_rate", "purchase_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1)")


@dataclass(frozen=True, eq=False)
class World:
    """What stays fixed while sessions are simulated (arrays are read-only; items and users by index).

    succ[i, k] is item i's k-th successor, followed with probability succ_cum[k] - succ_cum[k - 1];
    affinity[u, c] is the chance that a fresh view of user u is in category c.
    """

    category: np.ndarray
    popularity: np.ndarray
    price: np.ndarray
    rel_price: np.ndarray  # log price relative to the category level: cheaper-than-usual is carted more
    in_stock: np.ndarray
    succ: np.ndarray
    succ_cum: np.ndarray
    affinity: np.ndarray
    u_cart: np.ndarray
    u_purchase: np.ndarray
    follow_prob: float
    cart_rate: float
    journey_signal: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, World):
            return NotImplemented
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_items(self) -> int:
        return int(self.category.size)

    @property
    def n_users(self) -> int:
        return int(self.affinity.shape[0])

    @property
    def n_categories(self) -> int:
        return int(self.affinity.shape[1])

    @property
    def cart_intent(self) -> float:
        """Weight of the session intent in the cart logit (with journey_signal it shows less in carts)."""
        return 0.5 / (1.0 + self.journey_signal)

    def revisit_prob(self, intent: np.ndarray) -> np.ndarray:
        """Per-session chance that a step (from the third view on) goes back to an earlier view."""
        if self.journey_signal > 0:  # high-intent sessions compare: they go back to items they have seen
            boost = np.exp(self.journey_signal * J_REVISIT * intent)
            return np.minimum(REVISIT_PROB * boost, 1.0 - self.follow_prob)
        return np.full(np.shape(intent), min(REVISIT_PROB, 1.0 - self.follow_prob))

    def bargain_prob(self, intent: np.ndarray) -> np.ndarray:
        """Chance that a fresh draw keeps the cheaper of two candidates (journey_signal only)."""
        return sigmoid(self.journey_signal * J_BARGAIN * intent)

    def cart_logit(
        self, users: np.ndarray, intent: np.ndarray, items: np.ndarray, seen: np.ndarray
    ) -> np.ndarray:
        """Logit of add-to-cart after a view of an in-stock item (seen: viewed earlier in the session)."""
        base = log_odds(self.cart_rate) + self.u_cart[users] + self.cart_intent * intent
        return base - 0.8 * self.rel_price[items] + 1.0 * seen


def build_world(cfg: SyntheticConfig, rng: np.random.Generator) -> World:
    """Draw the world of ``cfg`` from ``rng`` (the generator goes on with the same ``rng``)."""
    n_items, n_cat, n_users = cfg.n_items, cfg.n_categories, cfg.n_users
    sizes = rng.multinomial(n_items - n_cat, rng.dirichlet(np.ones(n_cat))) + 1
    category = rng.permutation(np.repeat(np.arange(n_cat), sizes))
    popularity = np.empty(n_items)
    popularity[rng.permutation(n_items)] = np.arange(1, n_items + 1) ** -cfg.popularity_exponent
    popularity /= popularity.sum()
    cat_level = rng.normal(np.log(35.0), 0.8, n_cat)
    log_price = cat_level[category] + rng.normal(0.0, 0.5, n_items)
    price = np.maximum(np.round(np.exp(log_price), 2), 0.5)
    rel_price = np.log(price) - cat_level[category]
    in_stock = rng.random(n_items) < cfg.in_stock_rate

    overall = CategorySampler(popularity, np.zeros(n_items, dtype=np.int64), 1)
    # a flatter weighting makes successor sets item-specific rather than "top of category"
    by_affinity = CategorySampler(np.sqrt(popularity), category, n_cat)
    succ = successor_graph(rng, category, by_affinity, overall, cfg.n_successors)
    succ_cum = np.cumsum(SUCCESSOR_DECAY ** np.arange(cfg.n_successors))
    succ_cum /= succ_cum[-1]

    cat_share = np.bincount(category, weights=popularity, minlength=n_cat)
    alpha = 2.0 * (0.7 * cat_share + 0.3 / n_cat)
    affinity = rng.gamma(alpha, size=(n_users, n_cat)) + 1e-12
    affinity /= affinity.sum(axis=1, keepdims=True)
    affinity = 0.95 * affinity + 0.05 * cat_share
    u_cart = rng.normal(0.0, 0.6, n_users)
    u_purchase = rng.normal(0.0, 0.7, n_users)
    return World(
        category=category,
        popularity=popularity,
        price=price,
        rel_price=rel_price,
        in_stock=in_stock,
        succ=succ,
        succ_cum=succ_cum,
        affinity=affinity,
        u_cart=u_cart,
        u_purchase=u_purchase,
        follow_prob=float(cfg.follow_prob),
        cart_rate=float(cfg.cart_rate),
        journey_signal=float(cfg.journey_signal),
    )


def world_of(cfg: SyntheticConfig) -> World:
    """The world :func:`~shopformer.data.synthetic.generate` builds for ``cfg``, without any events."""
    return build_world(cfg, np.random.default_rng(cfg.seed))


def fresh_item_probs(world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each item's chance within its category of a fresh draw: by popularity, cheaper or dearer of two.

    The cheaper-of-two draw keeps the second candidate only when it is strictly cheaper (relative
    price), so item i wins with q_i * (Q(rel >= r_i) + Q(rel > r_i)); the dearer-of-two draw with
    q_i * (Q(rel < r_i) + Q(rel <= r_i)), q being popularity within the category.
    """
    cat, rel, n_cat = world.category, world.rel_price, world.n_categories
    q = world.popularity / np.bincount(cat, weights=world.popularity, minlength=n_cat)[cat]
    order = np.lexsort((rel, cat))
    qs, cs, rs = q[order], cat[order], rel[order]
    incl = np.cumsum(qs)
    start = np.ones(cs.size, dtype=bool)
    start[1:] = cs[1:] != cs[:-1]
    incl -= (incl - qs)[start][np.cumsum(start) - 1]  # restart the running sum in every category
    group = start.copy()
    group[1:] |= rs[1:] != rs[:-1]  # items of equal relative price tie
    first = np.flatnonzero(group)
    last = np.append(first[1:], cs.size) - 1
    gid = np.cumsum(group) - 1
    below, upto = np.empty_like(q), np.empty_like(q)
    below[order] = (incl - qs)[first][gid]
    upto[order] = incl[last][gid]
    return q, q * (2.0 - below - upto), q * (below + upto)


def next_view_probs(
    world: World,
    users: np.ndarray,
    intent: np.ndarray,
    history: np.ndarray,
    length: np.ndarray,
    last_cart: np.ndarray,
    items: np.ndarray | None = None,
) -> np.ndarray:
    """Exact chance of each next view of each session under :func:`shopformer.data.synthetic.browse`.

    A session is its user, intent, views so far (``history[s, :length[s]]``, item indices, length >= 1)
    and latest carted item (-1: none). Returns (n, m) probabilities for ``items`` (n, m) item indices,
    or (n, n_items) for the whole catalogue when ``items`` is None. With f = follow_prob, R the revisit
    chance (0 before the third view) and a = 1/2 when the latest cart is not the previous view::

        rho(i) = f * w[k] [i = succ(prev, k)]
                 + R * (a [i = cart] + (1 - a) * #(i among the views but the last) / (t - 1))
                 + (1 - f - R) * affinity[user, cat(i)] * p_fresh(i | cat(i))
    """
    n = users.size
    rows = np.arange(n)
    prev = history[rows, length - 1]
    revisit = np.where(length >= 2, world.revisit_prob(intent), 0.0)
    to_cart = REVISIT_CART_PROB * ((last_cart >= 0) & (last_cart != prev))
    plain, cheaper, dearer = fresh_item_probs(world)
    grid = np.arange(world.n_items)[None, :] if items is None else items
    within = plain[grid]
    if world.journey_signal > 0:
        keep_cheap = world.bargain_prob(intent)[:, None]
        within = keep_cheap * cheaper[grid] + (1.0 - keep_cheap) * dearer[grid]
    fresh = np.maximum(1.0 - world.follow_prob - revisit, 0.0)  # revisits can take all the rest
    if items is None:  # the whole catalogue: category affinity per item by one gather per row
        rho = fresh[:, None] * world.affinity[users][:, world.category] * within
    else:
        rho = fresh[:, None] * world.affinity[users[:, None], world.category[grid]] * within

    # the rest puts mass on few items per session: collect (session, item, mass), then add it where asked
    n_succ = world.succ.shape[1]
    weight = np.diff(world.succ_cum, prepend=0.0)
    earlier = np.arange(history.shape[1]) < (length - 1)[:, None]
    back = (revisit * (1.0 - to_cart) / np.maximum(length - 1, 1))[:, None]
    s_row = np.concatenate([np.repeat(rows, n_succ), np.nonzero(earlier)[0], rows])
    s_item = np.concatenate([world.succ[prev].ravel(), history[earlier], np.maximum(last_cart, 0)])
    follow = np.tile(world.follow_prob * weight, n)
    s_mass = np.concatenate([follow, np.broadcast_to(back, earlier.shape)[earlier], revisit * to_cart])
    s_key = s_row * world.n_items + s_item
    if items is None:
        return rho + np.bincount(s_key, weights=s_mass, minlength=rho.size).reshape(rho.shape)
    key, mass = _sum_by_key(s_key, s_mass)
    query = rows[:, None] * world.n_items + grid
    at = np.minimum(np.searchsorted(key, query), key.size - 1)
    return rho + np.where(key[at] == query, mass[at], 0.0)


def _sum_by_key(key: np.ndarray, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and the total mass of each."""
    uniq, inv = np.unique(key, return_inverse=True)
    return uniq, np.bincount(inv, weights=mass, minlength=uniq.size)
