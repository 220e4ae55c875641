"""What agencies write in their spreadsheets, mapped to what the contract says.

Three things live here, each in one place: the column headers a file may use for each event field
(the contract's names, the Chinese ones and common variants; docs/agencies.md "Files" lists them),
the catalog's Chinese names of indicators, districts and agencies (mapped to codes before
validation, so ``events.validate`` stays the one judge), and the Chinese label of every rejection
reason. Nothing here accepts or rejects an event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from highland.catalog.models import CITY_WIDE, Catalog
from highland.ingest.events import Reason

FIELDS = ("event_id", "revision", "agency", "indicator", "region", "value", "unit", "observed_at")

# The template's headers (and the first name of each field below).
CHINESE_HEADERS = {"event_id": "事件编号", "revision": "修订版本", "agency": "机构", "indicator": "指标",
                   "region": "地区", "value": "数值", "unit": "单位", "observed_at": "观测时间"}

# Variants seen in agencies' report forms. 单位 alone is the unit of measure (计量单位); 单位名称 /
# 填报单位 name the reporting organization (a "work unit"), so they mean the agency.
_VARIANTS: dict[str, tuple[str, ...]] = {
    "event_id": ("编号", "事件id", "记录编号"),
    "revision": ("版本", "版本号", "修订号"),
    "agency": ("机构名称", "单位名称", "填报单位", "报送单位", "部门"),
    "indicator": ("指标名称", "指标代码"),
    "region": ("地区名称", "区县", "区域", "行政区划"),
    "value": ("值", "指标值", "数据"),
    "unit": ("计量单位",),
    "observed_at": ("时间", "日期", "观测日期", "统计时间"),
}

# Reading a header: surrounding spaces (also the ideographic one), case and a trailing colon do not
# matter: Excel users type "数值 " or "Value" or "时间：".
_HEADER_NOISE = re.compile(r"[\s\u3000:：]+")


def _header_key(text: str) -> str:
    return _HEADER_NOISE.sub("", text.removeprefix("\ufeff")).lower()


HEADERS: dict[str, str] = {
    _header_key(name): field
    for field in FIELDS
    for name in (field, CHINESE_HEADERS[field], *_VARIANTS[field])
}


def field_of(header: str) -> str | None:
    """The event field a column header means, or None if it means none."""
    return HEADERS.get(_header_key(header))


# Reason labels: the contract's reason (English, the machine's word) with a Chinese label for the
# people who read the report.
REASON_ZH: dict[Reason, str] = {
    Reason.MALFORMED_JSON: "格式错误（无法解析）",
    Reason.SCHEMA_VIOLATION: "字段不符合规范",
    Reason.UNKNOWN_INDICATOR: "未知指标",
    Reason.UNKNOWN_REGION: "未知地区",
    Reason.UNIT_MISMATCH: "单位不符",
    Reason.NOT_FINITE: "数值非有限数",
    Reason.NEGATIVE_VALUE: "数值为负",
    Reason.FUTURE_TIMESTAMP: "观测时间在未来",
    Reason.OUT_OF_RANGE: "超出允许范围",
    Reason.FORBIDDEN_AGENCY: "无权报送（非本机构指标）",
    Reason.UNAUTHENTICATED: "未认证",
    Reason.PAYLOAD_TOO_LARGE: "数据过大",
}

REASON_EN: dict[Reason, str] = {
    Reason.MALFORMED_JSON: "malformed JSON",
    Reason.SCHEMA_VIOLATION: "field does not follow the schema",
    Reason.UNKNOWN_INDICATOR: "unknown indicator",
    Reason.UNKNOWN_REGION: "unknown region",
    Reason.UNIT_MISMATCH: "unit does not match the indicator",
    Reason.NOT_FINITE: "value is not a finite number",
    Reason.NEGATIVE_VALUE: "negative value",
    Reason.FUTURE_TIMESTAMP: "observed in the future",
    Reason.OUT_OF_RANGE: "out of range",
    Reason.FORBIDDEN_AGENCY: "the agency does not own the indicator",
    Reason.UNAUTHENTICATED: "unauthenticated",
    Reason.PAYLOAD_TOO_LARGE: "payload too large",
}

# How the city as a whole is written in report forms.
CITY_WIDE_NAMES = ("重庆市", "重庆", "全市", "市级")
# Quotes and spaces differ between the catalog ("“互联网+”指数") and what people type.
_NAME_NOISE = re.compile(r"[\s\u3000\"'“”‘’「」『』]+")


def _name_key(text: str) -> str:
    return _NAME_NOISE.sub("", text).lower()


def _lookup(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {_name_key(name): code for name, code in pairs}


@dataclass(frozen=True)
class Names:
    """The catalog's Chinese (and English) names of indicators, regions and agencies, to codes."""

    indicators: dict[str, str]
    regions: dict[str, str]
    agencies: dict[str, str]
    timezone: str  # the plan's: a date or time without an offset is read in it

    @classmethod
    def of(cls, catalog: Catalog) -> Names:
        return cls(
            indicators=_lookup((n, i.code) for i in catalog.indicators for n in (i.name_zh, i.name_en)),
            regions=_lookup([*((n, d.code) for d in catalog.districts for n in (d.name_zh, d.name_en)),
                             *((n, CITY_WIDE) for n in CITY_WIDE_NAMES)]),
            agencies=_lookup((n, a.code) for a in catalog.agencies for n in (a.name_zh, a.name_en)),
            timezone=catalog.plan.timezone,
        )

    def code(self, field: str, cell: str) -> str:
        """The code a name cell means; the cell unchanged if it is no name (a code, or a typo the
        validator will name)."""
        table = {"indicator": self.indicators, "region": self.regions, "agency": self.agencies}.get(field)
        if table is None:
            return cell
        return table.get(_name_key(cell), cell)
