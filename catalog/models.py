"""The plan catalog's shape: what an indicator, an agency and a district are.

The catalog itself is data (``catalog/data/*.yaml``); these models are the only place that says
what a valid catalog looks like, so a broken file fails at load time, not in a stream worker.
"""

from __future__ import annotations

import math
from datetime import date
from enum import StrEnum
from functools import cached_property
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

CITY_WIDE = "chongqing"
# The largest value (in the indicator's unit) an event may carry unless the catalog says otherwise
# (CONTRACT §1.1): a bound on every accepted value keeps every sum of them finite.
DEFAULT_MAX_VALUE = 1e15
CODE_PATTERN = r"^[a-z][a-z0-9_]*$"
# Validation context key: the caller checks reference_problems itself (catalog/loader.py).
REFERENCES_CHECKED_BY_CALLER = "references_checked_by_caller"


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


# A baseline the plan does not state: the system takes it from the data (docs/numbers.md,
# "Baselines from data"): the agency's reported value for the end of the baseline year, or else
# its first report.
FROM_DATA = "from_data"


class Baseline(_Strict):
    """The value the path starts from at the end of ``year``: a number the plan states, or
    ``from_data`` where the plan states none."""

    year: int = Field(ge=1990, le=2100)
    value: float | Literal["from_data"]

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @property
    def stated(self) -> float | None:
        """The plan's own number, None where it is taken from data."""
        return None if isinstance(self.value, str) else self.value


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
    baseline: Baseline
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
        if self.baseline.year >= self.target.year:
            raise ValueError("baseline.year must be before target.year")
        if self.trajectory is Shape.GROWTH:
            if self.annual_growth is None:
                raise ValueError("trajectory 'growth' needs annual_growth")
            if self.kind is not Kind.FLOW:
                raise ValueError("trajectory 'growth' applies to flows only")
        elif self.target.value is None:
            raise ValueError("target.value is required unless trajectory is 'growth'")
        if self.trajectory is Shape.COMPOUND and not (self.baseline.stated or 0) > 0:
            raise ValueError("trajectory 'compound' needs a positive baseline value stated by the plan")
        if self.unit in self.unit_aliases:
            raise ValueError(f"unit {self.unit!r} must not be listed among its own aliases")
        return self

    @property
    def path_start_year(self) -> int:
        return self.baseline.year

    @property
    def baseline_from_data(self) -> bool:
        return self.baseline.stated is None

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
    baseline_year: int = Field(ge=1990, le=2100)
    target_year: int = Field(ge=1990, le=2100)
    default_thresholds: Thresholds

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r} (an IANA name such as Asia/Shanghai)") from None
        return zone

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.baseline_year >= self.target_year:
            raise ValueError("baseline_year must be before target_year")
        return self


class Catalog(_Strict):
    plan: Plan
    indicators: tuple[Indicator, ...]
    agencies: tuple[Agency, ...]
    districts: tuple[District, ...]

    @field_validator("indicators")
    @classmethod
    def _some_target(cls, indicators: tuple[Indicator, ...]) -> tuple[Indicator, ...]:
        # An empty list (a slip of the indentation) would watch nothing, and silently.
        if not indicators:
            raise ValueError("a plan states at least one target")
        return indicators

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, dict) and info.context.get(REFERENCES_CHECKED_BY_CALLER):
            return self  # the loader reports them itself, each with its file and line
        problems = reference_problems(self)
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
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
        """Every indicator accepts a city-wide report; regional ones also per district (how the two
        combine without counting twice: docs/numbers.md, "level")."""
        if region == CITY_WIDE:
            return True
        return indicator.regional and region in self._district_codes

    def thresholds_for(self, indicator: Indicator) -> Thresholds:
        return indicator.thresholds or self.plan.default_thresholds


Location = tuple[str | int, ...]


def reference_problems(catalog: Catalog) -> list[tuple[Location, str]]:
    """What is wrong between the catalog's parts, each with where it is (section, index, field):
    duplicate codes, unknown agencies, years outside the plan, a district named like the city."""
    problems: list[tuple[Location, str]] = []
    for section, items in (("indicators", catalog.indicators), ("agencies", catalog.agencies),
                           ("districts", catalog.districts)):
        seen: set[str] = set()
        for n, item in enumerate(items):
            if item.code in seen:
                problems.append(((section, n, "code"), f"duplicate code {item.code!r}"))
            seen.add(item.code)
    agencies = {a.code for a in catalog.agencies}
    plan = catalog.plan
    for n, ind in enumerate(catalog.indicators):
        if ind.agency not in agencies:
            problems.append((("indicators", n, "agency"), f"unknown agency {ind.agency!r}"))
        if not plan.baseline_year < ind.target.year <= plan.target_year:
            problems.append((("indicators", n, "target", "year"), f"target year {ind.target.year} is outside "
                             f"the plan's period ({plan.baseline_year + 1}-{plan.target_year})"))
        if ind.baseline.year < plan.baseline_year:
            problems.append((("indicators", n, "baseline", "year"), f"baseline year {ind.baseline.year} is "
                             f"before the plan's baseline year {plan.baseline_year}"))
    for n, district in enumerate(catalog.districts):
        if district.code == CITY_WIDE:
            problems.append((("districts", n, "code"), f"{CITY_WIDE!r} is the city-wide region, not a district"))
    return problems
