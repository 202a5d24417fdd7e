"""Placer orders in the RIS (ORM^O01, OMI^O23): creation, ids, scheduling, XO/SC/CA/DC/HD/RL, idempotence."""

from __future__ import annotations

import json

import pytest
from pydicom.uid import UID
from sqlalchemy import func, select

from engine.store.store import Store
from ris_core import orders
from ris_core.config import CompiledRis
from ris_core.hl7in import Rejected
from ris_core.schema import ris_history, ris_orders, ris_patients, ris_sps
from ris_core.states import InvalidTransition
from tests.ris import messages as m
from tests.ris.conftest import NOW, apply, make_rt, one, rows


def order(store: Store, accession: str):
    """The order row with *accession*."""
    return one(store, select(ris_orders).where(ris_orders.c.accession == accession))


def steps(store: Store, order_id: int) -> dict[str, object]:
    """The order's worklist rows by SPS id."""
    return {r.sps_id: r for r in rows(store, select(ris_sps).where(ris_sps.c.order_ref == order_id))}


def history(store: Store, order_id: int) -> list[tuple]:
    """(from, to, event, source, message id) of the order's history, in order."""
    h = ris_history.c
    query = select(h.from_state, h.to_state, h.event, h.source, h.message_id).where(h.order_ref == order_id)
    return [tuple(r) for r in rows(store, query.order_by(h.id))]


def test_nw_with_schedule_creates_a_scheduled_order(any_store: Store, rt: CompiledRis) -> None:
    """NW with a start time: SCHEDULED, one worklist row per step, the item rendered and validated, history kept."""
    changes, _ = apply(any_store, rt, m.orm(steps=("SPS100", "SPS101")), message_id=7)
    o = order(any_store, "ACC100")
    assert [(c.event, c.from_state, c.to_state) for c in changes] == [("NW_SCHEDULED", None, "SCHEDULED")]
    assert (o.state, o.placer_number, o.filler_number, o.study_uid) == (
        "SCHEDULED", "PL100^HIS", "ACC100^RADBRIDGE", "1.2.826.0.1.3680043.8.498.100",
    )  # fmt: skip
    assert (o.procedure_code, o.modality, o.priority, o.placer_app) == ("CTHEAD", "CT", "STAT", "HIS^HOSP")
    sps = steps(any_store, o.id)
    assert set(sps) == {"SPS100", "SPS101"}
    row = sps["SPS100"]
    assert (row.status, row.modality, row.station_ae, row.start_date, row.start_time) == (
        "SCHEDULED", "CT", "CT1\\CT2", "20240305", "100000.000000",
    )  # fmt: skip
    assert (row.patient_id, row.issuer, row.patient_name, row.patient_name_upper) == (
        "P100", "HOSP", "DOE^JOHN^Q^^JR MD", "DOE^JOHN^Q^^JR MD",
    )  # fmt: skip
    assert (row.accession, row.requested_procedure_id, row.study_uid) == ("ACC100", "RP100", o.study_uid)
    item = json.loads(row.item)
    assert item["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHN^Q^^JR MD"}]
    step = item["00400100"]["Value"][0]
    assert step["00400001"]["Value"] == ["CT1", "CT2"] and step["00400020"]["Value"] == ["SCHEDULED"]
    assert step["00400008"]["Value"][0]["00080100"]["Value"] == ["P1"]  # protocol code from OBR-4.4
    assert history(any_store, o.id) == [(None, "SCHEDULED", "NW_SCHEDULED", "HIS^HOSP:O1", 7)]


def test_omi_steps_from_ipc(any_store: Store, rt: CompiledRis) -> None:
    """OMI^O23: each IPC is a worklist row with its own station AEs, name and location."""
    apply(any_store, rt, m.omi())
    o = order(any_store, "ACC200")
    sps = steps(any_store, o.id)
    assert (sps["SPS200"].station_ae, sps["SPS200"].station_name, sps["SPS201"].station_ae) == (
        "MRAE1\\MRAE2", "MR1", "MRAE3",
    )  # fmt: skip
    assert json.loads(o.attrs)["message"] == "OMI_O23"
    item = json.loads(sps["SPS201"].item)
    assert item["00400100"]["Value"][0]["00400011"]["Value"] == ["ROOM 3"]
    assert item["00321064"]["Value"][0]["00080100"]["Value"] == ["MRBR"]  # RequestedProcedureCode from OBR-44


