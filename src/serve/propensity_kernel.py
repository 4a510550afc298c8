"""Compiled kernel for the propensities serving logs under Plackett-Luce (softmax) exploration.

The same integral as :mod:`shopformer.serve.rank_marginals` (the exponential race in log-time, on the
same trapezoid grid), but only for the k candidates a draw shows, one session at a time in compiled
code: about 35 grid points x (N exponentials + 3 N k multiply-adds) a session, about 20 us for 20
candidates and 10 slots, where the numpy recursion, mostly per-call overhead at serving's small
batches, took about 150 us a session (issue 17). On the whole grid at once, the clocks not shown
are combined once and the shown ones as a prefix and a suffix (the suffix starting from the clocks
not shown), so each shown candidate's "all other clocks" distribution is one convolution, of which
only the coefficient for its own slot is needed.

numba compiles it on first use and caches the machine code beside this file (or in the user's cache
when the install is read-only); :func:`warm_up` does it before a server takes traffic.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _session(
    w: np.ndarray, picks: np.ndarray, start: float, points: int, step: float, out: np.ndarray
) -> None:
    """Propensities of one session's shown candidates ``picks`` [k] at slots 1..k-1 into ``out`` [k];
    ``w`` [N] sums to one. Slot 0 is left to the caller (closed form). The grid is the innermost
    axis of every array, so each step of the recursions is one SIMD loop."""
    n, k = w.size, picks.size
    t = np.empty(points)
    for g in range(points):
        t[g] = math.exp(start + g * step)
    missed = np.empty((n, points))  # P(clock j has not rung by t)
    for j in range(n):
        for g in range(points):
            missed[j, g] = math.exp(-w[j] * t[g])
    shown = np.zeros(n, dtype=np.bool_)
    for p in range(k):
        shown[picks[p]] = True
    prefix = np.zeros((k + 1, k, points))  # prefix[p]: counts among the shown clocks of slots 0..p-1
    suffix = np.zeros((k + 1, k, points))  # suffix[p]: among those of slots p..k-1 and those not shown
    prefix[0, 0, :] = 1.0
    suffix[k, 0, :] = 1.0
    for j in range(n):
        if not shown[j]:
            _add(suffix[k], missed[j], suffix[k], k)
    for p in range(k):
        _add(prefix[p], missed[picks[p]], prefix[p + 1], k)
        q = k - 1 - p
        _add(suffix[q + 1], missed[picks[q]], suffix[q], k)
    others = np.empty(points)
    for p in range(1, k):
        # P(exactly p of the other clocks rang by t): the shown ones before it + all the rest = p
        others[:] = 0.0
        for a in range(p + 1):
            for g in range(points):
                others[g] += prefix[p, a, g] * suffix[p + 1, p - a, g]
        i = picks[p]
        total = 0.0
        for g in range(points):
            total += w[i] * t[g] * missed[i, g] * others[g]  # dP(T_i <= t)/ds times that probability
        out[p] = step * total


@numba.njit(cache=True, nogil=True)
def _add(counts: np.ndarray, missed: np.ndarray, into: np.ndarray, k: int) -> None:
    """``into`` [k, G] = ``counts`` [k, G] with one more clock, not yet rung with probability
    ``missed`` [G]; ``into`` may be ``counts`` (the update runs from the highest count down)."""
    points = missed.size
    for c in range(k - 1, 0, -1):
        for g in range(points):
            into[c, g] = counts[c, g] * missed[g] + counts[c - 1, g] * (1.0 - missed[g])
    for g in range(points):
        into[0, g] = counts[0, g] * missed[g]


@numba.njit(cache=True, nogil=True)
def propensities(
    weights: np.ndarray, picks: np.ndarray, start: float, step: float, min_ratio: float, reach: float
) -> tuple[np.ndarray, np.ndarray]:
    """([B, k], [B]): each shown candidate's probability at its slot, and each slate's probability.

    ``weights`` [B, N] are positive; those below ``min_ratio`` of their row's largest are raised to
    it, as the draw does. Session b's grid starts at log-time ``start`` and ends where its k + 1
    fastest clocks have all rung with probability 1 - exp(-``reach``), so its propensities do not
    depend on the batch it came in."""
    b, n = weights.shape
    k = picks.shape[1]
    out = np.zeros((b, k))
    slates = np.ones(b)
    if k == 0:
        return out, slates
    for i in range(b):
        w = np.maximum(weights[i], min_ratio * weights[i].max())
        w = w / w.sum()
        fast = np.sort(w)[n - k - 1] if k < n else w.min()
        points = int(math.floor((math.log(reach / fast) - start) / step)) + 1
        if k > 1:  # slot 0 needs no integral
            _session(w, picks[i], start, points, step, out[i])
        out[i, 0] = w[picks[i, 0]]  # the first slot in closed form
        # the weight left before each slot = the candidates never shown + this slot's and later ones,
        # summed from the last slot up (no cancellation)
        unshown = np.ones(n, dtype=np.bool_)
        unshown[picks[i]] = False
        left = w[unshown].sum()
        for p in range(k - 1, -1, -1):
            left += w[picks[i, p]]
            slates[i] *= w[picks[i, p]] / left
    return out, slates


def warm_up() -> None:
    """Compile (or load from numba's cache) before the first request needs it."""
    propensities(np.ones((1, 3)), np.array([[0, 1]], dtype=np.int64), -1.0, 0.5, 1e-13, 35.0)
