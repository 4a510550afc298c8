"""Exact position marginals of Plackett-Luce rankings: P(candidate i is shown at position p).

A Plackett-Luce draw with weights ``w`` (items drawn one slot at a time, each with probability
proportional to its weight among those left) is the order in which independent exponential clocks
``T_i ~ Exp(w_i)`` ring. Item ``i`` lands at position ``p`` when exactly ``p`` other clocks ring
before its own, so

    P(rank_i = p) = integral over t of  w_i exp(-w_i t) * PB_p({1 - exp(-w_j t)}, j != i) dt,

with ``PB_p`` the Poisson-binomial probability of exactly ``p`` successes. With ``t = exp(s)`` the
integrand is smooth and doubly-exponentially small at both ends of the real line, where the
trapezoid rule converges geometrically. With a step of 0.4 a slot's probabilities sum to one within
about 1e-5 before renormalisation; the renormalised table matches enumeration of every ranking to
about 1e-9 (tests). The first slot needs no integral (``w_i / sum w``), so the grid starts where the
second slot's mass begins. Enumeration costs N!/(N-k)!; this costs about 35 grid points x N x k x 4
multiply-adds per session (20 candidates, 10 slots, temperature 1). Serving needs only the k
propensities of what it shows: :func:`plackett_luce_propensities` computes them on the same grid in
compiled code (:mod:`shopformer.serve.propensity_kernel`), within about 1e-6 relative of enumeration;
this module's float32 table is for offline use (simulator, OPE targets).
"""

from __future__ import annotations

import numpy as np

STEP = 0.4  # trapezoid step in log-time: a slot's raw sum within 1e-5 of one (the table renormalises)
# Weights below this share of the largest are raised to it: it keeps the integration range finite
# (callers draw with the same floored weights, see ``floored``).
MIN_RATIO = 1e-13
# The grid's first time (weights normalised to sum to one). Slot 0 is exact (w_i / sum w) and takes no
# integral; slot p >= 1 has at most START^(p+1) / (p+1) <= 5e-7 of its mass before START.
START = 1e-3
# The grid's last time: where the k + 1 fastest clocks have all rung but for exp(-REACH) (about 6e-16).
REACH = 35.0


