"""Event-driven loops for pynetdicom acceptor associations.

pynetdicom runs two threads per association, both polling: the DUL thread checks the socket
with ``select(timeout=0)`` and sleeps 1 ms when nothing happened, the association thread wakes
every 1 ms to look for a decoded DIMSE message (``association.py``: ``time.sleep(0.001)``,
``dul.py``: ``_run_loop_delay``; the source says "TODO: try and make this event based"). On a
2-core machine that polling was ~40 % of the CPU spent per received instance and added up to a
millisecond of latency per message. Here both loops block instead:

* :class:`WakingDUL` waits in ``select`` on the association socket **and** a wake-up pipe that
  :meth:`WakingDUL.send_pdu` writes to when the association thread queues something to send;
* :class:`WakingAssociation` waits on a :class:`threading.Event` the DUL sets after every state
  machine action (a decoded message, a release or abort request, the DUL stopping).

Both wait at most :data:`MAX_WAIT` so that pynetdicom's timers (ARTIM, network idle timeout)
are still checked. The loop bodies are otherwise pynetdicom 3.0's; :class:`WakingRequestHandler`
is the stock request handler creating these classes (sharing the server's supported contexts
instead of deep-copying them per association). TLS sockets with bytes already decrypted
in the SSL buffer (``pending()``) are read without waiting.

Storage fast path: when the association was given a ``_native`` server (``channels/dicom/native.py``)
at negotiation, the DUL thread stops right after sending the A-ASSOCIATE-AC, before reading
anything more, and the association thread serves the socket itself; ``abort`` then goes to the
fast path.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
import time
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

from channels.dicom.fastdimse import send_msg_fast

log = logging.getLogger("radbridge.dicom")

MAX_WAIT = 0.05  # seconds: the longest a loop blocks before re-checking pynetdicom's timers


class WakingDUL(DULServiceProvider):
    """DUL provider that blocks on the socket and a wake-up pipe instead of polling."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self.handed_over = False  # set when the storage fast path took the socket
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def send_pdu(self, primitive: Any) -> None:
        """Queue *primitive* for sending and wake the DUL thread."""
        super().send_pdu(primitive)
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed (the DUL has stopped)

    def _wait(self) -> None:
        """Block until the socket is readable, something is queued to send, or MAX_WAIT passes."""
        sock = getattr(self.socket, "socket", None)
        try:
            if sock is None or sock.fileno() < 0:
                time.sleep(0.001)
                return
            pending = getattr(sock, "pending", None)
            if pending is not None and pending():
                return  # TLS: decrypted bytes are already buffered
            ready, _, _ = select.select([sock, self._wake_r], [], [], MAX_WAIT)
        except (OSError, ValueError):
            time.sleep(0.001)  # the socket was closed under us: the state machine will notice
            return
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except (BlockingIOError, OSError):
                pass

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop, waiting in :meth:`_wait` instead of sleeping."""
        assoc = self.assoc
        self._idle_timer.start()
        try:
            while True:
                if not assoc._dul_ready.is_set():
                    assoc._dul_ready.set()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:  # noqa: BLE001 - pynetdicom's own handling: abort the association
                    log.exception("DICOM upper layer failed, aborting the association")
                    self._abort_now()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    self._wait()
                    continue
                self.state_machine.do_action(event)
                activity = getattr(assoc, "_activity", None)
                if activity is not None:
                    activity.set()
                if self.state_machine.current_state == "Sta6" and getattr(assoc, "_native", None) is not None:
                    # The A-ASSOCIATE-AC is sent and nothing after it read: the association thread
                    # serves the socket from here (channels/dicom/native.py).
                    self.handed_over = True
                    return
        finally:
            activity = getattr(assoc, "_activity", None)
            if activity is not None:
                activity.set()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _abort_now(self) -> None:
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        try:
            self.socket.send(abort_pdu.encode())
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class WakingAssociation(Association):
    """Acceptor association whose reactor waits for the DUL instead of polling every millisecond."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._activity = threading.Event()
        self.dul = WakingDUL(self)
        self.dimse.send_msg = send_msg_fast(self.dimse)  # C-STORE responses without pydicom datasets
        # Association.__init__ applies the AE's timeouts to the first DUL; apply them again.
        self.acse_timeout = self.ae.acse_timeout
        self.connection_timeout = self.ae.connection_timeout
        self.dimse_timeout = self.ae.dimse_timeout
        self.network_timeout = self.ae.network_timeout

    # pynetdicom points ``abort`` at one of these two, depending on where it is called from.
    def _abort_blocking(self, block: bool = True) -> None:
        if not self._abort_fast_path():
            super()._abort_blocking(block)

    def _abort_nonblocking(self, block: bool = False) -> None:
        if not self._abort_fast_path():
            super()._abort_nonblocking(block)

    def _abort_fast_path(self) -> bool:
        """On the storage fast path pynetdicom's DUL has stopped: the fast path aborts (True) instead."""
        native = getattr(self, "_native", None)
        if native is None or not getattr(self.dul, "handed_over", False):
            return False
        native.abort()
        return True

    def _run_reactor(self) -> None:
        """pynetdicom's association loop, waiting on ``_activity`` instead of sleeping 1 ms."""
        from pynetdicom.association import LOGGER

        native = getattr(self, "_native", None)
        if native is not None:
            # Storage fast path: wait for the DUL thread to hand over the socket after the A-ASSOCIATE-AC.
            self.dul.join(timeout=self.acse_timeout or MAX_WAIT)
            if getattr(self.dul, "handed_over", False):
                from channels.dicom.native import serve

                serve(self, native)
            self.kill()
            return
        self._is_paused = False
        while not self._kill:
            self._activity.wait(MAX_WAIT)
            self._activity.clear()  # before looking: a later set() is never lost
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]
                self._activity.set()  # more messages may be queued already
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                LOGGER.info(
                    "Association Aborted (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else "Association Aborted"
                )
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class WakingRequestHandler(RequestHandler):
    """pynetdicom's request handler, creating :attr:`association_class` (:class:`WakingAssociation`) acceptors."""

    association_class: type[Association] = WakingAssociation

    def _create_association(self) -> Association:
        assoc = self.association_class(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(AssociationSocket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # pynetdicom deep-copies the supported contexts for every association (170 storage classes ×
        # 45 transfer syntaxes: ~0.3 s of CPU); negotiation only reads them, so share them.
        assoc.acceptor.supported_contexts = list(self.server.contexts)
        assoc.requestor.address_info = self.remote
        handlers = self.server._handlers
        for event in handlers:
            if event.is_intervention and handlers[event]:
                assoc.bind(event, *handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        return assoc
