"""The readout as aligned terminal tables, and as plain JSON-ready data (every number, NaN as null)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from shopformer.abtest.analysis import METRICS, ArmMetrics, Comparison, Readout
from shopformer.abtest.stats import Difference, Interval


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Rows as aligned columns: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for row in [header, *rows]:
        cells = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def decimals(readout: Readout) -> int:
    """Decimals for money: 2, more when revenue per visitor is small (3 significant digits)."""
    rpv = readout.arms[0].revenue_per_visitor
    if rpv is None or not rpv.estimate:
        return 2
    return max(2, 2 - math.floor(math.log10(abs(rpv.estimate))))


def value(metric: str, x: float, places: int, signed: bool = False) -> str:
    """A metric's value: rates in %, their differences in percentage points, money with ``places``."""
    if x is None or not math.isfinite(x):
        return "n/a"
    sign = "+" if signed else ""
    if metric == "conversion":
        return f"{x * 100:{sign}.2f} pp" if signed else f"{x * 100:.2f} %"
    return f"{x:{sign},.{places}f}"


def with_interval(metric: str, i: Interval | None, places: int) -> str:
    if i is None:
        return "n/a"
    lo, hi = (value(metric, v, places).removesuffix(" %") for v in (i.low, i.high))
    return f"{value(metric, i.estimate, places)} [{lo}, {hi}]"


def difference_cells(metric: str, d: Difference, places: int) -> list[str]:
    lo, hi = (value(metric, v, places, signed=True).removesuffix(" pp") for v in (d.low, d.high))
    lift = "n/a"
    if math.isfinite(d.relative):
        lift = f"{d.relative:+.1%} [{d.relative_low * 100:+.1f}, {d.relative_high * 100:+.1f}]"
    return [f"{value(metric, d.diff, places, signed=True)} [{lo}, {hi}]", lift, p_text(d.p_value)]


def percent(x: float, places: int) -> str:
    return f"{x:.{places}%}" if math.isfinite(x) else "n/a"


def p_text(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def arm_rows(arms: Sequence[ArmMetrics], places: int) -> list[list[str]]:
    return [
        [
            m.arm,
            f"{m.units:,}",
            with_interval("conversion", m.conversion, places),
            with_interval("revenue", m.revenue_per_visitor, places),
            with_interval("revenue", m.order_value, places),
        ]
        for m in arms
    ]


def comparison_rows(comparisons: Sequence[Comparison], places: int, alpha: float) -> list[list[str]]:
    """One row per metric (its CUPED and bootstrap variants below it): difference, lift, p, power."""
    rows = []
    for c in comparisons:
        power = percent(c.power.observed_power, 0) if c.power else ""
        mde = percent(c.power.mde_relative, 1) if c.power else ""
        verdict = "significant" if c.difference.significant(alpha) else ""
        cells = difference_cells(c.metric, c.difference, places)
        rows.append([METRICS[c.metric], *cells, p_text(c.p_holm), power, mde, verdict])
        for label, extra in (("  CUPED", c.cuped), ("  bootstrap", c.bootstrap)):
            if extra is not None:
                marker = "significant" if extra.significant(alpha) else ""
                rows.append([label, *difference_cells(c.metric, extra, places), "", "", "", marker])
    return rows


def format_report(readout: Readout) -> str:
    """The readout as the terminal shows it."""
    places, level = decimals(readout), f"{1 - readout.alpha:.0%}"
    units = sum(m.units for m in readout.arms)
    lines = [
        f"A/B readout of {readout.source}: {units:,} units in {len(readout.arms)} arms, control "
        f"{readout.control!r}, {level} intervals",
        *(f"  {note}" for note in readout.notes),
        "",
        *table(
            ["arm", "units", f"conversion [{level}]", "revenue / visitor", "order value"],
            arm_rows(readout.arms, places),
        ),
        "",
        srm_line(readout),
    ]
    for arm in [m.arm for m in readout.arms[1:]]:
        mine = [c for c in readout.comparisons if c.arm == arm]
        if mine:
            header = [f"{arm} vs {readout.control}", "difference", "relative lift (%)", "p", "p (Holm)"]
            rows = comparison_rows(mine, places, readout.alpha)
            header += ["power", f"MDE ({readout.power_target:.0%})", ""]
            if len(readout.arms) <= 2:  # no multiple comparisons: no Holm column
                header, rows = header[:4] + header[5:], [r[:4] + r[5:] for r in rows]
            lines += ["", *table(header, rows, left=1)]
    lines += ["", *method_lines(readout)]
    if readout.warnings:
        lines += ["", "WARNINGS"] + [f"  ! {w}" for w in readout.warnings]
    return "\n".join(lines)


def srm_line(readout: Readout) -> str:
    srm = readout.srm
    planned = "/".join(f"{s * 100:.4g}" for s in srm.planned)
    verdict = "MISMATCH" if srm.mismatch else "no mismatch"
    return (
        f"sample ratio: planned {planned}, chi-square p = {p_text(srm.p_value)}: {verdict} "
        f"(alarm below {srm.threshold})"
    )


def method_lines(readout: Readout) -> list[str]:
    out = [
        "conversion: pooled two-proportion z-test (p), Newcombe hybrid score interval; lift: Katz log",
        "revenue: Welch t-test and interval; lift: delta method; order value: revenue per converting unit",
        "a lift's interval also carries the control's own uncertainty: judge significance by the difference",
        f"power: of the test for the observed difference; MDE: the relative lift found with "
        f"{readout.power_target:.0%} power",
    ]
    if readout.cuped:
        reductions = ", ".join(
            f"{METRICS[m]} {readout.cuped[f'{m}_variance_reduction']:.1%}"
            for m in ("conversion", "revenue_per_visitor")
            if f"{m}_variance_reduction" in readout.cuped
        )
        out.append(
            f"CUPED (theta pooled over arms; Welch on the adjusted values): variance reduction {reductions}"
        )
    return out


def plain(obj: Any) -> Any:
    """Dataclasses, tuples and numpy scalars as JSON-ready values; NaN and infinities as None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(readout: Readout) -> dict[str, Any]:
    """Every number of the readout, as plain data."""
    return plain(readout)
