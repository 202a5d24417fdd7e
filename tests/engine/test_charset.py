"""Tests for HL7 character set handling (MSH-18)."""

from __future__ import annotations

import pytest

from engine.hl7.charset import (
    CharsetError,
    UnknownCharset,
    codec_for,
    decode_message,
    encode_message,
    sniff_charset,
)


def message(charset: str, body: str = "PID|1||1||MÜLLER^RENÉ") -> str:
    """An ADT message text whose MSH-18 is *charset* (omitted when empty)."""
    msh = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5"
    if charset:
        msh += "||||||" + charset
    return msh + "\r" + body


def test_latin1_with_8859_1() -> None:
    """A latin-1 message declaring 8859/1 decodes é correctly."""
    raw = message("8859/1").encode("latin-1")
    text, codec = decode_message(raw, "utf-8")
    assert "RENÉ" in text
    assert codec == "iso8859-1"


def test_utf8_with_unicode_utf8() -> None:
    """A UTF-8 message declaring UNICODE UTF-8 decodes correctly."""
    raw = message("UNICODE UTF-8").encode("utf-8")
    text, codec = decode_message(raw, "latin-1")
    assert "MÜLLER^RENÉ" in text
    assert codec == "utf-8"


def test_default_used_when_msh18_absent() -> None:
    """Without MSH-18 the channel's default codec decides."""
    raw = message("").encode("cp1252")
    text, codec = decode_message(raw, "cp1252")
    assert "RENÉ" in text
    assert codec == "cp1252"


def test_unknown_msh18_raises() -> None:
    """An unknown MSH-18 value raises CharsetError naming MSH-18."""
    raw = message("KLINGON").encode("ascii", "replace")
    with pytest.raises(CharsetError, match="MSH-18.*KLINGON"):
        decode_message(raw, "utf-8")


def test_undecodable_bytes_raise() -> None:
    """Latin-1 bytes under a UTF-8 MSH-18 raise CharsetError mentioning MSH-18."""
    raw = message("UNICODE UTF-8").encode("latin-1")
    with pytest.raises(CharsetError, match="MSH-18"):
        decode_message(raw, "utf-8")


def test_unknown_default_codec_raises() -> None:
    """An unknown default codec is a CharsetError, not a LookupError."""
    with pytest.raises(CharsetError, match="no-such-codec"):
        decode_message(message("").encode(), "no-such-codec")


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("ASCII", "ascii"),
        ("8859/1", "iso8859-1"),
        ("8859/9", "iso8859-9"),
        ("8859/15", "iso8859-15"),
        ("UNICODE UTF-8", "utf-8"),
        ("UTF-8", "utf-8"),
        ("ISO IR6", "ascii"),
        ("ISO IR100", "latin-1"),
        ("ISO_IR 100", "latin-1"),
        ("ISO_IR 192", "utf-8"),
        ("UNICODE", "utf-16"),
        ("UNICODE UTF-16", "utf-16"),
        ("ISO IR87", "iso2022_jp"),
        ("ISO IR159", "iso2022_jp"),
        ("GB 18030-2000", "gb18030"),
        ("KS X 1001", "euc_kr"),
        ("BIG-5", "big5"),
        (" unicode utf-8 ", "utf-8"),
    ],
)
def test_codec_for(name: str, codec: str) -> None:
    """Each HL7 and DICOM character set name maps to its Python codec."""
    assert codec_for(name) == codec


def test_cns_not_supported() -> None:
    """CNS 11643-1992 has no Python codec and raises UnknownCharset."""
    with pytest.raises(UnknownCharset, match="not supported"):
        codec_for("CNS 11643-1992")


def test_sniff_charset() -> None:
    """MSH-18's first repetition is read from raw bytes; absent or short MSH gives empty."""
    assert sniff_charset(message(" 8859/1 ~ISO IR87").encode("latin-1")) == "8859/1"
    assert sniff_charset(message("").encode()) == ""
    assert sniff_charset(b"MSH#^~\\&#A#B#C#D#2024##ADT#1#P#2.5######UTF-8\nPID#1") == "UTF-8"
    assert sniff_charset(b"not hl7") == ""


def test_encode_message() -> None:
    """encode_message encodes, and an unencodable character raises CharsetError."""
    assert encode_message("RENÉ", "latin-1") == b"REN\xc9"
    with pytest.raises(CharsetError, match="ascii"):
        encode_message("RENÉ", "ascii")
    assert encode_message("RENÉ", "ascii", errors="replace") == b"REN?"
