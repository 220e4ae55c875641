"""Expand a panel's SQL the way Grafana and the ClickHouse plugin do, so tests can run it.

Two steps, in Grafana's order:
1. Grafana's template service replaces dashboard variables in the browser: ``$name``,
   ``${name}``, ``${name:format}`` and ``[[name]]``; unknown names are left as they are.
2. The plugin's backend (grafana/clickhouse-datasource pkg/macros, through grafana/sqlds) replaces
   ``$__name`` or ``$__name(args)``: ``$__fromTime`` -> ``toDateTime(<unix s>)``,
   ``$__timeFilter(col)`` -> ``col >= toDateTime(<from>) AND col <= toDateTime(<to>)``, and so on.

``$__timeInterval`` / ``$__timeInterval_ms`` are refused: the plugin expands them to
``toStartOfInterval``, which ClickHouse 18.16 lacks (docs/clickhouse-dialect.md, "time-buckets"); panels
bucket with toStartOfMinute/Hour/Day or ``intDiv(toUInt32(t), $__interval_s) * $__interval_s`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

UNSUPPORTED = {"timeInterval": "toStartOfInterval", "timeInterval_ms": "toStartOfInterval"}


class MacroError(ValueError):
    """A macro the plugin would not expand, or one 18.16 could not run."""


@dataclass(frozen=True)
class TimeRange:
    start: datetime  # timezone-aware
    end: datetime
    interval_s: int = 60


# --- step 1: template variables ---------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")


def _format(value: str, fmt: str | None) -> str:
    """The few Grafana variable formats single-value variables need."""
    if fmt in (None, "raw", "text"):
        return value
    if fmt == "sqlstring":  # Grafana doubles quotes only: ClickHouse still reads a backslash as an escape
        return "'" + value.replace("'", "''") + "'"
    if fmt == "percentencode":  # Grafana's encodeURIComponentStrict: nothing but A-Z a-z 0-9 - _ . ~ and %XX
        return quote(value, safe="")
    if fmt == "singlequote":
        return "'" + value.replace("'", "\\'") + "'"
    if fmt == "doublequote":
        return '"' + value.replace('"', '\\"') + '"'
    raise MacroError(f"variable format {fmt!r} is not supported here")


def interpolate_variables(sql: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name.startswith("__") or name not in variables:
            return match.group(0)  # Grafana leaves unknown names (and the plugin's macros) alone
        return _format(variables[name], fmt)

    return _VARIABLE.sub(replace, sql)


# --- step 2: the plugin's macros --------------------------------------------------------------------

def _to_datetime(moment: datetime) -> str:
    return f"toDateTime({int(moment.timestamp())})"


def _to_datetime64(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(moment.timestamp() * 1000)})"


def _to_date(moment: datetime) -> str:
    return f"toDate('{moment.strftime('%Y-%m-%d')}')"


def _between(convert: Callable[[datetime], str]) -> Callable[[TimeRange, list[str]], str]:
    def expand(tr: TimeRange, args: list[str]) -> str:
        if len(args) != 1:
            raise MacroError(f"expected 1 argument, received {len(args)}")
        column = args[0]
        return f"{column} >= {convert(tr.start)} AND {column} <= {convert(tr.end)}"

    return expand


def _no_args(produce: Callable[[TimeRange], str]) -> Callable[[TimeRange, list[str]], str]:
    return lambda tr, _args: produce(tr)


MACROS: dict[str, Callable[[TimeRange, list[str]], str]] = {
    "fromTime": _no_args(lambda tr: _to_datetime(tr.start)),
    "toTime": _no_args(lambda tr: _to_datetime(tr.end)),
    "fromTime_ms": _no_args(lambda tr: _to_datetime64(tr.start)),
    "toTime_ms": _no_args(lambda tr: _to_datetime64(tr.end)),
    "timeFilter": _between(_to_datetime),
    "timeFilter_ms": _between(_to_datetime64),
    "dateFilter": _between(_to_date),
    "interval_s": _no_args(lambda tr: str(max(tr.interval_s, 1))),
}

_MACRO = re.compile(r"\$__(\w+)")


def _parse_args(text: str) -> tuple[list[str], int]:
    """A bracketed argument list at the start of ``text`` (nesting-aware, like sqlds):
    the trimmed arguments and the length consumed; ([], 0) without brackets."""
    if not text.startswith("("):
        return [], 0
    depth, args, current = 0, [], ""
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
            if depth == 1:
                continue
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(current.strip())
                return [a for a in args if a], i + 1
        elif char == "," and depth == 1:
            args.append(current.strip())
            current = ""
            continue
        current += char
    raise MacroError("failed to parse macro arguments (missing close bracket?)")


def expand_macros(sql: str, time_range: TimeRange) -> str:
    out, pos = [], 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            continue  # inside the arguments of a macro already expanded
        name = match.group(1)
        if name in UNSUPPORTED:
            raise MacroError(f"$__{name} expands to {UNSUPPORTED[name]}, which ClickHouse 18.16 lacks")
        if name not in MACROS:
            raise MacroError(f"unknown macro $__{name}")
        args, length = _parse_args(sql[match.end():])
        out.append(sql[pos:match.start()])
        out.append(MACROS[name](time_range, args))
        pos = match.end() + length
    out.append(sql[pos:])
    return "".join(out)


def expand(sql: str, time_range: TimeRange, variables: Mapping[str, str] | None = None) -> str:
    """The SQL ClickHouse receives from Grafana for this panel, time range and variable values."""
    return expand_macros(interpolate_variables(sql, variables or {}), time_range)
