"""Tests for the mllp_listener source protocol on StringTransport with a fake sink."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from channels.mllp.listener import MLLPListener, MLLPListenerConfig, MLLPListenerFactory, MLLPServerProtocol
from engine.components import BuildContext, IngestResult
from engine.hl7.mllp import MLLPDecoder, encode_frame
from engine.metrics import Metrics

MSG1 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1"
MSG2 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|2|P|2.5\rPID|2"


class FakeSink:
    """A sink whose ingest results are Deferreds the test fires (or fired at once with ``auto``)."""

    def __init__(self, auto: bool = False) -> None:
        self.auto = auto
        self.results: dict[bytes, defer.Deferred] = {}
        self.ingested: list[tuple[bytes, str]] = []
        self.rejected: list[tuple[bytes, str, str]] = []

    def result_for(self, payload: bytes) -> defer.Deferred:
        """The Deferred ingest returns for *payload* (created on first use)."""
        return self.results.setdefault(payload, defer.Deferred())

    def answer(self, payload: bytes, ack: bytes | None = None) -> None:
        """Fire *payload*'s result with an AA carrying *ack* (default: ``ACK:`` + payload)."""
        self.result_for(payload).callback(IngestResult("AA", ack if ack is not None else b"ACK:" + payload))

    def ingest(self, raw: bytes, origin: str) -> defer.Deferred:
        """Record the call and return the payload's Deferred."""
        self.ingested.append((raw, origin))
        if self.auto:
            return defer.succeed(IngestResult("AA", b"ACK:" + raw))
        return self.result_for(raw)

    def reject(self, raw: bytes, origin: str, reason: str) -> defer.Deferred:
        """Record the rejection and answer AR."""
        self.rejected.append((raw, origin, reason))
        return defer.succeed(IngestResult("AR", b"MSA|AR|" + reason.encode()))


def config(**kw: Any) -> MLLPListenerConfig:
    """A listener config (port 0 unless given) with *kw* overrides."""
    return MLLPListenerConfig(type="mllp_listener", **{"port": 0, **kw})


def connect(
    factory: MLLPListenerFactory, clock: Clock | None = None, peer: tuple[str, int] = ("10.0.0.1", 4000)
) -> tuple[MLLPServerProtocol, StringTransport]:
    """Build a protocol from *factory* and connect it to a StringTransport (timers on *clock*)."""
    proto = factory.buildProtocol(IPv4Address("TCP", *peer))
    proto.callLater = (clock or Clock()).callLater  # type: ignore[method-assign]
    transport = StringTransport(peerAddress=IPv4Address("TCP", *peer))
    proto.makeConnection(transport)
    return proto, transport


def frames(transport: StringTransport) -> list[bytes]:
    """The payloads of every frame written to *transport*."""
    return MLLPDecoder().feed(transport.value())


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry."""
    return Metrics()


def test_frames_answered_in_order_even_if_second_result_fires_first(metrics: Metrics) -> None:
    """ACKs go back in arrival order even when the second message's result is ready before the first's."""
    sink = FakeSink()
    proto, transport = connect(MLLPListenerFactory(config(), "ch", sink, metrics))
    proto.dataReceived(encode_frame(MSG1) + encode_frame(MSG2))
    assert [raw for raw, _ in sink.ingested] == [MSG1]
    sink.answer(MSG2)
    assert transport.value() == b""
    sink.answer(MSG1)
    assert frames(transport) == [b"ACK:" + MSG1, b"ACK:" + MSG2]
    assert [origin for _, origin in sink.ingested] == ["mllp:10.0.0.1:4000"] * 2


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, 10_000])
def test_chunked_input(size: int) -> None:
    """Frames fed in chunks of any size are ingested whole and answered in order."""
    sink = FakeSink(auto=True)
    proto, transport = connect(MLLPListenerFactory(config(), "ch", sink))
    stream = encode_frame(MSG1) + encode_frame(MSG2) + encode_frame(MSG1)
    for i in range(0, len(stream), size):
        proto.dataReceived(stream[i : i + size])
    assert [raw for raw, _ in sink.ingested] == [MSG1, MSG2, MSG1]
    assert frames(transport) == [b"ACK:" + MSG1, b"ACK:" + MSG2, b"ACK:" + MSG1]


def test_no_ack_written_when_result_has_none() -> None:
    """A result without ACK bytes (enhanced mode NE) writes nothing and the next frame is processed."""
    sink = FakeSink()
    proto, transport = connect(MLLPListenerFactory(config(), "ch", sink))
    proto.dataReceived(encode_frame(MSG1) + encode_frame(MSG2))
    sink.result_for(MSG1).callback(IngestResult("CA", None))
    sink.answer(MSG2)
    assert frames(transport) == [b"ACK:" + MSG2]


def test_oversize_rejected_with_ar_and_closed(metrics: Metrics) -> None:
    """A frame over max_message_bytes is handed to sink.reject with its head, answered AR, and the connection closes."""
    sink = FakeSink(auto=True)
    proto, transport = connect(MLLPListenerFactory(config(max_message_bytes=64), "ch", sink, metrics))
    big = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|BIG|P|2.5\r" + b"X" * 200
    proto.dataReceived(encode_frame(big) + encode_frame(MSG1))
    assert len(sink.rejected) == 1
    head, origin, reason = sink.rejected[0]
    assert head == big
    assert origin == "mllp:10.0.0.1:4000" and "max_message_bytes (64)" in reason
    assert frames(transport) == [b"MSA|AR|" + reason.encode()]
    assert transport.disconnecting
    assert sink.ingested == []
    proto.dataReceived(encode_frame(MSG1))
    assert sink.ingested == []
    assert metrics.registry.get_sample_value("radbridge_mllp_framing_errors_total", {"channel": "ch", "kind": "oversize"}) == 1  # fmt: skip


def test_oversize_after_pending_frame_keeps_ack_order() -> None:
    """An oversize frame behind a frame still in progress is answered AR only after that frame's ACK."""
    sink = FakeSink()
    proto, transport = connect(MLLPListenerFactory(config(max_message_bytes=64), "ch", sink))
    big = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|BIG|P|2.5\r" + b"X" * 5000
    stream = encode_frame(MSG1) + encode_frame(big)
    proto.dataReceived(stream[:100])
    proto.dataReceived(stream[100:])
    assert sink.rejected == [] and transport.value() == b""
    sink.answer(MSG1)
    assert [head for head, _, _ in sink.rejected] == [big[:4096]]
    assert frames(transport) == [b"ACK:" + MSG1, b"MSA|AR|message exceeds max_message_bytes (64)"]
    assert transport.disconnecting


