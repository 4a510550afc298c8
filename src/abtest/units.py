"""One row per unit (visitor) from an event log or a per-unit table (CSV or Parquet).

A unit's arm is its assignment; it converted when any of its events is the conversion event (or its
``converted`` flag is set, or, with neither column, its revenue is positive); its revenue is the sum
over its rows, its time the first of its rows. The file is read as text (CSV) so that a bad value is
reported as the file shows it. Problems that leave a sound readout (rows without a unit or arm, units
in two arms, units without a pre-period value) are counted in :attr:`UnitTable.notes`, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shopformer.abtest.values import flags, numbers, present, times
from shopformer.errors import DataError, one_line

DEFAULT_REVENUE, DEFAULT_EVENT, DEFAULT_CONVERTED, DEFAULT_TIME = "revenue", "event_type", "converted", "time"


@dataclass(frozen=True)
class Columns:
    """Column names of the input. ``None``: the default name, used when the file has it."""

    unit: str = "user_id"
    arm: str = "arm"
    revenue: str | None = None
    event: str | None = None
    converted_event: str = "purchase"
    converted: str | None = None
    covariate: str | None = None
    time: str | None = None


@dataclass
class UnitTable:
    """Per-unit ``frame``: unit, arm, converted (0/1), revenue, covariate (NaN: none), time (NaN)."""

    frame: pd.DataFrame
    source: str
    has_revenue: bool
    has_covariate: bool
    has_time: bool
    notes: list[str] = field(default_factory=list)

    @property
    def arms(self) -> list[str]:
        return sorted(self.frame["arm"].unique())


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (every column as text, as the file shows it) or Parquet file; a clear error when empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pq.read_table(path).to_pandas()
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (no header, no rows)") from None
    except (OSError, ValueError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable CSV or Parquet file ({one_line(exc)})") from None
    if frame.empty:
        raise DataError(f"{path}: no rows (columns: {', '.join(map(str, frame.columns))})")
    return frame


def column(frame: pd.DataFrame, name: str | None, default: str, source: str, what: str) -> str | None:
    """``name`` (must be in the file) or, when None, ``default`` if the file has it (else None)."""
    if name is None:
        return default if default in frame.columns else None
    if name not in frame.columns:
        raise DataError(
            f"{source}: no column {name!r} ({what}); the file has {', '.join(map(str, frame.columns))}"
        )
    return name


def check_arms(arms: pd.Series, column_name: str, source: str, what: str = "rows") -> None:
    """At least two arms, or one line that says what the column holds."""
    values = arms.unique()
    if len(values) >= 2:
        return
    if not len(values):
        raise DataError(f"{source}: column {column_name!r} is empty: an A/B readout needs at least two arms")
    raise DataError(
        f"{source}: column {column_name!r} has one value {values[0]!r} in {len(arms):,} {what}: "
        "an A/B readout needs at least two arms"
    )


def converted_rows(frame: pd.DataFrame, cols: Columns, source: str) -> tuple[np.ndarray, str]:
    """Per row: 1 when the row converts; and a phrase saying how conversion was read."""
    event = column(frame, cols.event, DEFAULT_EVENT, source, "the event type; --event")
    if event is not None:
        values = frame[event].astype(str).str.strip()
        return (values == cols.converted_event).to_numpy(np.float64), f"{event} == {cols.converted_event!r}"
    flag = column(frame, cols.converted, DEFAULT_CONVERTED, source, "the conversion flag; --converted")
    if flag is not None:
        return flags(frame[flag], flag, source), f"{flag} is true"
    revenue = column(frame, cols.revenue, DEFAULT_REVENUE, source, "revenue; --revenue")
    if revenue is not None:
        return (numbers(frame[revenue], revenue, source) > 0).astype(np.float64), f"{revenue} > 0"
    raise DataError(
        f"{source}: nothing says which units converted: no column {DEFAULT_EVENT!r} (--event), "
        f"{DEFAULT_CONVERTED!r} (--converted) or {DEFAULT_REVENUE!r} (--revenue); "
        f"the file has {', '.join(map(str, frame.columns))}"
    )


def unit_rows(frame: pd.DataFrame, cols: Columns, source: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows as unit, arm, converted, revenue, covariate, time (NaN where absent) and notes."""
    for name, what in ((cols.unit, "the unit id; --unit"), (cols.arm, "the assignment; --arm")):
        column(frame, name, name, source, what)
    converted, how = converted_rows(frame, cols, source)
    revenue = column(frame, cols.revenue, DEFAULT_REVENUE, source, "revenue; --revenue")
    covariate = column(frame, cols.covariate, "", source, "the pre-period covariate; --covariate")
    time = column(frame, cols.time, DEFAULT_TIME, source, "the event time; --time")
    rows = pd.DataFrame(
        {
            "unit": frame[cols.unit].astype(str).str.strip().where(present(frame[cols.unit])),
            "arm": frame[cols.arm].astype(str).str.strip().where(present(frame[cols.arm])),
            "converted": converted,
            "revenue": numbers(frame[revenue], revenue, source) if revenue else np.nan,
            "covariate": numbers(frame[covariate], covariate, source, missing=np.nan)
            if covariate
            else np.nan,
        }
    )
    notes = [f"conversion: {how}"]
    if time is not None:
        rows["time"], note = times(frame[time], time)
        notes += [note] if note else []
    else:
        rows["time"] = np.nan
    return rows, notes


