"""``dicom_scp`` source: a DICOM AE serving C-ECHO, C-STORE into the archive, and C-FIND/C-MOVE/C-GET.

pynetdicom runs each association on its own threads (with the event-driven loops of
``channels/dicom/loops.py``); handlers do their blocking work (files, checksums, index reads)
there and hand only the store transaction to the reactor (``channels/dicom/storage.py``).
Associations are admitted by calling AE title and/or peer network before negotiation; others
are rejected with A-ASSOCIATE-RJ (rejected-permanent, service-user, "calling AE title not
recognized" or "no reason given" for an address).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any, Literal

from pydantic import Field, field_validator
from pynetdicom import AE, evt
from pynetdicom.acse import ACSE
from pynetdicom.transport import ThreadedAssociationServer

from channels.dicom import incoming, mpps, mwl, native, qr
from channels.dicom.common import set_nodelay, ssl_server_context
from channels.dicom.contexts import scp_contexts
from channels.dicom.fastdimse import install_fast_decode
from channels.dicom.loops import WakingAssociation, WakingRequestHandler
from channels.dicom.native import NativeStorage
from channels.dicom.storage import StorageHandler
from channels.mllp.tls import TLSServerConfig
from engine.components import BuildContext
from engine.config.models import ComponentConfig, Duration, Strict

log = logging.getLogger("radbridge.dicom")

REJECT_AE = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling-AE-title-not-recognized
REJECT_ADDRESS = (0x01, 0x01, 0x01)  # rejected-permanent, service-user, no-reason-given


def _ae_title(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 16 or "\\" in value or not value.isprintable():
        raise ValueError("an AE title is 1-16 printable characters without backslash")
    return value


class MoveDestination(Strict):
    """Where C-MOVE sends instances for one destination AE title."""

    host: str
    port: int = Field(ge=1, le=65535)


class DicomSCPConfig(ComponentConfig):
    """Serve DICOM: C-ECHO, C-STORE into the archive, C-FIND/C-MOVE/C-GET from it."""

    type: Literal["dicom_scp"] = "dicom_scp"
    ae_title: str = Field("RADBRIDGE", description="our AE title (called AE title peers use)")
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 / :: for every interface)")
    port: int = Field(ge=0, le=65535, description="TCP port")
    allowed_ae_titles: list[str] = Field(default_factory=list, description="calling AE titles admitted (empty: any)")
    allowed_networks: list[str] = Field(
        default_factory=list, description="peer networks admitted, e.g. 10.1.0.0/16 (empty: any)"
    )
    max_associations: int = Field(32, ge=1, description="further associations are rejected (local limit exceeded)")
    max_pdu: int = Field(1_048_576, ge=0, description="largest PDU we accept (0: unlimited)")
    acse_timeout: Duration = 30.0
    dimse_timeout: Duration = 60.0
    network_timeout: Duration = Field(60.0, description="close an association idle this long")
    storage: bool = Field(True, description="accept C-STORE of every storage SOP class, as received")
    storage_fast_path: bool = Field(
        True, description="serve associations that only store (and echo) without pynetdicom's DIMSE layer"
    )
    query_retrieve: bool = Field(True, description="serve C-FIND, C-MOVE and C-GET from the archive")
    worklist: bool = Field(False, description="serve the Modality Worklist (C-FIND, RAD-5) from the RIS")
    mpps: bool = Field(False, description="accept MPPS N-CREATE/N-SET (RAD-6/7) for the RIS")
    worklist_limit: int | None = Field(
        None, ge=1, description="answer at most this many worklist items per query (empty: all)"
    )
    move_destinations: dict[str, MoveDestination] = Field(
        default_factory=dict, description="C-MOVE destination AE title → host and port"
    )
    case_insensitive_pn: bool = Field(True, description="match person names without regard to case")
    tls: TLSServerConfig | None = Field(None, description="DICOM over TLS (with ca: client certificates checked)")

    @field_validator("ae_title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _ae_title(value)

    @field_validator("allowed_ae_titles")
    @classmethod
    def _titles(cls, values: list[str]) -> list[str]:
        return [_ae_title(v) for v in values]

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for v in values:
            ipaddress.ip_network(v, strict=False)  # raises ValueError naming the bad value
        return values

    @field_validator("move_destinations")
    @classmethod
    def _move_titles(cls, values: dict[str, MoveDestination]) -> dict[str, MoveDestination]:
        return {_ae_title(k): v for k, v in values.items()}

    def bind_address(self) -> tuple[str, int]:
        """(host, port) this source binds."""
        return self.host, self.port


class AdmittingACSE(ACSE):
    """pynetdicom's ACSE, asking the server whether to admit the requestor before negotiating."""

    def _negotiate_as_acceptor(self) -> None:
        admit = getattr(getattr(self.assoc, "_server", None), "admit", None)
        if admit is not None:
            reject = admit(self.assoc)
            if reject is not None:
                self.requestor.ae_title = self.requestor.primitive.calling_ae_title
                self.send_reject(*reject)
                evt.trigger(self.assoc, evt.EVT_REJECTED, {})
                self.assoc.kill()
                return
        super()._negotiate_as_acceptor()

    def send_accept(self) -> None:
        """Before the A-ASSOCIATE-AC goes out: decide whether the storage fast path serves the association."""
        native = getattr(getattr(self.assoc, "_server", None), "native_storage", None)
        if native is not None:
            self.assoc._native = native(self.assoc)
        super().send_accept()


