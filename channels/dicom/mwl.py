"""Modality Worklist SCP (IHE RAD-5): the C-FIND handler for 1.2.840.10008.5.1.4.31, for ``dicom_scp``.

pynetdicom has one ``evt.EVT_C_FIND`` handler per server, for every FIND SOP class, so
:func:`handle_find` serves worklist requests and hands any other information model to
*fallback* (the archive's Query/Retrieve handler, ``channels/dicom/qr.py``); :func:`bind` puts
it in the place of an existing ``EVT_C_FIND`` entry. The rows come from ``ris.worklist(identifier,
case_insensitive_pn=..., limit=...)`` (``ris_core.worklist.paged`` over ``store.read_sync``): it
runs on the association thread with short read connections and never touches the reactor.

Statuses: 0xFF00 per match, then 0x0000; 0xFE00 after a C-CANCEL; 0xA900 (identifier does not
match the SOP class) and 0xC000 (a malformed key) from the key parser; 0xC001 when the query
fails on our side; 0x0122 for a FIND SOP class without a fallback. Failures carry an Error
Comment. Identifiers are not logged (they hold patient names): only counts and statuses.

Responses are encoded straight from the worklist rows (:func:`encode_row`, byte-equal to
pydicom's writer for little endian; the tests compare): pynetdicom's ``encode()`` is given the
bytes for a :class:`RowIdentifier` (:func:`install_fast_encode`) instead of writing a pydicom
``Dataset`` built per match, which was most of the CPU of a worklist query. Big endian, deflate,
a character set other than the default and ISO_IR 192, or a binary VR fall back to pydicom.
The C-FIND-RSP command sets of pending and success responses are encoded directly too
(:func:`send_find_responses`, as ``fastdimse.py`` does for C-STORE-RSP; the same PDVs, the two of
a small response in one P-DATA-TF, and like it without ``EVT_DIMSE_SENT``); failures and cancels
go through pynetdicom.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES, build_context, evt, service_class
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import ModalityWorklistInformationFind

from archive.matching import UNABLE_TO_PROCESS, QueryError, keyword_vr
from channels.dicom.common import status_class
from channels.dicom.qr import failure, to_dataset, to_identifier

log = logging.getLogger("radbridge.dicom.mwl")

MWL_FIND = str(ModalityWorklistInformationFind)  # 1.2.840.10008.5.1.4.31
SERVICE = "C-FIND-MWL"
SOP_CLASS_NOT_SUPPORTED = 0x0122
INTERNAL_ERROR = 0xC001  # "Unable to process", our side (as channels/dicom/qr.py)
UTF8 = "ISO_IR 192"


def contexts() -> list[Any]:
    """The presentation context to add to the SCP's supported contexts for the worklist."""
    return [build_context(MWL_FIND, DEFAULT_TRANSFER_SYNTAXES)]


def bind(
    *,
    ris: Any,
    channel: str,
    metrics: Any = None,
    case_insensitive_pn: bool = True,
    limit: int | None = None,
    handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
) -> list[tuple[Any, Callable[..., Any]]]:
    """*handlers* (e.g. ``qr.bind_handlers(...)``) with their ``EVT_C_FIND`` replaced by the worklist
    handler, which falls back to the replaced one for the other FIND models."""
    others = list(handlers or ())
    fallback = next((h for e, h in others if e is evt.EVT_C_FIND), None)
    others = [(e, h) for e, h in others if e is not evt.EVT_C_FIND]
    install_fast_encode()
    handler = functools.partial(
        handle_find,
        ris=ris,
        channel=channel,
        metrics=metrics,
        case_insensitive_pn=case_insensitive_pn,
        limit=limit,
        fallback=fallback,
    )
    return [*others, (evt.EVT_C_FIND, handler)]


