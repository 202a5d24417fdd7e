"""Index rows: upserts per level, counts and modalities kept right, every duplicate policy (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from archive.index import IndexResult, StoredInstance, index_op, merge_modalities, norm_date, norm_int, norm_time
from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies
from tests.archive.conftest import run_op


def stored(study: str, series: str, sop: str | None = None, *, outcome: str = "stored", policy: str = "keep_first",
           placed: bool = True, path: str | None = None, sha: str = "a" * 64, **attrs: str) -> StoredInstance:  # fmt: skip
    """A StoredInstance as Archive.receive would build it."""
    sop = sop or generate_uid()
    a = {"PatientID": "P1", "PatientName": "Doe^Jane", "StudyInstanceUID": study, "SeriesInstanceUID": series,
         "SOPInstanceUID": sop, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "Modality": "CT", **attrs}  # fmt: skip
    status = {"stored": 0, "replaced": 0, "duplicate_kept": 0xB006, "duplicate_rejected": 0x0111}[outcome]
    return StoredInstance(
        outcome=outcome, status=status, path=path or f"{study}/{series}/{sop}.dcm", size=100, sha256=sha,
        attrs={k: v for k, v in a.items() if v}, sop_class_uid=a["SOPClassUID"], sop_instance_uid=sop,
        transfer_syntax="1.2.840.10008.1.2.1", calling_ae="AE", channel="ch", policy=policy, placed=placed,
        levels={"patient": '{"00100020":{"vr":"LO","Value":["P1"]}}', "study": "{}", "series": "{}", "instance": "{}"},
    )  # fmt: skip


def rows(store: Any, table: Any) -> list[Any]:
    """Every row of *table*."""
    return store.read_sync(lambda conn: conn.execute(select(table).order_by(table.c.id)).all())


def index(store: Any, clock: Any, s: StoredInstance, message_id: int | None = 7) -> IndexResult:
    """Commit the index op of *s*."""
    return run_op(store, clock, index_op(s), message_id)


def test_first_instance_creates_every_level(any_store, clock):
    """A new instance inserts patient, study, series and instance rows with counts of one."""
    study, series = generate_uid(), generate_uid()
    result = index(
        any_store, clock, stored(study, series, StudyDate="20240305", StudyTime="1012", PatientBirthDate="19700101")
    )
    assert result.outcome == "inserted" and result.status == 0 and result.instance_id and not result.discard_file
    (p,) = rows(any_store, dicom_patients)
    assert (p.patient_key, p.patient_id, p.patient_name_upper, p.birth_date) == ("P1^", "P1", "DOE^JANE", "19700101")
    assert json.loads(p.attrs) == {"00100020": {"vr": "LO", "Value": ["P1"]}}
    (st,) = rows(any_store, dicom_studies)
    assert (st.study_date, st.study_time, st.num_series, st.num_instances, st.modalities) == (
        "20240305",
        "101200.000000",
        1,
        1,
        "CT",
    )
    (se,) = rows(any_store, dicom_series)
    assert se.num_instances == 1 and se.study_ref == st.id
    (i,) = rows(any_store, dicom_instances)
    assert i.series_ref == se.id and i.study_uid == study and i.message_id == 7 and i.calling_ae == "AE"


def test_counts_and_modalities_follow_new_series_and_instances(any_store, clock):
    """Two series of different modalities and three instances give the right counts and sorted modalities."""
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    index(any_store, clock, stored(study, s1, Modality="MR"))
    index(any_store, clock, stored(study, s1, Modality="MR"))
    index(any_store, clock, stored(study, s2, Modality="CT"))
    (st,) = rows(any_store, dicom_studies)
    assert (st.num_series, st.num_instances, st.modalities) == (2, 3, "CT\\MR")
    assert sorted(r.num_instances for r in rows(any_store, dicom_series)) == [1, 2]
    assert len(rows(any_store, dicom_patients)) == 1


def test_issuer_makes_a_separate_patient(any_store, clock):
    """The same PatientID under another issuer is another patient row (key PatientID^Issuer)."""
    index(any_store, clock, stored(generate_uid(), generate_uid()))
    index(any_store, clock, stored(generate_uid(), generate_uid(), IssuerOfPatientID="HOSP"))
    assert sorted(p.patient_key for p in rows(any_store, dicom_patients)) == ["P1^", "P1^HOSP"]


def test_a_study_keeps_its_first_patient(any_store, clock):
    """A later instance of the same study naming another PatientID (a merged id) does not move the study."""
    study = generate_uid()
    index(any_store, clock, stored(study, generate_uid()))
    index(any_store, clock, stored(study, generate_uid(), PatientID="P-OLD"))
    patients = {p.id: p.patient_id for p in rows(any_store, dicom_patients)}
    (st,) = rows(any_store, dicom_studies)
    assert patients[st.patient_ref] == "P1" and st.num_instances == 2 and st.num_series == 2


def test_a_kept_duplicate_changes_nothing(any_store, clock):
    """keep_first: an instance already indexed returns kept (0xB006) and writes nothing."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    index(any_store, clock, stored(study, series, sop))
    result = index(any_store, clock, stored(study, series, sop, outcome="duplicate_kept", placed=False, sha="b" * 64))
    assert (result.outcome, result.status, result.discard_file) == ("kept", 0xB006, False)
    assert rows(any_store, dicom_instances)[0].sha256 == "a" * 64
    assert rows(any_store, dicom_studies)[0].num_instances == 1


