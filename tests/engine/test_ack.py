"""Tests for HL7 ACK building, acknowledgement policy and ACK parsing."""

from __future__ import annotations

from datetime import datetime

import hl7
import pytest

from engine.hl7.ack import TABLE_0357, AckPolicy, ack_policy, ack_required, build_ack, new_control_id, parse_ack
from engine.hl7.message import HL7Message

NOW = datetime(2024, 3, 5, 14, 30, 15)
INBOUND = (
    "MSH|^~\\&|RIS|HOSP|PACS|RAD|20240305143000||ORM^O01^ORM_O01|CTRL123|P|2.3.1\r"
    "PID|1||12345^^^HOSP||DOE^JOHN\r"
    "ORC|NW|A1"
)


def inbound(**msh: str) -> HL7Message:
    """The inbound ORM with MSH fields (by number, e.g. f15="AL") overridden."""
    fields = INBOUND.split("\r", 1)[0].split("|")
    for key, value in msh.items():
        n = int(key[1:])
        fields += [""] * (n - len(fields))
        fields[n - 1] = value
    return HL7Message("|".join(fields) + "\r" + INBOUND.split("\r", 1)[1])


def segments(ack: str) -> dict[str, list[str]]:
    """Split an ACK into {segment name: fields}, MSH numbered so that index n is MSH-n."""
    out: dict[str, list[str]] = {}
    for seg in ack.split("\r"):
        fields = seg.split("|")
        if fields[0] == "MSH":
            fields = ["MSH", "|"] + fields[1:]
        out[fields[0]] = fields
    return out


def test_msh_fields_swapped_and_copied() -> None:
    """The ACK's sender is the inbound receiver and vice versa; id, version and processing id follow."""
    ack = build_ack(HL7Message(INBOUND), "AA", control_id="ACK1", now=NOW)
    msh = segments(ack)["MSH"]
    assert msh[2] == "^~\\&"
    assert msh[3:7] == ["PACS", "RAD", "RIS", "HOSP"]
    assert msh[7] == "20240305143015"
    assert msh[9] == "ACK^O01^ACK"
    assert msh[10] == "ACK1"
    assert msh[11] == "P"
    assert msh[12] == "2.3.1"
    assert not ack.endswith("\r")
    assert "ERR" not in segments(ack)


def test_msa_references_inbound_control_id() -> None:
    """MSA-1 is the code and MSA-2 the inbound MSH-10."""
    ack = build_ack(HL7Message(INBOUND), "AA", now=NOW)
    assert segments(ack)["MSA"] == ["MSA", "AA", "CTRL123"]


def test_charset_kept_and_defaults_filled() -> None:
    """MSH-18 is copied; a missing MSH-11/12 becomes P and 2.5; no trigger gives a bare ACK type."""
    msg = inbound(f9="ADT", f11="", f12="", f18="8859/1")
    msh = segments(build_ack(msg, "AA", now=NOW))["MSH"]
    assert msh[9] == "ACK"
    assert msh[11:13] == ["P", "2.5"]
    assert msh[18] == "8859/1"


def test_err_segment_on_ae_with_escaped_reason() -> None:
    """AE adds ERR with the table 0357 text, the location, and the reason escaped in MSA-3 and ERR-8."""
    reason = "PID-3 bad | value ^ here"
    ack = build_ack(HL7Message(INBOUND), "AE", reason=reason, error_code="101", location="PID^1^3", now=NOW)
    seg = segments(ack)
    escaped = "PID-3 bad \\F\\ value \\S\\ here"
    assert seg["MSA"] == ["MSA", "AE", "CTRL123", escaped]
    assert seg["ERR"] == ["ERR", "", "PID^1^3", "101^Required field missing^HL70357", "E", "", "", "", escaped]
    assert parse_ack(ack) == ("AE", "CTRL123", reason)


def test_err_defaults_to_internal_error() -> None:
    """An AR without a reason reports code 207 and its table text."""
    seg = segments(build_ack(HL7Message(INBOUND), "AR", now=NOW))
    assert seg["ERR"][3] == "207^Application internal error^HL70357"
    assert seg["MSA"][3] == TABLE_0357["207"]


def test_unknown_code_rejected() -> None:
    """An acknowledgement code outside AA/AE/AR/CA/CE/CR raises ValueError."""
    with pytest.raises(ValueError, match="XX"):
        build_ack(HL7Message(INBOUND), "XX")


