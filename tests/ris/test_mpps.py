"""MPPS N-CREATE / N-SET data rules (ris_core/mpps.py) on SQLite and PostgreSQL, against order rows made here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from engine.store.store import Store
from ris_core import mpps
from ris_core.schema import ris_mpps, ris_orders, ris_patients
from tests.engine import conftest as engine_fixtures

clock, any_store = engine_fixtures.clock, engine_fixtures.any_store
store_url, pg_url = engine_fixtures.store_url, engine_fixtures.pg_url
NOW = 1_700_000_000.0
UID = "1.2.826.0.1.3680043.9.1"


def find_order(conn: Any, *, accession: str | None, study_uid: str | None, sps_id: str | None,
               requested_procedure_id: str | None) -> int | None:  # fmt: skip
    """Stand-in for ``ris_core.orders.thd_find_order``: by accession, else by Study Instance UID."""
    o = ris_orders.c
    for column, value in ((o.accession, accession), (o.study_uid, study_uid)):
        if value:
            found = conn.execute(select(o.id).where(column == value)).scalar()
            if found is not None:
                return found
    return None


def add_order(store: Store, accession: str = "ACC1", study_uid: str = "1.2.3.4") -> int:
    """A patient and one SCHEDULED order; the order's id."""
    stamps = {"created_at": NOW, "updated_at": NOW}
    with store.engine.begin() as conn:
        patient = conn.execute(
            ris_patients.insert().returning(ris_patients.c.id),
            {"patient_key": f"P-{accession}^", "patient_id": f"P-{accession}", **stamps},
        ).scalar_one()
        return conn.execute(
            ris_orders.insert().returning(ris_orders.c.id),
            {"patient_ref": patient, "accession": accession, "study_uid": study_uid, "state": "SCHEDULED",
             "reconcile": 0, **stamps},
        ).scalar_one()  # fmt: skip


def create_attrs(status: str = "IN PROGRESS", **ref: str) -> dict[str, Any]:
    """An N-CREATE attribute list as channels/dicom/mpps.py hands it over (keyword → value)."""
    return {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientName": "Müller^Jürgen",
        "PatientID": "P77",
        "PatientBirthDate": "19700101",
        "ScheduledStepAttributesSequence": [
            {
                "AccessionNumber": "",
                "ScheduledProcedureStepID": "",
                "RequestedProcedureID": "",
                "StudyInstanceUID": "",
                **ref,
            }
        ],  # fmt: skip
        "PerformedProcedureStepID": "PPS1",
        "PerformedStationAETitle": "CT1",
        "PerformedProcedureStepStartDate": "20240301",
        "PerformedProcedureStepStartTime": "081500",
        "PerformedProcedureStepStatus": status,
        "Modality": "CT",
        "PerformedSeriesSequence": [],
    }


def create(store: Store, sop_uid: str = UID, attrs: dict | None = None) -> mpps.MppsResult:
    """Run thd_mpps_create in its own transaction."""
    attrs = create_attrs(AccessionNumber="ACC1") if attrs is None else attrs
    return store.transact_sync(mpps.thd_mpps_create, sop_uid, attrs, now=NOW, find_order=find_order)


def mset(store: Store, attrs: dict[str, Any], sop_uid: str = UID) -> mpps.MppsResult:
    """Run thd_mpps_set in its own transaction."""
    return store.transact_sync(mpps.thd_mpps_set, sop_uid, attrs, now=NOW + 60)


def stored(store: Store, sop_uid: str = UID) -> Any:
    """The ris_mpps row of *sop_uid*."""
    with store.engine.connect() as conn:
        return conn.execute(select(ris_mpps).where(ris_mpps.c.sop_instance_uid == sop_uid)).first()


