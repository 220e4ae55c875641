"""The alert decision (CONTRACT §2: a change of status is an alert): exactly one alert per change,
none for a status that did not change, however often it is evaluated."""

from __future__ import annotations

from datetime import UTC, date, datetime

from highland.catalog.domain import STATUS, AlertState, ProgressRow
from highland.streams.alerts import status_alerts

AS_OF = date(2019, 6, 30)
NOW = datetime(2019, 7, 1, tzinfo=UTC)


def row(indicator: str, status: str, actual: float | None = 10.0) -> ProgressRow:
    return ProgressRow(indicator, indicator, "flow", "亿元", "cq_commerce", "2019", actual, 10.0, 20.0, 2020, 5.0,
                       50.0, status, 20.0, None)


def evaluated(state: AlertState, rows: list[ProgressRow]) -> list[tuple[str, str, str]]:
    """Decide, then remember what was decided (as the evaluator stores it)."""
    alerts = status_alerts(state, rows, AS_OF, NOW)
    for alert in alerts:
        state.apply(alert)
    return [(a.indicator, a.old_status, a.new_status) for a in alerts]


def test_a_change_of_status_raises_exactly_one_alert_and_an_unchanged_status_none():
    state = AlertState()
    assert evaluated(state, [row("a", "on_track"), row("b", "at_risk")]) == [
        ("a", "no_data", "on_track"), ("b", "no_data", "at_risk")]
    assert evaluated(state, [row("a", "on_track"), row("b", "at_risk")]) == []  # nothing changed
    assert evaluated(state, [row("a", "on_track"), row("b", "at_risk")]) == []
    assert evaluated(state, [row("a", "off_track"), row("b", "at_risk")]) == [("a", "on_track", "off_track")]
    assert evaluated(state, [row("a", "off_track"), row("b", "at_risk")]) == []


def test_the_same_change_from_the_same_state_is_the_same_alert():
    first = status_alerts(AlertState(), [row("a", "at_risk")], AS_OF, NOW)
    again = status_alerts(AlertState(), [row("a", "at_risk")], AS_OF, NOW)
    assert [a.alert_id for a in first] == [a.alert_id for a in again] and len(first) == 1
    assert first[0].kind == STATUS and first[0].seq == 1


def test_losing_all_data_is_not_a_slip():
    state = AlertState()
    evaluated(state, [row("a", "on_track")])
    assert evaluated(state, [row("a", "no_data", actual=None)]) == []


def test_a_baseline_still_taken_from_data_is_not_alerted_and_the_first_measured_status_is():
    """pending (docs/numbers.md, "Baselines from data") says nothing about the plan, as no_data does."""
    state = AlertState()
    assert evaluated(state, [row("flow", "pending")]) == []  # first year of data: its total is the baseline
    assert evaluated(state, [row("flow", "at_risk")]) == [("flow", "no_data", "at_risk")]
    assert evaluated(state, [row("flow", "pending")]) == []  # e.g. a growth target after a silent year
    assert evaluated(state, [row("flow", "at_risk")]) == []  # still the last alerted status
