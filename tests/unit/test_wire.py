"""The wire format of CONTRACT §1, written once (highland.ingest.wire) and used by every producer."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from highland.catalog.domain import Alert
from highland.catalog.loader import default_catalog
from highland.ingest.dead_letters import dead_letter
from highland.ingest.events import Accepted, Reason, Rejected, validate
from highland.ingest.wire import alert_record, dead_letter_record, event_record

from highland.settings import Settings

SETTINGS = Settings(topic_events="ev", topic_dlq="dlq", topic_alerts="al")
PAYLOAD = (b'{"event_id":"e-1","agency":"cq_comms_admin","indicator":"fiber_broadband_ports","region":"yubei",'
           b'"value":12.5,"unit":"\xe4\xb8\x87\xe4\xb8\xaa","observed_at":"2019-05-01T08:00:00+08:00"}')


def test_an_event_is_keyed_by_indicator_and_region_stamped_with_its_observation_and_labelled_version_1():
    event = validate(PAYLOAD, default_catalog())
    assert isinstance(event, Accepted)
    record = event_record(SETTINGS, event, PAYLOAD)
    assert record.topic == "ev"
    assert record.key == b"fiber_broadband_ports|yubei"
    assert record.timestamp_ms == int(datetime(2019, 5, 1, tzinfo=UTC).timestamp() * 1000)
    assert record.headers == [("schema", b"metric-event/1")]
    assert record.value == PAYLOAD  # as the agency sent it, not re-serialized


def test_a_dead_letter_is_keyed_by_its_agency_and_labelled_dead_letter_1():
    letter = dead_letter(Rejected(Reason.UNKNOWN_REGION, "no such district", "cq_commerce"), b"{}", "push",
                         "file:1", datetime(2020, 1, 1, tzinfo=UTC))
    record = dead_letter_record(SETTINGS, letter)
    assert (record.topic, record.key, record.timestamp_ms) == ("dlq", b"cq_commerce", None)
    assert record.headers == [("schema", b"dead-letter/1")]
    assert json.loads(record.value)["reason"] == "unknown_region"


def test_an_alert_is_keyed_by_its_indicator_and_its_json_is_strict():
    alert = Alert("id1", "status", 1, "ecommerce_turnover", "cq_commerce", "on_track", "at_risk", float("inf"),
                  float("nan"), date(2020, 6, 30), "slipped", datetime(2020, 6, 30, tzinfo=UTC))
    record = alert_record(SETTINGS, alert)
    assert (record.topic, record.key, record.headers) == ("al", b"ecommerce_turnover", [("schema", b"alert/1")])
    decoded = json.loads(record.value, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert decoded["actual"] is None and decoded["expected"] is None and decoded["new_status"] == "at_risk"
