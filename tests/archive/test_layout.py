"""Archive layout: pure path rendering that no attribute value can steer outside the root."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from archive.layout import check_hl7_layout, check_layout, hl7_path, hl7_pattern, instance_path, is_uid

DEFAULT = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
ATTRS = {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4", "SOPInstanceUID": "1.2.3.4.5", "Modality": "CT"}


def test_default_layout_renders_a_relative_path_of_uids():
    """The default layout puts an instance at study/series/sop.dcm, relative to the root."""
    assert instance_path(ATTRS, DEFAULT) == "1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def test_safe_token_placeholders_are_allowed():
    """A coded value such as Modality may name a folder when it is a plain token."""
    assert instance_path(ATTRS, "{Modality}/{SOPInstanceUID}.dcm") == "CT/1.2.3.4.5.dcm"


@pytest.mark.parametrize(
    "value",
    ["..", "../../etc", "/etc/passwd", "1.2/3", "1..2", ".1.2", "1.2.", "", "1" * 65, "1.2\\3", "1.2\x00", "abc"],
)
def test_unsafe_uid_values_are_refused(value):
    """Traversal, separators, absolute paths, empty or malformed UIDs raise ValueError."""
    with pytest.raises(ValueError):
        instance_path(dict(ATTRS, SOPInstanceUID=value), DEFAULT)


@pytest.mark.parametrize("value", ["..", ".", "../x", "a/b", "C\\T", "", ".hidden", "x" * 65, "CT."])
def test_unsafe_token_values_are_refused(value):
    """A token placeholder refuses dots-only, separators, hidden names and empty values."""
    with pytest.raises(ValueError):
        instance_path(dict(ATTRS, Modality=value), "{Modality}/{SOPInstanceUID}.dcm")


def test_missing_placeholder_value_is_refused():
    """An attribute the layout needs but the instance lacks is an error naming it."""
    with pytest.raises(ValueError, match="SeriesInstanceUID"):
        instance_path({"StudyInstanceUID": "1.2", "SOPInstanceUID": "1.3"}, DEFAULT)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("{PatientName}/{SOPInstanceUID}.dcm", "PatientName"),
        ("{StudyInstanceUID}/{SeriesInstanceUID}.dcm", "SOPInstanceUID"),
        ("/{SOPInstanceUID}.dcm", "relative"),
        ("../{SOPInstanceUID}.dcm", "relative folder"),
        ("a//{SOPInstanceUID}.dcm", "empty"),
        (".incoming/{SOPInstanceUID}.dcm", "hidden"),
        ("{SOPInstanceUID!r}.dcm", "format spec"),
        ("{SOPInstanceUID:>70}.dcm", "format spec"),
        ("a\\{SOPInstanceUID}.dcm", "separator"),
        ("{}/{SOPInstanceUID}", "empty placeholder"),
        ("{SOPInstanceUID", "invalid layout"),
    ],
)
def test_check_layout_names_the_problem(layout, message):
    """A bad layout is refused at config time with a message naming the placeholder or part."""
    with pytest.raises(ValueError, match=message):
        check_layout(layout)


def test_check_layout_accepts_the_default():
    """The default layout is valid."""
    check_layout(DEFAULT)


def test_is_uid():
    """UIDs are digits separated by single dots, 1 to 64 characters."""
    assert is_uid("1.2.840.10008.1.2")
    assert not is_uid("1.2.") and not is_uid("") and not is_uid("1.a") and not is_uid("1" * 65)


def test_hl7_path_uses_date_folders_in_utc():
    """Archived HL7 goes to hl7/channel/YYYY/MM/DD/message_id.hl7 (UTC date)."""
    when = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    assert hl7_path("adt-in", 42, when, "hl7/{channel}/{date}/{message_id}.hl7") == "hl7/adt-in/2026/12/01/42.hl7"
    assert hl7_path("adt-in", 42, when.timestamp(), "hl7/{channel}/{date}/{message_id}.hl7").endswith("01/42.hl7")


@pytest.mark.parametrize("channel", ["..", "a/b", "", ".x"])
def test_hl7_path_refuses_unsafe_channels(channel):
    """A channel name that could leave the root is refused."""
    with pytest.raises(ValueError):
        hl7_path(channel, 1, 0.0, "hl7/{channel}/{date}/{message_id}.hl7")


def test_check_hl7_layout():
    """The HL7 layout needs {message_id} and knows only channel, date and message_id."""
    check_hl7_layout("hl7/{channel}/{date}/{message_id}.hl7")
    with pytest.raises(ValueError, match="message_id"):
        check_hl7_layout("hl7/{channel}/{date}.hl7")
    with pytest.raises(ValueError, match="control_id"):
        check_hl7_layout("hl7/{control_id}/{message_id}.hl7")


def test_hl7_pattern_matches_what_hl7_path_renders():
    """verify recognises archived HL7 paths and reads the message id back from them."""
    layout = "hl7/{channel}/{date}/{message_id}.hl7"
    m = hl7_pattern(layout).match(hl7_path("ch", 1234, 0.0, layout))
    assert m and m.group("message_id") == "1234"
    assert not hl7_pattern(layout).match("1.2/1.3/1.4.dcm")
