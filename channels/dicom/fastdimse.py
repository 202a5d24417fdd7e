"""Direct codecs for the C-STORE request and response, the two DIMSE messages of every stored instance.

pynetdicom builds every outgoing command set as a pydicom ``Dataset`` (one ``DataElement`` per
field, each value validated), then encodes it with pydicom's writer: for the 7-element C-STORE-RSP
that was the largest single cost of receiving an instance (about a third of pynetdicom's CPU in a
profile of 500 stores). :func:`send_msg_fast` encodes the response command set (Implicit VR Little
Endian, PS3.7 6.3.1 and E.1) byte for byte as pynetdicom does — the tests compare the bytes — and
hands the P-DATA primitive to the DUL like ``DIMSEServiceProvider.send_msg``. Any other message,
or a response with fields other than Status and Error Comment, goes through pynetdicom unchanged.

Receiving, pynetdicom decodes each command set into a pydicom ``Dataset`` and converts it into
the request primitive, validating every value again on the way: :func:`install_fast_decode`
reads a C-STORE-RQ command set (nine possible elements of three VRs) directly into a small
read-only object with the same keyword attributes and element iteration; any other command, or
an element it does not expect, is decoded by pydicom as before.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

_US = struct.Struct("<HHIH")  # tag group, tag element, length (2), value


def _ui(group: int, elem: int, uid: Any) -> bytes:
    data = str(uid).encode("ascii")
    if len(data) % 2:
        data += b"\0"
    return struct.pack("<HHI", group, elem, len(data)) + data


def _lo(group: int, elem: int, text: str) -> bytes:
    data = text.encode("ascii", errors="replace")
    if len(data) % 2:
        data += b" "
    return struct.pack("<HHI", group, elem, len(data)) + data


def encode_response(
    *, command_field: int, sop_class_uid: Any, message_id: int, status: int, comment: str = "",
    sop_instance_uid: Any = None,
) -> bytes:  # fmt: skip
    """The Implicit VR LE command set of a DIMSE-C response, group length first, elements in tag order."""
    body = b"".join(
        part
        for part in (
            _ui(0x0000, 0x0002, sop_class_uid) if sop_class_uid else b"",
            _US.pack(0x0000, 0x0100, 2, command_field),
            _US.pack(0x0000, 0x0120, 2, message_id),
            _US.pack(0x0000, 0x0800, 2, 0x0101),
            _US.pack(0x0000, 0x0900, 2, status),
            _lo(0x0000, 0x0902, comment) if comment else b"",
            _ui(0x0000, 0x1000, sop_instance_uid) if sop_instance_uid else b"",
        )
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def encode_store_response(primitive: C_STORE) -> bytes:
    """The command set of the C-STORE-RSP *primitive* (byte for byte what pynetdicom encodes)."""
    return encode_response(
        command_field=0x8001, sop_class_uid=primitive.AffectedSOPClassUID,
        message_id=primitive.MessageIDBeingRespondedTo, status=primitive.Status,
        comment=primitive.ErrorComment or "", sop_instance_uid=primitive.AffectedSOPInstanceUID,
    )  # fmt: skip


def _plain_response(primitive: Any) -> bool:
    return (
        primitive.__class__ is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status is not None
        and getattr(primitive, "OffendingElement", None) is None
    )


def send_msg_fast(dimse: Any) -> Callable[[Any, int], None]:
    """A ``send_msg`` for *dimse* (a ``DIMSEServiceProvider``) encoding plain C-STORE responses directly."""
    original = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        if not _plain_response(primitive):
            original(primitive, context_id)
            return
        command = encode_store_response(primitive)
        peer_max = dimse.maximum_pdu_size
        if peer_max and len(command) + 6 > peer_max:
            original(primitive, context_id)  # a peer with tiny PDUs: let pynetdicom fragment it
            return
        p_data = P_DATA()
        # Message control header 0x03: command information, last fragment (PS3.8 E.2).
        p_data.presentation_data_value_list.append((context_id, b"\x03" + command))
        dimse.dul.send_pdu(p_data)

    return send_msg


# -- receiving: the C-STORE-RQ command set --------------------------------
#: The elements a C-STORE-RQ command set may hold (PS3.7 9.3.1.1), with how to read each value.
_STORE_RQ = {
    (0x0000, 0x0000): ("CommandGroupLength", "UL"),
    (0x0000, 0x0002): ("AffectedSOPClassUID", "UI"),
    (0x0000, 0x0100): ("CommandField", "US"),
    (0x0000, 0x0110): ("MessageID", "US"),
    (0x0000, 0x0700): ("Priority", "US"),
    (0x0000, 0x0800): ("CommandDataSetType", "US"),
    (0x0000, 0x1000): ("AffectedSOPInstanceUID", "UI"),
    (0x0000, 0x1030): ("MoveOriginatorApplicationEntityTitle", "AE"),
    (0x0000, 0x1031): ("MoveOriginatorMessageID", "US"),
}
_HEAD = struct.Struct("<HHI")


class CommandElement:
    """One decoded command element: what pynetdicom reads of a pydicom ``DataElement``."""

    __slots__ = ("tag", "keyword", "value", "VM")

    def __init__(self, tag: int, keyword: str, value: Any) -> None:
        self.tag, self.keyword, self.value, self.VM = tag, keyword, value, 1


class CommandSet:
    """A decoded C-STORE-RQ command set: keyword attributes and iteration in tag order, read-only."""

    def __init__(self, elements: list[CommandElement]) -> None:
        self._elements = elements
        self._values = {e.keyword: e.value for e in elements}

    def __getattr__(self, keyword: str) -> Any:
        try:
            return self.__dict__["_values"][keyword]
        except KeyError:
            raise AttributeError(keyword) from None

    def __contains__(self, keyword: object) -> bool:
        return keyword in self._values

    def __iter__(self) -> Any:
        return iter(self._elements)

    def __len__(self) -> int:
        return len(self._elements)


def decode_store_request(data: bytes) -> CommandSet | None:
    """Decode an Implicit VR LE command set if it is a plain C-STORE-RQ, else ``None``."""
    elements: list[CommandElement] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, length = _HEAD.unpack_from(data, pos)
        pos += 8
        spec = _STORE_RQ.get((group, elem))
        if spec is None or pos + length > end:
            return None  # anything unusual: let pynetdicom (pydicom) decode it
        keyword, vr = spec
        raw = data[pos : pos + length]
        pos += length
        if vr == "US":
            if length != 2:
                return None
            value: Any = raw[0] | raw[1] << 8
        elif vr == "UL":
            if length != 4:
                return None
            value = struct.unpack("<I", raw)[0]
        else:
            try:
                value = raw.decode("ascii").rstrip("\0 ")
            except UnicodeDecodeError:
                return None
            if vr == "AE":
                value = value.strip()
        elements.append(CommandElement(group << 16 | elem, keyword, value))
    values = {e.keyword for e in elements}
    if not {"CommandField", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "MessageID"} <= values:
        return None
    if next(e.value for e in elements if e.keyword == "CommandField") != 0x0001:
        return None
    return CommandSet(elements)


def fast_decode(original: Callable[..., Any]) -> Callable[..., Any]:
    """A replacement for pynetdicom's command-set ``decode`` that reads C-STORE-RQs directly."""

    def decode(fp: Any, is_implicit_vr: bool, is_little_endian: bool, **kwargs: Any) -> Any:
        if is_implicit_vr and is_little_endian and not kwargs:
            command = decode_store_request(fp.getvalue())
            if command is not None:
                return command
        return original(fp, is_implicit_vr, is_little_endian, **kwargs)

    decode.original = original  # type: ignore[attr-defined]
    return decode


