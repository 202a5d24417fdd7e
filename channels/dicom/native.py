"""The storage fast path: a blocking C-STORE/C-ECHO loop for associations that only store.

pynetdicom serves an association with two threads passing every PDU and DIMSE message through
queues, a state machine and primitive objects; for a scanner sending a study that machinery,
not the archive, was most of the time per instance (``docs/performance.md``). When the
negotiation accepted only storage contexts (as SCP) and Verification, the association thread
serves the rest of the association itself, on the socket pynetdicom negotiated on:

* pynetdicom still does everything up to and including the A-ASSOCIATE-AC (admission, the
  presentation context, role and extended negotiation, user identity, the association limit,
  the ``EVT_*`` notifications); its DUL thread then stops reading (``WakingDUL``) and hands the
  socket over;
* this loop reads P-DATA-TF PDUs (PS3.8 9.3.5), writes C-STORE data set fragments as they
  arrive to the same ``.incoming`` Part-10 file pynetdicom would (``channels.dicom.incoming``),
  calls the same :meth:`StorageHandler.store`, and answers with the same response bytes
  (``channels.dicom.fastdimse``); it answers C-ECHO, A-RELEASE-RQ with A-RELEASE-RP, and
  anything a storage-only association cannot carry with an A-ABORT (PS3.8 9.3.8, source
  service-provider), as pynetdicom does for a message on an unknown context;
* an association that ends mid-data set (abort, lost connection, timeout) leaves no file
  behind and counts as an ``incomplete`` failure.

Everything else (query/retrieve, worklist, MPPS, mixed associations) stays on pynetdicom.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

from pynetdicom import evt

from channels.dicom import incoming
from channels.dicom.common import STORAGE_SOP_CLASSES
from channels.dicom.fastdimse import decode_store_request, encode_response
from channels.dicom.incoming import IncomingFile, create_file_meta

log = logging.getLogger("radbridge.dicom")

VERIFICATION = "1.2.840.10008.1.1"
_STORAGE = frozenset(STORAGE_SOP_CLASSES)
_PDU_HEAD = struct.Struct(">BxI")
_PDV_HEAD = struct.Struct(">IBB")
RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
CHUNK = 1 << 20
MAX_COMMAND = 1 << 16  # bytes: a C-STORE-RQ command set is ~200
C_ECHO_RQ = 0x0030
# A-ABORT reasons (PS3.8 9.3.8): source 2 = service provider
UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x01, 0x02, 0x06


class ProtocolError(Exception):
    """The peer broke PS3.8 / PS3.7 on a storage association: abort with *reason*."""

    def __init__(self, message: str, reason: int = 0x00) -> None:
        super().__init__(message)
        self.reason = reason


def eligible(assoc: Any) -> bool:
    """True when every accepted context is Verification or storage with us as the SCP only."""
    contexts = list(getattr(assoc, "_accepted_cx", {}).values())
    if not contexts or getattr(assoc.acceptor, "_common_ext", None):
        return False
    for cx in contexts:
        if cx.abstract_syntax == VERIFICATION:
            continue
        if cx.abstract_syntax not in _STORAGE or cx.as_scu or cx.as_scp is False:
            return False
    return True


def _abort_pdu(source: int, reason: int) -> bytes:
    return struct.pack(">BxIxxBB", 0x07, 4, source, reason)


def _command_field(data: bytes) -> tuple[int | None, dict[int, bytes]]:
    """The Command Field and raw elements of an Implicit VR LE command set (None if unreadable)."""
    elements: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if pos + length > end:
            return None, elements
        elements[group << 16 | elem] = data[pos : pos + length]
        pos += length
    field = elements.get(0x00000100)
    if pos != end or field is None or len(field) != 2:
        return None, elements
    return int.from_bytes(field, "little"), elements


class NativeStorage:
    """Serves one established storage association on its (blocking) socket."""

    def __init__(self, assoc: Any, handler: Any, folder: Path, *, channel: str, metrics: Any, max_pdu: int) -> None:
        self.assoc = assoc
        self.handler = handler
        self.folder = str(folder)
        self.channel = channel
        self.metrics = metrics
        self.max_pdu = max_pdu
        self.sock: Any = None
        self._send_lock = threading.Lock()
        self._closing = False
        self._command = bytearray()
        self._store: tuple[Any, ...] | None = None  # (file, context id, request, transfer syntax) while receiving
        self._contexts = {cx.context_id: cx for cx in assoc._accepted_cx.values()}

    # -- the loop ------------------------------------------------------------------------------
    def run(self, sock: Any) -> str:
        """Serve until release, abort or loss of the connection; how it ended."""
        self.sock = sock
        sock.settimeout(self.assoc.network_timeout)
        reader = self._reader = sock.makefile("rb", buffering=256 * 1024)
        try:
            return self._serve()
        except ProtocolError as exc:
            log.warning("channel %s: aborting a storage association: %s", self.channel, exc)
            self._send_abort(0x02, exc.reason)
            return "aborted"
        except (OSError, ValueError) as exc:  # timeout, reset, or the socket closed under us by abort()
            if not self._closing:
                log.warning("channel %s: storage association lost: %s", self.channel, type(exc).__name__)
                self._send_abort(0x02, 0x00)
            return "aborted"
        finally:
            self._discard_partial()
            try:
                reader.close()
            except OSError:
                pass

    def _serve(self) -> str:
        read = self._read_exact
        while True:
            head = self._reader.read(6)
            if not head:
                if self._closing:
                    return "aborted"
                raise ConnectionResetError("connection closed without A-RELEASE")
            if len(head) < 6:
                raise ConnectionResetError("connection closed inside a PDU")
            pdu_type, length = _PDU_HEAD.unpack(head)
            if pdu_type == 0x04:
                if self.max_pdu and length > self.max_pdu:
                    raise ProtocolError(f"P-DATA-TF of {length} bytes exceeds our maximum", INVALID_PARAMETER)
                self._p_data(length)
            elif pdu_type == 0x05:
                read(length)
                if self._store is not None:
                    raise ProtocolError("A-RELEASE-RQ in the middle of a data set", UNEXPECTED_PDU)
                self._send(RELEASE_RP)
                return "released"
            elif pdu_type == 0x07:
                read(length)
                return "peer_aborted"
            elif pdu_type in (0x01, 0x02, 0x03, 0x06):
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02x}", UNEXPECTED_PDU)
            else:
                raise ProtocolError(f"unrecognized PDU type 0x{pdu_type:02x}", UNRECOGNIZED_PDU)

    def _read_exact(self, n: int) -> bytes:
        data = self._reader.read(n)
        if len(data) != n:
            raise ConnectionResetError("connection closed inside a PDU")
        return data

    def _p_data(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            if remaining < 6:
                raise ProtocolError("truncated presentation data value item", INVALID_PARAMETER)
            item_length, context_id, control = _PDV_HEAD.unpack(self._read_exact(6))
            if item_length < 2 or item_length + 4 > remaining:
                raise ProtocolError("presentation data value item length out of range", INVALID_PARAMETER)
            remaining -= 4 + item_length
            size = item_length - 2
            if control & 0x01:
                if self._store is not None:
                    raise ProtocolError("a command fragment in the middle of a data set", UNEXPECTED_PDU)
                if len(self._command) + size > MAX_COMMAND:
                    raise ProtocolError("a command set larger than any DIMSE command", INVALID_PARAMETER)
                self._command += self._read_exact(size)
                if control & 0x02:
                    command, self._command = bytes(self._command), bytearray()
                    self._on_command(context_id, command)
            else:
                self._data(context_id, size, last=bool(control & 0x02))

    def _data(self, context_id: int, size: int, last: bool) -> None:
        if self._store is None or self._store[1] != context_id:
            raise ProtocolError("a data set fragment without its C-STORE-RQ", UNEXPECTED_PDU)
        file = self._store[0]
        while size:
            chunk = self._read_exact(min(size, CHUNK))
            file.write(chunk)
            size -= len(chunk)
        if last:
            self._on_dataset()

    # -- DIMSE -----------------------------------------------------------------------------------
    def _on_command(self, context_id: int, command: bytes) -> None:
        cx = self._contexts.get(context_id)
        if cx is None:
            raise ProtocolError(f"a message on presentation context {context_id}, which was not accepted")
        request = decode_store_request(command) if cx.abstract_syntax in _STORAGE else None
        if request is not None:
            if getattr(request, "CommandDataSetType", 0x0000) == 0x0101:
                raise ProtocolError("a C-STORE-RQ without a data set")
            ts = str(cx.transfer_syntax[0])
            file = IncomingFile(self.folder)
            try:
                file.write(b"\x00" * 128 + b"DICM")
                file.write(
                    create_file_meta(
                        sop_class_uid=request.AffectedSOPClassUID,
                        sop_instance_uid=request.AffectedSOPInstanceUID,
                        transfer_syntax=ts,
                    )
                )
            except BaseException:
                incoming.remove(file)
                raise
            self._store = (file, context_id, request, ts)
            return
        field, elements = _command_field(command)  # not a plain C-STORE-RQ: a C-ECHO-RQ, or refused
        if field == C_ECHO_RQ and cx.abstract_syntax == VERIFICATION:
            message_id = elements.get(0x00000110, b"")
            if len(message_id) != 2:
                raise ProtocolError("a C-ECHO-RQ without a Message ID")
            if self.metrics:
                self.metrics.dimse_request(self.channel, "C-ECHO", "success")
            self._respond(context_id, 0x8030, VERIFICATION, int.from_bytes(message_id, "little"), 0x0000)
        else:
            name = f"0x{field:04x}" if field is not None else "an unreadable command"
            raise ProtocolError(f"command {name} on a storage association")

    def _on_dataset(self) -> None:
        file, context_id, request, ts = self._store  # type: ignore[misc]
        self._store = None
        file.close()
        path = Path(file.name)
        try:
            status, comment = self.handler.store(
                path,
                sop_class_uid=request.AffectedSOPClassUID,
                sop_instance_uid=request.AffectedSOPInstanceUID,
                transfer_syntax=ts,
                calling_ae=self.assoc.requestor.ae_title.strip(),
                address=self.assoc.requestor.address,
            )
        except Exception:  # noqa: BLE001 - as pynetdicom: an exception in the handler answers 0xC211
            log.exception("channel %s: the C-STORE handler failed", self.channel)
            status, comment = 0xC211, ""
        finally:
            path.unlink(missing_ok=True)
        self._respond(
            context_id, 0x8001, request.AffectedSOPClassUID, request.MessageID, status, comment,
            request.AffectedSOPInstanceUID,
        )  # fmt: skip

    def _respond(
        self, context_id: int, field: int, sop_class: str, message_id: int, status: int, comment: str = "",
        sop_instance: str | None = None,
    ) -> None:  # fmt: skip
        command = encode_response(
            command_field=field, sop_class_uid=sop_class, message_id=message_id, status=status,
            comment=comment, sop_instance_uid=sop_instance,
        )  # fmt: skip
        peer_max = self.assoc.requestor.maximum_length or 0
        step = peer_max - 6 if peer_max > 6 else len(command)
        pdus = []
        for start in range(0, len(command), max(step, 1)):
            fragment = command[start : start + step]
            control = 0x03 if start + step >= len(command) else 0x01
            pdv = struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment
            pdus.append(struct.pack(">BxI", 0x04, len(pdv)) + pdv)
        self._send(b"".join(pdus))

    # -- sending, aborting -----------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def _send_abort(self, source: int, reason: int) -> None:
        try:
            self._send(_abort_pdu(source, reason))
        except (OSError, ValueError):
            pass

    def abort(self) -> None:
        """Abort from another thread (the SCP stopping): A-ABORT (service user), then unblock the loop."""
        self._closing = True
        if self.sock is None:
            return
        if isinstance(self.sock, ssl.SSLSocket):
            # An SSL connection must not be written while the association thread reads it: only
            # shut the TCP connection down underneath (the peer sees it closed).
            try:
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send_abort(0x00, 0x00)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _discard_partial(self) -> None:
        if self._store is None:
            return
        incoming.remove(self._store[0])
        self._store = None
        log.warning("channel %s: association ended mid-dataset; the partial file was deleted", self.channel)
        if self.metrics:
            self.metrics.instance_failed(self.channel, "incomplete")


def serve(assoc: Any, native: NativeStorage) -> None:
    """Run *native* on *assoc*'s socket after pynetdicom's DUL handed it over; end the association."""
    sock = assoc.dul.socket.socket
    outcome = "aborted"
    log.debug("channel %s: storage fast path serving an association", native.channel)
    try:
        outcome = native.run(sock)
    finally:
        assoc.is_established = False
        if outcome == "released":
            assoc.is_released = True
            evt.trigger(assoc, evt.EVT_RELEASED, {})
        else:
            assoc.is_aborted = True
            evt.trigger(assoc, evt.EVT_ABORTED, {})
        try:
            sock.close()
        except OSError:
            pass
        assoc.dul.socket.socket = None
        evt.trigger(assoc, evt.EVT_CONN_CLOSE, {"address": assoc.requestor.address_info.as_tuple})