def drop_incomplete(rows: pd.DataFrame, cols: Columns, what: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows with both a unit and an arm; a note for each kind dropped."""
    notes = []
    for key, name in (("unit", cols.unit), ("arm", cols.arm)):
        missing = int(rows[key].isna().sum())
        if missing:
            notes.append(f"{missing:,} {what} without a value in {name!r}: left out")
            rows = rows[rows[key].notna()]
    return rows, notes


def per_unit(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per unit; units seen in more than one arm are dropped (and counted)."""
    arms_per_unit = rows.groupby("unit", sort=False)["arm"].nunique()
    conflicted = arms_per_unit[arms_per_unit > 1]
    notes = []
    if len(conflicted):
        example = conflicted.index[0]
        example_arms = sorted(rows.loc[rows["unit"] == example, "arm"].unique())
        notes.append(
            f"{len(conflicted):,} units were assigned to more than one arm (e.g. {example!r} in "
            f"{' and '.join(example_arms)}): left out of the readout"
        )
        rows = rows[~rows["unit"].isin(conflicted.index)]
    grouped = rows.groupby("unit", sort=True)
    units = pd.DataFrame(
        {
            "arm": grouped["arm"].first(),
            "converted": grouped["converted"].max(),
            "revenue": grouped["revenue"].sum(min_count=1),
            "covariate": grouped["covariate"].first(),  # first non-missing: repeated on each row
            "time": grouped["time"].min(),
        }
    ).reset_index()
    return units, notes


def attach_pre_period(units: pd.DataFrame, path: str | Path, unit: str, covariate: str) -> pd.DataFrame:
    """The covariate from a pre-period file (unit, covariate; summed over a unit's rows)."""
    source = str(path)
    pre = read_table(path)
    column(pre, unit, unit, source, "the unit id; --unit")
    column(pre, covariate, covariate, source, "the pre-period covariate; --covariate")
    keys = pre[unit].astype(str).str.strip()
    values = pd.Series(numbers(pre[covariate], covariate, source, missing=np.nan), index=pre.index)
    per_unit_value = values.groupby(keys).sum(min_count=1)
    return units.assign(covariate=units["unit"].map(per_unit_value).astype(np.float64))


def covariate_note(units: pd.DataFrame) -> str:
    """How many units CUPED can adjust (the rest keep their own values)."""
    with_value = int(units["covariate"].notna().sum())
    return (
        f"CUPED used for {with_value:,} of {len(units):,} units; {len(units) - with_value:,} without a "
        "pre-period value kept unadjusted (given the mean covariate: unbiased, less variance reduction)"
    )


def from_frame(
    frame: pd.DataFrame, cols: Columns, source: str, pre_period: str | Path | None = None
) -> UnitTable:
    """Per-unit table of an event log or per-unit table already read (see :func:`read_table`)."""
    if pre_period is not None and cols.covariate is None:
        raise DataError(f"{pre_period}: a pre-period file needs --covariate COLUMN (its value column)")
    cols_in_file = cols if pre_period is None else replace(cols, covariate=None)
    rows, notes = unit_rows(frame, cols_in_file, source)
    rows, dropped = drop_incomplete(rows, cols, "rows")
    check_arms(rows["arm"], cols.arm, source)
    units, conflicts = per_unit(rows)
    check_arms(units["arm"], cols.arm, source, what="units assigned to one arm only")
    if pre_period is not None:
        units = attach_pre_period(units, pre_period, cols.unit, str(cols.covariate))
    has_covariate = cols.covariate is not None
    notes = notes + dropped + conflicts + ([covariate_note(units)] if has_covariate else [])
    has_revenue = column(frame, cols.revenue, DEFAULT_REVENUE, source, "revenue; --revenue") is not None
    units["revenue"] = units["revenue"].fillna(0.0)
    return UnitTable(units, source, has_revenue, has_covariate, bool(units["time"].notna().any()), notes)


def from_file(path: str | Path, cols: Columns, pre_period: str | Path | None = None) -> UnitTable:
    """Per-unit table of an event log or per-unit table in a CSV or Parquet file."""
    return from_frame(read_table(path), cols, str(path), pre_period)