def cached_set_uid(original: Callable[..., Any]) -> Callable[..., Any]:
    """pynetdicom's ``set_uid`` remembering recent answers for string values.

    Every DIMSE primitive setter converts and validates its UIDs (a pydicom ``UID`` and a regex
    each time): ~13 % of the CPU per stored instance, for the same SOP Class UID every time and
    each SOP Instance UID twice (request, then response). Invalid values still raise every time
    (exceptions are not cached); the result for a string is the same immutable ``UID``.
    """
    remembered = functools.lru_cache(maxsize=1024)(original)

    def set_uid(value: Any, name: str, allow_empty: bool = True, allow_none: bool = True, validate: bool = True) -> Any:
        if value.__class__ is str or isinstance(value, str):
            return remembered(str(value), name, allow_empty, allow_none, validate)
        return original(value, name, allow_empty, allow_none, validate)

    set_uid.original = original  # type: ignore[attr-defined]
    return set_uid


def install_fast_decode() -> None:
    """Make pynetdicom decode received C-STORE-RQ command sets directly and remember validated UIDs."""
    from pynetdicom import dimse_messages, dimse_primitives

    if not hasattr(dimse_messages.decode, "original"):
        dimse_messages.decode = fast_decode(dimse_messages.decode)
    if not hasattr(dimse_primitives.set_uid, "original"):
        dimse_primitives.set_uid = cached_set_uid(dimse_primitives.set_uid)
