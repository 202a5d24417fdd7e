"""Event messages (stored DICOM instances and the like) through filters, templates and the channel service."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from twisted.internet.task import Clock

from engine.event import Event, KeywordPath
from engine.filters import FilterSyntaxError, compile_filter
from engine.hl7.message import HL7Message
from engine.metrics import Metrics
from engine.store.schema import FILTERED, QUEUED, TRANSFORMED, deliveries, messages
from engine.store.store import Store
from mappings.environment import compile_template, make_environment
from mappings.transformer import JinjaTransformer
from tests.engine.conftest import flush, result_of
from tests.engine.test_service import FakeDestination, count, make_service

ATTRS = {"Modality": "CT", "StudyInstanceUID": "1.2.3", "SOPInstanceUID": "1.2.3.4.5", "PatientID": "P1",
         "AccessionNumber": "ACC1", "StudyDescription": ""}  # fmt: skip
PAYLOAD = {"path": "1.2.3/1.2.3.4/1.2.3.4.5.dcm", "size": 39206}


def event() -> Event:
    """A stored-instance event."""
    return Event("dicom.stored", dict(ATTRS), PAYLOAD)


def test_event_text_round_trips() -> None:
    """The JSON text holds kind, attrs and payload, and from_text rebuilds the same event."""
    text = event().text
    data = json.loads(text)
    assert data["event"] == "dicom.stored" and data["attrs"]["Modality"] == "CT" and data["path"] == PAYLOAD["path"]
    again = Event.from_text(text)
    assert (again.kind, again.attrs, again.payload) == ("dicom.stored", ATTRS, PAYLOAD)
    assert again.control_id == "1.2.3.4.5" and again.message_type == "dicom.stored"


@pytest.mark.parametrize("text", ["", "[1]", '{"event": "x"}', '{"attrs": {}}', "not json"])
def test_from_text_rejects_what_is_not_an_event(text: str) -> None:
    """Text that is not an event object raises ValueError."""
    with pytest.raises(ValueError, match="not an event"):
        Event.from_text(text)


def test_keyword_filters_read_events_and_never_hl7() -> None:
    """A DICOM keyword in a filter reads the event's attribute; on an HL7 message it reads empty."""
    flt = compile_filter('Modality in ["CT", "MR"] and exists AccessionNumber and not exists StudyDescription')
    assert flt(event())
    assert not flt(Event("dicom.stored", {"Modality": "US"}))
    hl7 = HL7Message("MSH|^~\\&|A|B|C|D|2024||ORM^O01|1|P|2.3.1")
    assert not compile_filter('Modality == "CT"')(hl7)
    assert compile_filter("not exists Modality")(hl7)
    assert "Modality" in flt.paths


@pytest.mark.parametrize("expr", ['PID5 == "x"', 'modality == "CT"', 'MODALITY == "CT"'])
def test_what_is_neither_an_hl7_path_nor_a_keyword_is_an_error(expr: str) -> None:
    """Paths that are neither HL7 paths nor CamelCase DICOM keywords are syntax errors naming both forms."""
    with pytest.raises(FilterSyntaxError, match="DICOM keyword"):
        compile_filter(expr)


def test_keyword_path_is_a_string() -> None:
    """Keyword paths compare as their text."""
    assert KeywordPath("Modality") == "Modality"


def test_templates_see_the_event_as_msg() -> None:
    """A Jinja template reads attributes with msg[...] and the payload with msg.payload."""
    template = compile_template(make_environment(), "ORU|{{ msg['StudyInstanceUID'] }}|{{ msg.payload['path'] }}")
    out = JinjaTransformer(template, output="text").transform(event(), {"channel": "c"})
    assert out == "ORU|1.2.3|1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def test_ingest_event_commits_message_extra_rows_and_deliveries_together(sqlite_store: Store, clock: Clock) -> None:
    """The event, the caller's rows and the queued deliveries are one transaction; the delivery gets the JSON."""
    dest = FakeDestination()
    svc = make_service(sqlite_store, clock, dest, flt='Modality == "CT"', metrics=Metrics())
    seen = []

    def extra(cur, stmts, mid):
        seen.append(mid)
        cur.execute("CREATE TABLE IF NOT EXISTS side (mid INTEGER)")
        cur.execute("INSERT INTO side VALUES (?)", (mid,))
        return "indexed"

    d = svc.ingest_event(event(), "dicom:test", extra_op=extra, sending_app="MODALITY1")
    flush(sqlite_store, clock)
    mid, dids, extra_result = result_of(d)
    assert seen == [mid] and extra_result == "indexed" and len(dids) == 1
    with sqlite_store.engine.connect() as conn:
        row = conn.execute(select(messages).where(messages.c.id == mid)).one()
        assert (row.status, row.message_type, row.control_id, row.patient_id, row.accession, row.sending_app) == (
            TRANSFORMED,
            "dicom.stored",
            "1.2.3.4.5",
            "P1",
            "ACC1",
            "MODALITY1",
        )
        assert conn.exec_driver_sql("SELECT mid FROM side").scalar_one() == mid
    assert dest.sent == [event().text]


def test_ingest_event_failure_stores_nothing(sqlite_store: Store, clock: Clock) -> None:
    """When the caller's rows fail, the Deferred fails and neither message nor deliveries remain."""
    svc = make_service(sqlite_store, clock, FakeDestination(), flt=None)

    def extra(cur, stmts, mid):
        raise RuntimeError("index full")

    d = svc.ingest_event(event(), "dicom:test", extra_op=extra)
    flush(sqlite_store, clock)
    failure = result_of(d)
    assert failure.check(RuntimeError)
    assert count(sqlite_store, messages) == 0 and count(sqlite_store, deliveries) == 0


def test_ingest_event_skip_reason_stores_filtered_and_routes_nothing(sqlite_store: Store, clock: Clock) -> None:
    """An event stored with a skip reason is FILTERED with that reason and queues nothing."""
    dest = FakeDestination()
    svc = make_service(sqlite_store, clock, dest, flt=None)
    d = svc.ingest_event(event(), "dicom:test", skip_reason="duplicate SOP instance")
    flush(sqlite_store, clock)
    mid, dids, _ = result_of(d)
    assert dids == [] and dest.sent == []
    with sqlite_store.engine.connect() as conn:
        row = conn.execute(select(messages.c.status, messages.c.filter_info).where(messages.c.id == mid)).one()
    assert tuple(row) == (FILTERED, "duplicate SOP instance")
    assert count(sqlite_store, deliveries, deliveries.c.status == QUEUED) == 0


def test_ingest_event_filtered_by_the_channel_filter(sqlite_store: Store, clock: Clock) -> None:
    """A channel filter on a keyword that does not match stores the event as FILTERED."""
    dest = FakeDestination()
    svc = make_service(sqlite_store, clock, dest, flt='Modality == "MR"')
    d = svc.ingest_event(event(), "dicom:test")
    flush(sqlite_store, clock)
    _, dids, _ = result_of(d)
    assert dids == [] and dest.sent == []
