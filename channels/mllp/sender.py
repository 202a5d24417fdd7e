"""``mllp_sender`` destination: one persistent connection, one message in flight, ACK checked."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field
from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory

from channels.mllp.protocol import MLLPProtocol
from channels.mllp.tls import TLSClientConfig, client_context, tls_failure
from engine.components import BuildContext, DeliveryError, DeliveryInfo, Done
from engine.config.models import ComponentConfig, Duration
from engine.hl7.ack import parse_ack
from engine.hl7.charset import CharsetError, codec_for
from engine.hl7.message import unescape

log = logging.getLogger("radbridge.mllp")
ACCEPTED = ("AA", "CA")


class MLLPSenderConfig(ComponentConfig):
    """Send HL7 over MLLP and wait for the ACK."""

    type: Literal["mllp_sender"] = "mllp_sender"
    host: str = Field(description="downstream host")
    port: int = Field(ge=1, le=65535, description="downstream port")
    connect_timeout: Duration = Field(10.0, description="give up connecting after this long")
    response_timeout: Duration = Field(30.0, description="wait this long for the ACK, then retry")
    check_control_id: bool = Field(True, description="require MSA-2 to equal the sent MSH-10")
    charset: str = Field("utf-8", description="codec when the outbound MSH-18 is empty")
    max_response_bytes: int = Field(1_048_576, ge=64, description="largest ACK accepted")
    tls: TLSClientConfig | None = Field(None, description="connect with TLS")


class _SenderProtocol(MLLPProtocol):
    """Client side: at most one request outstanding (``waiting`` gets ``(ok, payload or error)``)."""

    waiting: Done | None = None
    deadline: float = 0.0
    timer: Any = None

    def connectionMade(self) -> None:
        """Disable Nagle: one small frame each way per message."""
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        super().connectionMade()

    def frameReceived(self, payload: bytes) -> None:
        """Hand the response to the waiting request."""
        done, self.waiting = self.waiting, None
        if done is not None:
            done(True, payload)

    def frameTooLong(self) -> None:
        """An oversize response fails the request."""
        self._fail("response exceeds max_response_bytes")
        super().frameTooLong()

    def connectionLost(self, reason: object = None) -> None:
        """Fail the request in flight."""
        super().connectionLost(reason)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self._fail(tls_failure(reason) or "connection closed before the ACK arrived")

    def _fail(self, why: str) -> None:
        done, self.waiting = self.waiting, None
        if done is not None:
            done(False, DeliveryError(why))


class MLLPSender:
    """The destination connector."""

    def __init__(self, config: MLLPSenderConfig, ctx: BuildContext) -> None:
        self.config = config
        self.ctx = ctx
        self.reactor = ctx.reactor
        self.proto: _SenderProtocol | None = None
        factory = Factory.forProtocol(_SenderProtocol)
        factory.noisy = False
        self.factory = factory
        host, port, timeout = config.host, config.port, config.connect_timeout
        if config.tls is not None:
            creator = client_context(config.tls, ctx.config_dir, host)
            self.endpoint = endpoints.wrapClientTLS(
                creator, endpoints.TCP4ClientEndpoint(self.reactor, host, port, timeout=timeout)
            )
        else:
            self.endpoint = endpoints.HostnameEndpoint(self.reactor, host, port, timeout=timeout)

    def start(self) -> None:
        """Connections are opened lazily by the first send."""

    def stop(self) -> None:
        """Close the connection."""
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.loseConnection()
        self.proto = None

    def _connected(self) -> defer.Deferred:
        proto = self.proto
        if proto is not None and proto.transport is not None and proto.transport.connected:
            return defer.succeed(proto)
        d = self.endpoint.connect(self.factory)

        def ok(p: _SenderProtocol) -> _SenderProtocol:
            p.MAX_LENGTH = self.config.max_response_bytes
            self.proto = p
            return p

        def failed(f: Any) -> None:
            raise DeliveryError(f"cannot connect to {self.config.host}:{self.config.port}: {f.getErrorMessage()}")

        return d.addCallbacks(ok, failed)

    def encode(self, content: str) -> tuple[bytes, str]:
        """The bytes to send (MSH-18 or the configured charset) and the MSH-10 sent."""
        control_id, charset = outbound_header(content)
        codec = self.config.charset
        if charset:
            try:
                codec = codec_for(charset)
            except CharsetError:
                pass  # an unknown MSH-18: the configured charset (strict encoding still applies)
        return content.encode(codec, errors="strict"), control_id

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """Send one message and check its ACK; errback DeliveryError to retry."""
        d: defer.Deferred = defer.Deferred()

        def done(ok: bool, value: Any) -> None:
            if ok:
                d.callback(value)
            else:
                d.errback(value)

        self.send_cb(content, info, done)
        return d

    def send_cb(self, content: str, info: DeliveryInfo, done: Done) -> None:
        """:meth:`send` without a Deferred: ``done(True, ack_text)`` or ``done(False, DeliveryError)``."""
        try:
            payload, control_id = self.encode(content)
        except UnicodeEncodeError as exc:
            done(False, DeliveryError(f"cannot encode message: {exc.reason}"))
            return
        proto = self.proto
        if proto is not None and proto.transport is not None and proto.transport.connected:
            self._request(proto, payload, control_id, done)  # the common case: no Deferred at all
            return
        self._connected().addCallbacks(
            lambda p: self._request(p, payload, control_id, done), lambda f: done(False, f.value)
        )

    def _request(self, proto: _SenderProtocol, payload: bytes, control_id: str, done: Done) -> None:
        def answered(ok: bool, value: Any) -> None:
            if not ok:
                done(False, value)
                return
            try:
                text = self._check(proto, value, control_id)
            except DeliveryError as exc:
                done(False, exc)
                return
            done(True, text)

        proto.waiting = answered
        # One timer per connection, re-armed lazily: no DelayedCall created and cancelled per message.
        timeout = self.config.response_timeout
        proto.deadline = self.reactor.seconds() + timeout
        if proto.timer is None or not proto.timer.active():
            proto.timer = self.reactor.callLater(timeout, self._check_deadline, proto)
        proto.sendFrame(payload)

    def _check(self, proto: _SenderProtocol, raw: bytes, control_id: str) -> str:
        """Accept AA/CA whose MSA-2 is the sent MSH-10; raise DeliveryError otherwise."""
        text = raw.decode(self.config.charset, errors="replace")
        try:
            code, acked_id, reason = parse_ack(text)
        except ValueError:
            self._drop(proto)
            raise DeliveryError("response is not an HL7 ACK", text) from None
        if self.ctx.metrics:
            self.ctx.metrics.ack_received(self.ctx.channel, self.ctx.component, code or "none")
        if self.config.check_control_id and control_id and acked_id != control_id:
            self._drop(proto)
            raise DeliveryError(f"ACK MSA-2 {acked_id!r} does not match sent MSH-10 {control_id!r}", text, code)
        if code not in ACCEPTED:
            raise DeliveryError(f"downstream answered {code}: {reason}".rstrip(": "), text, code)
        return text

    def _check_deadline(self, proto: _SenderProtocol) -> None:
        proto.timer = None
        if proto.waiting is None:
            return  # idle: the next request arms the timer again
        left = proto.deadline - self.reactor.seconds()
        if left > 0:
            proto.timer = self.reactor.callLater(left, self._check_deadline, proto)
            return
        done, proto.waiting = proto.waiting, None
        done(False, DeliveryError(f"no ACK within {self.config.response_timeout:g}s"))
        self._drop(proto)

    def _drop(self, proto: _SenderProtocol) -> None:
        """Close a connection whose request/response pairing can no longer be trusted."""
        if proto.transport is not None:
            proto.transport.loseConnection()
        if self.proto is proto:
            self.proto = None


def outbound_header(content: str) -> tuple[str, str]:
    """(MSH-10, MSH-18 first repetition) of an outbound message, unescaped; ``("", "")`` if it has no MSH."""
    if not content.startswith("MSH") or len(content) < 8:
        return "", ""
    sep = content[3]
    end = len(content)
    for terminator in ("\r", "\n"):
        i = content.find(terminator, 0, end)
        if i >= 0:
            end = i
    fields = content[:end].split(sep)  # fields[k] is MSH-(k+1)
    enc = fields[1] if len(fields) > 1 and len(fields[1]) >= 4 else "^~\\&"
    control_id = unescape(fields[9], enc) if len(fields) > 9 else ""
    charset = unescape(fields[17].split(enc[1], 1)[0], enc) if len(fields) > 17 else ""
    return control_id, charset
