"""``dicom_scu`` destination: C-STORE of archived instances to a remote AE, one association kept open.

All pynetdicom work runs on one thread per destination (:class:`StoreWorker`); the connector
(:class:`DicomSCU`) lives in the reactor thread, hands jobs to that thread and gets outcomes back
through ``call_from_thread``. Idle close and the optional C-ECHO health check are timed in the
reactor (``reactor.callLater``), so a ``task.Clock`` drives them in tests.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, build_context, evt
from pynetdicom.sop_class import Verification
from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

from channels.dicom.common import set_nodelay, ssl_client_context, status_class
from channels.mllp.tls import TLSClientConfig
from engine.components import BuildContext, DeliveryError, DeliveryInfo, Done
from engine.config.models import ComponentConfig, Duration
from engine.event import Event

log = logging.getLogger("radbridge.dicom.scu")

#: Presentation context ids are odd numbers 1..255: at most 128 contexts per association.
MAX_CONTEXTS = 128
Key = tuple[str, str]  # (SOP class UID, transfer syntax UID): one presentation context


class DicomSCUConfig(ComponentConfig):
    """Send archived instances to a remote AE (C-STORE), one association reused across sends."""

    type: Literal["dicom_scu"] = "dicom_scu"
    ae_title: str = Field(description="the remote (called) AE title")
    host: str = Field(description="remote host")
    port: int = Field(ge=1, le=65535, description="remote DICOM port")
    calling_ae_title: str = Field("RADBRIDGE", description="our (calling) AE title")
    connect_timeout: Duration = Field(10.0, description="TCP connect and association negotiation timeout")
    dimse_timeout: Duration = Field(30.0, description="wait this long for a C-STORE/C-ECHO response")
    idle_close: Duration = Field(
        25.0, description="release an association idle this long (below the usual 30 s peer timeout)"
    )
    max_pdu: int = Field(16382, ge=0, description="largest PDU we accept (0: unlimited)")
    echo_interval: Duration | None = Field(None, description="C-ECHO the peer when idle this long (none: off)")
    tls: TLSClientConfig | None = Field(None, description="associate over TLS")
    accept_warning: bool = Field(True, description="count warning statuses (0xB000, 0xB006, 0xB007 ...) as delivered")

    @field_validator("ae_title", "calling_ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        if not value.strip() or len(value) > 16 or "\\" in value or any(ord(c) < 32 for c in value):
            raise ValueError("an AE title has 1 to 16 characters, no backslash or control characters")
        return value

    @field_validator("echo_interval")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("echo_interval must be positive (leave it out to turn the check off)")
        return value


def _nodelay(event: Any) -> None:
    set_nodelay(event.assoc.dul.socket)


class StoreWorker:
    """The thread side: owns the AE and the association; call its methods from one thread only."""

    def __init__(
        self,
        config: DicomSCUConfig,
        *,
        tls_args: tuple[ssl.SSLContext, str] | None = None,
        report_peer: Callable[[bool], None] = lambda up: None,
    ) -> None:
        self.config = config
        self.tls_args = tls_args
        self.report_peer = report_peer
        ae = AE(ae_title=config.calling_ae_title)
        ae.connection_timeout = config.connect_timeout
        ae.acse_timeout = config.connect_timeout
        ae.dimse_timeout = config.dimse_timeout
        ae.network_timeout = None  # the connector closes idle associations itself
        self.ae = ae
        self.assoc: Any = None
        self.accepted: set[Key] = set()
        self.proposed: set[Key] = set()
        self.wanted: dict[Key, None] = {}  # contexts seen so far, oldest first
        self.associations = 0  # store associations opened (for tests and logs)
        self.msg_id = 0
        self.peer = f"{config.ae_title}@{config.host}:{config.port}"

    @property
    def is_open(self) -> bool:
        """Whether a store association is established."""
        return self.assoc is not None and self.assoc.is_established

    def store(self, path: Path, uid: str) -> str:
        """C-STORE the file at *path* as stored; the response text, or raise :class:`DeliveryError`."""
        if not path.is_file():
            raise DeliveryError(f"instance file missing (SOP Instance {uid})")
        try:
            meta = read_file_meta_info(path)
            key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        except Exception:  # noqa: BLE001 - anything unreadable is the same failure for the sender
            raise DeliveryError(f"instance file has no readable file meta (SOP Instance {uid})") from None
        assoc = self._association_for(key)
        try:
            self.msg_id = self.msg_id % 0xFFFF + 1  # distinct per message on an association
            rsp = assoc.send_c_store(path, msg_id=self.msg_id)
        except (OSError, RuntimeError, ValueError, AttributeError) as exc:
            self.drop()
            raise DeliveryError(f"C-STORE not sent: {type(exc).__name__}") from None
        if "Status" not in rsp:
            self.drop()
            self.report_peer(False)
            raise DeliveryError(f"no C-STORE response from {self.peer} (aborted or DIMSE timeout)")
        self.report_peer(True)
        status = int(rsp.Status)
        kind = status_class(status)
        response = f"C-STORE status 0x{status:04X}"
        if status == 0x0000:
            log.debug("stored SOP Instance %s on %s", uid, self.peer)
            return response
        if kind == "warning" and self.config.accept_warning:
            log.info("SOP Instance %s stored on %s with warning 0x%04X", uid, self.peer, status)
            return f"{response} (warning)"
        log.info("C-STORE of SOP Instance %s to %s answered 0x%04X", uid, self.peer, status)
        raise DeliveryError(f"C-STORE {kind} 0x{status:04X}", response=response, code=f"0x{status:04X}")

    def _association_for(self, key: Key) -> Any:
        """An established association with an accepted context for *key*, reusing the open one if it can."""
        if self.assoc is not None and not self.assoc.is_established:
            self.drop()  # released or aborted by the peer since the last send
        if self.assoc is not None:
            if key in self.accepted:
                return self.assoc
            if key in self.proposed:
                raise DeliveryError(f"{self.peer} does not accept SOP class {key[0]} with transfer syntax {key[1]}")
            self.close()  # contexts are fixed per association: open one with this context added
        self.wanted.pop(key, None)
        self.wanted[key] = None
        limit = MAX_CONTEXTS - (1 if self.config.echo_interval is not None else 0)
        while len(self.wanted) > limit:
            del self.wanted[next(iter(self.wanted))]
        self._open(list(self.wanted))
        if key not in self.accepted:
            raise DeliveryError(f"{self.peer} does not accept SOP class {key[0]} with transfer syntax {key[1]}")
        return self.assoc

    def _associate(self, contexts: list[Any]) -> Any:
        cfg = self.config
        assoc = self.ae.associate(
            cfg.host, cfg.port, contexts=contexts, ae_title=cfg.ae_title, max_pdu=cfg.max_pdu,
            tls_args=self.tls_args, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
        )  # fmt: skip
        if assoc.is_established:
            return assoc
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            self.report_peer(True)  # it answered: it only refuses what we propose
            raise DeliveryError(f"{self.peer} accepted none of the proposed presentation contexts")
        self.report_peer(False)
        if assoc.is_rejected:
            raise DeliveryError(f"association rejected by {self.peer}")
        raise DeliveryError(f"cannot associate with {self.peer} (refused, aborted or timed out)")

    def _open(self, keys: list[Key]) -> None:
        contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in keys]
        if self.config.echo_interval is not None:
            contexts.append(build_context(Verification))
        self.proposed = set(keys)
        self.assoc = self._associate(contexts)
        self.msg_id = 0
        self.associations += 1
        self.accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in self.assoc.accepted_contexts}
        for key in self.proposed - self.accepted:
            self.wanted.pop(key, None)  # refused: proposed again only when an instance needs it
        log.info(
            "association %d to %s open (%d of %d contexts accepted)",
            self.associations, self.peer, len(self.accepted & self.proposed), len(keys),
        )  # fmt: skip

    def echo(self) -> bool:
        """C-ECHO the peer (on the open association if it can, else a short one); report and return the result."""
        ok = False
        try:
            if self.is_open and any(str(cx.abstract_syntax) == Verification for cx in self.assoc.accepted_contexts):
                rsp = self.assoc.send_c_echo()
                if "Status" not in rsp:
                    self.drop()
                ok = rsp.get("Status") == 0x0000
            else:
                assoc = self._associate([build_context(Verification)])
                try:
                    ok = assoc.send_c_echo().get("Status") == 0x0000
                finally:
                    assoc.release()
        except DeliveryError as exc:
            log.debug("C-ECHO to %s failed: %s", self.peer, exc.reason)
        self.report_peer(ok)
        return ok

    def close(self) -> None:
        """Release the association (abort it if the release fails)."""
        assoc, self.assoc = self.assoc, None
        self.accepted, self.proposed = set(), set()
        if assoc is not None and assoc.is_established:
            try:
                assoc.release()
            except Exception:  # noqa: BLE001 - a failed release ends in an abort either way
                assoc.abort()
            log.debug("association to %s released", self.peer)

    def drop(self) -> None:
        """Abort the association whose state can no longer be trusted (the next send reconnects)."""
        assoc, self.assoc = self.assoc, None
        self.accepted, self.proposed = set(), set()
        if assoc is not None and not assoc.is_aborted and not assoc.is_released:
            assoc.abort()


class DicomSCU:
    """The destination connector (reactor side): jobs to the worker thread, outcomes back to the queue."""

    def __init__(
        self, config: DicomSCUConfig, ctx: BuildContext, *, call_from_thread: Callable[..., Any] | None = None
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.reactor = ctx.reactor
        self.call_from_thread = call_from_thread or ctx.reactor.callFromThread
        tls_args = None
        if config.tls is not None:
            tls_args = (ssl_client_context(config.tls, ctx.config_dir), config.tls.server_name or config.host)
        self.worker = StoreWorker(config, tls_args=tls_args, report_peer=self._report_peer)
        self.pool: ThreadPool | None = None
        self.inflight = 0  # jobs handed to the worker and not finished
        self.open = False  # what the worker said after its last job
        self.last_store = -math.inf
        self.last_echo = -math.inf
        self.timer: Any = None

    def _report_peer(self, up: bool) -> None:
        if self.ctx.metrics is not None:
            self.ctx.metrics.peer_up(self.ctx.channel, self.ctx.component, up)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (associations are opened by the first send)."""
        if self.pool is not None:
            return
        self.pool = ThreadPool(1, 1, name=f"dicom-scu-{self.ctx.channel}-{self.ctx.component}")
        self.pool.start()
        self._arm()

    def stop(self) -> defer.Deferred | None:
        """Release the association and stop the worker thread; fires when it has finished."""
        pool, self.pool = self.pool, None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer, self.open = None, False
        if pool is None:
            return None
        pool.callInThread(self.worker.close)
        d: defer.Deferred = defer.Deferred()

        def join() -> None:
            pool.stop()
            self.call_from_thread(d.callback, None)

        threading.Thread(target=join, name=f"{pool.name}-stop", daemon=True).start()
        return d

    # -- sending --------------------------------------------------------------
    def resolve(self, content: str) -> tuple[Path, str]:
        """(file path, SOP Instance UID) of a ``dicom.stored`` event's text; :class:`DeliveryError` otherwise."""
        try:
            event = Event.from_text(content)
        except ValueError:
            raise DeliveryError("content is not a dicom.stored event") from None
        rel = event.payload.get("path")
        if event.kind != "dicom.stored" or not isinstance(rel, str) or not rel:
            raise DeliveryError("content is not a dicom.stored event with a path")
        path = Path(rel)
        if not path.is_absolute():
            root = getattr(self.ctx.archive, "root", None)
            if root is None:
                raise DeliveryError("instance path is relative and no archive is configured")
            path = Path(root) / path
        return path, event.control_id

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """C-STORE one instance; fires with the response text, errbacks with DeliveryError."""
        d: defer.Deferred = defer.Deferred()
        self.send_cb(content, info, lambda ok, value: d.callback(value) if ok else d.errback(value))
        return d

    def send_cb(self, content: str, info: DeliveryInfo, done: Done) -> None:
        """:meth:`send` without a Deferred: ``done(True, response)`` or ``done(False, DeliveryError)``."""
        if self.pool is None:
            done(False, DeliveryError("dicom_scu is not started"))
            return
        try:
            path, uid = self.resolve(content)
        except DeliveryError as exc:
            done(False, exc)
            return

        def stored(ok: bool, value: Any) -> None:
            self.last_store = self.reactor.seconds()
            done(ok, value)

        self._submit(lambda: self.worker.store(path, uid), stored)

    def _submit(self, fn: Callable[[], Any], after: Done) -> None:
        """Run *fn* on the worker thread; ``after(ok, value)`` in the reactor thread."""
        assert self.pool is not None
        self.inflight += 1
        worker = self.worker

        def job() -> None:
            try:
                ok, value = True, fn()
            except DeliveryError as exc:
                ok, value = False, exc
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the queue waiting forever
                log.exception("dicom_scu %s/%s worker error", self.ctx.channel, self.ctx.component)
                ok, value = False, DeliveryError(f"internal error: {type(exc).__name__}")
            self.call_from_thread(self._finished, after, ok, value, worker.is_open)

        self.pool.callInThread(job)

    def _finished(self, after: Done, ok: bool, value: Any, is_open: bool) -> None:
        self.inflight -= 1
        self.open = is_open
        try:
            after(ok, value)
        finally:
            self._arm()

    # -- idle close and health ----------------------------------------------
    def _due(self) -> float | None:
        """Reactor time of the next idle close or C-ECHO, or None when nothing is due."""
        dues = []
        if self.open:
            dues.append(self.last_store + self.config.idle_close)
        if self.config.echo_interval is not None:
            dues.append(max(self.last_store, self.last_echo) + self.config.echo_interval)
        return min(dues) if dues else None

    def _arm(self) -> None:
        if self.pool is None or self.inflight or (self.timer is not None and self.timer.active()):
            return
        due = self._due()
        if due is not None:
            self.timer = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.pool is None or self.inflight:
            return  # the job in flight re-arms when it finishes
        now, cfg = self.reactor.seconds(), self.config
        if cfg.echo_interval is not None and now >= max(self.last_store, self.last_echo) + cfg.echo_interval:
            self._submit(self.worker.echo, self._echoed)
        elif self.open and now >= self.last_store + cfg.idle_close:
            self._submit(self.worker.close, lambda ok, value: None)
        else:
            self._arm()

    def _echoed(self, ok: bool, value: Any) -> None:
        self.last_echo = self.reactor.seconds()


def register(registry: Any) -> None:
    """Register the ``dicom_scu`` destination."""
    registry.add("destination", "dicom_scu", DicomSCUConfig, DicomSCU)
