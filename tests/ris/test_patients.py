"""Patients in the RIS: ADT create/update flowing into worklist items, A10 arrival, A40 merge (RIS and archive)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select

from archive.schema import dicom_patients, dicom_studies
from engine.store.store import Store
from ris_core.config import CompiledRis
from ris_core.hl7in import Rejected
from ris_core.patients import PatientMerged
from ris_core.schema import ris_history, ris_mpps, ris_orders, ris_patients, ris_sps, ris_studies
from tests.ris import messages as m
from tests.ris.conftest import NOW, apply, one, rows


def patient(store: Store, patient_id: str):
    """The RIS patient row of *patient_id*."""
    return one(store, select(ris_patients).where(ris_patients.c.patient_id == patient_id))


def sps_of(store: Store, accession: str):
    """The (single) worklist row of *accession*."""
    return one(store, select(ris_sps).where(ris_sps.c.accession == accession))


def test_a04_creates_and_a08_updates(any_store: Store, rt: CompiledRis) -> None:
    """A04 registers the patient; A08 changes only what it sends (the HL7 null clears)."""
    apply(any_store, rt, m.adt("A04"))
    p = patient(any_store, "P100")
    assert (p.patient_key, p.name, p.birth_date, p.sex, p.merged_into) == ("P100^HOSP", "DOE^JOHN^Q^^JR MD",
                                                                          "19700101", "M", None)  # fmt: skip
    assert json.loads(p.other_ids)[1] == {"id": "99887", "issuer": "NATIONAL", "type": "PI"}
    apply(any_store, rt, m.adt("A08", "A2", name="DOE^JONATHAN", birth='""', sex=""))
    p = patient(any_store, "P100")
    assert (p.name, p.name_upper, p.birth_date, p.sex) == ("DOE^JONATHAN", "DOE^JONATHAN", None, "M")


def test_patient_update_flows_into_open_worklist_items(any_store: Store, rt: CompiledRis) -> None:
    """A08 with a new name and birth date rewrites the open orders' worklist rows and items; closed ones stay."""
    apply(any_store, rt, m.orm())
    apply(any_store, rt, m.orm("O2", accession="ACC101", placer="PL101", steps=("SPS101",)))
    apply(any_store, rt, m.orm("O3", control="CA", accession="ACC101", placer="PL101"))
    apply(any_store, rt, m.adt("A08", "A2", name="doe^jonathan", birth="19710202"))
    row = sps_of(any_store, "ACC100")
    assert (row.patient_name, row.patient_name_upper) == ("doe^jonathan", "DOE^JONATHAN")
    item = json.loads(row.item)
    assert item["00100010"]["Value"] == [{"Alphabetic": "doe^jonathan"}] and item["00100030"]["Value"] == ["19710202"]
    assert sps_of(any_store, "ACC101").patient_name == "DOE^JOHN^Q^^JR MD"  # canceled: not on the worklist


def test_update_without_change_leaves_items(any_store: Store, rt: CompiledRis) -> None:
    """An ADT that changes nothing (a re-delivery) does not rewrite the worklist rows."""
    apply(any_store, rt, m.orm())
    before = sps_of(any_store, "ACC100")
    apply(any_store, rt, m.adt("A08"), now=NOW + 60)
    apply(any_store, rt, m.adt("A08"), now=NOW + 120)
    after = sps_of(any_store, "ACC100")
    assert (after.updated_at, after.item) == (before.updated_at, before.item)


def test_a10_arrival(any_store: Store, rt: CompiledRis) -> None:
    """A10 marks the patient's orders due today ARRIVED (steps too), not later ones; a re-delivery adds nothing."""
    apply(any_store, rt, m.orm())
    apply(any_store, rt, m.orm("O2", accession="ACC101", placer="PL101", steps=("SPS101",), start="20240320090000"))
    changes, _ = apply(any_store, rt, m.adt("A10"), message_id=40)
    assert [(c.event, c.to_state) for c in changes] == [("ARRIVE", "ARRIVED")]
    state = {r.accession: r.state for r in rows(any_store, select(ris_orders.c.accession, ris_orders.c.state))}
    assert state == {"ACC100": "ARRIVED", "ACC101": "SCHEDULED"}
    assert sps_of(any_store, "ACC100").status == "ARRIVED"
    assert apply(any_store, rt, m.adt("A10"), message_id=40)[0] == []
    assert len(rows(any_store, select(ris_history).where(ris_history.c.event == "ARRIVE"))) == 1


def _archive_study(store: Store, patient_id: str, issuer: str | None, study_uid: str) -> int:
    """An archive index patient and study row, as the archive writes them; the patient row id."""
    with store.engine.begin() as conn:
        pref = conn.execute(insert(dicom_patients).values(
            patient_key=f"{patient_id}^{issuer or ''}", patient_id=patient_id, issuer=issuer, patient_name="DOE^JOHN",
            created_at=NOW, updated_at=NOW).returning(dicom_patients.c.id)).scalar_one()  # fmt: skip
        conn.execute(insert(dicom_studies).values(study_uid=study_uid, patient_ref=pref, received_at=NOW,
                                                  updated_at=NOW, num_series=1, num_instances=1))  # fmt: skip
    return pref