def test_nw_without_start_is_scheduled_now(any_store: Store, rt: CompiledRis) -> None:
    """With auto_schedule (the default) a NW without a start time is scheduled at once, starting now."""
    apply(any_store, rt, m.orm(start="", priority=""))
    o = order(any_store, "ACC100")
    (row,) = steps(any_store, o.id).values()
    assert o.state == "SCHEDULED" and row.start_date == "20240305"


def test_nw_without_start_stays_ordered_off_the_worklist(any_store: Store) -> None:
    """Without auto_schedule the order is ORDERED with no worklist row; SC with a start time schedules it."""
    rt = make_rt(auto_schedule=False)
    apply(any_store, rt, m.orm(start="", priority=""))
    o = order(any_store, "ACC100")
    assert o.state == "ORDERED" and steps(any_store, o.id) == {}
    changes, _ = apply(any_store, rt, m.orm("O2", control="SC", start="20240307081500"))
    assert [(c.event, c.to_state) for c in changes] == [("SCHEDULE", "SCHEDULED")]
    (row,) = steps(any_store, o.id).values()
    assert (row.sps_id, row.start_date, row.start_time) == ("SPS100", "20240307", "081500.000000")


def test_generated_ids(any_store: Store, rt: CompiledRis) -> None:
    """Missing accession, SPS id and Study UID are generated: ≤ 16 characters, unique, a valid UID."""
    for i in range(30):
        apply(any_store, rt, m.orm(f"G{i}", placer=f"PL{i}", accession="", steps=("",), study_uid=None, rp=""))
    found = rows(any_store, select(ris_orders.c.accession, ris_orders.c.study_uid, ris_orders.c.requested_procedure_id,
                                   ris_orders.c.filler_number))  # fmt: skip
    accessions = [r.accession for r in found]
    assert len(set(accessions)) == 30 and all(len(a) <= 16 and a.startswith("RB") for a in accessions)
    assert all(UID(r.study_uid).is_valid for r in found)
    assert all(r.requested_procedure_id == r.accession and r.filler_number.startswith(r.accession) for r in found)
    sps_ids = [r.sps_id for r in rows(any_store, select(ris_sps.c.sps_id))]
    assert len(set(sps_ids)) == 30 and all(len(s) <= 16 for s in sps_ids)
    assert all(len(orders.generate_id("ABCDEF", NOW)) == 16 for _ in range(3))


def test_redelivery_changes_nothing(any_store: Store, rt: CompiledRis) -> None:
    """The same store message again, or the same MSH-10 from the same sender, is recognised and changes nothing."""
    apply(any_store, rt, m.orm(), message_id=5)
    assert apply(any_store, rt, m.orm(), message_id=5) == ([], [])
    assert apply(any_store, rt, m.orm(), message_id=6) == ([], [])  # reprocessed: a new message id, same MSH-10
    o = order(any_store, "ACC100")
    assert len(history(any_store, o.id)) == 1
    apply(any_store, rt, m.orm("O2", control="CA"), message_id=8)
    assert apply(any_store, rt, m.orm("O2", control="CA"), message_id=8) == ([], [])
    assert [h[2] for h in history(any_store, o.id)] == ["NW_SCHEDULED", "CANCEL"]


def test_xo_replaces_the_steps_and_updates_the_order(any_store: Store, rt: CompiledRis) -> None:
    """XO: the steps become exactly those of the message; order fields change; the state stays."""
    apply(any_store, rt, m.orm(steps=("SPS100", "SPS101")))
    o = order(any_store, "ACC100")
    changes, _ = apply(any_store, rt, m.orm("O2", control="XO", steps=("SPS100", "SPS102"), modality="MR",
                                            code="MRHEAD^MR HEAD^L", priority="R"))  # fmt: skip
    assert [(c.event, c.from_state, c.to_state) for c in changes] == [("XO", "SCHEDULED", "SCHEDULED")]
    assert set(steps(any_store, o.id)) == {"SPS100", "SPS102"}
    o = order(any_store, "ACC100")
    assert (o.modality, o.procedure_code, o.priority, o.study_uid) == ("MR", "MRHEAD", "ROUTINE",
                                                                     "1.2.826.0.1.3680043.8.498.100")  # fmt: skip
    assert {r.modality for r in steps(any_store, o.id).values()} == {"MR"}


