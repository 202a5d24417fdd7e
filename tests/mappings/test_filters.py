"""Tests for the HL7 <-> DICOM Jinja filters and globals."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from pydicom.uid import UID

from mappings import filters as f


def test_hl7_escape_escapes_delimiters() -> None:
    """Delimiters in a value become HL7 escape sequences."""
    assert f.hl7_escape("A|B^C~D\\E&F") == "A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F"


def test_hl7_unescape_round_trips_escape() -> None:
    """Unescaping an escaped value gives the original back."""
    value = "Smith & Sons | 50% ^ more ~ less \\ slash"
    assert f.hl7_unescape(f.hl7_escape(value)) == value


def test_escape_filters_treat_none_as_empty() -> None:
    """None reads as an empty string."""
    assert f.hl7_escape(None) == "" and f.hl7_unescape(None) == ""


@pytest.mark.parametrize(
    ("hl7", "da"),
    [
        ("20240131", "20240131"),
        ("20240131123045.123+0100", "20240131"),
        ("202401311230", "20240131"),
        ("20240131^D", "20240131"),
        ("202401", ""),
        ("20240231", ""),
        ("2024013", ""),
        ("", ""),
        (None, ""),
        ("yesterday", ""),
    ],
)
def test_hl7_to_dicom_date(hl7: str | None, da: str) -> None:
    """HL7 dates and timestamps give a DICOM DA, or empty when not a full valid date."""
    assert f.hl7_to_dicom_date(hl7) == da


@pytest.mark.parametrize(
    ("hl7", "tm"),
    [
        ("202401311230", "1230"),
        ("20240131123045.123+0100", "123045.123"),
        ("2024013112", "12"),
        ("20240131", ""),
        ("202401312530", ""),
        ("202401311260", ""),
        ("", ""),
    ],
)
def test_hl7_to_dicom_time(hl7: str, tm: str) -> None:
    """The time part of an HL7 timestamp becomes a DICOM TM without the offset."""
    assert f.hl7_to_dicom_time(hl7) == tm


@pytest.mark.parametrize(
    ("hl7", "dt"),
    [
        ("20240131123045.123+0100", "20240131123045.123+0100"),
        ("202401311230", "202401311230"),
        ("2024", "2024"),
        ("20240131123045+1500", ""),
        ("20241331", ""),
        ("", ""),
    ],
)
def test_hl7_to_dicom_datetime(hl7: str, dt: str) -> None:
    """An HL7 timestamp becomes a DICOM DT keeping fraction and offset."""
    assert f.hl7_to_dicom_datetime(hl7) == dt


@pytest.mark.parametrize(
    ("da", "hl7"),
    [("20240131", "20240131"), ("2024.01.31", "20240131"), ("20240230", ""), ("2024", ""), ("", ""), (None, "")],
)
def test_dicom_to_hl7_date(da: str | None, hl7: str) -> None:
    """A DICOM DA (also legacy dotted) becomes an HL7 date, or empty if invalid."""
    assert f.dicom_to_hl7_date(da) == hl7


@pytest.mark.parametrize(
    ("da", "tm", "hl7"),
    [
        ("20240131", "123045", "20240131123045"),
        ("20240131", "123045.123456", "20240131123045.1234"),
        ("20240131", "1230", "202401311230"),
        ("20240131", "12:30:45", "20240131123045"),
        ("20240131", "", "20240131"),
        ("20240131", "99", "20240131"),
        ("", "123045", ""),
    ],
)
def test_dicom_to_hl7_datetime(da: str, tm: str, hl7: str) -> None:
    """DICOM DA and TM combine into an HL7 DTM; a bad TM leaves the date alone."""
    assert f.dicom_to_hl7_datetime(da, tm) == hl7


@pytest.mark.parametrize(
    ("xpn", "pn"),
    [
        ("DOE^JOHN^Q^JR^DR", "DOE^JOHN^Q^DR^JR"),
        ("DOE^JOHN", "DOE^JOHN"),
        ("DOE^JOHN^^^", "DOE^JOHN"),
        ("DOE^JOHN^^JR^DR^MD", "DOE^JOHN^^DR^JR MD"),
        ("DOE&VAN^JOHN~ALIAS^X", "DOE^JOHN"),
        ("", ""),
        (None, ""),
    ],
)
def test_hl7_name_to_dicom(xpn: str | None, pn: str) -> None:
    """HL7 XPN order (suffix, prefix) becomes DICOM PN order (prefix, suffix) with trailing empties cut."""
    assert f.hl7_name_to_dicom(xpn) == pn


@pytest.mark.parametrize(
    ("pn", "xpn"),
    [
        ("DOE^JOHN^Q^DR^JR", "DOE^JOHN^Q^JR^DR"),
        ("DOE^JOHN^^^", "DOE^JOHN"),
        ("Yamada^Tarou=山田^太郎", "Yamada^Tarou"),
        ("", ""),
    ],
)
def test_dicom_name_to_hl7(pn: str, xpn: str) -> None:
    """DICOM PN becomes HL7 XPN, alphabetic group only."""
    assert f.dicom_name_to_hl7(pn) == xpn


def test_name_conversion_round_trips() -> None:
    """Converting a name to DICOM and back gives the original."""
    assert f.dicom_name_to_hl7(f.hl7_name_to_dicom("DOE^JOHN^Q^JR^DR")) == "DOE^JOHN^Q^JR^DR"


@pytest.mark.parametrize(
    ("hl7", "dicom"), [("M", "M"), ("F", "F"), ("O", "O"), ("U", ""), ("A", "O"), ("N", ""), ("f", "F"), ("", "")]
)
def test_hl7_sex_to_dicom(hl7: str, dicom: str) -> None:
    """HL7 sex codes map to DICOM M/F/O or empty."""
    assert f.hl7_sex_to_dicom(hl7) == dicom


@pytest.mark.parametrize(("dicom", "hl7"), [("M", "M"), ("F", "F"), ("O", "O"), ("", "U"), (None, "U")])
def test_dicom_sex_to_hl7(dicom: str | None, hl7: str) -> None:
    """DICOM sex maps to HL7 with U for unknown."""
    assert f.dicom_sex_to_hl7(dicom) == hl7


def test_now_defaults_to_hl7_timestamp() -> None:
    """now() gives a 14-digit timestamp that parses as the current time."""
    stamp = f.now()
    assert re.fullmatch(r"\d{14}", stamp)
    assert abs((datetime.strptime(stamp, "%Y%m%d%H%M%S") - datetime.now()).total_seconds()) < 5


def test_now_accepts_a_format() -> None:
    """now(fmt) formats with strftime."""
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", f.now("%Y-%m-%d"))


def test_uid_is_a_valid_unique_dicom_uid() -> None:
    """uid() makes distinct valid UIDs under pydicom's root."""
    first, second = f.uid(), f.uid()
    assert first != second
    assert UID(first).is_valid and first.startswith("1.2.826.0.1.3680043.8.498.")


def test_uid_without_prefix_is_uuid_derived() -> None:
    """uid(None) makes a 2.25 UUID-derived UID."""
    assert f.uid(None).startswith("2.25.")


def test_hl7_segment_joins_and_escapes_fields() -> None:
    """Fields are escaped and joined with |; lists become ^-joined components."""
    segment = f.hl7_segment("PID", "1", None, ["123", "", "", "HOSP"], ["O'NEIL|X", "ANN^MARIE"])
    assert segment == "PID|1||123^^^HOSP|O'NEIL\\F\\X^ANN\\S\\MARIE"


@pytest.mark.parametrize("name", ["MSH", "pid", "PI", "PID|"])
def test_hl7_segment_rejects_bad_names(name: str) -> None:
    """Invalid segment names and MSH are refused."""
    with pytest.raises(ValueError, match="segment name"):
        f.hl7_segment(name, "x")


def test_registries_name_every_helper() -> None:
    """FILTERS and GLOBALS expose the helpers under their own names."""
    for table in (f.FILTERS, f.GLOBALS):
        for name, func in table.items():
            assert func.__name__ == name and func.__doc__
