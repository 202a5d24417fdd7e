"""Query/Retrieve SCP handlers over the archive index: C-FIND, C-MOVE, C-GET (PS3.4 C), for ``dicom_scp``.

Plain functions taking their dependencies as keywords; :func:`bind_handlers` returns them ready for
``AE.start_server(..., evt_handlers=...)`` and :func:`add_contexts` adds the presentation contexts
(storage with both roles, as C-GET needs). They run in pynetdicom's association threads and read
the index with one short connection per page (``store.read_sync``), never touching the reactor.

Retrieved instances go out as archived, from their files (``_config.STORE_SEND_CHUNKED_DATASET``):
pynetdicom 3 only accepts a ``Dataset`` from a C-MOVE/C-GET handler, so each pending yield is a
:class:`FileInstance` and the association's ``send_c_store`` is wrapped to send its path instead.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from archive.matching import UNABLE_TO_PROCESS, QueryError, keyword_vr
from archive.query import Find, Located, locate
from channels.dicom.common import STORAGE_SOP_CLASSES, set_nodelay, status_class

log = logging.getLogger("radbridge.dicom.qr")

FIND_MODELS = {
    PatientRootQueryRetrieveInformationModelFind: "patient",
    StudyRootQueryRetrieveInformationModelFind: "study",
}
MOVE_MODELS = {
    PatientRootQueryRetrieveInformationModelMove: "patient",
    StudyRootQueryRetrieveInformationModelMove: "study",
}
GET_MODELS = {
    PatientRootQueryRetrieveInformationModelGet: "patient",
    StudyRootQueryRetrieveInformationModelGet: "study",
}
MAX_SUBOPERATIONS = 65535  # the Number of ... Sub-operations fields are US
MAX_CONTEXTS = 128  # presentation contexts an A-ASSOCIATE-RQ can carry
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)  # sendable in either, decoded when needed
OUT_OF_RESOURCES = 0xA702  # "Refused: Out of Resources - Unable to perform sub-operations"
INTERNAL_ERROR = 0xC001  # our "Unable to process" for a failure on our side (database, files)
DATETIME_BYTE = 1  # PS3.4 C.5.1.1: byte 2 of the Q/R FIND extended negotiation: combined date-time matching


def add_contexts(ae: Any, *, storage: bool = True) -> None:
    """Support the Patient/Study Root FIND, MOVE, GET contexts and (*storage*) every storage class both ways.

    C-GET sends over the requesting association, so the storage contexts accept the SCP role the
    requestor proposes (``scp_role=True``) as well as plain C-STORE (``scu_role=True``).
    """
    for uid in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
        ae.add_supported_context(uid)
    if storage:
        for uid in STORAGE_SOP_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)


def bind_handlers(
    *,
    store: Any,
    archive_root: str | Path,
    channel: str,
    destinations: Mapping[str, tuple[str, int]],
    metrics: Any = None,
    case_insensitive_pn: bool = True,
    retrieve_ae_title: str | None = None,
) -> list[tuple[Any, Callable[..., Any]]]:
    """``evt_handlers`` entries for C-FIND, C-MOVE, C-GET and the FIND extended negotiation."""
    return [
        (
            evt.EVT_C_FIND,
            functools.partial(
                handle_find,
                store=store,
                channel=channel,
                metrics=metrics,
                case_insensitive_pn=case_insensitive_pn,
                retrieve_ae_title=retrieve_ae_title,
            ),
        ),
        (
            evt.EVT_C_MOVE,
            functools.partial(
                handle_move,
                store=store,
                archive_root=archive_root,
                destinations=destinations,
                channel=channel,
                metrics=metrics,
            ),
        ),
        (
            evt.EVT_C_GET,
            functools.partial(handle_get, store=store, archive_root=archive_root, channel=channel, metrics=metrics),
        ),
        (evt.EVT_SOP_EXTENDED, handle_sop_extended),
    ]


def to_identifier(ds: Dataset) -> dict[str, Any]:
    """A request identifier as keyword → value (strings, lists of values, lists of item mappings)."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag.is_private or not elem.keyword:
            continue
        if elem.VR == "SQ":
            out[elem.keyword] = [to_identifier(item) for item in elem.value or ()]
        elif elem.value is None or isinstance(elem.value, bytes):
            out[elem.keyword] = ""
        elif isinstance(elem.value, (list, tuple, MultiValue)):
            out[elem.keyword] = [str(v) for v in elem.value]
        else:
            out[elem.keyword] = str(elem.value)
    return out


