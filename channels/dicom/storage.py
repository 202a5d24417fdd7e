"""The C-STORE handler: archive the received file, commit its index rows and event, then answer.

Runs on pynetdicom's association thread. pynetdicom has already written the dataset, as
received, to a temporary Part-10 file (``STORE_RECV_CHUNKED_DATASET``) in the archive's
``.incoming`` folder; the archive checks it, checksums and fsyncs it and links it into place
(``Archive.receive``), then the reactor commits the index rows and the ``dicom.stored`` event
in one transaction (``ChannelService.ingest_event``). Only then is the status returned, so a
success means the instance is on disk, checksummed, indexed, and queued for every destination
the channel routes it to. If anything fails, a newly placed file is removed again and the
peer gets a failure status; pynetdicom deletes the temporary file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from twisted.internet import threads

from channels.dicom import incoming
from engine.event import Event

log = logging.getLogger("radbridge.dicom")

OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused, out of resources (the store could not commit)
CANNOT_UNDERSTAND = 0xC000


def _status(code: int, comment: str = "") -> Dataset | int:
    """The handler's answer: the status alone, or a dataset with an Error Comment (LO: 64 chars)."""
    if not comment:
        return code
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class StorageHandler:
    """``evt.EVT_C_STORE`` handler of one ``dicom_scp`` source."""

    def __init__(self, archive: Any, sink: Any, reactor: Any, channel: str, metrics: Any = None) -> None:
        self.archive = archive
        self.sink = sink
        self.reactor = reactor
        self.channel = channel
        self.metrics = metrics
        incoming.install(archive.incoming)

    def __call__(self, event: Any) -> Dataset | int:
        """Store one instance; return the C-STORE status."""
        started = time.perf_counter()
        request = event.request
        assoc = event.assoc
        calling_ae = assoc.requestor.ae_title.strip()
        try:
            temp = Path(event.dataset_path)
        except AttributeError:
            return self._failed("no_dataset", _status(CANNOT_UNDERSTAND, "no dataset received"))
        try:
            stored = self.archive.receive(
                temp,
                sop_class_uid=str(request.AffectedSOPClassUID),
                sop_instance_uid=str(request.AffectedSOPInstanceUID),
                transfer_syntax=str(event.context.transfer_syntax),
                calling_ae=calling_ae,
                channel=self.channel,
            )
        except Exception as exc:  # noqa: BLE001 - bad input or a disk fault: refuse this one, keep serving
            status = getattr(exc, "status", None)
            if isinstance(status, int):  # the archive refused the instance (archive.InvalidInstance)
                reason = str(getattr(exc, "reason", exc))
                log.warning("channel %s refused SOP instance %s from %s: %s", self.channel,
                            request.AffectedSOPInstanceUID, calling_ae, reason)  # fmt: skip
                return self._failed(getattr(exc, "kind", "invalid"), _status(status, reason))
            log.exception("channel %s could not archive SOP instance %s", self.channel, request.AffectedSOPInstanceUID)
            return self._failed("archive", _status(OUT_OF_RESOURCES, "instance could not be archived"))
        if stored.outcome == "duplicate_rejected":
            return self._failed("duplicate", _status(stored.status, "duplicate SOP instance rejected"))
        message = Event("dicom.stored", stored.attrs, self.archive.event_payload(stored))
        skip = "duplicate SOP instance (the first one is kept)" if stored.outcome == "duplicate_kept" else None
        try:
            _mid, _dids, index = threads.blockingCallFromThread(
                self.reactor,
                self.sink.ingest_event,
                message,
                f"dicom:{assoc.requestor.address}:{calling_ae}",
                extra_op=self.archive.index_op(stored),
                sending_app=calling_ae,
                skip_reason=skip,
            )
        except Exception as exc:  # noqa: BLE001 - the transaction failed: nothing of it is stored
            self.archive.discard(stored)
            log.error("channel %s could not index SOP instance %s: %s", self.channel,
                      request.AffectedSOPInstanceUID, type(exc).__name__)  # fmt: skip
            return self._failed("store", _status(OUT_OF_RESOURCES, "instance could not be stored"))
        if getattr(index, "discard_file", False):
            self.archive.discard(stored)  # the index already names this instance elsewhere: keep that one
        status = getattr(index, "status", stored.status)  # the index has the last word (kept, replaced ...)
        if self.metrics:
            self.metrics.instance_stored(self.channel, stored.size, time.perf_counter() - started)
            self.metrics.dimse_request(self.channel, "C-STORE", "success" if status == 0 else "warning")
        return _status(status)

    def _failed(self, reason: str, status: Dataset | int) -> Dataset | int:
        if self.metrics:
            self.metrics.instance_failed(self.channel, reason)
            self.metrics.dimse_request(self.channel, "C-STORE", "failure")
        return status