class AdmittingAssociation(WakingAssociation):
    """An acceptor association with the event-driven loops and the admission check."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self.acse = AdmittingACSE(self)


class AdmittingRequestHandler(WakingRequestHandler):
    """Creates :class:`AdmittingAssociation` acceptors."""

    association_class = AdmittingAssociation


class RadbridgeServer(ThreadedAssociationServer):
    """The association server; ``admit`` is set by :class:`DicomSCP`."""

    admit: Any = None
    native_storage: Any = None  # assoc -> NativeStorage or None (channels/dicom/native.py)

    def service_actions(self) -> None:
        """No forced ``gc.collect()`` every few requests (pynetdicom's default): it stalls every thread."""


class DicomSCP:
    """The source connector: an AE listening on ``host:port``."""

    def __init__(self, config: DicomSCPConfig, ctx: BuildContext) -> None:
        self.config = config
        self.ctx = ctx
        self.channel = ctx.channel
        self.metrics = ctx.metrics
        self.server: RadbridgeServer | None = None
        self._thread: threading.Thread | None = None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in config.allowed_networks]
        self._titles = set(config.allowed_ae_titles)
        self._storage: StorageHandler | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self, sink: Any) -> None:
        """Bind and serve on pynetdicom's threads."""
        cfg = self.config
        archive = self.ctx.archive
        install_fast_decode()
        if cfg.storage and archive is None:
            raise RuntimeError("dicom_scp storage needs the archive (the archive package is not installed)")
        ae = AE(cfg.ae_title)
        ae.maximum_pdu_size = cfg.max_pdu
        ae.maximum_associations = cfg.max_associations
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = cfg.acse_timeout, cfg.dimse_timeout, cfg.network_timeout
        if (cfg.worklist or cfg.mpps) and self.ctx.ris is None:
            raise RuntimeError("dicom_scp worklist/mpps need the RIS (the ris_core package is not installed)")
        contexts = scp_contexts(
            storage=cfg.storage, query_retrieve=cfg.query_retrieve, worklist=cfg.worklist, mpps=cfg.mpps
        )
        ssl_context = ssl_server_context(cfg.tls, self.ctx.config_dir) if cfg.tls else None
        server = RadbridgeServer(
            ae, (cfg.host, cfg.port), cfg.ae_title, contexts, ssl_context,
            evt_handlers=self._handlers(sink, archive), request_handler=AdmittingRequestHandler,
        )  # fmt: skip
        server.admit = self._admit
        if cfg.storage and cfg.storage_fast_path:
            server.native_storage = self._native_storage
        ae._servers.append(server)
        self.ae, self.server = ae, server
        self._thread = threading.Thread(target=server.serve_forever, name=f"dicom-scp-{self.channel}", daemon=True)
        self._thread.start()
        log.info(
            "channel %s serving DICOM as %s on %s:%d", self.channel, cfg.ae_title, cfg.host, server.server_address[1]
        )

    def stop(self) -> None:
        """Stop accepting associations and abort the open ones."""
        if self.server is None:
            return
        server, self.server = self.server, None
        server.shutdown()
        for assoc in list(self.ae.active_associations):
            assoc.abort()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port: 0``)."""
        return self.server.server_address[1] if self.server is not None else self.config.port

    # -- associations ----------------------------------------------------
    def _admit(self, assoc: Any) -> tuple[int, int, int] | None:
        """None to admit the requestor, else the A-ASSOCIATE-RJ (result, source, reason)."""
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        if self._titles and calling not in self._titles:
            log.warning("channel %s rejected an association from AE %r (not allowed)", self.channel, calling)
            assoc._radbridge_rejection = "rejected_ae"
            return REJECT_AE
        if self._networks:
            address = ipaddress.ip_address(assoc.requestor.address)
            if not any(address in net for net in self._networks):
                log.warning("channel %s rejected an association from %s (network not allowed)", self.channel, address)
                assoc._radbridge_rejection = "rejected_address"
                return REJECT_ADDRESS
        return None

    def _native_storage(self, assoc: Any) -> NativeStorage | None:
        """The fast path for an association that negotiated only storage (and Verification), else None."""
        if not native.eligible(assoc):
            return None
        return NativeStorage(
            assoc, self._storage, self.ctx.archive.incoming, channel=self.channel, metrics=self.metrics,
            max_pdu=self.config.max_pdu,
        )  # fmt: skip

    def _count_association(self, outcome: str) -> None:
        if self.metrics:
            self.metrics.association(self.channel, outcome)

    def _handlers(self, sink: Any, archive: Any) -> list[tuple[Any, Any]]:
        cfg = self.config

        def opened(event: Any) -> None:
            set_nodelay(event.assoc.dul.socket.socket)

        def accepted(event: Any) -> None:
            self._count_association("accepted")

        def rejected(event: Any) -> None:
            # Our admission check names its reason; pynetdicom's own rejections (limits, contexts) do not.
            self._count_association(getattr(event.assoc, "_radbridge_rejection", "rejected"))

        def aborted(event: Any) -> None:
            self._count_association("aborted")

        def closed(event: Any) -> None:
            if incoming.discard_partial(event.assoc):
                log.warning("channel %s: association ended mid-dataset; the partial file was deleted", self.channel)
                if self.metrics:
                    self.metrics.instance_failed(self.channel, "incomplete")

        def echo(event: Any) -> int:
            if self.metrics:
                self.metrics.dimse_request(self.channel, "C-ECHO", "success")
            return 0x0000

        handlers: list[tuple[Any, Any]] = [
            (evt.EVT_CONN_OPEN, opened),
            (evt.EVT_ACCEPTED, accepted),
            (evt.EVT_REJECTED, rejected),
            (evt.EVT_ABORTED, aborted),
            (evt.EVT_CONN_CLOSE, closed),
            (evt.EVT_C_ECHO, echo),
        ]
        if cfg.storage:
            self._storage = StorageHandler(archive, sink, self.ctx.reactor, self.channel, self.metrics)
            handlers.append((evt.EVT_C_STORE, self._storage))
        if cfg.query_retrieve:
            handlers.extend(self._qr_handlers(archive))
        ris = self.ctx.ris
        if cfg.worklist:
            # One EVT_C_FIND per server: the worklist handler answers MWL and hands the rest to Q/R.
            handlers = mwl.bind(
                ris=ris, channel=self.channel, metrics=self.metrics,
                case_insensitive_pn=cfg.case_insensitive_pn, limit=cfg.worklist_limit, handlers=handlers,
            )  # fmt: skip
        if cfg.mpps:
            handlers.extend(mpps.bind(ris=ris, reactor=self.ctx.reactor, channel=self.channel, metrics=self.metrics))
        return handlers

    def _qr_handlers(self, archive: Any) -> list[tuple[Any, Any]]:
        """C-FIND, C-MOVE and C-GET handlers bound to the archive index (and the FIND extended negotiation)."""
        cfg = self.config
        return qr.bind_handlers(
            store=self.ctx.store,
            archive_root=archive.root,
            channel=self.channel,
            destinations={ae: (dest.host, dest.port) for ae, dest in cfg.move_destinations.items()},
            metrics=self.metrics,
            case_insensitive_pn=cfg.case_insensitive_pn,
            retrieve_ae_title=cfg.ae_title,
        )


def register(registry: Any) -> None:
    """Register the ``dicom_scp`` source."""
    registry.add("source", "dicom_scp", DicomSCPConfig, DicomSCP)


__all__ = ["DicomSCP", "DicomSCPConfig", "register"]