def to_dataset(row: Mapping[str, Any]) -> Dataset:
    """A response identifier from a row of :class:`archive.query.Find` (None: zero length)."""
    ds = Dataset()
    if "SpecificCharacterSet" in row:
        ds.SpecificCharacterSet = row["SpecificCharacterSet"]
    for keyword, value in row.items():
        found = keyword_vr(keyword)
        if found is None:
            continue
        tag, vr = found
        if vr == "SQ":
            ds.add_new(tag, vr, DicomSequence([to_dataset(item) for item in value or ()]))
        else:
            ds.add_new(tag, vr, value)
    return ds


def failure(status: int, comment: str, tags: tuple[int, ...] = ()) -> Dataset:
    """A status dataset with an Error Comment (and Offending Element when *tags* are known)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    if tags:
        ds.OffendingElement = list(tags)
    return ds


def sop_extended_response(app_info: Mapping[str, bytes]) -> dict[str, bytes]:
    """Replies to Q/R FIND extended negotiation: combined date-time matching accepted, nothing else."""
    reply = {}
    for uid, info in app_info.items():
        if uid in FIND_MODELS and info:
            accepted = bytearray(len(info))
            if len(info) > DATETIME_BYTE and info[DATETIME_BYTE] == 1:
                accepted[DATETIME_BYTE] = 1
            reply[uid] = bytes(accepted)
    return reply


def handle_sop_extended(event: Any) -> dict[str, bytes]:
    """``evt.EVT_SOP_EXTENDED`` handler: :func:`sop_extended_response` of the request's items."""
    return sop_extended_response(event.app_info or {})


def _combined_negotiated(event: Any) -> bool:
    try:
        info = event.assoc.acceptor.sop_class_extended.get(event.context.abstract_syntax, b"")
    except AttributeError:
        return False
    return len(info) > DATETIME_BYTE and info[DATETIME_BYTE] == 1


def _request(event: Any, models: Mapping[str, str]) -> tuple[str, str, dict[str, Any]]:
    """(model, level, identifier) of a Q/R request; QueryError when the identifier cannot be used."""
    model = models.get(event.context.abstract_syntax)
    if model is None:
        raise QueryError(0x0122, "SOP class not supported")
    try:
        ds = event.identifier
        level = str(ds.get("QueryRetrieveLevel", "") or "")
        return model, level, to_identifier(ds)
    except Exception as exc:  # noqa: BLE001 - a malformed identifier (pydicom decodes lazily)
        raise QueryError(UNABLE_TO_PROCESS, f"identifier cannot be decoded ({type(exc).__name__})") from None


def handle_find(
    event: Any,
    *,
    store: Any,
    archive_root: str | Path | None = None,
    channel: str = "",
    metrics: Any = None,
    case_insensitive_pn: bool = True,
    retrieve_ae_title: str | None = None,
    combined_datetime: bool | None = None,
    limit: int | None = None,
    page_size: int = 256,
) -> Iterator[tuple[Any, Dataset | None]]:
    """``evt.EVT_C_FIND``: a pending response per match, then pynetdicom's Success; cancel → 0xFE00.

    *combined_datetime*: None follows the association's extended negotiation. *limit*: stop after
    that many matches (still Success). Failures are status datasets with an Error Comment.
    *archive_root* is unused (accepted so the three handlers share one set of dependencies).
    """
    status: int | None = None  # None until the request ends: an abort leaves it so
    final: Any = None
    matches = 0
    try:
        model, level, identifier = _request(event, FIND_MODELS)
        combined = _combined_negotiated(event) if combined_datetime is None else combined_datetime
        query = Find(
            level, identifier, model=model, case_insensitive_pn=case_insensitive_pn, combined_datetime=combined
        )
        for row in query.paged(store.read_sync, page_size=page_size, limit=limit):
            if event.is_cancelled:
                status = final = 0xFE00
                break
            if retrieve_ae_title:
                row["RetrieveAETitle"] = retrieve_ae_title
            matches += 1
            yield 0xFF00, to_dataset(row)
        else:
            status = 0x0000
    except QueryError as exc:
        status, final = exc.status, failure(exc.status, exc.comment, exc.tags)
    except Exception as exc:  # noqa: BLE001 - a DIMSE failure status, never an exception out of the handler
        status = INTERNAL_ERROR
        final = failure(status, "unable to process the query")
        log.error("C-FIND on channel %s failed: %s", channel, type(exc).__name__)
        log.debug("C-FIND failure", exc_info=True)
    finally:
        _record(metrics, channel, "C-FIND", status, f"{matches} matches")
    if final is not None:
        yield final, None


