"""The pure MLLP Twisted protocol: bytes to frame payloads and back (DESIGN.md §3.5).

Modelled on ``twisted.protocols.basic``: framing, ``MAX_LENGTH`` with a too-long
hook and an idle timeout, nothing else. Parsing, ACKs and routing live outside.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import TimeoutMixin

from engine.hl7.mllp import MLLPDecoder, encode_frame

_PLAIN_TCP = (tcp.Server, tcp.Client)


class MLLPProtocol(Protocol, TimeoutMixin):
    """Deliver each MLLP frame's payload to ``frameReceived``; send with ``sendFrame``.

    Subclasses overriding ``connectionMade``/``connectionLost`` must call these ones
    (they start and stop the idle timer).
    """

    MAX_LENGTH: int = 1_048_576
    idle_timeout: float | None = None

    _decoder: MLLPDecoder | None = None
    _too_long: bool = False

    def connectionMade(self) -> None:
        """Start the idle timer when ``idle_timeout`` is set."""
        if self.idle_timeout is not None:
            self.setTimeout(self.idle_timeout)

    def connectionLost(self, reason: object = None) -> None:
        """Cancel the idle timer."""
        self.setTimeout(None)

    def dataReceived(self, data: bytes) -> None:
        """Feed the decoder; call ``frameReceived`` per payload, then the error hooks."""
        if self._too_long:
            return
        self.resetTimeout()
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = MLLPDecoder(self.MAX_LENGTH)
        events, junk = decoder.junk_events, decoder.junk_bytes
        payloads = decoder.feed(data)
        if decoder.junk_events != events:
            self.framingError(f"discarded {decoder.junk_bytes - junk} byte(s) outside an MLLP frame")
        for payload in payloads:
            if self.transport is not None and self.transport.disconnecting:
                return
            self.frameReceived(payload)
        if decoder.overflow:
            self._too_long = True
            self.frameTooLong()

    def frameReceived(self, payload: bytes) -> None:
        """Handle one frame's payload (without SB/EB/CR); override this."""
        raise NotImplementedError

    def frameTooLong(self) -> None:
        """A frame exceeded ``MAX_LENGTH``; further data is ignored. Default: close the connection."""
        self.transport.loseConnection()

    def framingError(self, reason: str) -> None:
        """Bytes outside a frame were discarded (called once per run of junk). Default: nothing."""

    def sendFrame(self, payload: bytes) -> None:
        """Write *payload* as one MLLP frame in a single ``transport.write``.

        On a plain TCP transport with nothing buffered, the frame is sent at once instead of
        on the reactor's next turn (saves two epoll changes and a turn per frame); whatever
        the socket does not take goes through ``transport.write`` as usual, keeping order.
        """
        data = encode_frame(payload)
        t = self.transport
        if (
            type(t) in _PLAIN_TCP
            and t.connected
            and not t.disconnecting
            and not t._tempDataBuffer
            and t.offset >= len(t.dataBuffer)
        ):
            try:
                sent = t.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # the reactor's own write path will see and report the error
            if sent == len(data):
                return
            data = data[sent:]
        t.write(data)

    def timeoutConnection(self) -> None:
        """The connection was idle for ``idle_timeout`` seconds: close it."""
        self.transport.loseConnection()
