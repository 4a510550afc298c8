"""Deterministic, vectorised synthetic e-commerce event generator (the embedded default dataset).

The generator simulates users with sparse category affinities who browse in sessions. Each
session step is simulated for all active sessions at once: the next view either follows an
item-to-item transition graph, revisits an earlier item of the session, or is a fresh draw
(category from the user's affinity, then item by popularity within the category). Views may be
followed by an add-to-cart; sessions with carts end in purchases or are abandoned, driven by
user propensities and signals that are visible in the sequence (carts, repeat views of carted
items, dwell gaps, price).

``journey_signal`` (0 = off, the default stream) plants more of what only a model of the whole
sequence can read. The session's intent shows in which items it views (high intent keeps the cheaper
of two candidates: bargain hunting), in how often it goes back to items already viewed (comparison
shopping) and in the dwell before the views that get carted, and less in how much it carts. The
purchase depends more on that intent, on hesitation (re-viewing a carted item) and on the price of
the carted items, less on the user's hidden propensity; sessions often end by viewing a carted item
again before checkout (converting sessions much more often than abandoning ones). Session counts and
views per session stay the same; hand-made session features (counts, length, last gap, duration) see
little of it, item identity and order see it all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopformer.data.synthetic_sampling import (
    CategorySampler,
    calibrated_bias,
    log_odds,
    sigmoid,
    start_timestamp,
    successor_graph,
)

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase")
ITEM_ID_OFFSET = 100_000
USER_ID_OFFSET = 1
SESSION_ID_OFFSET = 1
SESSION_GAP_S = 1800
MAX_SESSION_VIEWS = 50

_MAX_INNER_GAP_S = 1500
_MIN_BETWEEN_GAP_S = SESSION_GAP_S + 60
_MAX_BETWEEN_GAP_S = 60 * 86400
_FIRST_SESSION_SPREAD_S = 30 * 86400
_REVISIT_PROB = 0.08
_REVISIT_CART_PROB = 0.5
_SUCCESSOR_DECAY = 0.6
_PURCHASE_ITEM_PROB = 0.8
# journey_signal effects (per unit of signal): purchase-logit weights and checkout re-view rates
_J_INTENT, _J_HESITATED, _J_PRICE = 1.5, 1.0, 1.5
_J_REVISIT = 1.0  # log-factor of the revisit rate per unit of intent
_J_BARGAIN = 1.5  # logit of keeping the cheaper of two fresh candidates, per unit of intent
_J_DWELL = 0.8  # extra log-dwell per unit of intent before views that get carted
_J_REVIEW_CONVERT, _J_REVIEW_ABANDON = 0.6, 0.15


# Bump whenever the event stream generated for the same parameters changes: cached datasets
# are keyed by the source's fingerprint, which includes this.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic dataset; identical configs give identical data.

    sessions_per_user and mean_session_views are means (each user has >= 1 session, each
    session >= 1 view, at most 50). follow_prob is the chance that the next view follows the
    item transition graph (each item has n_successors successors with decreasing weights).
    cart_rate is the base chance that an in-stock view is followed by add-to-cart; purchase_rate
    is the expected share of sessions with a cart that end in a purchase. start is the earliest
    possible timestamp (naive strings are read as UTC). journey_signal >= 0 scales the planted
    journey signal (see the module docstring); 0 leaves the stream exactly as without it.
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


def generate(config: SyntheticConfig = SyntheticConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (events, items).

    events: user_id, session_id, item_id, timestamp (unix s, UTC), event_type in
    {"view", "cart", "purchase"}, sorted by (user_id, timestamp) with strictly increasing
    timestamps per user. items: item_id, category, price, in_stock (one row per item).
    """
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    n_items, n_cat, n_users = cfg.n_items, cfg.n_categories, cfg.n_users

    sizes = rng.multinomial(n_items - n_cat, rng.dirichlet(np.ones(n_cat))) + 1
    category = rng.permutation(np.repeat(np.arange(n_cat), sizes))
    popularity = np.empty(n_items)
    popularity[rng.permutation(n_items)] = np.arange(1, n_items + 1) ** -cfg.popularity_exponent
    popularity /= popularity.sum()
    cat_level = rng.normal(np.log(35.0), 0.8, n_cat)
    log_price = cat_level[category] + rng.normal(0.0, 0.5, n_items)
    price = np.maximum(np.round(np.exp(log_price), 2), 0.5)
    # log price relative to the category level: cheaper-than-usual items are carted more
    rel_price = np.log(price) - cat_level[category]
    in_stock = rng.random(n_items) < cfg.in_stock_rate

    by_popularity = CategorySampler(popularity, category, n_cat)
    overall = CategorySampler(popularity, np.zeros(n_items, dtype=np.int64), 1)
    # a flatter weighting makes successor sets item-specific rather than "top of category"
    by_affinity = CategorySampler(np.sqrt(popularity), category, n_cat)
    succ = successor_graph(rng, category, by_affinity, overall, cfg.n_successors)
    succ_cum = np.cumsum(_SUCCESSOR_DECAY ** np.arange(cfg.n_successors))
    succ_cum /= succ_cum[-1]

    cat_share = np.bincount(category, weights=popularity, minlength=n_cat)
    alpha = 2.0 * (0.7 * cat_share + 0.3 / n_cat)
    affinity = rng.gamma(alpha, size=(n_users, n_cat)) + 1e-12
    affinity /= affinity.sum(axis=1, keepdims=True)
    affinity = 0.95 * affinity + 0.05 * cat_share
    aff_cum = np.cumsum(affinity, axis=1)
    u_cart = rng.normal(0.0, 0.6, n_users)
    u_purchase = rng.normal(0.0, 0.7, n_users)
    extra = cfg.sessions_per_user - 1.0
    n_sessions = 1 + rng.poisson(rng.gamma(1.5, extra / 1.5, n_users) if extra > 0 else 0.0)
    n_sessions = np.broadcast_to(n_sessions, (n_users,)).astype(np.int64)

    # --- sessions (chronological within user, users in id order)
    n_sess = int(n_sessions.sum())
    sess_user = np.repeat(np.arange(n_users), n_sessions)
    length = np.minimum(rng.geometric(1.0 / cfg.mean_session_views, n_sess), MAX_SESSION_VIEWS)
    intent = rng.normal(0.0, 1.0, n_sess)

    # simulate in order of decreasing length, so the active sessions at step t are a prefix
    perm = np.argsort(-length, kind="stable")
    s_user = sess_user[perm]
    s_intent = intent[perm]
    max_len = int(length.max())
    n_active = n_sess - np.cumsum(np.bincount(length, minlength=max_len + 1))[:max_len]
    views = np.full((n_sess, max_len), -1, dtype=np.int32)
    carts = np.zeros((n_sess, max_len), dtype=bool)
    last_cart = np.full(n_sess, -1, dtype=np.int64)
    hesitated = np.zeros(n_sess, dtype=bool)
    cart_base = log_odds(cfg.cart_rate)
    revisit_prob = min(_REVISIT_PROB, 1.0 - cfg.follow_prob)
    # with journey_signal, intent shows in the items viewed and revisited more than in the carts
    cart_intent = 0.5 / (1.0 + cfg.journey_signal)
    if cfg.journey_signal > 0:  # high-intent sessions compare: they go back to items they have seen
        boost = np.exp(cfg.journey_signal * _J_REVISIT * s_intent)
        revisit_prob = np.minimum(_REVISIT_PROB * boost, 1.0 - cfg.follow_prob)
    else:
        revisit_prob = np.full(n_sess, revisit_prob)

    def fresh(users: np.ndarray, intent: np.ndarray) -> np.ndarray:
        cats = np.minimum((aff_cum[users] < rng.random(users.size)[:, None]).sum(axis=1), n_cat - 1)
        item = by_popularity.sample(cats, rng.random(users.size))
        if cfg.journey_signal > 0:  # bargain hunting: high intent keeps the cheaper of two candidates
            other = by_popularity.sample(cats, rng.random(users.size))
            cheaper = np.where(rel_price[other] < rel_price[item], other, item)
            dearer = np.where(rel_price[other] < rel_price[item], item, other)
            keep_cheap = rng.random(users.size) < sigmoid(cfg.journey_signal * _J_BARGAIN * intent)
            item = np.where(keep_cheap, cheaper, dearer)
        return item

    for t in range(max_len):
        m = int(n_active[t])
        users = s_user[:m]
        if t == 0:
            item = fresh(users, s_intent[:m])
            seen = already = np.zeros(m, dtype=bool)
        else:
            prev = views[:m, t - 1].astype(np.int64)
            r = rng.random(m)
            follow = r < cfg.follow_prob
            revisit = ~follow & (r < cfg.follow_prob + revisit_prob[:m]) if t >= 2 else None
            item = np.empty(m, dtype=np.int64)
            fi = np.flatnonzero(follow)
            k = np.searchsorted(succ_cum, rng.random(fi.size), side="right")
            item[fi] = succ[prev[fi], np.minimum(k, cfg.n_successors - 1)]
            if revisit is not None:
                ri = np.flatnonzero(revisit)
                back = views[ri, rng.integers(0, t - 1, ri.size)]
                lc = last_cart[ri]
                to_cart = (lc >= 0) & (lc != prev[ri]) & (rng.random(ri.size) < _REVISIT_CART_PROB)
                item[ri] = np.where(to_cart, lc, back)
                new = ~(follow | revisit)
            else:
                new = ~follow
            xi = np.flatnonzero(new)
            item[xi] = fresh(users[xi], s_intent[xi])
            eq = views[:m, :t] == item[:, None]
            seen = eq.any(axis=1)
            already = (eq & carts[:m, :t]).any(axis=1)
        views[:m, t] = item
        logit = cart_base + u_cart[users] + cart_intent * s_intent[:m] - 0.8 * rel_price[item] + 1.0 * seen
        cart = in_stock[item] & ~already & (rng.random(m) < sigmoid(logit))
        carts[:m, t] = cart
        hesitated[:m] |= already
        last_cart[:m] = np.where(cart, item, last_cart[:m])

    inv = np.empty_like(perm)
    inv[perm] = np.arange(n_sess)
    hesitated = hesitated[inv]
    mask = np.arange(max_len) < length[:, None]
    v_item = views[inv][mask].astype(np.int64)
    v_cart = carts[inv][mask]
    v_sess = np.repeat(np.arange(n_sess), length)
    sess_first = np.cumsum(length) - length
    v_first = np.zeros(v_item.size, dtype=bool)
    v_first[sess_first] = True

    # --- purchases: decided per session with cart(s), from visible session signals
    c_sess, c_item = v_sess[v_cart], v_item[v_cart]
    n_carts = np.bincount(c_sess, minlength=n_sess)
    mean_rel = np.bincount(c_sess, weights=rel_price[c_item], minlength=n_sess) / np.maximum(n_carts, 1)
    propensity = u_purchase[sess_user] / (1.0 + cfg.journey_signal)  # hidden from every session model
    signal = propensity + 0.6 * intent + 0.5 * (n_carts - 1) + 1.0 * hesitated - 0.5 * mean_rel
    js = cfg.journey_signal
    if js > 0:
        signal = signal + js * (_J_INTENT * intent + _J_HESITATED * hesitated - _J_PRICE * mean_rel)
    has_cart = n_carts > 0
    bias = calibrated_bias(signal[has_cart], cfg.purchase_rate)
    convert = has_cart & (rng.random(n_sess) < sigmoid(bias + signal))
    pick = convert[c_sess] & (rng.random(c_sess.size) < _PURCHASE_ITEM_PROB)
    c_first = np.ones(c_sess.size, dtype=bool)
    c_first[1:] = c_sess[1:] != c_sess[:-1]
    picked = np.bincount(c_sess[pick], minlength=n_sess)
    pick |= c_first & convert[c_sess] & (picked[c_sess] == 0)
    p_sess, p_item = c_sess[pick], c_item[pick]

    # --- within-session gaps (seconds before each event); high intent means longer dwell
    def lognormal_gap(mu: np.ndarray, sigma: float, low: int, high: int) -> np.ndarray:
        gap = np.rint(np.exp(mu + sigma * rng.standard_normal(mu.size)))
        return np.clip(gap, low, high).astype(np.int64)

    # with journey_signal, the views that get carted show the intent; the others less
    dwell = np.where(v_cart, 0.3 + js * _J_DWELL, 0.3 / (1.0 + js))
    v_gap = lognormal_gap(np.log(45.0) + dwell * intent[v_sess], 0.9, 1, _MAX_INNER_GAP_S)
    v_gap[v_first] = 0
    c_gap = lognormal_gap(np.log(10.0) - 0.2 * intent[c_sess], 0.6, 1, 300)
    p_first = np.ones(p_sess.size, dtype=bool)
    p_first[1:] = p_sess[1:] != p_sess[:-1]
    p_gap = np.where(
        p_first,
        lognormal_gap(np.full(p_sess.size, np.log(90.0)), 0.5, 5, _MAX_INNER_GAP_S),
        rng.integers(1, 5, p_sess.size),
    )

    # --- checkout re-views (journey_signal): a carted item viewed again after the last browse event
    r_sess = r_item = r_gap = np.zeros(0, dtype=np.int64)
    if js > 0:
        rate = np.where(convert, _J_REVIEW_CONVERT, _J_REVIEW_ABANDON) * js
        review = has_cart & (rng.random(n_sess) < np.minimum(rate, 1.0))
        last_cart = np.zeros(n_sess, dtype=np.int64)
        last_cart[c_sess] = c_item  # the latest cart of each session (carts are in session order)
        first_purchase = np.zeros(n_sess, dtype=np.int64)
        first_purchase[p_sess[::-1]] = p_item[::-1]
        r_sess = np.flatnonzero(review)
        r_item = np.where(convert[r_sess], first_purchase[r_sess], last_cart[r_sess])
        r_gap = lognormal_gap(np.log(45.0) + 0.3 * intent[r_sess], 0.9, 1, _MAX_INNER_GAP_S)

    # --- assemble: each view, then its cart (if any), the re-view, then the session's purchases
    reps = 1 + v_cart.astype(np.int64)
    slot = np.repeat(np.arange(v_item.size), reps)
    code = np.zeros(slot.size, dtype=np.int8)
    code[(np.cumsum(reps) - reps)[v_cart] + 1] = 1
    gap = v_gap[slot]
    gap[code == 1] = c_gap
    e_sess = np.concatenate([v_sess[slot], r_sess, p_sess])
    order = np.argsort(e_sess, kind="stable")
    e_sess = e_sess[order]
    e_item = np.concatenate([v_item[slot], r_item, p_item])[order]
    r_code = np.zeros(r_sess.size, dtype=np.int8)
    e_code = np.concatenate([code, r_code, np.full(p_sess.size, 2, dtype=np.int8)])[order]
    e_gap = np.concatenate([gap, r_gap, p_gap])[order]

    # --- timestamps: sessions of a user are separated by > SESSION_GAP_S of inactivity
    counts = np.bincount(e_sess, minlength=n_sess)
    e_start = np.cumsum(counts) - counts
    cum_gap = np.cumsum(e_gap)
    offset = cum_gap - cum_gap[e_start][e_sess]
    duration = cum_gap[e_start + counts - 1] - cum_gap[e_start]
    between = lognormal_gap(np.full(n_sess, np.log(36 * 3600.0)), 1.2, 0, _MAX_BETWEEN_GAP_S)
    step = duration + _MIN_BETWEEN_GAP_S + between
    before = np.cumsum(step) - step
    user_first = np.cumsum(n_sessions) - n_sessions
    user_base = rng.integers(0, _FIRST_SESSION_SPREAD_S, n_users)
    sess_start = user_base[sess_user] + before - before[user_first][sess_user]
    timestamp = start_timestamp(cfg.start) + sess_start[e_sess] + offset

    events = pd.DataFrame(
        {
            "user_id": (USER_ID_OFFSET + sess_user[e_sess]).astype(np.int64),
            "session_id": (SESSION_ID_OFFSET + e_sess).astype(np.int64),
            "item_id": (ITEM_ID_OFFSET + e_item).astype(np.int64),
            "timestamp": timestamp.astype(np.int64),
            "event_type": np.asarray(EVENT_TYPES)[e_code],
        }
    )
    width = max(2, len(str(n_cat - 1)))
    labels = np.asarray([f"c{c:0{width}d}" for c in range(n_cat)])
    items = pd.DataFrame(
        {
            "item_id": (ITEM_ID_OFFSET + np.arange(n_items)).astype(np.int64),
            "category": labels[category],
            "price": price.astype(np.float64),
            "in_stock": in_stock,
        }
    )
    return events, items