def _record(metrics: Any, channel: str, service: str, status: int | None, detail: str) -> None:
    """Log the outcome of one request (no PHI) and count it; None: the association ended first."""
    if status is None:
        log.info("%s on channel %s ended with the association: %s", service, channel, detail)
    else:
        log.info("%s on channel %s: %s, status 0x%04X", service, channel, detail, status)
    if metrics is not None:
        metrics.dimse_request(channel, service, status_class(status) if status is not None else "failure")


class FileInstance(Dataset):
    """A pending C-MOVE/C-GET sub-operation: the archived file to send as is, and its tally."""

    def __init__(self, path: Path, located: Located, tally: Tally) -> None:
        super().__init__()
        self.SOPClassUID = located.sop_class_uid
        self.SOPInstanceUID = located.sop_instance_uid
        self.path = path
        self.transfer_syntax = located.transfer_syntax
        self.tally = tally


class Tally:
    """Sub-operation outcomes of one retrieve, and the final status they add up to (PS3.4 C.4.2.3)."""

    def __init__(self) -> None:
        self.completed = self.warning = self.failed = 0
        self.final: int | None = None  # set when the handler ends the retrieve itself
        self.done = False  # every sub-operation was handed to pynetdicom, or the handler ended it

    def add(self, status: Any) -> None:
        """Count one C-STORE response (a status Dataset; None when the send raised)."""
        code = getattr(status, "Status", None)
        kind = status_class(code) if code is not None else "failure"
        if kind == "success":
            self.completed += 1
        elif kind == "warning":
            self.warning += 1
        else:
            self.failed += 1

    def status(self) -> int | None:
        """The final status: the handler's own, else Success, Warning 0xB000 or Failure 0xA702.

        None when the retrieve did not finish (the association ended first).
        """
        if self.final is not None:
            return self.final
        if not self.done:
            return None
        if self.failed and not (self.completed or self.warning):
            return OUT_OF_RESOURCES
        return 0xB000 if self.failed or self.warning else 0x0000


def send_files(assoc: Any) -> None:
    """Wrap ``assoc.send_c_store`` so a :class:`FileInstance` is sent from its file, undecoded.

    When the peer accepted no context with the stored transfer syntax and it is uncompressed, the
    file is decoded and pynetdicom converts between implicit and explicit VR little endian.
    """
    if getattr(assoc, "_radbridge_files", False):
        return
    original = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        """pynetdicom's send_c_store, with a FileInstance sent from its path and tallied."""
        if not isinstance(dataset, FileInstance):
            return original(dataset, *args, **kwargs)
        try:
            try:
                status = original(dataset.path, *args, **kwargs)
            except ValueError:
                if dataset.transfer_syntax not in UNCOMPRESSED:
                    raise
                status = original(dcmread(dataset.path), *args, **kwargs)
        except Exception:
            dataset.tally.add(None)
            raise
        dataset.tally.add(status)
        return status

    assoc.send_c_store = send_c_store
    assoc._radbridge_files = True


def _on_sub_open(event: Any) -> None:
    """EVT_CONN_OPEN of a C-MOVE sub-association: TCP_NODELAY, and files sent as they are."""
    set_nodelay(event.assoc.dul.socket)
    send_files(event.assoc)


def store_contexts(located: list[Located]) -> list[Any]:
    """Requested contexts for sending *located*: one per (SOP class, stored transfer syntax), at most 128."""
    contexts = []
    for sop_class, syntax in dict.fromkeys((item.sop_class_uid, item.transfer_syntax) for item in located):
        alternatives = [ts for ts in UNCOMPRESSED if ts != syntax] if syntax in UNCOMPRESSED else []
        contexts.append(build_context(sop_class, [syntax, *alternatives]))
    return contexts[:MAX_CONTEXTS]