def handle_find(
    event: Any,
    *,
    ris: Any,
    channel: str,
    metrics: Any = None,
    case_insensitive_pn: bool = True,
    limit: int | None = None,
    fallback: Callable[[Any], Iterator[Any]] | None = None,
) -> Iterator[tuple[Any, Dataset | None]]:
    """``evt.EVT_C_FIND``: worklist requests answered here, other models by ``fallback(event)``.

    *limit*: stop after that many matches (still Success).
    """
    sop_class = _sop_class(event)
    if sop_class != MWL_FIND:
        if fallback is not None:
            yield from fallback(event)
        else:
            yield failure(SOP_CLASS_NOT_SUPPORTED, "SOP class not supported"), None
        return
    status: int | None = None  # None until the request ends: an abort leaves it so
    final: Any = None
    matches = 0
    try:
        dimse = getattr(getattr(event, "assoc", None), "dimse", None)
        if dimse is not None:
            send_find_responses(dimse)
        identifier = _identifier(event)
        rows = ris.worklist(identifier, case_insensitive_pn=case_insensitive_pn, limit=limit)
        for row in rows:
            if event.is_cancelled:
                status = final = 0xFE00
                break
            matches += 1
            yield 0xFF00, RowIdentifier(row) if _fast_encode_installed() else to_dataset(row)
        else:
            status = 0x0000
    except QueryError as exc:
        status, final = exc.status, failure(exc.status, exc.comment, exc.tags)
    except Exception as exc:  # noqa: BLE001 - a DIMSE failure status, never an exception out of the handler
        status = INTERNAL_ERROR
        final = failure(status, "unable to process the worklist query")
        log.error("%s on channel %s failed: %s", SERVICE, channel, type(exc).__name__)
        log.debug("%s failure", SERVICE, exc_info=True)
    finally:
        _record(metrics, channel, status, matches)
    if final is not None:
        yield final, None


def _sop_class(event: Any) -> str:
    uid = getattr(event.request, "AffectedSOPClassUID", None)
    if not uid:
        uid = event.context.abstract_syntax
    return str(uid)


def _identifier(event: Any) -> dict[str, Any]:
    """The request identifier as keyword → value; QueryError 0xC000 when it cannot be decoded."""
    try:
        return to_identifier(event.identifier)
    except Exception as exc:  # noqa: BLE001 - a malformed identifier (pydicom decodes lazily)
        raise QueryError(UNABLE_TO_PROCESS, f"identifier cannot be decoded ({type(exc).__name__})") from None


def _record(metrics: Any, channel: str, status: int | None, matches: int) -> None:
    """Log the outcome (no PHI) and count it; None: the association ended first."""
    if status is None:
        log.info("%s on channel %s ended with the association after %d matches", SERVICE, channel, matches)
    else:
        log.info("%s on channel %s: %d matches, status 0x%04X", SERVICE, channel, matches, status)
    if metrics is not None:
        metrics.dimse_request(channel, SERVICE, status_class(status) if status is not None else "failure")


# --- response identifiers encoded from their rows ----------------------------------------------

_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                         "UR", "UT"})  # fmt: skip
_LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
_ITEM = struct.Struct("<HHI")
_TAG = struct.Struct("<HH")
_LENGTH_2 = struct.Struct("<H")
_LENGTH_4 = struct.Struct("<I")
_US = struct.Struct("<HHIH")


class _Unencodable(Exception):
    """A value :func:`encode_row` leaves to pydicom."""


