"""Images stored (RAD-8): studies matched by accession or Study UID, unmatched studies, study-stable completion."""

from __future__ import annotations

from sqlalchemy import insert, select

from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies
from engine.store.store import Store
from ris_core import images, orders
from ris_core.config import CompiledRis
from ris_core.schema import ris_history, ris_mpps, ris_orders, ris_studies
from tests.ris import messages as m
from tests.ris.conftest import NOW, apply, one, rows


def stored(store: Store, now: float = NOW, mid: int | None = None, **attrs: str):
    """One ``dicom.stored`` event's attributes applied; the changes."""
    return store.transact_sync(images.thd_image_stored, attrs, message_id=mid, now=now)


def order(store: Store, accession: str = "ACC100"):
    """The order row."""
    return one(store, select(ris_orders).where(ris_orders.c.accession == accession))


def study(store: Store, uid: str):
    """The ris_studies row."""
    return one(store, select(ris_studies).where(ris_studies.c.study_uid == uid))


def test_first_image_starts_the_order_by_accession(any_store: Store, rt: CompiledRis) -> None:
    """Matched by AccessionNumber: the first image starts a SCHEDULED order; later ones only count."""
    apply(any_store, rt, m.orm())
    changes = stored(any_store, mid=9, AccessionNumber="ACC100", StudyInstanceUID="1.2.3.50", PatientID="P100")
    assert [(c.event, c.from_state, c.to_state) for c in changes] == [("START", "SCHEDULED", "IN_PROGRESS")]
    assert stored(any_store, now=NOW + 5, AccessionNumber="ACC100", StudyInstanceUID="1.2.3.50") == []
    o = order(any_store)
    s = study(any_store, "1.2.3.50")
    assert (s.order_ref, s.instances, s.first_seen, s.last_seen, s.accession) == (o.id, 2, NOW, NOW + 5, "ACC100")
    h = ris_history.c
    last = one(any_store, select(h.source, h.message_id).where(h.order_ref == o.id).order_by(h.id.desc()).limit(1))
    assert tuple(last) == ("1.2.3.50", 9)


def test_matched_by_study_uid(any_store: Store, rt: CompiledRis) -> None:
    """Without (or with an unknown) accession the study matches by StudyInstanceUID; an ARRIVED order starts too."""
    apply(any_store, rt, m.orm())
    apply(any_store, rt, m.adt("A10", "A1"))
    o = order(any_store)
    changes = stored(any_store, AccessionNumber="WRONG", StudyInstanceUID=o.study_uid)
    assert changes[0].from_state == "ARRIVED" and order(any_store).state == "IN_PROGRESS"


def test_instances_counted_from_the_archive(any_store: Store, rt: CompiledRis) -> None:
    """With archived instances the count is the archive's, so a re-delivered event does not count twice."""
    with any_store.engine.begin() as conn:
        pref = conn.execute(
            insert(dicom_patients)
            .values(patient_key="P1^", patient_id="P1", created_at=NOW, updated_at=NOW)
            .returning(dicom_patients.c.id)
        ).scalar_one()
        sref = conn.execute(
            insert(dicom_studies)
            .values(study_uid="1.2.3.60", patient_ref=pref, received_at=NOW, updated_at=NOW)
            .returning(dicom_studies.c.id)
        ).scalar_one()
        series = conn.execute(
            insert(dicom_series)
            .values(series_uid="1.2.3.60.1", study_ref=sref, received_at=NOW, updated_at=NOW)
            .returning(dicom_series.c.id)
        ).scalar_one()
        for i in range(3):
            conn.execute(insert(dicom_instances).values(
                sop_uid=f"1.2.3.60.{i}", series_ref=series, study_uid="1.2.3.60", sop_class_uid="1.2", transfer_syntax="1.2",
                path=f"x{i}", size=1, sha256="0" * 64, received_at=NOW))  # fmt: skip
    stored(any_store, StudyInstanceUID="1.2.3.60")
    stored(any_store, StudyInstanceUID="1.2.3.60")
    assert study(any_store, "1.2.3.60").instances == 3


def test_unmatched_studies_listed_and_matched_later(any_store: Store, rt: CompiledRis) -> None:
    """A study no order names is listed as unmatched; an order for it arriving later matches it."""
    stored(any_store, AccessionNumber="ACC100", StudyInstanceUID="1.2.3.70", PatientID="P100")
    (row,) = any_store.read_sync(images.thd_unmatched)
    assert (row["study_uid"], row["accession"], row["patient_id"], row["order_ref"]) == ("1.2.3.70", "ACC100",
                                                                                         "P100", None)  # fmt: skip
    apply(any_store, rt, m.orm())
    assert any_store.read_sync(images.thd_unmatched) == []
    assert study(any_store, "1.2.3.70").order_ref == order(any_store).id


def test_study_stable_completes_orders_without_mpps(any_store: Store, rt: CompiledRis) -> None:
    """The study-stable timeout completes IN_PROGRESS orders without MPPS once no image came for that long."""
    apply(any_store, rt, m.orm())
    apply(any_store, rt, m.orm("O2", accession="ACC101", placer="PL101", steps=("SPS101",), study_uid="1.2.3.81"))
    stored(any_store, AccessionNumber="ACC100", StudyInstanceUID="1.2.3.80")
    stored(any_store, AccessionNumber="ACC101", StudyInstanceUID="1.2.3.81")
    with any_store.engine.begin() as conn:  # ACC101's modality reports MPPS: it completes the order itself
        conn.execute(insert(ris_mpps).values(sop_instance_uid="1.2.3.99", order_ref=order(any_store, "ACC101").id,
                                             status="IN PROGRESS", unscheduled=0, created_at=NOW, updated_at=NOW))  # fmt: skip
    assert any_store.transact_sync(images.thd_stable, NOW + 100, 300) == []
    changes = any_store.transact_sync(images.thd_stable, NOW + 301, 300)
    assert [(c.order_id, c.event, c.to_state) for c in changes] == [(order(any_store).id, "COMPLETE", "COMPLETED")]
    assert (order(any_store).state, order(any_store, "ACC101").state) == ("COMPLETED", "IN_PROGRESS")
    h = ris_history.c
    assert one(any_store, select(h.source).where(h.event == "COMPLETE"))[0] == images.STABLE_SOURCE
    assert study(any_store, "1.2.3.80").stable == 1
    assert any_store.transact_sync(images.thd_stable, NOW + 900, 300) == []


def test_new_image_restarts_the_stable_clock(any_store: Store, rt: CompiledRis) -> None:
    """An image arriving later makes the study unstable again; the order completes only after the new quiet time."""
    apply(any_store, rt, m.orm())
    stored(any_store, AccessionNumber="ACC100", StudyInstanceUID="1.2.3.90")
    any_store.transact_sync(orders.thd_apply, order(any_store).id, "START", source="x", now=NOW)
    stored(any_store, now=NOW + 250, AccessionNumber="ACC100", StudyInstanceUID="1.2.3.90")
    assert any_store.transact_sync(images.thd_stable, NOW + 301, 300) == []
    assert len(any_store.transact_sync(images.thd_stable, NOW + 551, 300)) == 1
    assert rows(any_store, select(ris_orders.c.state)) == [("COMPLETED",)]
