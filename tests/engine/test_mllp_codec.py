"""Tests for the pure MLLP codec and the blocking MLLP client."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from engine.hl7.mllp import CR, EB, SB, BlockingMLLPClient, MLLPDecoder, encode_frame

PAYLOADS = [
    b"MSH|^~\\&|A|B|C|D|20240101120000||ADT^A01|1|P|2.5\rPID|1||123",
    b"MSH|^~\\&|A|B|C|D|20240101120001||ORM^O01|2|P|2.5",
    b"MSH|^~\\&|A|B|C|D|20240101120002||ORU^R01|3|P|2.5\rOBX|1|TX|||text",
]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def feed_in_chunks(decoder: MLLPDecoder, data: bytes, size: int) -> list[bytes]:
    """Feed *data* to *decoder* in chunks of *size* bytes and collect the payloads."""
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out.extend(decoder.feed(data[i : i + size]))
    return out


def test_encode_frame_wraps_payload() -> None:
    """encode_frame puts SB before and EB CR after the payload."""
    assert encode_frame(b"abc") == SB + b"abc" + EB + CR == b"\x0babc\x1c\r"


def test_round_trip() -> None:
    """A decoded frame yields exactly the encoded payload."""
    decoder = MLLPDecoder()
    assert decoder.feed(encode_frame(PAYLOADS[0])) == [PAYLOADS[0]]
    assert decoder.buffered() == 0
    assert decoder.junk_bytes == 0


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, 100, len(STREAM) - 1, len(STREAM)])
def test_three_frames_any_chunking(size: int) -> None:
    """Three frames arrive intact and in order whatever the chunk size."""
    decoder = MLLPDecoder()
    assert feed_in_chunks(decoder, STREAM, size) == PAYLOADS
    assert decoder.junk_bytes == 0
    assert decoder.buffered() == 0


def test_every_split_point() -> None:
    """A stream split in two at every byte offset decodes the same."""
    for cut in range(len(STREAM) + 1):
        decoder = MLLPDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == PAYLOADS
        assert decoder.junk_bytes == 0


def test_junk_before_start_block_is_counted() -> None:
    """Bytes before SB are discarded, counted, and one run is one event."""
    decoder = MLLPDecoder()
    assert decoder.feed(b"garbage") == []
    assert decoder.feed(b"more" + encode_frame(b"x") + b"\n\n" + encode_frame(b"y")) == [b"x", b"y"]
    assert decoder.junk_bytes == len(b"garbagemore") + 2
    assert decoder.junk_events == 2


def test_eb_and_cr_split_across_chunks() -> None:
    """A CR arriving in the next chunk after EB is swallowed, not counted as junk."""
    decoder = MLLPDecoder()
    assert decoder.feed(SB + b"abc" + EB) == [b"abc"]
    assert decoder.feed(CR + encode_frame(b"def")) == [b"def"]
    assert decoder.junk_bytes == 0


def test_eb_without_cr_ends_frame_and_keeps_next_byte() -> None:
    """An EB not followed by CR still ends the frame, and the next SB is not swallowed."""
    decoder = MLLPDecoder()
    assert decoder.feed(SB + b"abc" + EB) == [b"abc"]
    assert decoder.feed(SB + b"def" + EB + SB + b"ghi" + EB + CR) == [b"def", b"ghi"]
    assert decoder.junk_bytes == 0


def test_start_block_inside_frame_restarts_it() -> None:
    """A second SB inside a frame discards the partial content as junk and starts afresh."""
    decoder = MLLPDecoder()
    assert decoder.feed(SB + b"partial") == []
    assert decoder.feed(SB + b"whole" + EB + CR) == [b"whole"]
    assert decoder.junk_bytes == len(SB + b"partial")
    assert decoder.junk_events == 1


def test_overflow_stops_buffering() -> None:
    """A frame longer than max_length sets overflow; earlier frames survive, later input is dropped."""
    decoder = MLLPDecoder(max_length=10)
    assert decoder.feed(encode_frame(b"ok") + SB + b"0123456789") == [b"ok"]
    assert not decoder.overflow
    assert decoder.feed(b"A") == []
    assert decoder.overflow
    assert decoder.buffered() == 0
    assert decoder.feed(encode_frame(b"later")) == []


def test_overflow_with_complete_long_frame() -> None:
    """A complete frame over max_length in one chunk overflows too."""
    decoder = MLLPDecoder(max_length=4)
    assert decoder.feed(encode_frame(b"1234") + encode_frame(b"12345") + encode_frame(b"x")) == [b"1234"]
    assert decoder.overflow


@pytest.fixture
def ack_server() -> Iterator[tuple[int, list[bytes]]]:
    """A one-connection threaded server answering each frame with ACK:<payload>, stopping at b'silent'."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        decoder = MLLPDecoder()
        with conn:
            while data := conn.recv(4096):
                for payload in decoder.feed(data):
                    received.append(payload)
                    if payload == b"silent":
                        continue
                    if payload == b"close":
                        return
                    reply = encode_frame(b"ACK:" + payload)
                    conn.sendall(reply[:3])  # split the reply to exercise the client's reassembly
                    conn.sendall(reply[3:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    server.close()
    thread.join(timeout=5)


def test_blocking_client_round_trip(ack_server: tuple[int, list[bytes]]) -> None:
    """BlockingMLLPClient sends frames and returns each response payload."""
    port, received = ack_server
    with BlockingMLLPClient("127.0.0.1", port, timeout=5) as client:
        assert client._sock is not None
        assert client._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert client.send(b"one") == b"ACK:one"
        assert client.send(b"two") == b"ACK:two"
    assert received == [b"one", b"two"]


def test_blocking_client_timeout(ack_server: tuple[int, list[bytes]]) -> None:
    """A peer that never answers raises TimeoutError naming the peer."""
    port, _ = ack_server
    with BlockingMLLPClient("127.0.0.1", port, timeout=0.2) as client, pytest.raises(TimeoutError, match="127.0.0.1"):
        client.send(b"silent")


def test_blocking_client_peer_closes(ack_server: tuple[int, list[bytes]]) -> None:
    """A peer that closes before answering raises ConnectionError."""
    port, _ = ack_server
    with BlockingMLLPClient("127.0.0.1", port, timeout=5) as client, pytest.raises(ConnectionError, match="closed"):
        client.send(b"close")


def test_blocking_client_connection_refused() -> None:
    """Connecting to a closed port raises ConnectionError."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectionError, match="connect"):
        BlockingMLLPClient("127.0.0.1", port, timeout=2).connect()