def test_xo_keeps_generated_step_ids(any_store: Store, rt: CompiledRis) -> None:
    """An XO without SPS ids keeps the ids the RIS generated, position by position."""
    apply(any_store, rt, m.orm(steps=("",)))
    o = order(any_store, "ACC100")
    before = set(steps(any_store, o.id))
    apply(any_store, rt, m.orm("O2", control="XO", steps=("",), start="20240305113000"))
    after = steps(any_store, o.id)
    assert set(after) == before and next(iter(after.values())).start_time == "113000.000000"


def test_cancel_before_exam(any_store: Store, rt: CompiledRis) -> None:
    """CA before the exam: CANCELED, the steps CANCELED (item status too)."""
    apply(any_store, rt, m.orm())
    changes, _ = apply(any_store, rt, m.orm("O2", control="CA"))
    o = order(any_store, "ACC100")
    assert o.state == "CANCELED" and changes[0].to_state == "CANCELED"
    (row,) = steps(any_store, o.id).values()
    assert row.status == "CANCELED"
    assert json.loads(row.item)["00400100"]["Value"][0]["00400020"]["Value"] == ["CANCELED"]


def test_cancel_after_exam_is_refused(any_store: Store, rt: CompiledRis) -> None:
    """CA once the exam started is refused with "unable to cancel" and changes nothing."""
    apply(any_store, rt, m.orm())
    o = order(any_store, "ACC100")
    any_store.transact_sync(orders.thd_apply, o.id, "START", source="test", now=NOW)
    with pytest.raises(InvalidTransition, match="unable to cancel order ACC100: it is IN_PROGRESS"):
        apply(any_store, rt, m.orm("O2", control="CA"))
    assert order(any_store, "ACC100").state == "IN_PROGRESS"
    assert len(history(any_store, o.id)) == 2


@pytest.mark.parametrize(("controls", "state"), [(("DC",), "DISCONTINUED"), (("HD",), "HELD"),
                                                 (("HD", "RL"), "SCHEDULED")])  # fmt: skip
def test_discontinue_hold_release(any_store: Store, rt: CompiledRis, controls: tuple[str, ...], state: str) -> None:
    """DC discontinues, HD holds, RL releases a held order back to SCHEDULED."""
    apply(any_store, rt, m.orm())
    for i, control in enumerate(controls):
        apply(any_store, rt, m.orm(f"C{i}", control=control))
    assert order(any_store, "ACC100").state == state


def test_release_of_an_order_held_before_scheduling(any_store: Store) -> None:
    """An ORDERED order held and released is SCHEDULED and gets its worklist rows then."""
    rt = make_rt(auto_schedule=False)
    apply(any_store, rt, m.orm(start="", priority=""))
    apply(any_store, rt, m.orm("C1", control="HD"))
    o = order(any_store, "ACC100")
    assert steps(any_store, o.id) == {}
    apply(any_store, rt, m.orm("C2", control="RL"))
    assert order(any_store, "ACC100").state == "SCHEDULED" and set(steps(any_store, o.id)) == {"SPS100"}


def test_unknown_order_is_refused(any_store: Store, rt: CompiledRis) -> None:
    """CA/XO/DC for an order the RIS does not know is refused naming the order."""
    with pytest.raises(Rejected, match="order ACC999 is unknown"):
        apply(any_store, rt, m.orm(control="CA", accession="ACC999"))


def test_nw_again(any_store: Store, rt: CompiledRis) -> None:
    """A second NW for an order not started updates it; once started it is refused."""
    apply(any_store, rt, m.orm())
    changes, _ = apply(any_store, rt, m.orm("O2", modality="MR"))
    assert changes[0].event == "XO" and order(any_store, "ACC100").modality == "MR"
    any_store.transact_sync(orders.thd_apply, order(any_store, "ACC100").id, "START", source="t", now=NOW)
    with pytest.raises(Rejected, match="order ACC100 already exists"):
        apply(any_store, rt, m.orm("O3"))