def test_a_rejected_duplicate_is_reported(any_store, clock):
    """reject: an instance already indexed returns rejected (0x0111)."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    index(any_store, clock, stored(study, series, sop, policy="reject"))
    result = index(
        any_store, clock, stored(study, series, sop, outcome="duplicate_rejected", policy="reject", placed=False)
    )
    assert (result.outcome, result.status) == ("rejected", 0x0111)


def test_a_row_at_another_path_keeps_it_and_asks_to_discard_the_new_file(any_store, clock):
    """If the index names the instance at another path (layout changed), keep_first keeps that one."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    index(any_store, clock, stored(study, series, sop, path="old/place.dcm"))
    result = index(any_store, clock, stored(study, series, sop))
    assert result.outcome == "kept" and result.discard_file
    assert rows(any_store, dicom_instances)[0].path == "old/place.dcm"


def test_replace_updates_the_row_without_counting_twice(any_store, clock):
    """replace: the instance row takes the new file's checksum; counts stay."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    index(any_store, clock, stored(study, series, sop, policy="replace"))
    result = index(any_store, clock, stored(study, series, sop, outcome="replaced", policy="replace", sha="c" * 64))
    assert (result.outcome, result.status) == ("replaced", 0)
    assert rows(any_store, dicom_instances)[0].sha256 == "c" * 64
    assert (rows(any_store, dicom_studies)[0].num_instances, rows(any_store, dicom_series)[0].num_instances) == (1, 1)


def test_replace_into_another_series_moves_the_counts(any_store, clock):
    """A replacement naming another series moves the instance's count from the old series to the new one."""
    study, s1, s2, sop = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    index(any_store, clock, stored(study, s1, sop, policy="replace", Modality="MR"))
    index(any_store, clock, stored(study, s1, policy="replace", Modality="MR"))
    index(any_store, clock, stored(study, s2, sop, outcome="replaced", policy="replace", Modality="CT"))
    counts = {r.series_uid: r.num_instances for r in rows(any_store, dicom_series)}
    assert counts == {s1: 1, s2: 1}
    (st,) = rows(any_store, dicom_studies)
    assert (st.num_instances, st.num_series, st.modalities) == (2, 2, "CT\\MR")


def test_a_file_found_without_a_row_is_adopted(any_store, clock):
    """A duplicate whose first copy has no row yet (crash before commit) gets its row; the sender still hears 0xB006."""
    result = index(any_store, clock, stored(generate_uid(), generate_uid(), outcome="duplicate_kept", placed=False))
    assert (result.outcome, result.status) == ("inserted", 0xB006)
    assert len(rows(any_store, dicom_instances)) == 1


def test_long_values_are_cut_to_their_columns(any_store, clock):
    """Values longer than a column (PostgreSQL would refuse them) are cut."""
    index(any_store, clock, stored(generate_uid(), generate_uid(), StudyID="X" * 40, StationName="S" * 40,
                                   PatientName="N" * 400, PatientSex="O" * 30))  # fmt: skip
    assert len(rows(any_store, dicom_studies)[0].study_id) == 16
    assert len(rows(any_store, dicom_patients)[0].patient_name) == 320


def test_a_failed_transaction_leaves_no_rows(any_store, clock):
    """When the transaction fails after the op, none of its rows remain."""
    op = index_op(stored(generate_uid(), generate_uid()))

    def failing(cur, stmts, mid):
        op(cur, stmts, mid)
        raise RuntimeError("later statement failed")

    with pytest.raises(RuntimeError):
        run_op(any_store, clock, failing)
    assert rows(any_store, dicom_instances) == [] and rows(any_store, dicom_patients) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20240305", "20240305"), ("2024.03.05", "20240305"), ("", None), ("2024", None), ("abcdefgh", None)],
)
def test_norm_date(value, expected):
    """Dates become YYYYMMDD (old dotted form accepted), anything else None."""
    assert norm_date(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10", "100000.000000"), ("1012", "101200.000000"), ("101259.5", "101259.500000"),
     ("10:12:59", "101259.000000"), ("101259.1234567", "101259.123456"), ("1", None), ("ab", None), ("", None)],
)  # fmt: skip
def test_norm_time(value, expected):
    """Times become HHMMSS.ffffff padded on the right, anything else None."""
    assert norm_time(value) == expected


def test_norm_int_and_modalities():
    """IS values become ints within 32 bits; modalities merge sorted without repeats."""
    assert norm_int(" 12 ") == 12 and norm_int("1\\2") == 1 and norm_int("x") is None and norm_int("9" * 12) is None
    assert merge_modalities("MR\\CT", "CT") == "CT\\MR" and merge_modalities(None, "US") == "US"