class RowIdentifier(Dataset):
    """A pending response's identifier: a worklist row, encoded by :func:`encode_row` when pynetdicom sends it."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        super().__init__()
        self.rb_row = row


def encode_row(row: Mapping[str, Any], *, implicit_vr: bool) -> bytes | None:
    """A row as a little-endian dataset (tags ascending, defined lengths), or None to leave it to pydicom."""
    charset = row.get("SpecificCharacterSet")
    if charset not in (None, UTF8):
        return None
    try:
        return _encode(row, implicit_vr, "utf-8" if charset else "ascii")
    except (_Unencodable, UnicodeEncodeError):
        return None


def _encode(row: Mapping[str, Any], implicit: bool, codec: str) -> bytes:
    elements = []
    for keyword, value in row.items():
        found = _element(keyword)
        if found is not None:
            elements.append((found, value))
    elements.sort(key=lambda e: e[0][0])
    out = []
    for (_tag, vr, tag_bytes, explicit_head), value in elements:
        if vr == "SQ":
            items = [_encode(item, implicit, codec) for item in value or ()]
            data = b"".join(_ITEM.pack(0xFFFE, 0xE000, len(item)) + item for item in items)
        elif vr in _STRING_VRS:
            data = _text(vr, value, codec)
        else:
            raise _Unencodable(vr)
        # The element header (PS3.5 7.1): implicit VR, or explicit with a 4- or a 2-byte length.
        if implicit:
            out.append(tag_bytes + _LENGTH_4.pack(len(data)))
        elif vr in _LONG_LENGTH_VRS:
            out.append(explicit_head + b"\0\0" + _LENGTH_4.pack(len(data)))
        elif len(data) > 0xFFFF:
            raise _Unencodable(vr)
        else:
            out.append(explicit_head + _LENGTH_2.pack(len(data)))
        out.append(data)
    return b"".join(out)


@functools.lru_cache(maxsize=4096)
def _element(keyword: str) -> tuple[int, str, bytes, bytes] | None:
    """(tag, VR, the tag's bytes, tag and VR bytes) of *keyword*, or None: looked up once per keyword."""
    found = keyword_vr(keyword)
    if found is None:
        return None
    tag, vr = found
    tag_bytes = _TAG.pack(tag >> 16, tag & 0xFFFF)
    return tag, vr, tag_bytes, tag_bytes + vr.encode("ascii")


def _text(vr: str, value: Any, codec: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (list, tuple)):
        value = "\\".join("" if v is None else str(v) for v in value)
    data = str(value).encode(codec)
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


def install_fast_encode() -> None:
    """Have pynetdicom's C-FIND SCP take a :class:`RowIdentifier`'s bytes from :func:`encode_row` (idempotent)."""
    if _fast_encode_installed():
        return
    original = service_class.encode

    def encode(ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:
        """pynetdicom's ``dsutils.encode``, with worklist rows encoded directly."""
        if isinstance(ds, RowIdentifier):
            if is_little_endian and not deflated:
                data = encode_row(ds.rb_row, implicit_vr=is_implicit_vr)
                if data is not None:
                    return data
            ds = to_dataset(ds.rb_row)
        return original(ds, is_implicit_vr, is_little_endian, deflated)

    encode.radbridge_rows = True  # type: ignore[attr-defined]
    service_class.encode = encode


def encode_find_response(primitive: C_FIND) -> bytes:
    """The Implicit VR LE command set of a C-FIND-RSP with only a status (and perhaps an identifier)."""
    uid = str(primitive.AffectedSOPClassUID or "").encode("ascii")
    uid += b"\0" * (len(uid) % 2)
    body = b"".join((
        _ITEM.pack(0x0000, 0x0002, len(uid)) + uid if uid else b"",
        _US.pack(0x0000, 0x0100, 2, 0x8020),
        _US.pack(0x0000, 0x0120, 2, primitive.MessageIDBeingRespondedTo),
        _US.pack(0x0000, 0x0800, 2, 0x0001 if primitive.Identifier is not None else 0x0101),
        _US.pack(0x0000, 0x0900, 2, primitive.Status),
    ))  # fmt: skip
    return _ITEM.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


def _plain_find_response(primitive: Any) -> bool:
    return (
        primitive.__class__ is C_FIND
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status in (0x0000, 0xFF00, 0xFF01)
        and not any(getattr(primitive, k, None) for k in ("ErrorComment", "OffendingElement", "ErrorID"))
    )


def send_find_responses(dimse: Any) -> None:
    """Wrap *dimse*'s ``send_msg`` (once per association) so plain C-FIND-RSPs are encoded directly.

    A response that fits in the peer's maximum PDU goes as one P-DATA-TF holding the command PDV and
    the identifier PDV; a larger one is fragmented as pynetdicom does: command set then identifier,
    each split into PDVs of at most the maximum PDU length less 6 bytes (PS3.8 E.2).
    """
    if getattr(dimse, "radbridge_find", False):
        return
    original = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        if not _plain_find_response(primitive):
            original(primitive, context_id)
            return
        data = primitive.Identifier.getvalue() if primitive.Identifier is not None else b""
        command, max_pdu = encode_find_response(primitive), dimse.maximum_pdu_size
        p_data = P_DATA()
        if not max_pdu or len(command) + len(data) + 12 <= max_pdu:
            # Both PDVs in one P-DATA-TF (PS3.8 9.3.5 allows several): half the PDUs for both peers.
            p_data.presentation_data_value_list.append((context_id, b"\x03" + command))
            if data:
                p_data.presentation_data_value_list.append((context_id, b"\x02" + data))
            dimse.dul.send_pdu(p_data)
            return
        for pdv in _fragments(command, data, max_pdu):
            p_data = P_DATA()
            p_data.presentation_data_value_list.append((context_id, pdv))
            dimse.dul.send_pdu(p_data)

    dimse.send_msg = send_msg
    dimse.radbridge_find = True


def _fragments(command: bytes, data: bytes, max_pdu: int) -> Iterator[bytes]:
    """PDVs with their message control header: command fragments (0x01, last 0x03), data (0x00, last 0x02)."""
    for payload, more, last in ((command, b"\x01", b"\x03"), (data, b"\x00", b"\x02")):
        if not payload and more == b"\x00":
            return
        size = max_pdu - 6 if max_pdu else len(payload)
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for chunk in chunks[:-1]:
            yield more + chunk
        yield last + chunks[-1]


def _fast_encode_installed() -> bool:
    return getattr(service_class.encode, "radbridge_rows", False)


__all__ = ["MWL_FIND", "RowIdentifier", "bind", "contexts", "encode_row", "handle_find", "install_fast_encode"]
