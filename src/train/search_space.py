"""An Optuna search space from Hydra override strings (``hydra.sweeper.params`` and the command line).

``choice(a, b, ...)`` (and ``a,b``) is categorical, ``interval(lo, hi)`` a float range,
``tag(log, interval(lo, hi))`` the same on a log scale, ``range(start, stop[, step])`` integers
(``stop`` excluded; a float range becomes categorical). Any other override is fixed: every trial
gets it as written. A later override of the same key wins, so the command line can narrow, widen or
fix what the recipe searches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from shopformer.errors import ConfigError

if TYPE_CHECKING:  # optuna is imported only by a sweep that uses it
    from optuna.distributions import BaseDistribution

LOG = "log"
PLAIN = re.compile(r"[\w.:/+-]+")  # a string value Hydra's override grammar reads without quotes


@dataclass
class SearchSpace:
    """What Optuna samples (by override key) and the overrides every trial gets as they are."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    searched: dict[str, str] = field(default_factory=dict)  # key -> the override as written
    fixed: dict[str, str] = field(default_factory=dict)  # key -> the override as written

    @classmethod
    def parse(cls, overrides: list[str]) -> SearchSpace:
        """The space of ``overrides`` (``key=value`` strings, Hydra's grammar)."""
        space = cls()
        for override in OverridesParser.create().parse_overrides(overrides):
            key = override.get_key_element()
            for table in (space.distributions, space.searched, space.fixed):
                table.pop(key, None)
            if override.is_sweep_override():
                space.distributions[key] = distribution(override)
                space.searched[key] = override.input_line or key
            else:
                space.fixed[key] = override.input_line or key
        return space

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then its sampled values."""
        return [*self.fixed.values(), *(f"{key}={format_value(value)}" for key, value in params.items())]


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (a :class:`ConfigError` names what is wrong)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep, key = override.value(), override.get_key_element()
    if not isinstance(sweep, ChoiceSweep | IntervalSweep | RangeSweep):
        raise ConfigError(f"{key}: {type(sweep).__name__} cannot be searched (use choice, interval or range)")
    unknown = set(sweep.tags) - {LOG}
    if unknown or (LOG in sweep.tags and not isinstance(sweep, IntervalSweep)):
        raise ConfigError(f"{key}: tag {sorted(sweep.tags)} (only tag(log, interval(lo, hi)) is understood)")
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(_plain_choices(key, sweep.list))
    if isinstance(sweep, IntervalSweep):
        low, high = float(sweep.start), float(sweep.end)
        if not low < high or (LOG in sweep.tags and low <= 0):
            raise ConfigError(f"{key}: interval({low}, {high}) is empty (or not positive on a log scale)")
        return FloatDistribution(low, high, log=LOG in sweep.tags)
    return _range(key, sweep, IntDistribution, CategoricalDistribution)


def _plain_choices(key: str, values: list[Any]) -> list[Any]:
    for value in values:
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ConfigError(f"{key}: choice of {value!r}: Optuna chooses among plain values only")
    return list(values)


def _range(key: str, sweep: RangeSweep, integers: type, categorical: type) -> BaseDistribution:
    start, stop, step = sweep.start, sweep.stop, sweep.step or 1
    if all(isinstance(v, int) for v in (start, stop, step)):
        values = list(range(start, stop, step))
        if not values:
            raise ConfigError(f"{key}: range({start}, {stop}, {step}) is empty")
        return integers(values[0], values[-1], step=step)
    values = []
    while (step > 0 and start < stop) or (step < 0 and start > stop):
        values.append(round(start, 12))
        start += step
    if not values:
        raise ConfigError(f"{key}: range({sweep.start}, {sweep.stop}, {step}) is empty")
    return categorical(values)


def format_value(value: Any) -> str:
    """A sampled value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and not PLAIN.fullmatch(value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)
