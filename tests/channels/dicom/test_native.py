"""Which associations the storage fast path takes, and its command-set reader."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from channels.dicom.native import _abort_pdu, _command_field, eligible


def assoc(*contexts: tuple[str, bool | None, bool | None], common_ext: dict | None = None) -> SimpleNamespace:
    """A stand-in association with accepted contexts (abstract syntax, as_scu, as_scp)."""
    cxs = {
        2 * i + 1: SimpleNamespace(context_id=2 * i + 1, abstract_syntax=uid, as_scu=scu, as_scp=scp)
        for i, (uid, scu, scp) in enumerate(contexts)
    }
    return SimpleNamespace(_accepted_cx=cxs, acceptor=SimpleNamespace(_common_ext=common_ext or {}))


@pytest.mark.parametrize(
    ("contexts", "common_ext", "expected"),
    [
        ([(CTImageStorage, False, True), (Verification, False, True)], None, True),
        ([(CTImageStorage, False, True)], None, True),
        ([(Verification, False, True)], None, True),
        ([(CTImageStorage, False, True), (StudyRootQueryRetrieveInformationModelFind, False, True)], None, False),
        ([(CTImageStorage, True, True)], None, False),  # role selection: we would also be the storage SCU
        ([(CTImageStorage, True, False)], None, False),  # C-GET requestor: we are only the SCU
        ([(CTImageStorage, False, True)], {CTImageStorage: "x"}, False),  # SOP class common extended negotiation
        ([], None, False),
    ],
)
def test_eligible(contexts: list, common_ext: dict | None, expected: bool) -> None:
    """Only associations whose accepted contexts are storage (we the SCP only) and Verification qualify."""
    assert eligible(assoc(*contexts, common_ext=common_ext)) is expected


def element(elem: int, value: bytes) -> bytes:
    """One Implicit VR LE command element of group 0000."""
    return struct.pack("<HHI", 0, elem, len(value)) + value


def test_command_field_reads_the_field_and_refuses_broken_sets() -> None:
    """The Command Field of a well-formed set; None for a missing field, a bad length or trailing bytes."""
    good = element(0x0100, b"\x30\x00") + element(0x0110, b"\x05\x00")
    field, elements = _command_field(good)
    assert field == 0x0030 and elements[0x00000110] == b"\x05\x00"
    assert _command_field(element(0x0110, b"\x05\x00"))[0] is None
    assert _command_field(element(0x0100, b"\x30\x00\x00\x00"))[0] is None
    assert _command_field(good + b"\x00\x00")[0] is None
    assert _command_field(good[:-1])[0] is None


def test_abort_pdu_layout() -> None:
    """A-ABORT: type 7, length 4, two reserved bytes, source, reason (PS3.8 9.3.8)."""
    assert _abort_pdu(2, 6) == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"