def plackett_luce_marginals(weights: np.ndarray, k: int) -> np.ndarray:
    """Probabilities that candidate ``i`` fills slot ``p`` when ``k`` slots are drawn: [N, k] or [B, N, k].

    ``weights`` [N] or [B, N] are positive (e.g. ``exp(score / temperature)``); every slot's column
    sums to one. A batch shares one integration grid, so many sessions cost little more than one.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        return plackett_luce_marginals(w[None], k)[0]
    k = min(int(k), w.shape[1])
    before, after, density = _race(w, k)
    others = before[:, :1] * after  # [N, k, G, B]: truncated convolution of the two count distributions
    for a in range(1, k):
        others[:, a:] += before[:, a : a + 1] * after[:, : k - a]
    # summed in float64: a session's table does not depend on the batch it was computed in
    marginals = STEP * np.einsum("ngb,npgb->bnp", density.astype(np.float64), others.astype(np.float64))
    first = floored(w)
    marginals[:, :, 0] = first / first.sum(axis=1, keepdims=True)  # the first slot in closed form
    # Renormalise each slot: it removes the (tiny) quadrature error so propensities sum to one exactly.
    return marginals / marginals.sum(axis=1, keepdims=True)


def plackett_luce_propensities(weights: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """[B, k]: the probability of each drawn candidate ``picks[b, p]`` at its own slot ``p``.

    What serving logs: the k entries of :func:`plackett_luce_marginals` that a draw shows, on the
    same grid. Not renormalised, so it can differ from the table's entry by the quadrature error
    (about 1e-6 relative; the table's float32 recursion is the less accurate of the two).
    """
    return plackett_luce_draw_probabilities(weights, picks)[0]


def plackett_luce_draw_probabilities(weights: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([B, k], [B]): each drawn candidate's probability at its slot, and each whole slate's.

    Computed per session in compiled code (:mod:`shopformer.serve.propensity_kernel`): at serving's
    batch sizes the numpy recursion of :func:`plackett_luce_marginals` is mostly call overhead.
    """
    from shopformer.serve import propensity_kernel  # numba: loaded when softmax first serves

    w = np.ascontiguousarray(weights, dtype=np.float64)
    picks = np.ascontiguousarray(picks, dtype=np.int64)
    return propensity_kernel.propensities(w, picks, float(np.log(START)), STEP, MIN_RATIO, REACH)


def _race(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exponential race on the integration grid, clock-major and count-major: (counts among the
    clocks before each one [N, k, G, B], counts among those after it [N, k, G, B], dP(T_i <= t)/ds
    [N, G, B]). Count-major keeps every step of the recursion on contiguous memory."""
    b, n = w.shape
    w = floored(w)
    w = w / w.sum(axis=1, keepdims=True)
    # Before t = START at most START^(p+1) of slot p's mass is cut (slot 0 is not integrated); past the
    # time when the k + 1 fastest clocks have all rung (up to e^-35), no slot < k is left.
    fast = np.sort(w, axis=1)[:, -min(k + 1, n)] if k < n else w.min(axis=1)
    s = np.arange(np.log(START), np.log(REACH / fast.min()) + STEP, STEP)
    g = s.size
    # float32 is enough here (the quadrature error is 1e-5) and halves the memory traffic
    wt = (w.T.astype(np.float32)[:, None, :] * np.exp(s).astype(np.float32)[None, :, None]).reshape(n, g * b)
    missed = np.exp(-wt)  # P(clock j has not rung by time t)
    rung = 1.0 - missed
    # Both recursions at once, half the numpy calls (a serving batch is small enough for the calls'
    # overhead to matter): pair[t, 0] = counts among clocks 0..t-1 (a prefix), pair[t, 1] = counts
    # among clocks n-t..n-1 (a suffix); step t adds clock t and clock n-1-t.
    pair = np.empty((n, 2, k, g * b), dtype=np.float32)
    pair[0] = 0.0
    pair[0, :, 0] = 1.0
    missed_pair = np.stack([missed, missed[::-1]], axis=1)[:, :, None, :]  # [n, 2, 1, M]
    rung_pair = np.stack([rung, rung[::-1]], axis=1)[:, :, None, :]
    scratch = np.empty((2, k - 1, g * b), dtype=np.float32)
    for t in range(n - 1):
        _add_clock(pair[t], missed_pair[t], rung_pair[t], scratch, out=pair[t + 1])
    prefix = pair[:, 0].reshape(n, k, g, b)  # prefix[i]: counts among clocks 0..i-1
    suffix = pair[::-1, 1].reshape(n, k, g, b)  # suffix[i]: counts among clocks i+1..n-1
    return prefix, suffix, (wt * missed).reshape(n, g, b)


def _add_clock(
    counts: np.ndarray, missed: np.ndarray, rung: np.ndarray, scratch: np.ndarray, out: np.ndarray
) -> None:
    """Into ``out``: the count distributions [..., k, M] after one more clock each, which has rung
    with probability ``rung`` [..., 1, M] (``scratch``: [..., k - 1, M] of working memory)."""
    np.multiply(counts, missed, out=out)
    if counts.shape[-2] > 1:
        np.multiply(counts[..., :-1, :], rung, out=scratch)
        np.add(out[..., 1:, :], scratch, out=out[..., 1:, :])


def floored(weights: np.ndarray) -> np.ndarray:
    """Weights with none below :data:`MIN_RATIO` of the largest of their row."""
    w = np.asarray(weights, dtype=np.float64)
    return np.maximum(w, MIN_RATIO * w.max(axis=-1, keepdims=True))


def plackett_luce_slate_probability(weights: np.ndarray, slate: np.ndarray) -> float:
    """Probability of drawing exactly ``slate`` (candidate indices, in slot order)."""
    return float(plackett_luce_slate_probabilities(np.asarray(weights)[None], np.asarray(slate)[None])[0])


def plackett_luce_slate_probabilities(weights: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """[B]: probability of drawing exactly ``slates[b]`` from ``weights[b]``."""
    w = np.asarray(weights, dtype=np.float64)
    slates = np.asarray(slates)
    chosen = np.take_along_axis(w, slates, axis=1)
    unchosen = w.copy()
    np.put_along_axis(unchosen, slates, 0.0, axis=1)
    # weight left before each slot = the unchosen items + this slot's and later ones (no cancellation)
    left = unchosen.sum(axis=1, keepdims=True) + np.cumsum(chosen[:, ::-1], axis=1)[:, ::-1]
    return np.prod(chosen / left, axis=1)
