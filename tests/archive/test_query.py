"""C-FIND matching and retrieve selection over the archive index, on SQLite and PostgreSQL.

Index rows are inserted directly with SQLAlchemy Core; every matching rule of PS3.4 C.2.2.2 is
checked against both databases through the ``any_store`` fixture.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import text

from archive.matching import QueryError, like_pattern, match_values, parse_key
from archive.query import Find, Located, find, locate
from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies
from engine.store.store import Store

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
ELE = "1.2.840.10008.1.2.1"
NOW = time.time()


def _attrs(**elements: tuple[str, list[Any]]) -> str:
    """DICOM JSON for ``tag=(vr, values)`` keyword arguments given as ``x00101010=("AS", ["054Y"])``."""
    return json.dumps({tag[1:].upper(): {"vr": vr, "Value": values} for tag, (vr, values) in elements.items()})


PATIENTS = [
    # id, patient_id, name, birth_date, sex, attrs
    (1, "P1", "Doe^John", "19700101", "M", _attrs(x00102160=("SH", ["NORDIC"]))),
    (2, "P2", "doe^jane", "19800202", "F", None),
    (3, "P3", "Müller^Jürgen", "", "M", None),
    (4, "P4", "100%_Real^Name", "19900303", "O", None),
    (5, "P5", "100XYReal^Name", "19900303", "O", None),
    (6, "P6", None, None, None, None),
]
STUDIES = [
    # id, uid, patient, date, time, accession, referring physician, modalities, attrs
    (1, "1.2.1", 1, "20240105", "101200.000000", "ACC1", "Smith^Ann", "CT\\MR",
     _attrs(x00101010=("AS", ["054Y"]), x00081032=("SQ", [
         {"00080100": {"vr": "SH", "Value": ["CTHEAD"]}, "00080102": {"vr": "SH", "Value": ["LOCAL"]},
          "00080104": {"vr": "LO", "Value": ["CT Head"]}},
         {"00080100": {"vr": "SH", "Value": ["MRHEAD"]}, "00080102": {"vr": "SH", "Value": ["LOCAL"]}},
     ]))),
    (2, "1.2.2", 1, "20240120", "235959.000000", "ACC2", "jones^bob", "MR", _attrs(x00101010=("AS", ["055Y"]))),
    (3, "1.2.3", 2, "20231231", "080000.000000", "acc3", None, "US", None),
    (4, "1.2.4", 3, "20240110", "", "", None, None, None),
    (5, "1.2.5", 4, "", "120000.000000", "A%_1", None, "CT", None),
    (6, "1.2.6", 1, "20240106", "090000.000000", "AX_1", None, None, None),
    (7, "1.2.7", 2, "20240105", "090000.000000", "B1", None, None, None),
    (8, "1.2.8", 2, "20240106", "190000.000000", "B2", None, None, None),
    (9, "1.2.9", 2, "20240105", "200000.000000", "B3", None, None, None),
]  # fmt: skip
SERIES = [
    # id, uid, study, modality, number
    (1, "1.2.1.1", 1, "CT", 1),
    (2, "1.2.1.2", 1, "MR", 2),
    (3, "1.2.2.1", 2, "MR", 1),
    (4, "1.2.3.1", 3, "US", 1),
    (5, "1.2.4.1", 4, None, None),
    (6, "1.2.5.1", 5, "CT", 1),
]
INSTANCES = [
    # uid, series, study uid, sop class, number, AcquisitionDateTime
    ("1.2.1.1.1", 1, "1.2.1", CT, 1, "20240105101500"),
    ("1.2.1.1.2", 1, "1.2.1", CT, 2, "20240105102000.5"),
    ("1.2.1.1.3", 1, "1.2.1", CT, 3, None),
    ("1.2.1.2.1", 2, "1.2.1", MR, 1, "20240105113000+0100"),
    ("1.2.2.1.1", 3, "1.2.2", MR, 1, None),
    ("1.2.3.1.1", 4, "1.2.3", CT, 1, None),
]


def seed(store: Store) -> None:
    """Insert the fixture index: six patients, nine studies, six series, six instances."""
    with store.engine.begin() as conn:
        conn.execute(
            dicom_patients.insert(),
            [
                {"id": i, "patient_key": f"{pid}^", "patient_id": pid, "patient_name": name,
                 "patient_name_upper": name.upper() if name is not None else None, "birth_date": birth, "sex": sex,
                 "attrs": attrs, "created_at": NOW, "updated_at": NOW}
                for i, pid, name, birth, sex, attrs in PATIENTS
            ],
        )  # fmt: skip
        conn.execute(
            dicom_studies.insert(),
            [
                {"id": i, "study_uid": uid, "patient_ref": p, "study_date": d, "study_time": t, "accession": acc,
                 "referring_physician": ref, "modalities": mods, "attrs": attrs, "received_at": NOW, "updated_at": NOW}
                for i, uid, p, d, t, acc, ref, mods, attrs in STUDIES
            ],
        )  # fmt: skip
        conn.execute(
            dicom_series.insert(),
            [
                {"id": i, "series_uid": uid, "study_ref": st, "modality": mod, "series_number": num,
                 "received_at": NOW, "updated_at": NOW}
                for i, uid, st, mod, num in SERIES
            ],
        )  # fmt: skip
        conn.execute(dicom_instances.insert(), [_instance(*row) for row in INSTANCES])


def _instance(uid: str, series: int, study: str, sop_class: str, number: int, acquired: str | None) -> dict:
    """An instance row (attrs holding AcquisitionDateTime when given)."""
    attrs = _attrs(x0008002A=("DT", [acquired])) if acquired else None
    return {
        "sop_uid": uid, "series_ref": series, "study_uid": study, "sop_class_uid": sop_class,
        "instance_number": number, "transfer_syntax": ELE, "path": f"{study}/{uid}.dcm", "size": 1,
        "sha256": "0" * 64, "received_at": NOW, "attrs": attrs,
    }  # fmt: skip


@pytest.fixture
def index(any_store: Store) -> Store:
    """The fixture index on SQLite or PostgreSQL."""
    seed(any_store)
    return any_store


def q(store: Store, level: str, identifier: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
    """Rows of a C-FIND at *level* (Study Root unless ``model=``)."""
    return store.read_sync(lambda conn: list(find(conn, level, identifier, **options)))


def col(rows: list[dict[str, Any]], keyword: str) -> list[Any]:
    """The *keyword* values of *rows*, in order."""
    return [row[keyword] for row in rows]


def test_universal_matching_returns_every_entity_and_the_key(index: Store) -> None:
    """A zero-length key matches every entity and is returned, zero length (None) where there is no value."""
    rows = q(index, "PATIENT", {"PatientName": "", "PatientID": ""}, model="patient")
    assert col(rows, "PatientID") == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert rows[5]["PatientName"] is None
    assert rows[0]["QueryRetrieveLevel"] == "PATIENT"


def test_single_value_matching_is_case_sensitive(index: Store) -> None:
    """Single value matching outside PN is exact, case included, on both databases."""
    assert col(q(index, "STUDY", {"AccessionNumber": "ACC1"}), "StudyInstanceUID") == ["1.2.1"]
    assert q(index, "STUDY", {"AccessionNumber": "acc1"}) == []
    assert col(q(index, "STUDY", {"AccessionNumber": "acc3"}), "StudyInstanceUID") == ["1.2.3"]
    assert q(index, "STUDY", {"AccessionNumber": "ACC3"}) == []


def test_person_names_ignore_case_unless_configured(index: Store) -> None:
    """PN matching uses the upper-case column by default; ``case_insensitive_pn=False`` makes it exact."""
    assert col(q(index, "STUDY", {"PatientName": "doe^john"}), "StudyInstanceUID") == ["1.2.1", "1.2.2", "1.2.6"]
    assert q(index, "STUDY", {"PatientName": "doe^john"}, case_insensitive_pn=False) == []
    exact = q(index, "PATIENT", {"PatientName": "Doe^John"}, model="patient", case_insensitive_pn=False)
    assert col(exact, "PatientName") == ["Doe^John"]


def test_wild_cards_star_and_question_mark(index: Store) -> None:
    """``*`` matches any run (also empty), ``?`` one character; PN ignores case, other VRs do not."""
    names = {"model": "patient"}
    assert col(q(index, "PATIENT", {"PatientName": "DOE*"}, **names), "PatientID") == ["P1", "P2"]
    assert col(q(index, "PATIENT", {"PatientName": "D?e^J*"}, **names), "PatientID") == ["P1", "P2"]
    assert col(q(index, "PATIENT", {"PatientName": "*^JANE"}, **names), "PatientID") == ["P2"]
    exact = q(index, "PATIENT", {"PatientName": "Doe*"}, case_insensitive_pn=False, **names)
    assert col(exact, "PatientID") == ["P1"]
    assert col(q(index, "STUDY", {"AccessionNumber": "acc*"}), "AccessionNumber") == ["acc3"]
    assert col(q(index, "STUDY", {"AccessionNumber": "AC?1"}), "AccessionNumber") == ["ACC1"]
    assert col(q(index, "STUDY", {"AccessionNumber": "ACC*"}), "AccessionNumber") == ["ACC1", "ACC2"]


def test_percent_and_underscore_are_literal(index: Store) -> None:
    """``%`` and ``_`` in a key are characters, not SQL wild cards (escaped in the LIKE pattern)."""
    rows = q(index, "PATIENT", {"PatientName": "100%_*"}, model="patient")
    assert col(rows, "PatientID") == ["P4"]
    assert col(q(index, "STUDY", {"AccessionNumber": "A%_*"}), "AccessionNumber") == ["A%_1"]
    assert col(q(index, "STUDY", {"AccessionNumber": "A?_1"}), "AccessionNumber") == ["A%_1", "AX_1"]
    assert q(index, "STUDY", {"AccessionNumber": "A_%1"}) == []
    assert like_pattern("a%b_c\\*?") == "a\\%b\\_c\\\\%_"


def test_an_empty_stored_value_never_matches_a_key_with_a_value(index: Store) -> None:
    """Empty or NULL stored values match only universal keys, also for open ranges and ``?*``."""
    births = q(index, "PATIENT", {"PatientBirthDate": "-20000101"}, model="patient")
    assert col(births, "PatientID") == ["P1", "P2", "P4", "P5"]
    dates = col(q(index, "STUDY", {"StudyDate": "-20240131"}), "StudyInstanceUID")
    assert "1.2.5" not in dates and len(dates) == 8
    assert "1.2.4" not in col(q(index, "STUDY", {"AccessionNumber": "?*"}), "StudyInstanceUID")
    assert "1.2.4" in col(q(index, "STUDY", {"AccessionNumber": "*"}), "StudyInstanceUID")
    assert "P6" not in col(q(index, "PATIENT", {"PatientName": "*?*"}, model="patient"), "PatientID")
    assert "1.2.4" not in col(q(index, "STUDY", {"StudyTime": "-2359"}), "StudyInstanceUID")


def test_date_ranges(index: Store) -> None:
    """DA ranges ``a-b``, ``a-``, ``-b`` are inclusive; a single date is an exact day."""
    between = q(index, "STUDY", {"StudyDate": "20240101-20240106"})
    assert col(between, "StudyInstanceUID") == ["1.2.1", "1.2.6", "1.2.7", "1.2.8", "1.2.9"]
    assert col(q(index, "STUDY", {"StudyDate": "20240110-"}), "StudyInstanceUID") == ["1.2.2", "1.2.4"]
    assert col(q(index, "STUDY", {"StudyDate": "-20231231"}), "StudyInstanceUID") == ["1.2.3"]
    assert col(q(index, "STUDY", {"StudyDate": "20240120"}), "StudyInstanceUID") == ["1.2.2"]
    assert col(q(index, "STUDY", {"StudyDate": "2024.01.20"}), "StudyInstanceUID") == ["1.2.2"]


def test_time_ranges_match_to_the_precision_given(index: Store) -> None:
    """A TM covers its precision (``1012`` is 10:12:00-10:12:59.999999); ranges include their ends."""
    assert col(q(index, "STUDY", {"StudyTime": "1012"}), "StudyInstanceUID") == ["1.2.1"]
    assert col(q(index, "STUDY", {"StudyTime": "10"}), "StudyInstanceUID") == ["1.2.1"]
    assert col(q(index, "STUDY", {"StudyTime": "2359-"}), "StudyInstanceUID") == ["1.2.2"]
    assert col(q(index, "STUDY", {"StudyTime": "-0800"}), "StudyInstanceUID") == ["1.2.3"]
    assert col(q(index, "STUDY", {"StudyTime": "1900-2000"}), "StudyInstanceUID") == ["1.2.8", "1.2.9"]
    assert q(index, "STUDY", {"StudyTime": "1012"})[0]["StudyTime"] == "101200"


def test_combined_date_and_time_ranges(index: Store) -> None:
    """With combined date-time matching, StudyDate+StudyTime ranges are one interval; without, two filters."""
    key = {"StudyDate": "20240105-20240106", "StudyTime": "1000-1800"}
    combined = q(index, "STUDY", key, combined_datetime=True)
    assert col(combined, "StudyInstanceUID") == ["1.2.1", "1.2.6", "1.2.9"]
    assert col(q(index, "STUDY", key), "StudyInstanceUID") == ["1.2.1"]
    open_ended = q(index, "STUDY", {"StudyDate": "20240106-", "StudyTime": "1800-"}, combined_datetime=True)
    assert col(open_ended, "StudyInstanceUID") == ["1.2.2", "1.2.8"]  # 1.2.4 has no time, 1.2.6 is too early
    mixed = q(index, "STUDY", {"StudyDate": "20240105-20240106", "StudyTime": "1000-"}, combined_datetime=True)
    assert col(mixed, "StudyInstanceUID") == ["1.2.1", "1.2.8", "1.2.9"]


def test_list_of_uid_matching(index: Store) -> None:
    """A backslash-separated (or list) UID key matches any of its UIDs."""
    assert col(q(index, "STUDY", {"StudyInstanceUID": "1.2.1\\1.2.3"}), "StudyInstanceUID") == ["1.2.1", "1.2.3"]
    assert col(q(index, "STUDY", {"StudyInstanceUID": ["1.2.3", "1.2.9"]}), "StudyInstanceUID") == ["1.2.3", "1.2.9"]
    assert q(index, "STUDY", {"StudyInstanceUID": "1.2.*"}) == []  # UI has no wild cards


def test_modalities_in_study_matches_any_series_modality(index: Store) -> None:
    """ModalitiesInStudy matches when any series of the study matches; all modalities are returned."""
    rows = q(index, "STUDY", {"ModalitiesInStudy": "MR"})
    assert col(rows, "StudyInstanceUID") == ["1.2.1", "1.2.2"]
    assert rows[0]["ModalitiesInStudy"] == ["CT", "MR"]
    assert col(q(index, "STUDY", {"ModalitiesInStudy": "CT\\US"}), "StudyInstanceUID") == ["1.2.1", "1.2.3", "1.2.5"]
    assert col(q(index, "STUDY", {"ModalitiesInStudy": "M?"}), "StudyInstanceUID") == ["1.2.1", "1.2.2"]


def test_return_keys_from_attrs_and_unknown_keys(index: Store) -> None:
    """Keys without a column come from the level's attrs (or a level above); unknown ones are empty."""
    rows = q(index, "STUDY", {"StudyInstanceUID": "1.2.1", "PatientAge": "", "EthnicGroup": "", "InstitutionName": ""})
    assert rows == [
        {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": "1.2.1",
            "PatientAge": "054Y",
            "EthnicGroup": "NORDIC",
            "InstitutionName": None,
        }
    ]
    assert col(q(index, "STUDY", {"PatientAge": "055Y"}), "StudyInstanceUID") == ["1.2.2"]
    assert col(q(index, "STUDY", {"EthnicGroup": "NOR*"}), "StudyInstanceUID") == ["1.2.1", "1.2.2", "1.2.6"]
    assert q(index, "STUDY", {"PatientAge": "05?Y"}) == []  # AS takes no wild cards: single value matching


