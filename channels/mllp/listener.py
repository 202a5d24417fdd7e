"""``mllp_listener`` source: accepts MLLP connections and answers every frame with an ACK."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Literal

from pydantic import Field
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from channels.mllp.protocol import MLLPProtocol
from channels.mllp.tls import TLSServerConfig, server_context, tls_failure
from engine.components import BuildContext, IngestResult, Sink
from engine.config.models import ComponentConfig, Duration

log = logging.getLogger("radbridge.mllp")


class MLLPListenerConfig(ComponentConfig):
    """Listen for HL7 over MLLP."""

    type: Literal["mllp_listener"] = "mllp_listener"
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 / :: for every interface)")
    port: int = Field(ge=0, le=65535, description="TCP port")
    max_message_bytes: int = Field(1_048_576, ge=64, description="larger frames get AR and the connection closes")
    idle_timeout: Duration | None = Field(300.0, description="close connections idle this long (none: never)")
    max_connections: int = Field(256, ge=1, description="further connections are refused")
    tls: TLSServerConfig | None = Field(None, description="serve MLLP over TLS")

    def bind_address(self) -> tuple[str, int]:
        """(host, port) this source binds."""
        return self.host, self.port


class MLLPServerProtocol(MLLPProtocol):
    """One inbound connection: frames are answered one at a time, in order."""

    factory: MLLPListenerFactory

    def connectionMade(self) -> None:
        """Set TCP_NODELAY and start the idle timer."""
        f = self.factory
        if f.open >= f.config.max_connections:
            log.warning("channel %s refusing connection: %d open", f.channel, f.open)
            self.transport.abortConnection()
            return
        f.open += 1
        f.connections.add(self)
        self.counted = True
        self.MAX_LENGTH = f.config.max_message_bytes
        self.idle_timeout = f.config.idle_timeout
        self.pending: deque[bytes] = deque()
        self.busy = False
        self.oversize: tuple[bytes, str] | None = None
        peer = self.transport.getPeer()
        self.origin = f"mllp:{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        if f.metrics:
            f.metrics.connection_opened(f.channel, "mllp_listener")
        super().connectionMade()

    def connectionLost(self, reason: object = None) -> None:
        """Update the connection count; say why a TLS handshake failed."""
        super().connectionLost(reason)
        failed = tls_failure(reason)
        if failed is not None:
            log.info("channel %s %s: %s", self.factory.channel, getattr(self, "origin", "mllp:?"), failed)
        self.factory.connections.discard(self)
        if getattr(self, "counted", False):
            self.factory.open -= 1
            if self.factory.metrics:
                self.factory.metrics.connection_closed(self.factory.channel, "mllp_listener")

    def frameReceived(self, payload: bytes) -> None:
        """Queue the frame; answer frames strictly in arrival order."""
        self.pending.append(payload)
        self._next()

    def close_when_idle(self) -> None:
        """The source stops: frames not yet taken are dropped (never ACKed, so the sender resends
        them), the one in flight is answered, then the connection closes."""
        self.closing = True
        self.pending.clear()
        self.oversize = None
        if not self.busy:
            self.transport.loseConnection()

    def _next(self) -> None:
        if getattr(self, "closing", False):
            if not self.busy:
                self.transport.loseConnection()
            return
        if self.busy or self.transport.disconnecting:
            return
        if not self.pending:
            if self.oversize is not None:  # answered after every earlier frame, keeping ACK order
                self._reject(*self.oversize)
            return
        self.busy = True
        payload = self.pending.popleft()
        fast = self.factory.ingest_cb
        if fast is None:
            d = defer.maybeDeferred(self.factory.sink.ingest, payload, self.origin)
            d.addCallbacks(self._answered, self._crashed)
            return
        try:
            fast(payload, self.origin, self._answered)
        except Exception:  # noqa: BLE001 - a bug in the channel must not kill the reactor
            self._crashed(Failure())

    def _answered(self, result: IngestResult) -> None:
        self.busy = False
        if result.ack is not None and not self.transport.disconnecting:
            self.sendFrame(result.ack)
        self._next()

    def _crashed(self, failure: Any) -> None:
        log.error("channel %s ingest failed unexpectedly: %s", self.factory.channel, failure.getTraceback())
        self.transport.loseConnection()

    def framingError(self, reason: str) -> None:
        """Count bytes outside a frame."""
        f = self.factory
        log.info("channel %s %s: %s", f.channel, self.origin, reason)
        if f.metrics:
            f.metrics.framing_error(f.channel, "junk")

    def frameTooLong(self) -> None:
        """Record the oversize message, answer AR, then close."""
        f = self.factory
        if f.metrics:
            f.metrics.framing_error(f.channel, "oversize")
        reason = f"message exceeds max_message_bytes ({f.config.max_message_bytes})"
        self.oversize = (getattr(self._decoder, "overflow_head", b""), reason)
        self._next()

    def _reject(self, head: bytes, reason: str) -> None:
        self.busy = True
        d = defer.maybeDeferred(self.factory.sink.reject, head, self.origin, reason)

        def answer(result: IngestResult) -> None:
            if result.ack is not None:
                self.sendFrame(result.ack)
            self.transport.loseConnection()

        d.addCallbacks(answer, self._crashed)

    def timeoutConnection(self) -> None:
        """Close an idle connection."""
        if self.factory.metrics:
            self.factory.metrics.framing_error(self.factory.channel, "idle_timeout")
        super().timeoutConnection()


class MLLPListenerFactory(Factory):
    """Builds one protocol per connection, sharing the sink."""

    protocol = MLLPServerProtocol
    noisy = False

    def __init__(self, config: MLLPListenerConfig, channel: str, sink: Sink, metrics: Any = None) -> None:
        self.config = config
        self.channel = channel
        self.sink = sink
        self.ingest_cb = getattr(sink, "ingest_cb", None)  # the sink's Deferred-free entry, if it has one
        self.metrics = metrics
        self.open = 0
        self.connections: set[MLLPServerProtocol] = set()


class MLLPListener:
    """The source: binds the port on start, stops listening on stop."""

    def __init__(self, config: MLLPListenerConfig, ctx: BuildContext) -> None:
        self.config = config
        self.ctx = ctx
        self.port: Any = None
        self.factory: MLLPListenerFactory | None = None

    def start(self, sink: Sink) -> None:
        """Bind and listen."""
        cfg = self.config
        factory = self.factory = MLLPListenerFactory(cfg, self.ctx.channel, sink, self.ctx.metrics)
        reactor = self.ctx.reactor
        if cfg.tls is not None:
            self.port = reactor.listenSSL(
                cfg.port, factory, server_context(cfg.tls, self.ctx.config_dir), interface=cfg.host
            )
        else:
            self.port = reactor.listenTCP(cfg.port, factory, interface=cfg.host)
        log.info("channel %s listening for MLLP on %s:%d", self.ctx.channel, cfg.host, self.port.getHost().port)

    def stop(self) -> Any:
        """Stop accepting connections and close the open ones once their message in flight is answered."""
        if self.port is not None:
            port, self.port = self.port, None
            for proto in list(self.factory.connections if self.factory is not None else ()):
                proto.close_when_idle()
            return port.stopListening()
        return None
