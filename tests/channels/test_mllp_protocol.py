"""Tests for the pure MLLP Twisted protocol."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from channels.mllp.protocol import MLLPProtocol
from engine.hl7.mllp import encode_frame

PAYLOADS = [b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1", b"MSH|^~\\&|A|B|C|D|2024||ORM^O01|2|P|2.5", b"x"]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


class Recorder(MLLPProtocol):
    """An MLLPProtocol recording what its hooks see."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.too_long = 0
        self.errors: list[str] = []

    def frameReceived(self, payload: bytes) -> None:
        """Record a payload."""
        self.frames.append(payload)

    def frameTooLong(self) -> None:
        """Count the call and close as the default does."""
        self.too_long += 1
        super().frameTooLong()

    def framingError(self, reason: str) -> None:
        """Record a framing error."""
        self.errors.append(reason)


def connect(protocol: MLLPProtocol, clock: Clock | None = None) -> StringTransport:
    """Attach *protocol* to a StringTransport (and *clock* for timeouts) and return the transport."""
    if clock is not None:
        protocol.callLater = clock.callLater  # type: ignore[method-assign]
    transport = StringTransport()
    protocol.makeConnection(transport)
    return transport


@pytest.mark.parametrize("size", [*range(1, 12), 64, len(STREAM)])
def test_frames_across_chunking(size: int) -> None:
    """Frames arrive whole and in order whatever the chunk size."""
    protocol = Recorder()
    connect(protocol)
    for i in range(0, len(STREAM), size):
        protocol.dataReceived(STREAM[i : i + size])
    assert protocol.frames == PAYLOADS
    assert protocol.errors == []


def test_send_frame_is_one_write() -> None:
    """sendFrame writes the whole frame in a single transport.write call."""
    writes: list[bytes] = []
    protocol = Recorder()
    transport = connect(protocol)
    original = transport.write
    transport.write = lambda data: (writes.append(data), original(data))  # type: ignore[method-assign]
    protocol.sendFrame(b"MSH|ack")
    assert writes == [b"\x0bMSH|ack\x1c\r"]
    assert transport.value() == b"\x0bMSH|ack\x1c\r"


def test_frame_too_long_called_once() -> None:
    """An oversize frame calls frameTooLong once, closes, and later data is ignored."""
    protocol = Recorder()
    protocol.MAX_LENGTH = 16
    transport = connect(protocol)
    protocol.dataReceived(encode_frame(b"short") + b"\x0b" + b"A" * 10)
    protocol.dataReceived(b"A" * 10)
    protocol.dataReceived(b"A" * 10 + encode_frame(b"ignored"))
    assert protocol.frames == [b"short"]
    assert protocol.too_long == 1
    assert transport.disconnecting


def test_junk_reports_framing_error() -> None:
    """Bytes outside a frame call framingError once per run, and frames still arrive."""
    protocol = Recorder()
    connect(protocol)
    protocol.dataReceived(b"noise" + encode_frame(b"a"))
    protocol.dataReceived(encode_frame(b"b"))
    assert protocol.frames == [b"a", b"b"]
    assert protocol.errors == ["discarded 5 byte(s) outside an MLLP frame"]


def test_no_delivery_after_close_in_handler() -> None:
    """Once a handler closes the connection, the rest of the chunk is not delivered."""

    class Closer(Recorder):
        """Closes after the first frame."""

        def frameReceived(self, payload: bytes) -> None:
            """Record and close."""
            super().frameReceived(payload)
            self.transport.loseConnection()

    protocol = Closer()
    connect(protocol)
    protocol.dataReceived(STREAM)
    assert protocol.frames == PAYLOADS[:1]


def test_idle_timeout_closes_connection() -> None:
    """With idle_timeout set, silence closes the connection; data resets the timer."""
    clock = Clock()
    protocol = Recorder()
    protocol.idle_timeout = 30
    transport = connect(protocol, clock)
    clock.advance(20)
    protocol.dataReceived(encode_frame(b"a"))
    clock.advance(20)
    assert not transport.disconnecting
    clock.advance(11)
    assert transport.disconnecting


def test_no_timeout_by_default() -> None:
    """Without idle_timeout nothing is scheduled and the connection stays open."""
    clock = Clock()
    protocol = Recorder()
    transport = connect(protocol, clock)
    assert clock.getDelayedCalls() == []
    clock.advance(3600)
    assert not transport.disconnecting


def test_connection_lost_cancels_timer() -> None:
    """connectionLost cancels the pending idle timer."""
    clock = Clock()
    protocol = Recorder()
    protocol.idle_timeout = 5
    connect(protocol, clock)
    assert len(clock.getDelayedCalls()) == 1
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []
