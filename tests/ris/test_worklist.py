"""Modality Worklist matching (ris_core/worklist.py) on SQLite and PostgreSQL, and its SQLite query plans."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydicom.dataset import Dataset

from archive.matching import QueryError
from engine.store.store import Store
from ris_core.schema import ris_orders, ris_patients, ris_sps
from ris_core.worklist import Worklist, find, paged
from tests.engine import conftest as engine_fixtures

clock, sqlite_store, any_store = engine_fixtures.clock, engine_fixtures.sqlite_store, engine_fixtures.any_store
store_url, pg_url = engine_fixtures.store_url, engine_fixtures.pg_url
NOW = 1_700_000_000.0
_serial = itertools.count(1)
SPS_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime")


def render_item(row: dict[str, Any], extra: dict[str, Any] | None = None, sps_extra: list[dict] | None = None) -> str:
    """The worklist item as the ORM template renders it (DICOM JSON) for a ``ris_sps`` row."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber, ds.PatientID, ds.IssuerOfPatientID = row["accession"], row["patient_id"], row["issuer"]
    ds.PatientName, ds.StudyInstanceUID = row["patient_name"], row["study_uid"]
    ds.RequestedProcedureID, ds.RequestedProcedureDescription = row["requested_procedure_id"], "CT of the head"
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "19700101", "M", "Welby^Marcus"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CTHEAD", "LOCAL", "CT head"
    ds.RequestedProcedureCodeSequence = [code]
    items = []
    for more in sps_extra or [{}]:
        sps = Dataset()
        sps.Modality, sps.ScheduledStationAETitle = row["modality"], (row["station_ae"] or "").split("\\")
        sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime = row["start_date"], "080000"
        sps.ScheduledProcedureStepID, sps.ScheduledProcedureStepLocation = row["sps_id"], "ROOM 1"
        for keyword, value in more.items():
            setattr(sps, keyword, value)
        items.append(sps)
    ds.ScheduledProcedureStepSequence = items
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    return ds.to_json()


def add_step(conn: Any, *, state: str = "SCHEDULED", extra: dict | None = None, sps_extra: list | None = None,
             **values: Any) -> int:  # fmt: skip
    """Insert a patient, an order in *state* and one scheduled step (*values* override); the step's id."""
    n = next(_serial)
    row: dict[str, Any] = {
        "sps_id": f"SPS{n}", "status": "SCHEDULED", "modality": "CT", "station_ae": "CT1", "station_name": "CTROOM",
        "start_date": "20240301", "start_time": "080000.000000", "description": "CT HEAD",
        "performing_physician": "House^Gregory", "patient_id": f"P{n}", "issuer": "HOSP", "patient_name": "Doe^John",
        "accession": f"ACC{n}", "requested_procedure_id": f"RP{n}", "study_uid": f"1.2.826.0.1.{n}",
    }  # fmt: skip
    row.update(values)
    row["patient_name_upper"] = row["patient_name"].upper() if row["patient_name"] is not None else None
    stamps = {"created_at": NOW, "updated_at": NOW}
    patient = conn.execute(
        ris_patients.insert().returning(ris_patients.c.id),
        {"patient_key": f"{row['patient_id']}^{n}", "patient_id": row["patient_id"], "name": row["patient_name"],
         "name_upper": row["patient_name_upper"], **stamps},
    ).scalar_one()  # fmt: skip
    order = conn.execute(
        ris_orders.insert().returning(ris_orders.c.id),
        {"patient_ref": patient, "accession": row["accession"] or f"GEN{n}", "study_uid": row["study_uid"] or "1.2",
         "state": state, "reconcile": 0, **stamps},
    ).scalar_one()  # fmt: skip
    item = render_item(row, extra, sps_extra)
    return conn.execute(
        ris_sps.insert().returning(ris_sps.c.id), {**row, "order_ref": order, "item": item, **stamps}
    ).scalar_one()


