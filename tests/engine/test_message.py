"""The lazily split HL7 message and its path accessor, checked against python-hl7 where they overlap."""

from __future__ import annotations

import hl7
import pytest

from engine.hl7.message import HL7Error, HL7Message, PathError, escape, parse_path, unescape

TEXT = (
    "MSH|^~\\&|HIS|GEN^HOSP|RIS|RAD|20240305143000||ORM^O01^ORM_O01|C\\F\\1|P|2.3.1||||||8859/1~UNICODE UTF-8\r"
    "PID|1||MRN1^^^HOSP^MR~SSN9^^^USA^SS||DOE^JANE^Q||19700412|F\r"
    "ORC|NW|PL1^HIS\r"
    "OBR|1|PL1^HIS||71046^XR CHEST^CPT4&sub1&sub2||||||||||||||ACC1\r"
    "OBX|1|NM|HR||72.5\r"
    "OBX|2|ST|NOTE||a \\T\\ b"
)


@pytest.fixture()
def msg() -> HL7Message:
    """The sample message."""
    return HL7Message(TEXT)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("MSH-1", "|"),
        ("MSH-2", "^~\\&"),
        ("MSH-3", "HIS"),
        ("MSH-4", "GEN^HOSP"),
        ("MSH-4.2", "HOSP"),
        ("MSH-9", "ORM^O01^ORM_O01"),
        ("MSH-9.2", "O01"),
        ("MSH-10", "C|1"),
        ("MSH-18", "8859/1~UNICODE UTF-8"),
        ("MSH-18[2]", "UNICODE UTF-8"),
        ("PID-3", "MRN1^^^HOSP^MR~SSN9^^^USA^SS"),
        ("PID-3.1", "MRN1"),
        ("PID-3[2].1", "SSN9"),
        ("PID-3[2].5", "SS"),
        ("PID-3[3].1", ""),
        ("PID-5.2", "JANE"),
        ("PID-5.9", ""),
        ("PID-99", ""),
        ("OBR-4.3.2", "sub1"),
        ("OBR-4.3.9", ""),
        ("OBR-18", "ACC1"),
        ("OBX-5", "72.5"),
        ("OBX[2]-5", "a & b"),
        ("OBX[3]-5", ""),
        ("ZZZ-1", ""),
        ("ORC", "ORC|NW|PL1^HIS"),
    ],
)
def test_paths(msg: HL7Message, path: str, expected: str) -> None:
    """Each path reads the value HL7 puts there, unescaped; absent values read as empty."""
    assert msg[path] == expected
    assert msg.get(path) == expected  # a second read (from the cache) gives the same answer


def test_raw_values_keep_escapes(msg: HL7Message) -> None:
    """raw=True returns the field as sent, escapes included; the cache keeps raw and unescaped apart."""
    assert msg.get("MSH-10", raw=True) == "C\\F\\1"
    assert msg.get("MSH-10") == "C|1"
    assert msg.get("OBX[2]-5", raw=True) == "a \\T\\ b"


def test_defaults_and_exists(msg: HL7Message) -> None:
    """get() returns the default for absent or empty values; exists/`in` follow the same rule."""
    assert msg.get("PID-99", "none") == "none"
    assert msg.get("PID-2", "none") == "none"
    assert msg.exists("PID-3") and "PID-3" in msg
    assert not msg.exists("PID-2") and "ZZZ" not in msg


def test_header_properties(msg: HL7Message) -> None:
    """control_id, message_type and charset read MSH-10, MSH-9.1^9.2 and MSH-18's first repetition."""
    assert msg.control_id == "C|1"
    assert msg.message_type == "ORM^O01"
    assert msg.charset == "8859/1"
    assert msg.count("OBX") == 2 and msg.count("NTE") == 0
    assert msg.segment_names() == ["MSH", "PID", "ORC", "OBR", "OBX", "OBX"]


def test_agrees_with_python_hl7(msg: HL7Message) -> None:
    """Component values agree with python-hl7's full parse of the same message."""
    parsed = hl7.parse(TEXT)
    for ours, theirs in [
        ("PID-3[2].1", "PID.F3.R2.C1"),
        ("PID-5.1", "PID.F5.R1.C1"),
        ("OBR-4.2", "OBR.F4.R1.C2"),
        ("OBR-4.3.2", "OBR.F4.R1.C3.S2"),
        ("MSH-9.2", "MSH.F9.R1.C2"),
    ]:
        assert msg[ours] == parsed[theirs], ours


def test_line_feeds_and_blank_segments_are_accepted() -> None:
    """LF and CRLF separate segments too; empty lines are dropped."""
    m = HL7Message(TEXT.replace("\r", "\r\n") + "\r\n\r\n")
    assert m.segment_names() == ["MSH", "PID", "ORC", "OBR", "OBX", "OBX"]
    assert m["OBX[2]-5"] == "a & b"


@pytest.mark.parametrize("text", ["", "PID|1", "MSH", "MSHa^~\\&|X"])
def test_not_hl7(text: str) -> None:
    """Text without an MSH segment and a valid separator raises HL7Error."""
    with pytest.raises(HL7Error):
        HL7Message(text)


@pytest.mark.parametrize("path", ["PID", "PID-3.1", "OBX[2]-5", "PID-3[2].1.1"])
def test_parse_path_round_trips(path: str) -> None:
    """A parsed path prints as written."""
    assert str(parse_path(path)) == path


@pytest.mark.parametrize("path", ["PID5", "pid-5", "PID-0", "PID-3[0]", "PI-1"])
def test_bad_paths(path: str) -> None:
    """Malformed paths raise PathError."""
    with pytest.raises(PathError):
        parse_path(path)


def test_escape_round_trip() -> None:
    """escape() and unescape() are inverse for every delimiter and line breaks."""
    text = "a|b^c~d\\e&f"
    assert unescape(escape(text)) == text
    assert escape("x\ny") == "x\\.br\\y" and unescape("x\\.br\\y") == "x\ny"
    assert unescape("\\X41\\") == "A"