def test_generic_ack_without_message() -> None:
    """With no message the ACK is generic: default MSH and an empty MSA-2."""
    ack = build_ack(None, "AR", reason="not HL7", control_id="G1", now=NOW)
    lines = ack.split("\r")
    assert lines[0] == "MSH|^~\\&|||||20240305143015||ACK|G1|P|2.5"
    assert lines[1] == "MSA|AR||not HL7"
    assert lines[2].startswith("ERR|||207^")


def test_generic_ack_salvages_raw_header() -> None:
    """MSH-3..6 and MSH-10 are salvaged (swapped) from a raw header, even with odd separators."""
    raw = "MSH#^~\\&#RIS#HOSP#PACS#RAD#2024##ORM^O01#CTRL9\x00#P#2.5\rPID#broken"
    seg = build_ack(None, "AR", raw_header=raw, now=NOW).split("\r")
    assert seg[0].startswith("MSH#^~\\&#PACS#RAD#RIS#HOSP#20240305143015##ACK#")
    assert seg[1] == "MSA#AR#CTRL9#Application internal error"


def test_generic_ack_ignores_non_msh_header() -> None:
    """A raw header that does not start with MSH salvages nothing."""
    ack = build_ack(None, "AE", raw_header="garbage|x|y", control_id="G2", now=NOW)
    assert ack.split("\r")[0] == "MSH|^~\\&|||||20240305143015||ACK|G2|P|2.5"


def test_ack_parses_with_python_hl7() -> None:
    """python-hl7 reads the ACK with MSA and ERR fields where HL7 puts them."""
    ack = build_ack(HL7Message(INBOUND), "AE", reason="a|b", error_code="103", control_id="X1", now=NOW)
    parsed = hl7.parse(ack)
    msa = parsed.segment("MSA")
    assert str(msa[1]) == "AE"
    assert str(msa[2]) == "CTRL123"
    assert parsed["MSH.F10"] == "X1"
    assert parsed["MSH.F3"] == "PACS"
    assert parsed["ERR.F3.R1.C1"] == "103"
    assert parsed["ERR.F3.R1.C2"] == "Table value not found"
    assert parsed.unescape(str(parsed.segment("ERR")[8])) == "a|b"


def test_control_ids_unique_and_short() -> None:
    """Generated control ids are unique and at most 20 characters."""
    ids = {new_control_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) <= 20 for i in ids)


def test_original_mode_policy() -> None:
    """Without MSH-15 the policy is original mode: always send, AA/AE/AR."""
    policy = ack_policy(HL7Message(INBOUND))
    assert policy == AckPolicy(enhanced=False)
    assert policy.should_send(True) and policy.should_send(False)
    assert [policy.code_for(o) for o in ("accept", "error", "reject")] == ["AA", "AE", "AR"]
    assert ack_required(HL7Message(INBOUND), False) == ("AE", False)


@pytest.mark.parametrize(
    ("accept", "on_success", "on_error"),
    [("AL", True, True), ("NE", False, False), ("ER", False, True), ("SU", True, False)],
)
def test_enhanced_mode_policy(accept: str, on_success: bool, on_error: bool) -> None:
    """MSH-15 selects enhanced mode with CA/CE/CR and decides when an accept ACK is sent."""
    msg = inbound(f15=accept, f16="NE")
    policy = ack_policy(msg)
    assert policy.enhanced and policy.accept == accept and policy.application == "NE"
    assert policy.should_send(True) is on_success
    assert policy.should_send(False) is on_error
    assert [policy.code_for(o) for o in ("accept", "error", "reject")] == ["CA", "CE", "CR"]
    assert ack_required(msg, True) == ("CA" if on_success else None, True)
    assert ack_required(msg, False) == ("CE" if on_error else None, True)


def test_code_for_unknown_outcome() -> None:
    """An unknown outcome name raises ValueError."""
    with pytest.raises(ValueError, match="outcome"):
        AckPolicy(enhanced=False).code_for("maybe")


def test_parse_ack_reads_msa3_and_lf_separators() -> None:
    """parse_ack falls back to MSA-3 and accepts LF segment separators."""
    text = "MSH|^~\\&|A|B|C|D|2024||ACK|9|P|2.3\nMSA|AR|CTRL5|Duplicate \\F\\ message\n"
    assert parse_ack(text) == ("AR", "CTRL5", "Duplicate | message")
    assert parse_ack("MSH|^~\\&|A|B|C|D|2024||ACK|9|P|2.5\rMSA|AA|C1") == ("AA", "C1", "")


@pytest.mark.parametrize("text", ["", "hello", "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1"])
def test_parse_ack_rejects_non_ack(text: str) -> None:
    """Text that is not HL7 or has no MSA raises ValueError."""
    with pytest.raises(ValueError, match="not an HL7 ACK"):
        parse_ack(text)