def query(store: Store, identifier: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    """Every row a worklist query returns, read on one connection."""
    return store.read_sync(lambda conn: list(find(conn, identifier, **kw)))


def accessions(store: Store, identifier: dict[str, Any], **kw: Any) -> list[str]:
    """The AccessionNumber of each matching step, in id order."""
    return [r["AccessionNumber"] for r in query(store, {**identifier, "AccessionNumber": ""}, **kw)]


def sps(**keys: Any) -> dict[str, Any]:
    """An identifier with one ScheduledProcedureStepSequence item holding *keys*."""
    return {"ScheduledProcedureStepSequence": [keys]}


def test_requested_keys_only_from_columns_item_or_zero_length(any_store: Store) -> None:
    """A response holds exactly the requested keys: columns, item JSON, and zero length for unknown ones."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="A1", station_ae="CT1\\CT2", start_time="081500.500000")
    identifier = {"PatientName": "", "PatientBirthDate": "", "AdmissionID": "", "RequestedProcedureCodeSequence": [{}],
                  **sps(**dict.fromkeys(SPS_KEYS, ""), ScheduledProcedureStepLocation="")}  # fmt: skip
    [row] = query(any_store, identifier)
    assert set(row) == {"PatientName", "PatientBirthDate", "AdmissionID", "RequestedProcedureCodeSequence", "ScheduledProcedureStepSequence"}  # fmt: skip
    assert (row["PatientName"], row["PatientBirthDate"], row["AdmissionID"]) == ("Doe^John", "19700101", None)
    assert row["RequestedProcedureCodeSequence"][0]["CodeValue"] == "CTHEAD"
    assert row["ScheduledProcedureStepSequence"] == [
        {"Modality": "CT", "ScheduledStationAETitle": ["CT1", "CT2"], "ScheduledProcedureStepStartDate": "20240301",
         "ScheduledProcedureStepStartTime": "081500.5", "ScheduledProcedureStepLocation": "ROOM 1"}
    ]  # fmt: skip


def test_empty_sequence_key_returns_the_whole_step(any_store: Store) -> None:
    """An empty ScheduledProcedureStepSequence key returns every step attribute, columns over the item."""
    with any_store.engine.begin() as conn:
        add_step(conn, status="ARRIVED", sps_id="S9")
    [row] = query(any_store, {"ScheduledProcedureStepSequence": []})
    [item] = row["ScheduledProcedureStepSequence"]
    assert item["ScheduledProcedureStepStatus"] == "ARRIVED" and item["ScheduledProcedureStepID"] == "S9"
    assert (
        item["ScheduledProcedureStepLocation"] == "ROOM 1"
        and item["ScheduledPerformingPhysicianName"] == "House^Gregory"
    )


def test_single_value_wildcards_and_case_rules(any_store: Store) -> None:
    """PN ignores case (unless configured not to); other VRs are case-sensitive; % and _ are literal."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="ACC_1", patient_name="Doe^John", patient_id="PX")
        add_step(conn, accession="ACCX1", patient_name="Dole^Jane", patient_id="px")
        add_step(conn, accession="B%2", patient_name="Smith^Anna", patient_id="P?")
    assert accessions(any_store, {"PatientName": "doe^john"}) == ["ACC_1"]
    assert accessions(any_store, {"PatientName": "do*"}) == ["ACC_1", "ACCX1"]
    assert accessions(any_store, {"PatientName": "D?e^*"}) == ["ACC_1"]
    assert accessions(any_store, {"PatientName": "do*"}, case_insensitive_pn=False) == []
    assert accessions(any_store, {"PatientName": "Do*"}, case_insensitive_pn=False) == ["ACC_1", "ACCX1"]
    assert accessions(any_store, {"PatientID": "PX"}) == ["ACC_1"]
    assert accessions(any_store, {"PatientID": "p*"}) == ["ACCX1"]
    assert [r["AccessionNumber"] for r in query(any_store, {"AccessionNumber": "ACC_*"})] == ["ACC_1"]
    assert [r["AccessionNumber"] for r in query(any_store, {"AccessionNumber": "B%?"})] == ["B%2"]
    assert [r["AccessionNumber"] for r in query(any_store, {"AccessionNumber": "acc*"})] == []
    assert len(query(any_store, {"AccessionNumber": "*"})) == 3


def test_uid_list_and_performing_physician_case(any_store: Store) -> None:
    """A list of UIDs matches any of them; a PN without an upper-case column also ignores case."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="U1", study_uid="1.2.3.1")
        add_step(conn, accession="U2", study_uid="1.2.3.2", performing_physician="Grey^Meredith")
        add_step(conn, accession="U3", study_uid="1.2.3.3")
    assert accessions(any_store, {"StudyInstanceUID": "1.2.3.1\\1.2.3.3"}) == ["U1", "U3"]
    assert accessions(any_store, {"StudyInstanceUID": ["1.2.3.2"]}) == ["U2"]
    assert accessions(any_store, sps(ScheduledPerformingPhysicianName="grey*")) == ["U2"]


def test_date_and_time_ranges_alone_and_combined(any_store: Store) -> None:
    """Date and time ranges match on their own; both as ranges of one form are one date-time range."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="D1", start_date="20240301", start_time="220000.000000")
        add_step(conn, accession="D2", start_date="20240302", start_time="060000.000000")
        add_step(conn, accession="D3", start_date="20240302", start_time="230000.000000")
        add_step(conn, accession="D4", start_date="20240303", start_time="101230.000000")
    night = sps(ScheduledProcedureStepStartDate="20240301-20240302", ScheduledProcedureStepStartTime="2100-0700")
    assert accessions(any_store, night) == ["D1", "D2"]
    separate = sps(ScheduledProcedureStepStartDate="20240301-20240302", ScheduledProcedureStepStartTime="0500-")
    assert accessions(any_store, separate) == ["D1", "D2", "D3"]
    assert accessions(any_store, sps(ScheduledProcedureStepStartDate="20240302-")) == ["D2", "D3", "D4"]
    assert accessions(any_store, sps(ScheduledProcedureStepStartDate="-20240301")) == ["D1"]
    assert accessions(any_store, sps(ScheduledProcedureStepStartTime="1012")) == ["D4"]
    assert accessions(any_store, sps(ScheduledProcedureStepStartDate="20240302")) == ["D2", "D3"]


def test_sequence_matching_any_item_and_nested(any_store: Store) -> None:
    """Item keys all match one step; keys without a column match any stored item of the sequence."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="Q1", modality="MR", sps_extra=[{"ScheduledProcedureStepLocation": "A"},
                                                                 {"ScheduledProcedureStepLocation": "B"}])  # fmt: skip
        add_step(conn, accession="Q2", modality="CT")
    assert accessions(any_store, sps(Modality="MR", ScheduledProcedureStepLocation="B")) == ["Q1"]
    assert accessions(any_store, sps(Modality="CT", ScheduledProcedureStepLocation="B")) == []
    [row] = query(any_store, sps(ScheduledProcedureStepLocation="B", Modality=""))
    assert row["ScheduledProcedureStepSequence"] == [{"ScheduledProcedureStepLocation": "B", "Modality": "MR"}]
    code = {"RequestedProcedureCodeSequence": [{"CodeValue": "CTHEAD", "CodeMeaning": ""}]}
    assert accessions(any_store, code) == ["Q1", "Q2"]
    assert query(any_store, code)[0]["RequestedProcedureCodeSequence"] == [{"CodeValue": "CTHEAD", "CodeMeaning": "CT head"}]  # fmt: skip
    assert accessions(any_store, {"RequestedProcedureCodeSequence": [{"CodeValue": "MRHEAD"}]}) == []


def test_multi_valued_station_ae_title(any_store: Store) -> None:
    """A stored value list matches when any one value matches, never by substring."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="S1", station_ae="CT1\\CT2")
        add_step(conn, accession="S2", station_ae="MRCT2")
        add_step(conn, accession="S3", station_ae="CT10")
    assert accessions(any_store, sps(ScheduledStationAETitle="CT2")) == ["S1"]
    assert accessions(any_store, sps(ScheduledStationAETitle="CT")) == []
    assert accessions(any_store, sps(ScheduledStationAETitle="CT?")) == ["S1"]
    assert accessions(any_store, sps(ScheduledStationAETitle="CT1*")) == ["S1", "S3"]
    assert accessions(any_store, sps(ScheduledStationAETitle="MR1\\CT10")) == ["S3"]
    assert accessions(any_store, sps(ScheduledStationAETitle="ct2")) == []


def test_empty_stored_values_never_match(any_store: Store) -> None:
    """Empty or missing stored values match only universal keys, column or item alike."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="E1", station_name="", performing_physician=None, start_time="")
        add_step(conn, accession="E2", extra={"PatientSex": ""})
    assert accessions(any_store, sps(ScheduledStationName="*")) == ["E1", "E2"]
    assert accessions(any_store, sps(ScheduledStationName="C*")) == ["E2"]
    assert accessions(any_store, sps(ScheduledPerformingPhysicianName="*")) == ["E1", "E2"]
    assert accessions(any_store, sps(ScheduledPerformingPhysicianName="?*")) == ["E2"]
    assert accessions(any_store, sps(ScheduledProcedureStepStartTime="-2359")) == ["E2"]
    assert accessions(any_store, {"PatientSex": "M"}) == ["E1"]
    assert accessions(any_store, {"PatientSex": "?"}) == ["E1"]
    assert accessions(any_store, {"PatientWeight": "70"}) == []


def test_only_open_steps_unless_a_status_is_asked(any_store: Store) -> None:
    """Closed steps, held and closed orders are left out; a status value selects by status instead."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="O1", status="SCHEDULED", state="SCHEDULED")
        add_step(conn, accession="O2", status="STARTED", state="IN_PROGRESS")
        add_step(conn, accession="O3", status="COMPLETED", state="COMPLETED")
        add_step(conn, accession="O4", status="SCHEDULED", state="HELD")
        add_step(conn, accession="O5", status="CANCELED", state="CANCELED")
        add_step(conn, accession="O6", status="READY", state="ARRIVED")
    assert accessions(any_store, {}) == ["O1", "O2", "O6"]
    assert accessions(any_store, sps(ScheduledProcedureStepStatus="")) == ["O1", "O2", "O6"]
    assert accessions(any_store, sps(ScheduledProcedureStepStatus="COMPLETED")) == ["O3"]
    assert accessions(any_store, sps(ScheduledProcedureStepStatus="SCHEDULED")) == ["O1"]
    assert accessions(any_store, sps(ScheduledProcedureStepStatus="CANCELED\\READY")) == ["O5", "O6"]


def test_non_ascii_names_match_in_unicode_and_declare_utf8(any_store: Store) -> None:
    """Unicode keys match stored names case-insensitively; only non-ASCII responses declare ISO_IR 192."""
    with any_store.engine.begin() as conn:
        add_step(conn, accession="N1", patient_name="Müller^Jürgen")
        add_step(conn, accession="N2", patient_name="山田^太郎")
    [row] = query(any_store, {"PatientName": "MÜLLER^J?rgen", "AccessionNumber": ""})
    assert row == {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Müller^Jürgen", "AccessionNumber": "N1"}
    assert accessions(any_store, {"PatientName": "山田*"}) == ["N2"]
    assert query(any_store, {"AccessionNumber": "N1"}) == [{"AccessionNumber": "N1"}]


def test_paged_and_limit_agree_with_one_cursor(any_store: Store) -> None:
    """Pages of any size and a limit give the rows one cursor gives, in id order."""
    with any_store.engine.begin() as conn:
        for n in range(7):
            add_step(conn, accession=f"P{n}", station_ae="CT1" if n % 2 else "MR1")
    all_rows = query(any_store, {"AccessionNumber": ""})
    assert [r["AccessionNumber"] for r in all_rows] == [f"P{n}" for n in range(7)]
    assert list(paged(any_store.read_sync, {"AccessionNumber": ""}, page_size=2)) == all_rows
    odd = sps(ScheduledStationAETitle="CT1")
    assert len(list(paged(any_store.read_sync, odd, page_size=2, limit=2))) == 2
    assert len(query(any_store, odd, limit=2)) == 2 and len(query(any_store, odd)) == 3


def test_malformed_keys_are_refused() -> None:
    """A malformed date is 0xC000 and a sequence key with two items is 0xA900, both when parsed."""
    with pytest.raises(QueryError) as bad_date:
        Worklist(sps(ScheduledProcedureStepStartDate="2024-xx"))
    with pytest.raises(QueryError) as two_items:
        Worklist({"ScheduledProcedureStepSequence": [{"Modality": "CT"}, {"Modality": "MR"}]})
    assert (bad_date.value.status, two_items.value.status) == (0xC000, 0xA900)


PLANS = [
    ({"AccessionNumber": "A1"}, "ix_ris_sps_accession"),
    (sps(Modality="CT", ScheduledProcedureStepStartDate="20240301"), "ix_ris_sps_modality_date"),
    (
        sps(
            Modality="CT",
            ScheduledProcedureStepStartDate="20240301-20240302",
            ScheduledProcedureStepStartTime="0800-1000",
        ),
        "ix_ris_sps_modality_date",
    ),  # fmt: skip
    (sps(ScheduledProcedureStepStartDate="20240301-20240307"), "ix_ris_sps_date"),
    ({"PatientID": "P1"}, "ix_ris_sps_patient"),
    ({"PatientName": "doe*"}, "ix_ris_sps_name"),
    (sps(ScheduledStationAETitle="CT1"), "ix_ris_sps_status"),
    (sps(ScheduledProcedureStepStatus="COMPLETED"), "ix_ris_sps_status"),
]


@pytest.mark.parametrize(("identifier", "index"), PLANS)
def test_sqlite_query_plans_use_the_indexes(sqlite_store: Store, identifier: dict, index: str) -> None:
    """Each planned worklist query reads ris_sps through the index made for it, never a full scan."""
    stmt = (
        Worklist(identifier)
        .statement(limit=256)
        .compile(sqlite_store.engine, compile_kwargs={"render_postcompile": True})
    )
    with sqlite_store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA case_sensitive_like = ON")
        raw = conn.connection.dbapi_connection
        params = [stmt.params[name] for name in stmt.positiontup]
        plan = "\n".join(str(r[-1]) for r in raw.execute(f"EXPLAIN QUERY PLAN {stmt}", params))
    first = plan.splitlines()[0]
    assert f"USING INDEX {index}" in first or f"USING COVERING INDEX {index}" in first, plan
    assert "SCAN ris_sps" not in plan, plan