def test_sequence_matching_and_return(index: Store) -> None:
    """A sequence key returns the matching items with only the requested item keys (C.2.2.2.6)."""
    key = {"ProcedureCodeSequence": [{"CodeValue": "CTHEAD", "CodeMeaning": ""}]}
    rows = q(index, "STUDY", key)
    assert col(rows, "StudyInstanceUID") == ["1.2.1"]
    assert rows[0]["ProcedureCodeSequence"] == [{"CodeValue": "CTHEAD", "CodeMeaning": "CT Head"}]
    every = q(index, "STUDY", {"StudyInstanceUID": "1.2.1", "ProcedureCodeSequence": [{"CodeValue": ""}]})
    assert every[0]["ProcedureCodeSequence"] == [{"CodeValue": "CTHEAD"}, {"CodeValue": "MRHEAD"}]
    whole = q(index, "STUDY", {"StudyInstanceUID": "1.2.1", "ProcedureCodeSequence": []})
    assert whole[0]["ProcedureCodeSequence"][1] == {"CodeValue": "MRHEAD", "CodingSchemeDesignator": "LOCAL"}
    assert q(index, "STUDY", {"ProcedureCodeSequence": [{"CodeValue": "NONE"}]}) == []


def test_computed_counts(index: Store) -> None:
    """Number of related studies, series and instances are counted from the levels below."""
    counts = ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances")
    patient = q(index, "PATIENT", {"PatientID": "P1", **dict.fromkeys(counts, "")}, model="patient")[0]
    assert [patient[k] for k in counts] == [3, 3, 5]
    study = q(index, "STUDY", {"StudyInstanceUID": "1.2.1", "NumberOfStudyRelatedSeries": "5",
                               "NumberOfStudyRelatedInstances": ""})[0]  # fmt: skip
    assert (study["NumberOfStudyRelatedSeries"], study["NumberOfStudyRelatedInstances"]) == (2, 4)
    series = q(index, "SERIES", {"StudyInstanceUID": "1.2.1", "NumberOfSeriesRelatedInstances": ""})
    assert col(series, "NumberOfSeriesRelatedInstances") == [3, 1]


