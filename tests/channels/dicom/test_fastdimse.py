"""The direct C-STORE response encoder gives exactly pynetdicom's bytes, and falls back where it must."""

from __future__ import annotations

from io import BytesIO
from types import SimpleNamespace

import pytest
from pydicom.uid import generate_uid
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode

from channels.dicom.fastdimse import (
    CommandSet,
    decode_store_request,
    encode_store_response,
    install_fast_decode,
    send_msg_fast,
)


def response(status: int, comment: str | None = None, message_id: int = 7) -> C_STORE:
    """A C-STORE response primitive."""
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = generate_uid()
    rsp.Status = status
    if comment is not None:
        rsp.ErrorComment = comment
    return rsp


def pynetdicom_bytes(rsp: C_STORE) -> bytes:
    """The command set pynetdicom itself encodes for *rsp*."""
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    return encode(msg.command_set, True, True)


@pytest.mark.parametrize(
    ("status", "comment", "mid"),
    [(0x0000, None, 1), (0xB006, None, 65535), (0xC000, "cannot parse dataset", 3), (0xA700, "odd", 2)],
)
def test_bytes_equal_pynetdicom(status: int, comment: str | None, mid: int) -> None:
    """Success, warning and failure responses (with an Error Comment) encode to pynetdicom's exact bytes."""
    rsp = response(status, comment, mid)
    assert encode_store_response(rsp) == pynetdicom_bytes(rsp)


class FakeDimse:
    """Records what reaches the DUL and what falls back to pynetdicom."""

    def __init__(self, peer_max: int = 16384) -> None:
        self.sent: list = []
        self.fallback: list = []
        self.maximum_pdu_size = peer_max
        self.dul = SimpleNamespace(send_pdu=self.sent.append)

    def send_msg(self, primitive, context_id) -> None:
        """pynetdicom's path."""
        self.fallback.append(primitive)


def test_plain_responses_go_direct_others_fall_back() -> None:
    """A C-STORE response is sent as one P-DATA; requests, other messages and tiny peer PDUs use pynetdicom."""
    dimse = FakeDimse()
    send = send_msg_fast(dimse)
    rsp = response(0)
    send(rsp, 5)
    (p_data,) = dimse.sent
    (ctx, data) = p_data.presentation_data_value_list[0]
    assert ctx == 5 and data == b"\x03" + pynetdicom_bytes(rsp)
    request = C_STORE()
    request.MessageID = 1
    send(request, 5)
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo, echo.Status = 1, 0
    send(echo, 1)
    offending = response(0xA900)
    offending.OffendingElement = [0x00100010]
    send(offending, 5)
    tiny = FakeDimse(peer_max=64)
    send_msg_fast(tiny)(response(0), 1)
    assert dimse.fallback == [request, echo, offending] and len(tiny.fallback) == 1 and not tiny.sent


def store_request(move: bool = False) -> C_STORE:
    """A C-STORE request primitive."""
    rq = C_STORE()
    rq.MessageID = 12
    rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rq.AffectedSOPInstanceUID = generate_uid()
    rq.Priority = 2
    if move:
        rq.MoveOriginatorApplicationEntityTitle = "MOVER"
        rq.MoveOriginatorMessageID = 3
    rq.DataSet = BytesIO(b"\x08\x00\x16\x00")
    return rq


def encoded_request(rq: C_STORE) -> bytes:
    """The command set pynetdicom encodes for *rq*."""
    msg = C_STORE_RQ()
    msg.primitive_to_message(rq)
    return encode(msg.command_set, True, True)


@pytest.mark.parametrize("move", [False, True])
def test_decoded_request_gives_the_same_primitive(move: bool) -> None:
    """A C-STORE-RQ decoded directly converts to the same primitive as pydicom's decoding."""
    data = encoded_request(store_request(move))
    fast, slow = C_STORE_RQ(), C_STORE_RQ()
    fast.command_set = decode_store_request(data)
    slow.command_set = decode(BytesIO(data), True, True)
    assert fast.command_set is not None
    for msg in (fast, slow):
        msg.context_id, msg.data_set = 1, BytesIO()
    a, b = fast.message_to_primitive(), slow.message_to_primitive()
    for name in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):  # fmt: skip
        assert getattr(a, name) == getattr(b, name), name
    assert fast.command_set.CommandDataSetType == slow.command_set.CommandDataSetType
    assert "AffectedSOPInstanceUID" in fast.command_set and "Status" not in fast.command_set


def test_other_commands_are_left_to_pydicom() -> None:
    """C-ECHO, C-STORE responses and command sets with unknown elements are not decoded directly."""
    echo = C_ECHO()
    echo.MessageID = 1
    echo_msg = C_ECHO_RQ()
    echo_msg.primitive_to_message(echo)
    assert decode_store_request(encode(echo_msg.command_set, True, True)) is None
    assert decode_store_request(pynetdicom_bytes(response(0))) is None
    odd = encoded_request(store_request()) + b"\x00\x00\x99\x99\x02\x00\x00\x00\x01\x00"
    assert decode_store_request(odd) is None
    assert decode_store_request(b"\x00\x00") is None


def test_installed_decoder_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed decode returns a CommandSet for C-STORE-RQ and pydicom's Dataset otherwise."""
    from pynetdicom import dimse_messages

    monkeypatch.setattr(dimse_messages, "decode", dimse_messages.decode)
    install_fast_decode()
    install_fast_decode()  # idempotent
    assert dimse_messages.decode.original is decode
    assert isinstance(dimse_messages.decode(BytesIO(encoded_request(store_request())), True, True), CommandSet)
    assert not isinstance(dimse_messages.decode(BytesIO(pynetdicom_bytes(response(0))), True, True), CommandSet)


def test_cached_set_uid_behaves_like_pynetdicom() -> None:
    """The remembering set_uid returns equal UIDs, still raises for invalid ones each time, and passes None/bytes."""
    from pynetdicom.utils import set_uid

    from channels.dicom.fastdimse import cached_set_uid

    fast = cached_set_uid(set_uid)
    uid = generate_uid()
    assert fast(uid, "x") == set_uid(uid, "x") and fast(uid, "x") is fast(uid, "x")
    assert fast(None, "x") is None and fast(b"1.2.3", "x") == "1.2.3"
    for _ in range(2):
        with pytest.raises(ValueError):
            fast("1" * 65, "x")
    with pytest.raises(ValueError):
        fast("", "x", allow_empty=False)