def test_a40_moves_everything_to_the_survivor(any_store: Store, rt: CompiledRis) -> None:
    """A40: orders, steps, MPPS, seen studies and archived studies move to the survivor; the merged id is marked."""
    apply(any_store, rt, m.orm())
    order = one(any_store, select(ris_orders).where(ris_orders.c.accession == "ACC100"))
    with any_store.engine.begin() as conn:
        conn.execute(insert(ris_mpps).values(sop_instance_uid="1.2.3.77", order_ref=order.id, status="IN PROGRESS",
                                             attrs=json.dumps({"00100020": {"vr": "LO", "Value": ["P100"]}}),
                                             unscheduled=0, created_at=NOW, updated_at=NOW))  # fmt: skip
        conn.execute(insert(ris_studies).values(study_uid=order.study_uid, order_ref=order.id, patient_id="P100",
                                                instances=1, first_seen=NOW, last_seen=NOW, stable=0))  # fmt: skip
    _archive_study(any_store, "P100", None, order.study_uid)  # the modality sent no issuer
    _archive_study(any_store, "P100", "OTHER", "1.2.3.999")  # another authority's P100: not this patient
    apply(any_store, rt, m.adt("A04", "A2", patient="P200", name="DOE^JOHNNY"))
    apply(any_store, rt, m.adt("A40", "A3", patient="P200", name="DOE^JOHNNY", merged="P100"))
    survivor, merged = patient(any_store, "P200"), patient(any_store, "P100")
    assert merged.merged_into == survivor.id
    assert one(any_store, select(ris_orders.c.patient_ref).where(ris_orders.c.id == order.id))[0] == survivor.id
    row = sps_of(any_store, "ACC100")
    assert (row.patient_id, row.patient_name) == ("P200", "DOE^JOHNNY")
    assert json.loads(row.item)["00100020"]["Value"] == ["P200"]
    mpps = json.loads(one(any_store, select(ris_mpps.c.attrs))[0])
    assert mpps["00100020"]["Value"] == ["P200"] and mpps["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHNNY"}]
    assert one(any_store, select(ris_studies.c.patient_id))[0] == "P200"
    owner = {
        uid: key
        for uid, key in rows(
            any_store,
            select(dicom_studies.c.study_uid, dicom_patients.c.patient_key).join(
                dicom_patients, dicom_patients.c.id == dicom_studies.c.patient_ref
            ),
        )  # fmt: skip
    }
    assert owner == {order.study_uid: "P200^HOSP", "1.2.3.999": "P100^OTHER"}


def test_messages_for_a_merged_patient_are_refused(any_store: Store, rt: CompiledRis) -> None:
    """After A40 every message naming the merged id is refused (AE) saying who it was merged into."""
    apply(any_store, rt, m.adt("A04"))
    apply(any_store, rt, m.adt("A40", "A2", patient="P200", merged="P100"))
    for text in (m.orm("O1"), m.adt("A08", "A3"), m.oru("R1"), m.adt("A40", "A4", patient="P100", merged="P300")):
        with pytest.raises(PatientMerged, match="patient P100 was merged into P200") as info:
            apply(any_store, rt, text)
        assert info.value.code == "AE"


def test_a40_again_and_into_someone_else(any_store: Store, rt: CompiledRis) -> None:
    """Repeating a merge changes nothing and succeeds; merging the merged id into a third patient is refused."""
    apply(any_store, rt, m.adt("A40", "A1", patient="P200", merged="P100"))  # P100 unknown: recorded as merged
    assert patient(any_store, "P100").merged_into == patient(any_store, "P200").id
    assert apply(any_store, rt, m.adt("A40", "A2", patient="P200", merged="P100")) == ([], [])
    with pytest.raises(PatientMerged, match="merged into P200"):
        apply(any_store, rt, m.adt("A40", "A3", patient="P300", merged="P100"))
    with pytest.raises(Rejected, match="surviving patient itself"):
        apply(any_store, rt, m.adt("A40", "A4", patient="P200", merged="P200"))


def test_merge_chain_points_at_the_last_survivor(any_store: Store, rt: CompiledRis) -> None:
    """Merging B (which absorbed A) into C re-points A at C."""
    apply(any_store, rt, m.adt("A40", "A1", patient="PB", merged="PA"))
    apply(any_store, rt, m.adt("A40", "A2", patient="PC", merged="PB"))
    c = patient(any_store, "PC").id
    assert patient(any_store, "PA").merged_into == c and patient(any_store, "PB").merged_into == c