def test_max_connections_refused(metrics: Metrics) -> None:
    """Connections beyond max_connections are aborted and not counted; closing one frees a slot."""
    factory = MLLPListenerFactory(config(max_connections=1), "ch", FakeSink(auto=True), metrics)
    first, t1 = connect(factory)
    assert factory.open == 1 and not t1.disconnecting
    second, t2 = connect(factory)
    assert t2.disconnected
    assert factory.open == 1
    second.connectionLost(None)
    assert factory.open == 1
    gauge = {"channel": "ch", "connector": "mllp_listener"}
    assert metrics.registry.get_sample_value("radbridge_connections_open", gauge) == 1
    first.connectionLost(None)
    assert factory.open == 0
    assert metrics.registry.get_sample_value("radbridge_connections_open", gauge) == 0
    third, t3 = connect(factory)
    assert not t3.disconnecting and factory.open == 1


def test_junk_counts_framing_error(metrics: Metrics) -> None:
    """Bytes outside a frame are counted as a junk framing error and the following frame still works."""
    sink = FakeSink(auto=True)
    proto, transport = connect(MLLPListenerFactory(config(), "ch", sink, metrics))
    proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n" + encode_frame(MSG1))
    assert metrics.registry.get_sample_value("radbridge_mllp_framing_errors_total", {"channel": "ch", "kind": "junk"}) == 1  # fmt: skip
    assert frames(transport) == [b"ACK:" + MSG1]


def test_idle_timeout_closes(metrics: Metrics) -> None:
    """An idle connection is closed after idle_timeout and counted; traffic resets the timer."""
    clock = Clock()
    proto, transport = connect(MLLPListenerFactory(config(idle_timeout=10), "ch", FakeSink(auto=True), metrics), clock)
    clock.advance(9)
    proto.dataReceived(encode_frame(MSG1))
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    labels = {"channel": "ch", "kind": "idle_timeout"}
    assert metrics.registry.get_sample_value("radbridge_mllp_framing_errors_total", labels) == 1


def test_ingest_crash_closes_connection() -> None:
    """An unexpected ingest failure closes the connection instead of answering."""
    sink = FakeSink()
    proto, transport = connect(MLLPListenerFactory(config(), "ch", sink))
    proto.dataReceived(encode_frame(MSG1))
    sink.result_for(MSG1).errback(RuntimeError("bug"))
    assert transport.disconnecting and transport.value() == b""


def test_listener_binds_and_stops() -> None:
    """MLLPListener.start listens on the configured host/port with a factory feeding the sink; stop unbinds."""
    reactor = MemoryReactorClock()
    ctx = BuildContext(reactor=reactor, channel="ch", component="source", config_dir=".", data_dir=".")  # type: ignore[arg-type]
    listener = MLLPListener(config(host="127.0.0.1", port=2575), ctx)
    sink = FakeSink(auto=True)
    listener.start(sink)
    port, factory, _backlog, interface = reactor.tcpServers[0]
    assert (port, interface) == (2575, "127.0.0.1")
    assert isinstance(factory, MLLPListenerFactory) and factory.sink is sink
    listener.stop()
    assert listener.port is None


def test_stop_answers_the_message_in_flight_then_closes_open_connections() -> None:
    """Stopping (or pausing) the source closes open connections: the frame in flight gets its ACK first,
    frames not yet taken get none (the sender resends them), an idle connection closes at once."""
    reactor = MemoryReactorClock()
    ctx = BuildContext(reactor=reactor, channel="ch", component="source", config_dir=".", data_dir=".")  # type: ignore[arg-type]
    listener = MLLPListener(config(host="127.0.0.1", port=2575), ctx)
    sink = FakeSink()
    listener.start(sink)
    factory = reactor.tcpServers[0][1]
    busy, busy_transport = connect(factory)
    idle, idle_transport = connect(factory, peer=("10.0.0.2", 4001))
    busy.dataReceived(encode_frame(MSG1) + encode_frame(MSG2))
    listener.stop()
    assert idle_transport.disconnecting and not busy_transport.disconnecting
    sink.answer(MSG1)
    assert frames(busy_transport) == [b"ACK:" + MSG1] and busy_transport.disconnecting
    assert [raw for raw, _ in sink.ingested] == [MSG1]  # MSG2 was never taken, so never ACKed
    busy.dataReceived(encode_frame(MSG2))  # bytes arriving while closing are ignored
    assert [raw for raw, _ in sink.ingested] == [MSG1]
