"""One row per unit from our serving logs: a server's ``log_dir`` with ``impressions/`` and ``feedback/``.

An impression's ``arm`` is its A/B assignment (null outside an experiment: left out, and counted).
The unit is the impressions' ``unit`` column when they have one, else each request (``request_id``);
``--unit`` names another impression column. Feedback rows reach their unit through ``request_id``: a
unit converted when any of its feedback events is a purchase, and its revenue is the sum of its
feedback revenue. A unit's time is its first impression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shopformer.abtest.units import UnitTable, attach_pre_period, check_arms, covariate_note, per_unit
from shopformer.errors import DataError
from shopformer.serve.event_log import read_log, segment_paths

UNIT_COLUMN, REQUEST = "unit", "request_id"


def unit_key(impressions: pd.DataFrame, unit: str | None, source: str) -> str:
    """The impression column that identifies a unit (see the module docstring)."""
    if unit is not None:
        if unit not in impressions.columns:
            raise DataError(
                f"{source}: the impressions have no column {unit!r} (--unit); "
                f"they have {', '.join(impressions.columns)}"
            )
        return unit
    if UNIT_COLUMN in impressions.columns and impressions[UNIT_COLUMN].notna().any():
        return UNIT_COLUMN
    return REQUEST


def read_feedback(directory: Path) -> tuple[pd.DataFrame, list[str]]:
    """The feedback log (empty, with a note, when the server logged none)."""
    try:
        segment_paths(directory / "feedback", "feedback")
    except DataError:
        empty = pd.DataFrame({REQUEST: [], "event": [], "revenue": []})
        return empty, [f"{directory / 'feedback'}: no feedback log segments: no unit converted"]
    return read_log(directory / "feedback", "feedback").to_pandas(), []


def from_logs(
    directory: str | Path,
    unit: str | None = None,
    converted_event: str = "purchase",
    pre_period: str | Path | None = None,
    covariate: str | None = None,
) -> UnitTable:
    """Per-unit table of the experiment's impressions and their feedback."""
    directory = Path(directory)
    source = str(directory)
    impressions = read_log(directory / "impressions", "impressions").to_pandas()
    if impressions.empty:
        raise DataError(f"{directory / 'impressions'}: no impressions in the log")
    if "arm" not in impressions.columns:
        raise DataError(f"{source}: the impressions have no column 'arm' (they predate A/B splitting)")
    key = unit_key(impressions, unit, source)
    notes = [f"unit: {key}" + (" (each request; the impressions carry no unit id)" if key == REQUEST else "")]
    without_arm = impressions["arm"].isna() | (impressions["arm"].astype(str).str.strip() == "")
    if without_arm.any():
        notes.append(
            f"{int(without_arm.sum()):,} impressions without an arm (outside the experiment): left out"
        )
    shown = impressions[~without_arm]
    check_arms(shown["arm"].astype(str), "arm", source, what="impressions")
    without_unit = shown[key].isna()
    if without_unit.any():
        notes.append(f"{int(without_unit.sum()):,} impressions without a value in {key!r}: left out")
        shown = shown[~without_unit]
    feedback, feedback_notes = read_feedback(directory)
    request_unit = pd.Series(shown[key].astype(str).to_numpy(), index=shown[REQUEST].astype(str).to_numpy())
    request_unit = request_unit[~request_unit.index.duplicated()]
    fb_unit = feedback[REQUEST].astype(str).map(request_unit)
    orphans = int(fb_unit.isna().sum())
    if orphans:
        notes.append(f"{orphans:,} feedback rows for requests outside the experiment's impressions: left out")
    feedback, fb_unit = feedback[fb_unit.notna()], fb_unit[fb_unit.notna()]
    arm_of_unit = dict(zip(shown[key].astype(str), shown["arm"].astype(str), strict=True))
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "unit": shown[key].astype(str).to_numpy(),
                    "arm": shown["arm"].astype(str).to_numpy(),
                    "converted": 0.0,
                    "revenue": np.nan,
                    "time": shown["time"].to_numpy(np.float64),
                }
            ),
            pd.DataFrame(
                {
                    "unit": fb_unit.to_numpy(),
                    "arm": fb_unit.map(arm_of_unit).to_numpy(),
                    "converted": (feedback["event"] == converted_event).to_numpy(np.float64),
                    "revenue": feedback["revenue"].astype(np.float64).fillna(0.0).to_numpy(),
                    "time": np.nan,
                }
            ),
        ],
        ignore_index=True,
    ).assign(covariate=np.nan)
    units, conflicts = per_unit(rows)
    check_arms(units["arm"], "arm", source, what="units assigned to one arm only")
    if pre_period is not None:
        if covariate is None:
            raise DataError(f"{pre_period}: a pre-period file needs --covariate COLUMN (its value column)")
        units = attach_pre_period(units, pre_period, key, covariate)
    units["revenue"] = units["revenue"].fillna(0.0)
    notes += feedback_notes + conflicts + ([covariate_note(units)] if pre_period is not None else [])
    return UnitTable(units, source, True, pre_period is not None, True, notes)
