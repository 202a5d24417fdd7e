"""Modality Performed Procedure Step SCP (IHE RAD-6/7): N-CREATE and N-SET handlers for ``dicom_scp``.

SOP class 1.2.840.10008.3.1.2.3.3. Each handler turns pynetdicom's attribute or modification list
(a small dataset) into keyword → value (sequences as lists of mappings, ``qr.to_identifier``),
hands it to the RIS in the reactor (``call(reactor, ris.mpps_create, sop_uid, attrs)``, by
default ``threads.blockingCallFromThread``) and answers with the status the RIS returns: an
``int``, or an object with ``.status`` and ``.comment`` (``ris_core.mpps.MppsResult``). The RIS
records the step and applies the order event in one transaction before the answer goes back.

An N-CREATE without an Affected SOP Instance UID gets one generated here (PS3.7 10.1.5.1.4
lets the SCP assign it); it goes back in the response's Affected SOP Instance UID (pynetdicom
moves it there from the returned dataset). Logs name SOP Instance UIDs and statuses, never
patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep
from twisted.internet import threads

from channels.dicom.common import status_class
from channels.dicom.qr import failure, to_identifier

log = logging.getLogger("radbridge.dicom.mpps")

MPPS = str(ModalityPerformedProcedureStep)  # 1.2.840.10008.3.1.2.3.3
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_CLASS = 0x0118

Call = Callable[..., Any]


def contexts() -> list[Any]:
    """The presentation context to add to the SCP's supported contexts for MPPS."""
    return [build_context(MPPS, DEFAULT_TRANSFER_SYNTAXES)]


def bind(
    *, ris: Any, reactor: Any, channel: str, metrics: Any = None, call: Call | None = None
) -> list[tuple[Any, Callable[..., Any]]]:
    """``evt_handlers`` entries for N-CREATE and N-SET; *call* replaces ``blockingCallFromThread`` (tests)."""
    handler = MppsHandler(ris, reactor, channel, metrics, call or threads.blockingCallFromThread)
    return [(evt.EVT_N_CREATE, handler.n_create), (evt.EVT_N_SET, handler.n_set)]


class MppsHandler:
    """The N-CREATE and N-SET handlers of one ``dicom_scp`` source."""

    def __init__(self, ris: Any, reactor: Any, channel: str, metrics: Any, call: Call) -> None:
        self.ris, self.reactor, self.channel, self.metrics, self.call = ris, reactor, channel, metrics, call

    def n_create(self, event: Any) -> tuple[Any, Dataset | None]:
        """``evt.EVT_N_CREATE``: record a step IN PROGRESS (RAD-6)."""
        request = event.request
        if str(request.AffectedSOPClassUID) != MPPS:
            return self._done("N-CREATE", None, failure(NO_SUCH_SOP_CLASS, "SOP class not supported"), None)
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        reply = None
        if not sop_uid:
            sop_uid = generate_uid()
            reply = Dataset()
            reply.AffectedSOPInstanceUID = sop_uid
        status = self._run("N-CREATE", self.ris.mpps_create, sop_uid, lambda: event.attribute_list)
        return self._done("N-CREATE", sop_uid, status, reply)

    def n_set(self, event: Any) -> tuple[Any, Dataset | None]:
        """``evt.EVT_N_SET``: apply a modification list (RAD-7: COMPLETED or DISCONTINUED)."""
        request = event.request
        if str(request.RequestedSOPClassUID) != MPPS:
            return self._done("N-SET", None, failure(NO_SUCH_SOP_CLASS, "SOP class not supported"), None)
        sop_uid = str(request.RequestedSOPInstanceUID or "")
        status = self._run("N-SET", self.ris.mpps_set, sop_uid, lambda: event.modification_list)
        return self._done("N-SET", sop_uid, status, None)

    def _run(self, service: str, method: Call, sop_uid: str, dataset: Callable[[], Dataset]) -> Any:
        """The status (int or status dataset) of one request handed to the RIS in the reactor."""
        try:
            attrs = to_identifier(dataset())
        except Exception as exc:  # noqa: BLE001 - pydicom decodes lazily: a malformed list surfaces here
            log.warning("%s %s on channel %s: undecodable dataset (%s)", service, sop_uid, self.channel,
                        type(exc).__name__)  # fmt: skip
            return failure(PROCESSING_FAILURE, "attribute list cannot be decoded")
        try:
            result = self.call(self.reactor, method, sop_uid, attrs)
        except Exception as exc:  # noqa: BLE001 - answered as a processing failure
            log.error("%s %s on channel %s failed: %s", service, sop_uid, self.channel, type(exc).__name__)
            log.debug("%s failure", service, exc_info=True)
            return failure(PROCESSING_FAILURE, "the RIS could not record the step")
        status = int(getattr(result, "status", result))
        comment = getattr(result, "comment", None)
        return failure(status, comment) if comment and status != 0 else status

    def _done(
        self, service: str, sop_uid: str | None, status: Any, reply: Dataset | None
    ) -> tuple[Any, Dataset | None]:
        code = int(getattr(status, "Status", status))
        log.info("%s %s on channel %s: status 0x%04X", service, sop_uid or "-", self.channel, code)
        if self.metrics is not None:
            self.metrics.dimse_request(self.channel, service, status_class(code))
        return status, reply if code == 0 else None


__all__ = ["MPPS", "MppsHandler", "bind", "contexts"]
