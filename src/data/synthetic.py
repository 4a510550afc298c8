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
    sigmoid,
    start_timestamp,
)
from shopformer.data.synthetic_world import (
    J_BARGAIN,
    MAX_SESSION_VIEWS,
    REVISIT_CART_PROB,
    SyntheticConfig,
    World,
    build_world,
)

__all__ = ["EVENT_TYPES", "ITEM_ID_OFFSET", "MAX_SESSION_VIEWS", "SyntheticConfig", "browse", "generate"]

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase")
ITEM_ID_OFFSET = 100_000
USER_ID_OFFSET = 1
SESSION_ID_OFFSET = 1
SESSION_GAP_S = 1800

_MAX_INNER_GAP_S = 1500
_MIN_BETWEEN_GAP_S = SESSION_GAP_S + 60
_MAX_BETWEEN_GAP_S = 60 * 86400
_FIRST_SESSION_SPREAD_S = 30 * 86400
_PURCHASE_ITEM_PROB = 0.8
# journey_signal effects (per unit of signal): purchase-logit weights and checkout re-view rates
_J_INTENT, _J_HESITATED, _J_PRICE = 1.5, 1.0, 1.5
_J_DWELL = 0.8  # extra log-dwell per unit of intent before views that get carted
_J_REVIEW_CONVERT, _J_REVIEW_ABANDON = 0.6, 0.15


# Bump whenever the event stream generated for the same parameters changes: cached datasets
# are keyed by the source's fingerprint, which includes this.
GENERATOR_VERSION = 2
DEFAULT_CONFIG = SyntheticConfig()


@dataclass(frozen=True)
class Browsed:
    """Simulated views of sessions, in the order given: views[s, t] is an item index (-1 past the end),
    carts[s, t] whether that view was carted; hesitated[s]: a carted item was viewed again."""

    views: np.ndarray
    carts: np.ndarray
    hesitated: np.ndarray


def browse(
    world: World, users: np.ndarray, intent: np.ndarray, length: np.ndarray, rng: np.random.Generator
) -> Browsed:
    """Simulate the views and carts of sessions (user index, intent, number of views) in ``world``.

    Each step, for all active sessions at once: the next view follows the successor graph of the
    previous one, revisits an earlier view (from the third view on), or is a fresh draw (category by
    the user's affinity, then item by popularity within it); then an in-stock view may be carted.
    """
    n_cat, js = world.n_categories, world.journey_signal
    by_popularity = CategorySampler(world.popularity, world.category, n_cat)
    aff_cum = np.cumsum(world.affinity, axis=1)
    rel_price, succ, succ_cum = world.rel_price, world.succ, world.succ_cum
    n_succ = succ.shape[1]
    n_sess = length.size
    # simulate in order of decreasing length, so the active sessions at step t are a prefix
    perm = np.argsort(-length, kind="stable")
    s_user = users[perm]
    s_intent = intent[perm]
    max_len = int(length.max())
    n_active = n_sess - np.cumsum(np.bincount(length, minlength=max_len + 1))[:max_len]
    views = np.full((n_sess, max_len), -1, dtype=np.int32)
    carts = np.zeros((n_sess, max_len), dtype=bool)
    last_cart = np.full(n_sess, -1, dtype=np.int64)
    hesitated = np.zeros(n_sess, dtype=bool)
    revisit_prob = world.revisit_prob(s_intent)

    def fresh(users: np.ndarray, intent: np.ndarray) -> np.ndarray:
        cats = np.minimum((aff_cum[users] < rng.random(users.size)[:, None]).sum(axis=1), n_cat - 1)
        item = by_popularity.sample(cats, rng.random(users.size))
        if js > 0:  # bargain hunting: high intent keeps the cheaper of two candidates
            other = by_popularity.sample(cats, rng.random(users.size))
            cheaper = np.where(rel_price[other] < rel_price[item], other, item)
            dearer = np.where(rel_price[other] < rel_price[item], item, other)
            keep_cheap = rng.random(users.size) < sigmoid(js * J_BARGAIN * intent)
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
            follow = r < world.follow_prob
            revisit = ~follow & (r < world.follow_prob + revisit_prob[:m]) if t >= 2 else None
            item = np.empty(m, dtype=np.int64)
            fi = np.flatnonzero(follow)
            k = np.searchsorted(succ_cum, rng.random(fi.size), side="right")
            item[fi] = succ[prev[fi], np.minimum(k, n_succ - 1)]
            if revisit is not None:
                ri = np.flatnonzero(revisit)
                back = views[ri, rng.integers(0, t - 1, ri.size)]
                lc = last_cart[ri]
                to_cart = (lc >= 0) & (lc != prev[ri]) & (rng.random(ri.size) < REVISIT_CART_PROB)
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
        logit = world.cart_logit(users, s_intent[:m], item, seen)
        cart = world.in_stock[item] & ~already & (rng.random(m) < sigmoid(logit))
        carts[:m, t] = cart
        hesitated[:m] |= already
        last_cart[:m] = np.where(cart, item, last_cart[:m])

    inv = np.empty_like(perm)
    inv[perm] = np.arange(n_sess)
    return Browsed(views=views[inv], carts=carts[inv], hesitated=hesitated[inv])


def generate(config: SyntheticConfig = DEFAULT_CONFIG) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (events, items).

    events: user_id, session_id, item_id, timestamp (unix s, UTC), event_type in
    {"view", "cart", "purchase"}, sorted by (user_id, timestamp) with strictly increasing
    timestamps per user. items: item_id, category, price, in_stock (one row per item).
    """
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    n_items, n_cat, n_users = cfg.n_items, cfg.n_categories, cfg.n_users
    world = build_world(cfg, rng)
    category, price, rel_price, in_stock = world.category, world.price, world.rel_price, world.in_stock
    extra = cfg.sessions_per_user - 1.0
    n_sessions = 1 + rng.poisson(rng.gamma(1.5, extra / 1.5, n_users) if extra > 0 else 0.0)
    n_sessions = np.broadcast_to(n_sessions, (n_users,)).astype(np.int64)

    # --- sessions (chronological within user, users in id order)
    n_sess = int(n_sessions.sum())
    sess_user = np.repeat(np.arange(n_users), n_sessions)
    length = np.minimum(rng.geometric(1.0 / cfg.mean_session_views, n_sess), MAX_SESSION_VIEWS)
    intent = rng.normal(0.0, 1.0, n_sess)
    browsed = browse(world, sess_user, intent, length, rng)
    hesitated = browsed.hesitated
    max_len = browsed.views.shape[1]
    mask = np.arange(max_len) < length[:, None]
    v_item = browsed.views[mask].astype(np.int64)
    v_cart = browsed.carts[mask]
    v_sess = np.repeat(np.arange(n_sess), length)
    sess_first = np.cumsum(length) - length
    v_first = np.zeros(v_item.size, dtype=bool)
    v_first[sess_first] = True

    # --- purchases: decided per session with cart(s), from visible session signals
    c_sess, c_item = v_sess[v_cart], v_item[v_cart]
    n_carts = np.bincount(c_sess, minlength=n_sess)
    mean_rel = np.bincount(c_sess, weights=rel_price[c_item], minlength=n_sess) / np.maximum(n_carts, 1)
    propensity = world.u_purchase[sess_user] / (1.0 + cfg.journey_signal)  # hidden from every session model
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
            "in_stock": in_stock.copy(),
        }
    )
    return events, items
