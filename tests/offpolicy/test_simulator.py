"""The synthetic shop as an environment with a known truth: world, next-view law, clicks, purchases."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from shopformer.data import synthetic
from shopformer.data.synthetic import ITEM_ID_OFFSET, SyntheticConfig, generate
from shopformer.data.synthetic_world import World, world_of
from shopformer.errors import UserError
from shopformer.offpolicy.click_model import PositionBasedClicks
from shopformer.offpolicy.simulator import Contexts, Simulator

SMALL = SyntheticConfig(n_users=300, n_items=400)
JOURNEY = replace(SMALL, journey_signal=1.0, seed=3)

# sha256 of events.to_csv + items.to_csv, taken before the world was split out of generate()
STREAMS = [
    (SMALL, "d884908e8ffdc87e692c2e593f3ec457193b2cc01e98ed4dad45b5cf96ee9b35"),
    (JOURNEY, "8e2378b15b92ecdc01a20e3dfb731f996b9e271f3abe6a5e1e7454f98d9d52b4"),
    (
        SyntheticConfig(n_users=200, n_items=100, n_categories=7, sessions_per_user=1.0, seed=5),
        "fa916afdffae83a1045aaa77ec46493fc44d27d9c2ada5c5be339877cf20f55e",
    ),
]


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(SMALL)


@pytest.fixture(scope="module")
def ctx(sim: Simulator) -> Contexts:
    return sim.contexts(4000, seed=1)


def within_se(observed: np.ndarray, expected: float, se: float, k: float = 4.0) -> bool:
    return abs(float(np.mean(observed)) - expected) <= k * se


# --- the generator's world


@pytest.mark.parametrize(("cfg", "digest"), STREAMS)
def test_the_event_stream_is_unchanged_by_the_world_refactor(cfg: SyntheticConfig, digest: str) -> None:
    events, items = generate(cfg)
    text = events.to_csv(index=False) + items.to_csv(index=False)
    assert hashlib.sha256(text.encode()).hexdigest() == digest


@pytest.mark.parametrize("cfg", [SMALL, JOURNEY])
def test_world_of_is_the_world_generate_uses(cfg: SyntheticConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[World] = []
    build = synthetic.build_world
    monkeypatch.setattr(synthetic, "build_world", lambda c, rng: used.append(build(c, rng)) or used[-1])
    _, items = generate(cfg)
    world = world_of(cfg)
    assert len(used) == 1 and world == used[0]
    assert world != world_of(replace(cfg, seed=cfg.seed + 1))
    np.testing.assert_array_equal(items["price"], world.price)
    np.testing.assert_array_equal(items["in_stock"], world.in_stock)
    with pytest.raises(ValueError):
        world.price[0] = 1.0  # read-only


# --- relevance: the exact next-view law


@pytest.mark.parametrize("cfg", [SMALL, JOURNEY])
def test_relevance_is_a_distribution_over_the_catalogue(cfg: SyntheticConfig) -> None:
    sim = Simulator(cfg)
    ctx = sim.contexts(500, seed=2)
    rho = sim.relevance(ctx)
    assert rho.shape == (500, cfg.n_items) and (rho >= 0).all()
    np.testing.assert_allclose(rho.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    # the same numbers when asked for single items
    some = sim.item_ids[np.random.default_rng(0).integers(0, cfg.n_items, (500, 7))]
    np.testing.assert_allclose(sim.relevance(ctx, some), np.take_along_axis(rho, some - ITEM_ID_OFFSET, 1))


def test_relevance_puts_the_successor_weights_on_the_last_items_successors() -> None:
    sim = Simulator(replace(SMALL, follow_prob=1.0))  # always follow: no revisit, no fresh draw
    ctx = sim.contexts(300, seed=3)
    rho = sim.relevance(ctx)
    succ = sim.world.succ[ctx.last_item]
    weight = np.diff(sim.world.succ_cum, prepend=0.0)
    np.testing.assert_allclose(np.take_along_axis(rho, succ, 1), np.broadcast_to(weight, succ.shape))
    np.testing.assert_allclose(weight, 0.6 ** np.arange(5) / (0.6 ** np.arange(5)).sum())
    # with the default follow_prob, the successors carry at least that mass
    ctx = Simulator(SMALL).contexts(300, seed=3)
    rho = Simulator(SMALL).relevance(ctx)
    on_succ = np.take_along_axis(rho, Simulator(SMALL).world.succ[ctx.last_item], 1)
    assert (on_succ >= SMALL.follow_prob * weight - 1e-12).all()


@pytest.mark.parametrize("cfg", [SMALL, JOURNEY])
def test_simulated_next_views_follow_the_relevance(cfg: SyntheticConfig) -> None:
    sim = Simulator(cfg)
    many = sim.contexts(100_000, seed=4)
    # few items per visitor: the last item's successors, the latest cart (from the third view on)
    succ = sim.world.succ[many.last_item]
    p = sim.relevance(many, ITEM_ID_OFFSET + succ).sum(axis=1)
    hit = (succ == many.next_item[:, None]).any(axis=1)
    assert within_se(hit, p.mean(), np.sqrt((p * (1 - p)).sum()) / len(many)), "successor"
    assert p.mean() > cfg.follow_prob
    back = (many.last_cart >= 0) & (many.length >= 3)
    p = np.where(
        back, sim.relevance(many, ITEM_ID_OFFSET + np.maximum(many.last_cart, 0)[:, None])[:, 0], 0.0
    )
    hit = back & (many.next_item == many.last_cart)
    assert within_se(hit, p.mean(), np.sqrt((p * (1 - p)).sum()) / len(many)), "cart"

    # sets over the catalogue, for fewer visitors
    ctx = many.take(np.arange(20_000))
    rho = sim.relevance(ctx)
    rows = np.arange(len(ctx))
    earlier = np.zeros_like(rho, dtype=bool)
    r, c = np.nonzero(ctx.history >= 0)
    earlier[r, ctx.history[r, c]] = True
    earlier[rows[:, None], sim.world.succ[ctx.last_item]] = False
    cheap = np.broadcast_to(sim.world.rel_price < 0, rho.shape)
    for name, chosen in {"viewed": earlier, "cheap": cheap}.items():
        p = (rho * chosen).sum(axis=1)  # the truth's chance that the next view is in the set
        hit = chosen[rows, ctx.next_item]
        assert within_se(hit, p.mean(), np.sqrt((p * (1 - p)).sum()) / len(ctx)), name
    cat = sim.world.category
    expected = np.stack([rho[:, cat == k].sum(axis=1) for k in range(cfg.n_categories)], axis=1)
    observed = np.bincount(cat[ctx.next_item], minlength=cfg.n_categories)
    var = (expected * (1 - expected)).sum(axis=0)
    assert (np.abs(observed - expected.sum(axis=0)) <= 4.5 * np.sqrt(var) + 1).all()


@pytest.mark.parametrize(("cfg", "intent"), [(SMALL, 0.0), (JOURNEY, 1.5), (JOURNEY, -1.5)])
def test_fresh_draws_follow_the_relevance_of_a_first_view(cfg: SyntheticConfig, intent: float) -> None:
    """A first view is a fresh draw: its law is rho of a one-view visitor when nothing is followed."""
    sim = Simulator(replace(cfg, follow_prob=0.0))  # the same world, all mass on the fresh draw
    one = Contexts(
        user=np.array([7]),
        intent=np.array([intent]),
        history=np.array([[0]]),
        carts=np.zeros((1, 1), dtype=bool),
        length=np.array([1]),
        last_cart=np.array([-1]),
        next_item=np.array([-1]),
    )
    rho = sim.relevance(one)[0]
    n = 100_000
    first = synthetic.browse(sim.world, np.full(n, 7), np.full(n, intent), np.ones(n, dtype=np.int64), rng())
    observed = np.bincount(first.views[:, 0], minlength=cfg.n_items)
    big = rho * n >= 5
    expected = np.append(rho[big] * n, rho[~big].sum() * n)
    counts = np.append(observed[big], observed[~big].sum())
    chi2 = ((counts - expected) ** 2 / expected).sum()
    df = expected.size - 1
    assert chi2 < df + 5 * np.sqrt(2 * df), (chi2, df)


def rng() -> np.random.Generator:
    return np.random.default_rng(11)


# --- contexts


def test_contexts_are_session_prefixes(sim: Simulator, ctx: Contexts) -> None:
    assert (ctx.length >= 1).all()
    sessions = ctx.sessions()
    assert [s.size for s in sessions] == ctx.length.tolist()
    assert all(np.isin(s, sim.item_ids).all() for s in sessions)
    assert (ctx.history[np.arange(ctx.history.shape[1]) >= ctx.length[:, None]] == -1).all()
    np.testing.assert_array_equal(ctx.last_item, [s[-1] - ITEM_ID_OFFSET for s in sessions])
    has_cart = ctx.carts.any(axis=1)
    assert 0.05 < has_cart.mean() < 0.9
    np.testing.assert_array_equal(ctx.last_cart >= 0, has_cart)
    assert not ctx.carts[ctx.history < 0].any()
    np.testing.assert_array_equal(sim.contexts(50, seed=9).history, sim.contexts(50, seed=9).history)


# --- clicks, purchases, revenue


def test_probabilities_follow_the_position_based_model(sim: Simulator, ctx: Contexts) -> None:
    cand, _ = sim.scores(ctx, noise=0.0, n_candidates=10)
    p_click, buy = sim.probabilities(ctx, cand, np.arange(10)[None, :])
    rho = sim.relevance(ctx, cand)
    model = PositionBasedClicks()
    np.testing.assert_allclose(p_click, (1 + np.arange(10)) ** -0.7 * -np.expm1(-rho))
    np.testing.assert_allclose(p_click, model.click(rho, np.arange(10)))
    assert 0.02 < p_click.mean() < 0.10  # a realistic click rate per slot for a good top 10
    assert (np.diff(model.examination(np.arange(20))) < 0).all()
    assert ((buy >= 0) & (buy < 1)).all() and 0.01 < buy.mean() < 0.2


def test_out_of_stock_items_are_never_bought(sim: Simulator, ctx: Contexts) -> None:
    out = sim.item_ids[~sim.world.in_stock]
    assert out.size > 0
    items = np.broadcast_to(out, (len(ctx), out.size))
    p_click, buy = sim.probabilities(ctx, items, np.zeros_like(items))
    assert (p_click > 0).all() and (buy == 0).all()
    stocked = np.broadcast_to(sim.item_ids[sim.world.in_stock][:20], (len(ctx), 20))
    _, buy_in = sim.probabilities(ctx, stocked, np.zeros_like(stocked))
    assert (buy_in > 0).mean() > 0.99  # only an item already carted in the session is not bought again
    fb = sim.feedback(ctx, items[:, :5], seed=0)
    assert not fb.purchases.any() and (fb.revenue == 0).all()


def test_sampled_feedback_matches_the_probabilities() -> None:
    sim = Simulator(SMALL, PositionBasedClicks(click_scale=20.0))  # many clicks, so few draws suffice
    base = sim.contexts(200, seed=5)
    shown, _ = sim.scores(base, noise=0.5, seed=1, n_candidates=5)
    reps = 300
    ctx = base.take(np.tile(np.arange(200), reps))
    fb = sim.feedback(ctx, np.tile(shown, (reps, 1)), seed=2)
    p_click, buy = sim.probabilities(base, shown, np.arange(5)[None, :])
    freq = fb.clicks.reshape(reps, 200, 5).mean(axis=0)
    z = (freq - p_click) / np.sqrt(p_click * (1 - p_click) / reps)
    assert np.abs(z).max() < 5.5 and abs(z.mean()) < 4 / np.sqrt(z.size)
    per_click = np.tile(buy, (reps, 1))[fb.clicks]
    bought = fb.purchases[fb.clicks]
    assert within_se(bought, per_click.mean(), np.sqrt((per_click * (1 - per_click)).sum()) / bought.size)
    assert not (fb.purchases & ~fb.clicks).any()
    price = sim.world.price[np.tile(shown, (reps, 1)) - ITEM_ID_OFFSET]
    np.testing.assert_array_equal(fb.revenue, np.where(fb.purchases, price, 0.0))


def test_true_value_of_a_list_is_the_mean_sampled_reward() -> None:
    sim = Simulator(SMALL, PositionBasedClicks(click_scale=5.0))
    ctx = sim.contexts(30000, seed=6)
    slates, _ = sim.scores(ctx, noise=0.3, seed=3, n_candidates=8)
    truth = sim.true_value_of_slates(ctx, slates)
    fb = sim.feedback(ctx, slates, seed=4)
    for name, reward in zip(("click", "purchase", "revenue"), fb, strict=True):
        se = reward.std() / np.sqrt(reward.size)
        assert within_se(reward, truth[name], se), name
    assert truth["click"] > truth["purchase"] > 0


def test_true_value_of_a_uniform_policy_is_the_mean_click_probability(sim: Simulator, ctx: Contexts) -> None:
    cand, _ = sim.scores(ctx, noise=1.0, seed=0, n_candidates=20)
    k = 6
    uniform = np.full((len(ctx), 20, k), 1 / 20)
    value = sim.true_value(ctx, cand, uniform)
    every = np.repeat(cand, k, axis=1)  # each candidate at each slot
    p_click, buy = sim.probabilities(ctx, every, np.tile(np.arange(k), 20)[None, :])
    assert value["click"] == pytest.approx(p_click.mean(), rel=1e-12)
    assert value["purchase"] == pytest.approx((p_click * buy).mean(), rel=1e-12)
    # a one-hot policy is its list
    one_hot = np.zeros((len(ctx), 20, k))
    one_hot[:, np.arange(k), np.arange(k)] = 1.0
    assert sim.true_value(ctx, cand, one_hot) == pytest.approx(sim.true_value_of_slates(ctx, cand[:, :k]))


def test_a_better_oracle_has_a_higher_true_value(sim: Simulator, ctx: Contexts) -> None:
    lists = [sim.scores(ctx, noise=noise, seed=7)[0][:, :10] for noise in (0.0, 1.0, 3.0)]
    values = [sim.true_value_of_slates(ctx, slates) for slates in lists]
    assert values[0]["click"] > values[1]["click"] > values[2]["click"]
    assert values[0]["revenue"] > values[2]["revenue"]
    cand, score = sim.scores(ctx, noise=0.0, n_candidates=50)
    assert (np.diff(score, axis=1) <= 0).all()
    np.testing.assert_allclose(score, np.log(sim.relevance(ctx, cand)))


def test_bad_input_is_refused(sim: Simulator, ctx: Contexts) -> None:
    few = ctx.take(np.arange(3))
    with pytest.raises(UserError, match="42"):
        sim.probabilities(few, np.array([[sim.item_ids[0], 42]] * 3), np.zeros((3, 2), dtype=int))
    with pytest.raises(UserError, match="shape"):
        sim.true_value_of_slates(few, sim.item_ids[:4][None, :])
    cand = np.tile(sim.item_ids[:4], (3, 1))
    with pytest.raises(UserError, match="sum to 1"):
        sim.true_value(few, cand, np.full((3, 4, 2), 0.5))
    with pytest.raises(UserError, match="noise"):
        sim.scores(few, noise=-1.0)