def test_order_of_another_patient_is_refused(any_store: Store, rt: CompiledRis) -> None:
    """An XO naming an existing accession under a different patient is refused."""
    apply(any_store, rt, m.orm())
    with pytest.raises(Rejected, match="order ACC100 belongs to another patient"):
        apply(any_store, rt, m.orm("O2", control="XO", patient="P999"))


def test_whole_message_or_nothing(any_store: Store, rt: CompiledRis) -> None:
    """A refused message leaves no trace: the patient it named is not created either."""
    with pytest.raises(Rejected):
        apply(any_store, rt, m.orm(control="CA", patient="P555"))
    assert rows(any_store, select(ris_patients).where(ris_patients.c.patient_id == "P555")) == []


def test_find_order(any_store: Store, rt: CompiledRis) -> None:
    """thd_find_order finds by accession, Study UID, SPS id or requested procedure id; a dict with patient_ref."""
    apply(any_store, rt, m.orm())
    o = order(any_store, "ACC100")
    for key in ({"accession": "ACC100"}, {"study_uid": o.study_uid}, {"sps_id": "SPS100"},
                {"requested_procedure_id": "RP100"}, {"accession": "NOPE", "sps_id": "SPS100"}):  # fmt: skip
        found = any_store.read_sync(orders.thd_find_order, **key)
        assert found["id"] == o.id and found["patient_ref"] == o.patient_ref, key
    assert any_store.read_sync(orders.thd_find_order, accession="NOPE") is None


def test_apply_refuses_and_changes_nothing(any_store: Store, rt: CompiledRis) -> None:
    """thd_apply raises InvalidTransition for an illegal event and writes nothing."""
    apply(any_store, rt, m.orm())
    o = order(any_store, "ACC100")
    with pytest.raises(InvalidTransition, match="COMPLETE is not allowed for order ACC100 in state SCHEDULED"):
        any_store.transact_sync(orders.thd_apply, o.id, "COMPLETE", source="x", now=NOW)
    assert order(any_store, "ACC100").state == "SCHEDULED" and len(history(any_store, o.id)) == 1
    assert any_store.transact_sync(orders.thd_apply, o.id, "START", source="x", message_id=3, now=NOW) == (
        "SCHEDULED", "IN_PROGRESS",
    )  # fmt: skip
    assert {r.status for r in steps(any_store, o.id).values()} == {"STARTED"}


def test_create_unscheduled(any_store: Store) -> None:
    """An acquisition nobody ordered: an IN_PROGRESS order flagged for reconciliation, patient from the attrs."""
    attrs = {"PatientID": "U1", "PatientName": "ROE^RICHARD", "StudyInstanceUID": "1.2.3.9", "Modality": "CT"}
    oid = any_store.transact_sync(orders.thd_create_unscheduled, attrs, source="1.2.3.mpps", now=NOW)
    o = one(any_store, select(ris_orders).where(ris_orders.c.id == oid))
    assert (o.state, o.reconcile, o.study_uid, o.modality) == ("IN_PROGRESS", 1, "1.2.3.9", "CT")
    assert o.accession.startswith("RB") and len(o.accession) <= 16
    assert [h[:3] for h in history(any_store, oid)] == [(None, "SCHEDULED", "NW_SCHEDULED"),
                                                          ("SCHEDULED", "IN_PROGRESS", "START")]  # fmt: skip
    patient = one(any_store, select(ris_patients).where(ris_patients.c.id == o.patient_ref))
    assert (patient.patient_id, patient.name) == ("U1", "ROE^RICHARD")
    again = any_store.transact_sync(orders.thd_create_unscheduled, {**attrs, "AccessionNumber": "X1"}, source="s",
                                    now=NOW)  # fmt: skip
    second = one(any_store, select(ris_orders).where(ris_orders.c.id == again))
    assert second.accession == "X1" and second.patient_ref == o.patient_ref
    count = one(any_store, select(func.count()).select_from(ris_patients))[0]
    assert count == 1