def test_create_in_progress_finds_the_order_and_records_the_step(any_store: Store) -> None:
    """N-CREATE IN PROGRESS of a scheduled step: success, the order, START, attributes as DICOM JSON."""
    order = add_order(any_store)
    result = create(any_store)
    assert (result.status, result.order_id, result.event, result.unscheduled) == (0, order, "START", None)
    row = stored(any_store)
    assert (row.order_ref, row.status, row.station_ae, row.unscheduled) == (order, "IN PROGRESS", "CT1", 0)
    assert json.loads(row.sps_refs) == [
        {"accession": "ACC1", "sps_id": None, "requested_procedure_id": None, "study_uid": None}
    ]
    attrs = json.loads(row.attrs)
    assert attrs["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}
    assert attrs["00400252"] == {"vr": "CS", "Value": ["IN PROGRESS"]}
    assert attrs["00400270"]["Value"][0]["00080050"] == {"vr": "SH", "Value": ["ACC1"]}


def test_create_finds_the_order_by_study_uid(any_store: Store) -> None:
    """A reference without an accession number still finds the order by its Study Instance UID."""
    order = add_order(any_store, accession="ACC9", study_uid="1.2.9")
    result = create(any_store, attrs=create_attrs(StudyInstanceUID="1.2.9"))
    assert (result.order_id, result.event) == (order, "START")


def test_create_without_an_order_is_unscheduled(any_store: Store) -> None:
    """No order found: the step is recorded unscheduled and the result carries the values for a new order."""
    result = create(any_store, attrs=create_attrs(StudyInstanceUID="1.2.77"))
    assert (result.status, result.order_id, result.event) == (0, None, "START")
    assert result.unscheduled is not None
    assert {k: result.unscheduled[k] for k in ("PatientID", "PatientName", "StudyInstanceUID", "Modality")} == {
        "PatientID": "P77", "PatientName": "Müller^Jürgen", "StudyInstanceUID": "1.2.77", "Modality": "CT"
    }  # fmt: skip
    assert "AccessionNumber" not in result.unscheduled and "ScheduledStepAttributesSequence" not in result.unscheduled
    row = stored(any_store)
    assert (row.order_ref, row.unscheduled) == (None, 1)
    order = add_order(any_store, accession="GEN1", study_uid="1.2.77")
    any_store.transact_sync(mpps.thd_link_order, UID, order, now=NOW)
    assert (stored(any_store).order_ref, stored(any_store).unscheduled) == (order, 1)


@pytest.mark.parametrize(("status", "expected"), [("COMPLETED", 0x0106), ("DISCONTINUED", 0x0106), ("", 0x0120)])
def test_create_refuses_other_statuses(any_store: Store, status: str, expected: int) -> None:
    """N-CREATE must be IN PROGRESS (0x0106); without a status it is a missing attribute (0x0120)."""
    add_order(any_store)
    result = create(any_store, attrs=create_attrs(status, AccessionNumber="ACC1"))
    assert (result.status, result.event) == (expected, None) and result.comment
    assert stored(any_store) is None


def test_second_create_of_the_same_instance_is_a_duplicate(any_store: Store) -> None:
    """A second N-CREATE of one SOP Instance UID is 0x0111 and leaves the first record as it was."""
    add_order(any_store)
    assert create(any_store).status == 0
    again = create(any_store, attrs=create_attrs(AccessionNumber="OTHER"))
    assert (again.status, again.event) == (0x0111, None)
    assert json.loads(stored(any_store).sps_refs)[0]["accession"] == "ACC1"


def test_set_of_an_unknown_instance(any_store: Store) -> None:
    """N-SET of an instance never created is 0x0112 (no such SOP instance)."""
    result = mset(any_store, {"PerformedProcedureStepStatus": "COMPLETED"}, sop_uid="9.9.9")
    assert (result.status, result.event) == (0x0112, None)


def test_set_in_progress_merges_and_ignores_fixed_attributes(any_store: Store) -> None:
    """An N-SET staying IN PROGRESS merges its values (no event) and keeps attributes N-SET may not change."""
    order = add_order(any_store)
    create(any_store)
    series = [{"SeriesInstanceUID": "1.2.3.4.5", "RetrieveAETitle": "", "ReferencedImageSequence": []}]
    result = mset(any_store, {"PerformedProcedureStepDescription": "CT head", "PatientName": "Other^Name",
                              "PerformedSeriesSequence": series})  # fmt: skip
    assert (result.status, result.order_id, result.event, result.ignored) == (0, order, None, ("PatientName",))
    attrs = json.loads(stored(any_store).attrs)
    assert attrs["00400254"] == {"vr": "LO", "Value": ["CT head"]}
    assert attrs["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    assert attrs["00400340"]["Value"][0]["0020000E"] == {"vr": "UI", "Value": ["1.2.3.4.5"]}
    assert stored(any_store).status == "IN PROGRESS"


@pytest.mark.parametrize(("final", "event"), [("COMPLETED", "COMPLETE"), ("DISCONTINUED", "DISCONTINUE")])
def test_final_status_gives_its_event_and_then_refuses_updates(any_store: Store, final: str, event: str) -> None:
    """COMPLETED → COMPLETE, DISCONTINUED → DISCONTINUE; any later N-SET is refused with 0x0110."""
    order = add_order(any_store)
    create(any_store)
    done = mset(any_store, {"PerformedProcedureStepStatus": final, "PerformedProcedureStepEndTime": "090000"})
    assert (done.status, done.order_id, done.event) == (0, order, event)
    assert stored(any_store).status == final
    for attrs in ({"PerformedProcedureStepStatus": "IN PROGRESS"}, {"CommentsOnThePerformedProcedureStep": "x"}):
        later = mset(any_store, attrs)
        assert (later.status, later.event) == (0x0110, None)
        assert later.comment == "Performed Procedure Step Object may no longer be updated"
    assert stored(any_store).status == final


@pytest.mark.parametrize(("status", "expected"), [("SCHEDULED", 0x0106), ("DONE", 0x0106), ("", 0x0121)])
def test_set_to_an_invalid_status_changes_nothing(any_store: Store, status: str, expected: int) -> None:
    """An N-SET to a status MPPS does not have (0x0106), or an empty one (0x0121), changes nothing."""
    add_order(any_store)
    create(any_store)
    before = stored(any_store).attrs
    result = mset(any_store, {"PerformedProcedureStepStatus": status, "PerformedProcedureStepDescription": "x"})
    assert (result.status, result.event) == (expected, None)
    assert stored(any_store).attrs == before and stored(any_store).status == "IN PROGRESS"


def test_dicom_json_of_keyword_values() -> None:
    """Keyword values become DICOM JSON: numbers, multi-values, PN groups, empty values, nested sequences."""
    out = mpps.to_json({"InstanceNumber": "7", "ImageType": "ORIGINAL\\PRIMARY", "PatientName": "Yamada^Taro=山田^太郎",
                        "PatientWeight": "72.5", "StudyID": "", "ReferencedImageSequence": [{"ReferencedSOPInstanceUID": "1.2"}],
                        "NotAKeyword": "x"})  # fmt: skip
    assert out["00200013"] == {"vr": "IS", "Value": [7]}
    assert out["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]}
    assert out["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Taro", "Ideographic": "山田^太郎"}]}
    assert out["00101030"] == {"vr": "DS", "Value": [72.5]} and out["00200010"] == {"vr": "SH"}
    assert out["00081140"] == {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]}}]}
    assert len(out) == 6


def test_real_find_order_when_the_orders_module_exists(any_store: Store) -> None:
    """With ris_core.orders present, N-CREATE uses its thd_find_order (accession reference)."""
    pytest.importorskip("ris_core.orders")
    order = add_order(any_store)
    result = any_store.transact_sync(mpps.thd_mpps_create, UID, create_attrs(AccessionNumber="ACC1"), now=NOW)
    assert (result.status, result.order_id, result.event) == (0, order, "START")
