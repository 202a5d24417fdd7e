"""Tests for the mllp_sender destination on MemoryReactorClock, the connection driven through StringTransport."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from channels.mllp.sender import MLLPSender, MLLPSenderConfig
from engine.components import BuildContext, DeliveryError, DeliveryInfo
from engine.hl7.mllp import MLLPDecoder, encode_frame
from engine.metrics import Metrics

MSG = "MSH|^~\\&|RB|RAD|EHR|HOSP|20240101||ORU^R01|OUT1|P|2.5\rPID|1||P1"
INFO = DeliveryInfo(delivery_id=1, message_id=1, attempt=1)


def settled(d: defer.Deferred) -> bool:
    """Whether *d* has a final result (not merely fired and waiting on a chained Deferred)."""
    return d.called and not d.paused and not isinstance(d.result, defer.Deferred)


def ack(code: str = "AA", control_id: str = "OUT1", reason: str = "") -> bytes:
    """An ACK payload with MSA-1 *code* and MSA-2 *control_id*."""
    text = f"MSH|^~\\&|EHR|HOSP|RB|RAD|20240101||ACK^R01|A1|P|2.5\rMSA|{code}|{control_id}"
    if reason:
        text += f"|{reason}"
    return text.encode()


def result_of(d: defer.Deferred) -> Any:
    """The result a fired Deferred holds (its Failure when it failed)."""
    assert settled(d), "Deferred has not fired"
    results: list[Any] = []
    d.addBoth(results.append)
    return results[0]


def delivery_error(d: defer.Deferred) -> DeliveryError:
    """The DeliveryError *d* failed with."""
    result = result_of(d)
    assert isinstance(result, Failure), result
    assert isinstance(result.value, DeliveryError), result.value
    return result.value


class TCPTransport(StringTransport):
    """A StringTransport that records setTcpNoDelay like a TCP transport."""

    no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802 - Twisted's name
        """Record the Nagle setting."""
        self.no_delay = enabled


class Harness:
    """An MLLPSender on a MemoryReactorClock whose outgoing connections land on StringTransports."""

    def __init__(self, tmp_path: Path, **cfg: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.metrics = Metrics()
        ctx = BuildContext(
            reactor=self.reactor, channel="ch", component="ehr", config_dir=tmp_path, data_dir=tmp_path,
            metrics=self.metrics,
        )  # fmt: skip
        self.sender = MLLPSender(MLLPSenderConfig(type="mllp_sender", host="127.0.0.1", port=2575, **cfg), ctx)
        self.transports: list[TCPTransport] = []
        self.protocols: list[Any] = []

    def accept(self) -> TCPTransport:
        """Complete the newest pending connection attempt onto a fresh StringTransport."""
        assert len(self.reactor.tcpClients) == len(self.transports) + 1, "no new connection attempt"
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[-1]
        assert (host, port) == ("127.0.0.1", 2575)
        proto = factory.buildProtocol(None)
        transport = TCPTransport()
        proto.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(proto)
        return transport

    def send(self, content: str = MSG) -> defer.Deferred:
        """Start a send and, when a new connection is attempted, accept it."""
        d = self.sender.send(content, INFO)
        if len(self.reactor.tcpClients) > len(self.transports):
            self.accept()
        return d

    def reply(self, payload: bytes, chunk: int | None = None) -> None:
        """Feed *payload* as one MLLP frame from the peer on the newest connection (in chunks if given)."""
        data = encode_frame(payload)
        step = chunk or len(data)
        for i in range(0, len(data), step):
            self.protocols[-1].dataReceived(data[i : i + step])

    def written(self, index: int = -1) -> list[bytes]:
        """Payloads written on connection *index*."""
        return MLLPDecoder().feed(self.transports[index].value())


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    """A sender harness with default config."""
    return Harness(tmp_path)


@pytest.mark.parametrize("code", ["AA", "CA"])
def test_accept_returns_ack_text(h: Harness, code: str) -> None:
    """An AA (or CA) ACK whose MSA-2 matches completes the delivery with the ACK text."""
    d = h.send()
    assert h.written() == [MSG.encode()]
    assert not settled(d)
    h.reply(ack(code))
    assert result_of(d) == ack(code).decode()
    labels = {"channel": "ch", "destination": "ehr", "code": code}
    assert h.metrics.registry.get_sample_value("radbridge_acks_received_total", labels) == 1


def test_ack_in_chunks(h: Harness) -> None:
    """An ACK arriving a byte at a time still completes the request."""
    d = h.send()
    h.reply(ack(), chunk=1)
    assert result_of(d) == ack().decode()


def test_connection_reused_for_next_message(h: Harness) -> None:
    """A second send reuses the open connection."""
    d1 = h.send()
    h.reply(ack())
    result_of(d1)
    d2 = h.send(MSG.replace("OUT1", "OUT2"))
    assert len(h.reactor.tcpClients) == 1
    assert h.written() == [MSG.encode(), MSG.replace("OUT1", "OUT2").encode()]
    h.reply(ack(control_id="OUT2"))
    assert result_of(d2) == ack(control_id="OUT2").decode()


def test_tcp_nodelay_set(h: Harness) -> None:
    """The sender disables Nagle on its connection."""
    h.send()
    assert h.transports[0].no_delay is True


@pytest.mark.parametrize("code", ["AE", "AR", "CE"])
def test_error_ack_is_delivery_error_with_code(h: Harness, code: str) -> None:
    """An AE/AR/CE ACK fails the delivery with the code, the reason and the response text."""
    d = h.send()
    h.reply(ack(code, reason="unknown patient"))
    exc = delivery_error(d)
    assert exc.code == code
    assert exc.reason == f"downstream answered {code}: unknown patient"
    assert exc.response == ack(code, reason="unknown patient").decode()
    assert not h.transports[0].disconnecting


def test_msa2_mismatch_fails_and_drops_connection(h: Harness) -> None:
    """An ACK for another control id fails the delivery and closes the connection; the next send reconnects."""
    d = h.send()
    h.reply(ack(control_id="SOMETHING-ELSE"))
    exc = delivery_error(d)
    assert "does not match" in exc.reason and exc.code == "AA"
    assert h.transports[0].disconnecting
    h.send()
    assert len(h.reactor.tcpClients) == 2


def test_msa2_not_checked_when_disabled(tmp_path: Path) -> None:
    """With check_control_id off any AA completes the delivery."""
    h = Harness(tmp_path, check_control_id=False)
    d = h.send()
    h.reply(ack(control_id="OTHER"))
    assert result_of(d) == ack(control_id="OTHER").decode()


def test_non_ack_response_fails_and_drops(h: Harness) -> None:
    """A response without MSA fails the delivery and closes the connection."""
    d = h.send()
    h.reply(b"hello")
    assert "not an HL7 ACK" in delivery_error(d).reason
    assert h.transports[0].disconnecting


def test_response_timeout(tmp_path: Path) -> None:
    """No ACK within response_timeout fails the delivery and drops the connection; a late ACK is ignored."""
    h = Harness(tmp_path, response_timeout=5)
    d = h.send()
    h.reactor.advance(4.9)
    assert not settled(d)
    h.reactor.advance(0.1)
    assert delivery_error(d).reason == "no ACK within 5s"
    assert h.transports[0].disconnecting
    h.reply(ack())  # late: nobody waits for it any more
    assert h.sender.proto is None


def test_connection_lost_mid_request(h: Harness) -> None:
    """The connection closing before the ACK fails the delivery; the next send reconnects."""
    d = h.send()
    h.transports[0].connected = False
    h.protocols[0].connectionLost(Failure(error.ConnectionLost("peer went away")))
    assert "connection closed before the ACK" in delivery_error(d).reason
    d2 = h.send()
    assert len(h.reactor.tcpClients) == 2
    h.reply(ack())
    assert result_of(d2) == ack().decode()


def test_connect_failure(h: Harness) -> None:
    """A refused connection fails the delivery with the host and port."""
    d = h.sender.send(MSG, INFO)
    _host, _port, factory, _timeout, _bind = h.reactor.tcpClients[0]
    factory.clientConnectionFailed(h.reactor.connectors[0], Failure(error.ConnectionRefusedError()))
    h.reactor.advance(1)  # HostnameEndpoint notices on its next attempt tick
    exc = delivery_error(d)
    assert exc.reason.startswith("cannot connect to 127.0.0.1:2575")


def test_oversize_response_fails(tmp_path: Path) -> None:
    """A response longer than max_response_bytes fails the delivery."""
    h = Harness(tmp_path, max_response_bytes=64)
    d = h.send()
    h.reply(ack() + b"\rNTE|" + b"x" * 200)
    assert "max_response_bytes" in delivery_error(d).reason


def test_charset_from_msh18(h: Harness) -> None:
    """The outbound bytes use MSH-18's charset (Latin-1 for 8859/1)."""
    text = MSG.replace("|P|2.5", "|P|2.5||||||8859/1", 1).replace("P1", "MÜLLER")
    d = h.send(text)
    assert h.written() == [text.encode("latin-1")]
    h.reply(ack())
    result_of(d)


def test_unencodable_content_fails_without_connecting(h: Harness) -> None:
    """Content the charset cannot encode fails the delivery before any connection is made."""
    text = MSG.replace("|P|2.5", "|P|2.5||||||ASCII", 1).replace("P1", "MÜLLER")
    assert "cannot encode" in delivery_error(h.sender.send(text, INFO)).reason
    assert h.reactor.tcpClients == []


def test_stop_closes_connection(h: Harness) -> None:
    """stop closes the open connection."""
    d = h.send()
    h.reply(ack())
    result_of(d)
    h.sender.stop()
    assert h.transports[0].disconnecting and h.sender.proto is None
