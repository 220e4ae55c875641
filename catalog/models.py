"""The plan catalog's shape: what an indicator, an agency and a district are.

The catalog itself is data (``catalog/data/*.yaml``); these models are the only place that says
what a valid catalog looks like, so a broken file fails at load time, not in a stream worker.
"""

from __future__ import annotations

import math
from datetime import date
from enum import StrEnum
from functools import cached_property
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CITY_WIDE = "chongqing"
# The largest value (in the indicator's unit) an event may carry unless the catalog says otherwise
# (CONTRACT §1.1): a bound on every accepted value keeps every sum of them finite.
DEFAULT_MAX_VALUE = 1e15
CODE_PATTERN = r"^[a-z][a-z0-9_]*$"


class Kind(StrEnum):
    FLOW = "flow"
    LEVEL = "level"
    INDEX = "index"
    RATIO = "ratio"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


class Shape(StrEnum):
    """How the plan's path runs from the baseline to the target."""

    LINEAR = "linear"
    COMPOUND = "compound"
    FLAT = "flat"  # the target is a bound to hold at every date
    GROWTH = "growth"  # a growth rate on the previous year's actual, no fixed end value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class YearValue(_Strict):
    year: int = Field(ge=1990, le=2100)
    value: float | None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class Thresholds(_Strict):
    on_track: float = Field(gt=0)
    at_risk: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.at_risk >= self.on_track:
            raise ValueError("at_risk must be below on_track")
        return self


class Indicator(_Strict):
    code: str = Field(pattern=CODE_PATTERN, max_length=64)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    section: str = Field(pattern=CODE_PATTERN)
    unit: str = Field(min_length=1)
    unit_aliases: dict[str, float] = Field(default_factory=dict)
    kind: Kind
    direction: Direction = Direction.UP
    baseline: YearValue | None = None
    target: YearValue
    trajectory: Shape = Shape.LINEAR
    annual_growth: float | None = None
    regional: bool = False
    agency: str = Field(pattern=CODE_PATTERN)
    cadence_days: int = Field(ge=1, le=3660)
    allow_negative: bool = False
    # Values above it (or below -max_value where negatives are allowed) are rejected as
    # out_of_range; compared after unit conversion.
    max_value: float = Field(default=DEFAULT_MAX_VALUE, gt=0, allow_inf_nan=False)
    thresholds: Thresholds | None = None
    note: str | None = None
    # Year whose end the path starts from when there is no baseline; the catalog fills it in
    # from the plan's baseline year.
    start_year: int | None = None

    @field_validator("unit_aliases")
    @classmethod
    def _positive_factors(cls, aliases: dict[str, float]) -> dict[str, float]:
        for alias, factor in aliases.items():
            if not (math.isfinite(factor) and factor > 0):
                raise ValueError(f"factor of alias {alias!r} must be a positive finite number")
        return aliases

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.regional and self.kind is not Kind.LEVEL:
            raise ValueError("only a level can be regional (a city-wide flow/index is never summed)")
        if self.baseline is not None:
            if self.baseline.value is None:
                raise ValueError("baseline.value is required when a baseline is given")
            if self.baseline.year >= self.target.year:
                raise ValueError("baseline.year must be before target.year")
        elif self.start_year is None:
            raise ValueError("an indicator without a baseline needs start_year (the catalog sets it)")
        elif self.start_year >= self.target.year:
            raise ValueError("start_year must be before target.year")
        if self.trajectory is Shape.GROWTH:
            if self.annual_growth is None:
                raise ValueError("trajectory 'growth' needs annual_growth")
            if self.kind is not Kind.FLOW:
                raise ValueError("trajectory 'growth' applies to flows only")
        elif self.target.value is None:
            raise ValueError("target.value is required unless trajectory is 'growth'")
        if self.trajectory is Shape.COMPOUND and (
            self.baseline is None or not self.baseline.value or self.baseline.value <= 0
        ):
            raise ValueError("trajectory 'compound' needs a positive baseline value")
        if self.unit in self.unit_aliases:
            raise ValueError(f"unit {self.unit!r} must not be listed among its own aliases")
        return self

    @property
    def path_start_year(self) -> int:
        if self.baseline is not None:
            return self.baseline.year
        assert self.start_year is not None  # enforced by _coherent
        return self.start_year

    def factor_for(self, unit: str) -> float | None:
        """Factor converting a value in ``unit`` into the indicator's unit; None if unknown."""
        if unit == self.unit:
            return 1.0
        return self.unit_aliases.get(unit)


class Agency(_Strict):
    code: str = Field(pattern=CODE_PATTERN, max_length=64)
    name_zh: str
    name_en: str


class District(_Strict):
    code: str = Field(pattern=r"^[a-z]+$")
    name_zh: str
    name_en: str


class Plan(_Strict):
    code: str = Field(pattern=CODE_PATTERN)
    title_zh: str
    title_en: str
    document: str
    published: date
    timezone: str
    baseline_year: int
    target_year: int
    default_thresholds: Thresholds


class Catalog(_Strict):
    plan: Plan
    indicators: tuple[Indicator, ...]
    agencies: tuple[Agency, ...]
    districts: tuple[District, ...]

    @model_validator(mode="before")
    @classmethod
    def _start_years(cls, data: Any) -> Any:
        """Indicators without a baseline start their path at the plan's baseline year."""
        if isinstance(data, dict) and isinstance(data.get("plan"), dict):
            start = data["plan"].get("baseline_year")
            for ind in data.get("indicators") or ():
                if isinstance(ind, dict) and ind.get("baseline") is None:
                    ind.setdefault("start_year", start)
        return data

    @model_validator(mode="after")
    def _references(self) -> Self:
        for what, items in (("indicator", self.indicators), ("agency", self.agencies),
                            ("district", self.districts)):
            seen: set[str] = set()
            for item in items:
                if item.code in seen:
                    raise ValueError(f"duplicate {what} code {item.code!r}")
                seen.add(item.code)
        agencies = {a.code for a in self.agencies}
        for ind in self.indicators:
            if ind.agency not in agencies:
                raise ValueError(f"indicator {ind.code!r}: unknown agency {ind.agency!r}")
        if CITY_WIDE in {d.code for d in self.districts}:
            raise ValueError(f"{CITY_WIDE!r} is the city-wide region, not a district")
        return self

    # Lookups are built once (the catalog is immutable) and live in the instance __dict__: the
    # validator calls them for every event, and pydantic private attributes are slow to read.
    @cached_property
    def _by_code(self) -> dict[str, Indicator]:
        return {i.code: i for i in self.indicators}

    @cached_property
    def _district_codes(self) -> frozenset[str]:
        return frozenset(d.code for d in self.districts)

    @cached_property
    def _agency_codes(self) -> frozenset[str]:
        return frozenset(a.code for a in self.agencies)

    def indicator(self, code: str) -> Indicator | None:
        return self._by_code.get(code)

    def is_agency(self, code: str) -> bool:
        return code in self._agency_codes

    def region_allowed(self, indicator: Indicator, region: str) -> bool:
        """Regional indicators are reported per district; all others city-wide only."""
        if indicator.regional:
            return region in self._district_codes
        return region == CITY_WIDE

    def thresholds_for(self, indicator: Indicator) -> Thresholds:
        return indicator.thresholds or self.plan.default_thresholds
