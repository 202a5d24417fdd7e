"""The C-STORE handler: archive the received file, commit its index rows and event, then answer.

Runs on the association thread (pynetdicom's, or the storage fast path's in
``channels/dicom/native.py``), with the dataset already written, as received, to a temporary
Part-10 file in the archive's ``.incoming`` folder. The archive checks it, checksums it and
links it into place (``Archive.receive``); then two things run at once: the reactor commits the
index rows and the ``dicom.stored`` event in one transaction (``ChannelService.ingest_event``)
while this thread flushes the file and its folder to disk (``Archive.sync``). Only when both
are done is the status returned, so a success means the instance is on disk, checksummed,
indexed, and queued for every destination the channel routes it to. If the transaction fails,
a newly placed file is removed again; if the flush fails, the peer is refused so that it sends
the instance again (a copy left damaged by a crash is replaced by the next one received).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from twisted.internet import defer

from channels.dicom import incoming
from engine.event import Event

log = logging.getLogger("radbridge.dicom")

OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused, out of resources (the store could not commit)
CANNOT_UNDERSTAND = 0xC000


def on_reactor(reactor: Any, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """Call *f* on the reactor thread without waiting: a future of its (possibly deferred) result."""
    future: Future = Future()

    def run() -> None:
        d = defer.maybeDeferred(f, *args, **kwargs)
        d.addCallbacks(future.set_result, lambda failure: future.set_exception(failure.value))

    reactor.callFromThread(run)
    return future


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
        """pynetdicom's ``EVT_C_STORE``: store one instance; return the C-STORE status."""
        request = event.request
        assoc = event.assoc
        try:
            temp = Path(event.dataset_path)
        except AttributeError:
            return _status(*self._failed("no_dataset", CANNOT_UNDERSTAND, "no dataset received"))
        code, comment = self.store(
            temp,
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax=str(event.context.transfer_syntax),
            calling_ae=assoc.requestor.ae_title.strip(),
            address=assoc.requestor.address,
        )
        return _status(code, comment)

    def store(
        self, temp: Path, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_ae: str,
        address: str,
    ) -> tuple[int, str]:  # fmt: skip
        """Archive the received file *temp* (deleted afterwards), index it; the (status, error comment).

        Copies of one SOP Instance arriving at once on several associations are stored one after
        the other (``Archive.instance_lock``): whether the file at its path is damaged is then
        judged against a settled index row, never against another copy still being committed.
        """
        with self.archive.instance_lock(sop_instance_uid):
            return self._store(temp, sop_class_uid, sop_instance_uid, transfer_syntax, calling_ae, address)

    def _store(
        self, temp: Path, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_ae: str,
        address: str,
    ) -> tuple[int, str]:  # fmt: skip
        started = time.perf_counter()
        try:
            stored = self.archive.receive(
                temp,
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                transfer_syntax=transfer_syntax,
                calling_ae=calling_ae,
                channel=self.channel,
                defer_sync=True,
            )
        except Exception as exc:  # noqa: BLE001 - bad input or a disk fault: refuse this one, keep serving
            status = getattr(exc, "status", None)
            if isinstance(status, int):  # the archive refused the instance (archive.InvalidInstance)
                reason = str(getattr(exc, "reason", exc))
                log.warning("channel %s refused SOP instance %s from %s: %s", self.channel,
                            sop_instance_uid, calling_ae, reason)  # fmt: skip
                return self._failed(getattr(exc, "kind", "invalid"), status, reason)
            log.exception("channel %s could not archive SOP instance %s", self.channel, sop_instance_uid)
            return self._failed("archive", OUT_OF_RESOURCES, "instance could not be archived")
        if stored.outcome == "duplicate_rejected":
            return self._failed("duplicate", stored.status, "duplicate SOP instance rejected")
        message = Event("dicom.stored", stored.attrs, self.archive.event_payload(stored))
        skip = "duplicate SOP instance (the first one is kept)" if stored.outcome == "duplicate_kept" else None
        # The store transaction commits on the reactor while this thread flushes the file: neither
        # waits for the other, and the peer is answered only when both are done.
        committed = on_reactor(
            self.reactor, self.sink.ingest_event, message, f"dicom:{address}:{calling_ae}",
            extra_op=self.archive.index_op(stored), sending_app=calling_ae, skip_reason=skip,
        )  # fmt: skip
        sync_error: Exception | None = None
        try:
            self.archive.sync(stored)
        except Exception as exc:  # noqa: BLE001 - still wait for the transaction before answering
            sync_error = exc
        try:
            _mid, _dids, index = committed.result()
        except Exception as exc:  # noqa: BLE001 - the transaction failed: nothing of it is stored
            self.archive.discard(stored)
            log.error("channel %s could not index SOP instance %s: %s", self.channel,
                      sop_instance_uid, type(exc).__name__)  # fmt: skip
            return self._failed("store", OUT_OF_RESOURCES, "instance could not be stored")
        if sync_error is not None:
            # Indexed but maybe not on disk: refuse, so that the sender sends it again; that copy
            # replaces this one if it turns out damaged (Archive.receive).
            reason = getattr(sync_error, "strerror", None) or type(sync_error).__name__
            log.error("channel %s could not flush SOP instance %s to disk: %s", self.channel,
                      sop_instance_uid, reason)  # fmt: skip
            return self._failed("archive", OUT_OF_RESOURCES, "instance could not be archived")
        if getattr(index, "discard_file", False):
            self.archive.discard(stored)  # the index already names this instance elsewhere: keep that one
        status = getattr(index, "status", stored.status)  # the index has the last word (kept, replaced ...)
        if self.metrics:
            self.metrics.instance_stored(self.channel, stored.size, time.perf_counter() - started)
            self.metrics.dimse_request(self.channel, "C-STORE", "success" if status == 0 else "warning")
        return status, ""

    def _failed(self, reason: str, code: int, comment: str) -> tuple[int, str]:
        if self.metrics:
            self.metrics.instance_failed(self.channel, reason)
            self.metrics.dimse_request(self.channel, "C-STORE", "failure")
        return code, comment
