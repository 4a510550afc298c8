"""The readout's plots as PNG files: per-arm metrics, the lifts against 0, the cumulative difference.

matplotlib's object API only (a ``Figure`` on an Agg canvas, no pyplot state). The cumulative plot
recomputes the conversion difference and its interval as units arrive: it shows how an interval that
leaves 0 early can come back, which is why a test is read once, at its planned size (no peeking).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shopformer.abtest.analysis import METRICS, Readout
from shopformer.abtest.stats import two_proportions
from shopformer.abtest.units import UnitTable

ARMS_PNG, LIFT_PNG, CUMULATIVE_PNG = "arms.png", "lift.png", "cumulative.png"
CHECKPOINTS = 100


def save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def arms_plot(readout: Readout, path: Path) -> Path:
    """One panel per metric: each arm's value with its interval."""
    panels = [("conversion", [m.conversion for m in readout.arms])]
    if readout.arms[0].revenue_per_visitor is not None:
        panels.append(("revenue_per_visitor", [m.revenue_per_visitor for m in readout.arms]))
        panels.append(("order_value", [m.order_value for m in readout.arms]))
    fig = Figure(figsize=(4 * len(panels), 3.6))
    names = [m.arm for m in readout.arms]
    for i, (metric, intervals) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        scale = 100.0 if metric == "conversion" else 1.0
        est = np.array([iv.estimate for iv in intervals]) * scale
        lo = np.array([iv.low for iv in intervals]) * scale
        hi = np.array([iv.high for iv in intervals]) * scale
        x = np.arange(len(names))
        ax.errorbar(x, est, yerr=[est - lo, hi - est], fmt="o", capsize=6, color="tab:blue")
        ax.axhline(est[0], color="grey", lw=0.8, ls="--")  # the control's level
        ax.set_xticks(x, names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(METRICS[metric] + (" (%)" if metric == "conversion" else ""))
    fig.suptitle(f"per arm, {1 - readout.alpha:.0%} intervals (dashed: control)")
    return save(fig, path)


def lift_plot(readout: Readout, path: Path) -> Path:
    """Every arm's difference (CUPED too) with its interval against 0, in % of the control's value.

    The difference's own interval scaled by the control mean (not the lift's wider interval, which
    also carries the control's uncertainty), so that it leaves 0 exactly when the test is significant.
    """
    rows = []
    for c in readout.comparisons:
        rows.append((f"{METRICS[c.metric]}: {c.arm}", c.difference))
        if c.cuped is not None:
            rows.append((f"{METRICS[c.metric]}: {c.arm}, CUPED", c.cuped))
    rows = [(label, d) for label, d in rows if d.control][::-1]  # the first comparison on top
    fig = Figure(figsize=(7, 1.2 + 0.45 * max(len(rows), 1)))
    ax = fig.add_subplot()
    for y, (_, d) in enumerate(rows):
        e, lo, hi = (100 * v / abs(d.control) for v in (d.diff, d.low, d.high))
        colour = "tab:green" if d.significant(readout.alpha) else "tab:grey"
        ax.errorbar(e, y, xerr=[[e - lo], [hi - e]], fmt="o", capsize=5, color=colour)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel(f"difference vs {readout.control}, % of its value ({1 - readout.alpha:.0%} interval)")
    ax.set_title("difference against 0 (green: significant)")
    return save(fig, path)


def cumulative_plot(table: UnitTable, readout: Readout, path: Path) -> Path | None:
    """Conversion difference (each arm - control) and its interval as units arrive; None without times."""
    frame = table.frame[table.frame["time"].notna()].sort_values("time", kind="stable")
    if frame.empty:
        return None
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    is_control = (frame["arm"] == readout.control).to_numpy()
    converted = frame["converted"].to_numpy(np.float64)
    n_a, x_a = np.cumsum(is_control), np.cumsum(converted * is_control)
    lows: list[float] = []
    highs: list[float] = []
    for arm in [m.arm for m in readout.arms[1:]]:
        mine = (frame["arm"] == arm).to_numpy()
        n_b, x_b = np.cumsum(mine), np.cumsum(converted * mine)
        start = int(np.argmax((n_a >= 2) & (n_b >= 2) & (x_a + x_b > 0)))
        points = np.unique(np.linspace(start, len(frame) - 1, CHECKPOINTS).astype(int))
        diffs = [
            two_proportions(int(x_a[i]), int(n_a[i]), int(x_b[i]), int(n_b[i]), readout.alpha) for i in points
        ]
        units = n_a[points] + n_b[points]
        line = ax.plot(units, [d.diff * 100 for d in diffs], label=f"{arm} - {readout.control}")[0]
        ax.fill_between(
            units,
            [d.low * 100 for d in diffs],
            [d.high * 100 for d in diffs],
            color=line.get_color(),
            alpha=0.2,
        )
        settled = points >= len(frame) // 10  # the first tenth's wide intervals would flatten the rest
        lows += [d.low * 100 for d, keep in zip(diffs, settled, strict=True) if keep]
        highs += [d.high * 100 for d, keep in zip(diffs, settled, strict=True) if keep]
    if lows:
        margin = 0.1 * (max(highs) - min(lows))
        ax.set_ylim(min(min(lows), 0) - margin, max(max(highs), 0) + margin)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("units so far (in time order)")
    ax.set_ylabel("conversion difference (pp)")
    ax.set_title("cumulative difference: read the test once, at its planned size")
    ax.legend()
    return save(fig, path)


def write_plots(table: UnitTable, readout: Readout, directory: str | Path) -> list[Path]:
    """Every plot the data allows, into ``directory``; their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [arms_plot(readout, out / ARMS_PNG)]
    if readout.comparisons:
        paths.append(lift_plot(readout, out / LIFT_PNG))
    if table.has_time:
        cumulative = cumulative_plot(table, readout, out / CUMULATIVE_PNG)
        paths += [cumulative] if cumulative else []
    return paths