def test_level_and_unique_keys_are_always_returned(index: Store) -> None:
    """Responses carry the Query/Retrieve Level and the unique keys of the level and above, per model."""
    study_root = q(index, "SERIES", {"StudyInstanceUID": "1.2.1", "Modality": "MR"})
    assert study_root == [{"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2",
                           "Modality": "MR"}]  # fmt: skip
    patient_root = q(index, "STUDY", {"PatientID": "P2", "StudyDate": "20231231"}, model="patient")
    assert set(patient_root[0]) == {"QueryRetrieveLevel", "PatientID", "StudyInstanceUID", "StudyDate"}
    assert "PatientID" not in q(index, "STUDY", {"StudyDate": "20231231"})[0]
    image = q(index, "IMAGE", {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.1", "SOPClassUID": ""})
    assert col(image, "SOPInstanceUID") == ["1.2.1.1.1", "1.2.1.1.2", "1.2.1.1.3"]
    assert col(image, "SOPClassUID") == [CT] * 3


def test_keys_of_lower_levels_are_not_matched(index: Store) -> None:
    """A series-level key in a study-level query is returned empty and filters nothing."""
    rows = q(index, "STUDY", {"Modality": "XX", "StudyInstanceUID": "1.2.1"})
    assert rows == [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.1", "Modality": None}]


def test_integer_and_case_insensitive_referring_physician(index: Store) -> None:
    """IS keys match numerically; a PN column without an upper copy is folded in Python."""
    assert col(q(index, "SERIES", {"StudyInstanceUID": "1.2.1", "SeriesNumber": "2"}), "SeriesInstanceUID") == [
        "1.2.1.2"
    ]
    assert col(q(index, "STUDY", {"ReferringPhysicianName": "JONES*"}), "StudyInstanceUID") == ["1.2.2"]
    exact = q(index, "STUDY", {"ReferringPhysicianName": "JONES*"}, case_insensitive_pn=False)
    assert exact == []


def test_non_ascii_names_carry_specific_character_set(index: Store) -> None:
    """A response with non-ASCII text says ISO_IR 192; a folded PN matches across case of ü/Ü."""
    rows = q(index, "PATIENT", {"PatientName": "müller*"}, model="patient")
    assert rows == [{"QueryRetrieveLevel": "PATIENT", "PatientName": "Müller^Jürgen", "PatientID": "P3",
                     "SpecificCharacterSet": "ISO_IR 192"}]  # fmt: skip
    assert "SpecificCharacterSet" not in q(index, "PATIENT", {"PatientID": "P1"}, model="patient")[0]


def test_datetime_ranges_on_attrs(index: Store) -> None:
    """DT ranges match at the value's precision; offsets count when both sides have one."""
    key = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.1", "AcquisitionDateTime": "202401051016-"}
    assert col(q(index, "IMAGE", key), "SOPInstanceUID") == ["1.2.1.1.2"]
    key["AcquisitionDateTime"] = "2024010510"
    rows = q(index, "IMAGE", key)
    assert col(rows, "AcquisitionDateTime") == ["20240105101500", "20240105102000.5"]
    mr = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2", "AcquisitionDateTime": "-202401051100+0000"}
    assert col(q(index, "IMAGE", mr), "SOPInstanceUID") == ["1.2.1.2.1"]  # 11:30+01:00 is 10:30 UTC
    mr["AcquisitionDateTime"] = "-202401051100"
    assert q(index, "IMAGE", mr) == []


@pytest.mark.parametrize(
    ("level", "model", "identifier", "tag"),
    [
        ("SERIES", "study", {"Modality": "CT"}, 0x0020000D),
        ("SERIES", "study", {"StudyInstanceUID": "", "Modality": "CT"}, 0x0020000D),
        ("SERIES", "study", {"StudyInstanceUID": "*"}, 0x0020000D),
        ("STUDY", "patient", {"StudyDate": ""}, 0x00100020),
        ("STUDY", "patient", {"PatientID": "P*"}, 0x00100020),
        ("IMAGE", "patient", {"PatientID": "P1", "StudyInstanceUID": "1.2.1"}, 0x0020000E),
        ("PATIENT", "study", {"PatientID": ""}, 0x00080052),
        ("FRAME", "patient", {}, 0x00080052),
    ],
)
def test_required_unique_keys_and_levels_per_model(level: str, model: str, identifier: dict, tag: int) -> None:
    """A level outside the model, or a missing unique key above the level, is refused with 0xA900."""
    with pytest.raises(QueryError) as err:
        Find(level, identifier, model=model)
    assert err.value.status == 0xA900
    assert err.value.tags == (tag,)


def test_malformed_dates_are_refused() -> None:
    """A key value that is no DA, TM or DT is refused with 0xC000 naming the attribute."""
    for key in ({"StudyDate": "2024-01-xx"}, {"StudyTime": "25:61"}, {"StudyDate": "1-2-3"}):
        with pytest.raises(QueryError) as err:
            Find("STUDY", key)
        assert err.value.status == 0xC000
    with pytest.raises(QueryError):
        Find("SERIES", {"StudyInstanceUID": "1.2.1", "SeriesNumber": "two"})


def test_python_matching_mirrors_sql_rules() -> None:
    """The Python matcher used for attrs follows the same rules as the SQL one."""
    name = parse_key("PatientName", "doe*")
    assert name is not None and match_values(name, ["DOE^JOHN"], fold=True)
    assert not match_values(name, ["DOE^JOHN"])
    percent = parse_key("AccessionNumber", "A%_*")
    assert percent is not None and match_values(percent, ["A%_1"]) and not match_values(percent, ["AX_1"])
    assert not match_values(parse_key("AccessionNumber", "?*"), [""])  # type: ignore[arg-type]


def test_paged_reads_and_limit(index: Store) -> None:
    """Paging by level id gives the same rows as one cursor; *limit* stops early."""
    query = Find("STUDY", {"AccessionNumber": ""})
    single = index.read_sync(lambda conn: list(query.rows(conn)))
    paged = list(Find("STUDY", {"AccessionNumber": ""}).paged(index.read_sync, page_size=2))
    assert paged == single and len(paged) == 9
    limited = Find("STUDY", {"AccessionNumber": ""})
    assert len(list(limited.paged(index.read_sync, page_size=4, limit=3))) == 3
    assert limited.fetched == 3
    filtered = list(Find("STUDY", {"EthnicGroup": "NOR*"}).paged(index.read_sync, page_size=2))
    assert col(filtered, "StudyInstanceUID") == ["1.2.1", "1.2.2", "1.2.6"]


def test_locate_selects_instances_by_unique_keys(index: Store) -> None:
    """A retrieve selects instances by the unique keys at its level and above, UID lists at the level."""

    def loc(level: str, identifier: dict, model: str = "study") -> list[str]:
        """SOP Instance UIDs :func:`locate` selects."""
        return [x.sop_instance_uid for x in index.read_sync(locate, level, identifier, model=model)]

    assert loc("STUDY", {"StudyInstanceUID": "1.2.1\\1.2.2"}) == ["1.2.1.1.1", "1.2.1.1.2", "1.2.1.1.3",
                                                                  "1.2.1.2.1", "1.2.2.1.1"]  # fmt: skip
    assert loc("SERIES", {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2"}) == ["1.2.1.2.1"]
    image = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.1", "SOPInstanceUID": "1.2.1.1.3\\1.2.1.1.1"}
    assert loc("IMAGE", image) == ["1.2.1.1.1", "1.2.1.1.3"]
    assert loc("PATIENT", {"PatientID": "P2"}, model="patient") == ["1.2.3.1.1"]
    assert loc("STUDY", {"PatientID": "P2", "StudyInstanceUID": "1.2.1"}, model="patient") == []
    first = index.read_sync(locate, "SERIES", {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2"})[0]
    assert first == Located("1.2.1/1.2.1.2.1.dcm", MR, "1.2.1.2.1", ELE)
    with pytest.raises(QueryError) as err:
        index.read_sync(locate, "SERIES", {"SeriesInstanceUID": "1.2.1.2"})
    assert err.value.status == 0xA900 and err.value.tags == (0x0020000D,)
    with pytest.raises(QueryError):
        index.read_sync(locate, "STUDY", {"StudyInstanceUID": ""})


def test_ten_thousand_instances_read_only_what_matches(any_store: Store) -> None:
    """Over 10,000 instances, a selective image query reads one row, and counts come from the index."""
    with any_store.engine.begin() as conn:
        conn.execute(dicom_patients.insert(), [{"id": 1, "patient_key": "P^", "patient_id": "P", "created_at": NOW,
                                                "updated_at": NOW}])  # fmt: skip
        conn.execute(dicom_studies.insert(), [{"id": 1, "study_uid": "9.1", "patient_ref": 1, "received_at": NOW,
                                               "updated_at": NOW}])  # fmt: skip
        conn.execute(dicom_series.insert(), [{"id": 1, "series_uid": "9.1.1", "study_ref": 1, "received_at": NOW,
                                              "updated_at": NOW}])  # fmt: skip
        conn.execute(
            dicom_instances.insert(),
            [{**_instance(f"9.1.1.{n}", 1, "9.1", CT, n, None), "path": f"9/{n}.dcm"} for n in range(10_000)],
        )
    image = Find("IMAGE", {"StudyInstanceUID": "9.1", "SeriesInstanceUID": "9.1.1", "InstanceNumber": "5000"})
    assert col(any_store.read_sync(lambda conn: list(image.rows(conn))), "SOPInstanceUID") == ["9.1.1.5000"]
    assert image.fetched == 1
    study = Find("STUDY", {"StudyInstanceUID": "9.1", "NumberOfStudyRelatedInstances": ""})
    assert any_store.read_sync(lambda conn: list(study.rows(conn)))[0]["NumberOfStudyRelatedInstances"] == 10_000
    assert study.fetched == 1
    first = Find("IMAGE", {"StudyInstanceUID": "9.1", "SeriesInstanceUID": "9.1.1"})
    assert len(list(first.paged(any_store.read_sync, page_size=100, limit=10))) == 10
    assert first.fetched == 10
    assert (
        len(any_store.read_sync(locate, "SERIES", {"StudyInstanceUID": "9.1", "SeriesInstanceUID": "9.1.1"})) == 10_000
    )
    if any_store.dialect == "sqlite":
        plan = _sqlite_plan(any_store, first)
        assert "ix_dicom_instances_series" in plan and "SCAN dicom_instances" not in plan, plan
        names = _sqlite_plan(any_store, Find("PATIENT", {"PatientName": "DOE*"}, model="patient"))
        assert "USING INDEX ix_dicom_patients_name" in names, names


def _sqlite_plan(store: Store, query: Find) -> str:
    """SQLite's EXPLAIN QUERY PLAN of a page of *query*, with LIKE case-sensitive as the reads make it."""
    stmt = query.statement(after=0, limit=100).compile(store.engine, compile_kwargs={"literal_binds": True})
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA case_sensitive_like = ON")
        rows = conn.execute(text(f"EXPLAIN QUERY PLAN {stmt}")).fetchall()
    return "\n".join(str(r[-1]) for r in rows)