def _locate(
    event: Any, models: Mapping[str, str], store: Any, archive_root: str | Path | None, channel: str, service: str
) -> tuple[list[Located], Path]:
    """(instances the retrieve selects, the archive root); QueryError for every reason to refuse."""
    model, level, identifier = _request(event, models)
    if archive_root is None:
        raise QueryError(INTERNAL_ERROR, "no archive to retrieve from")
    try:
        located = store.read_sync(locate, level, identifier, model=model, limit=MAX_SUBOPERATIONS + 1)
    except QueryError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as a failure status
        log.error("%s on channel %s failed: %s", service, channel, type(exc).__name__)
        log.debug("%s failure", service, exc_info=True)
        raise QueryError(INTERNAL_ERROR, "unable to read the archive index") from None
    if len(located) > MAX_SUBOPERATIONS:
        raise QueryError(OUT_OF_RESOURCES, f"more than {MAX_SUBOPERATIONS} instances")
    return located, Path(archive_root)


def _suboperations(event: Any, located: list[Located], root: Path, tally: Tally) -> Iterator[tuple[int, Any]]:
    for item in located:
        if event.is_cancelled:
            tally.final = 0xFE00
            yield 0xFE00, None
            return
        yield 0xFF00, FileInstance(root / item.path, item, tally)
    tally.done = True


def handle_move(
    event: Any,
    *,
    store: Any,
    archive_root: str | Path | None,
    destinations: Mapping[str, tuple[str, int]],
    channel: str = "",
    metrics: Any = None,
) -> Iterator[Any]:
    """``evt.EVT_C_MOVE``: the destination from *destinations* (unknown: 0xA801), then the files.

    The sub-association proposes the stored (SOP class, transfer syntax) pairs and sets TCP_NODELAY.
    pynetdicom associates before any status can be sent, so a refused identifier costs one association.
    """
    tally = Tally()
    try:
        destination = destinations.get((event.move_destination or "").strip())
        if destination is None:
            tally.final = 0xA801
            yield None, None
            return
        host, port = destination
        try:
            located, root = _locate(event, MOVE_MODELS, store, archive_root, channel, "C-MOVE")
        except QueryError as exc:
            tally.final = exc.status
            yield host, port, {"contexts": [build_context(Verification)]}
            yield 1
            yield failure(exc.status, exc.comment, exc.tags), None
            return
        handlers = [(evt.EVT_CONN_OPEN, _on_sub_open)]
        yield (
            host,
            port,
            {"contexts": store_contexts(located) or [build_context(Verification)], "evt_handlers": handlers},
        )
        tally.done = not located  # pynetdicom answers Success at once, without asking for more
        yield len(located)
        yield from _suboperations(event, located, root, tally)
    finally:
        _finish(metrics, channel, "C-MOVE", tally)


def handle_get(
    event: Any, *, store: Any, archive_root: str | Path | None, channel: str = "", metrics: Any = None
) -> Iterator[Any]:
    """``evt.EVT_C_GET``: the number of instances, then the files over the requesting association.

    The requestor must have proposed each SOP class with the SCP role (and the acceptor accepted
    it: :func:`add_contexts`); an instance without such a context is a failed sub-operation.
    """
    tally = Tally()
    try:
        try:
            located, root = _locate(event, GET_MODELS, store, archive_root, channel, "C-GET")
        except QueryError as exc:
            tally.final = exc.status
            yield 1
            yield failure(exc.status, exc.comment, exc.tags), None
            return
        send_files(event.assoc)
        tally.done = not located  # pynetdicom answers Success at once, without asking for more
        yield len(located)
        yield from _suboperations(event, located, root, tally)
    finally:
        _finish(metrics, channel, "C-GET", tally)


def _finish(metrics: Any, channel: str, service: str, tally: Tally) -> None:
    detail = f"{tally.completed} completed, {tally.warning} warning, {tally.failed} failed"
    _record(metrics, channel, service, tally.status(), detail)
