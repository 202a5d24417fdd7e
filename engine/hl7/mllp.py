"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol): a pure codec plus a blocking client.

A frame is ``SB payload EB CR``. :class:`MLLPDecoder` turns a byte stream cut at
arbitrary points into payloads; it has no Twisted and no socket in it, so the
Twisted protocol (``channels/mllp/protocol.py``) and the CLI client share it.
"""

from __future__ import annotations

import collections
import socket
import time
from types import TracebackType

SB = b"\x0b"
EB = b"\x1c"
CR = b"\r"

_CR_BYTE = CR[0]
_SB_BYTE = SB[0]
_EB_BYTE = EB[0]


def encode_frame(payload: bytes) -> bytes:
    """Wrap *payload* in an MLLP frame: ``SB + payload + EB + CR``."""
    return SB + payload + EB + CR


class MLLPDecoder:
    """Incremental MLLP deframer: ``feed(bytes)`` returns the payloads completed so far.

    Tolerant like common engines: bytes outside a frame are discarded and counted
    (``junk_bytes``; ``junk_events`` once per run), an EB without CR still ends the
    frame (the CR is swallowed only when it is the next byte, even in a later chunk),
    and an SB inside a frame restarts it (the earlier partial content counts as junk).
    A frame longer than ``max_length`` sets ``overflow``; the decoder then drops all input.
    """

    def __init__(self, max_length: int = 1_048_576) -> None:
        self.max_length = max_length
        self.junk_bytes = 0
        self.junk_events = 0
        self.overflow = False
        self.overflow_head = b""
        self._buf = bytearray()  # content of the open frame (after its SB); empty between frames
        self._in_frame = False
        self._scan = 0  # offset in _buf up to which no EB/SB was found
        self._in_junk = False  # inside a run of junk (so it is one event)
        self._pending_cr = False  # last frame ended on EB at a chunk end; a CR may follow

    def buffered(self) -> int:
        """Bytes held for the frame not yet complete."""
        return len(self._buf)

    def _junk(self, n: int) -> None:
        if n <= 0:
            return
        self.junk_bytes += n
        if not self._in_junk:
            self.junk_events += 1
            self._in_junk = True

    def feed(self, data: bytes) -> list[bytes]:
        """Add *data*; return the payloads of the frames it completed, in order."""
        if self.overflow:
            return []
        if not self._in_frame and not self._pending_cr and not self._buf:
            # The common case: the read is exactly one whole frame (SB payload EB CR).
            n = len(data)
            if (
                n >= 3
                and data[0] == _SB_BYTE
                and data[-2] == _EB_BYTE
                and data[-1] == _CR_BYTE
                and data.find(EB, 1, n - 2) < 0
                and data.find(SB, 1, n - 2) < 0
                and n - 3 <= self.max_length
            ):
                self._in_junk = False
                return [data[1:-2]]
        out: list[bytes] = []
        buf = self._buf
        buf += data
        pos = 0
        if self._pending_cr and buf:
            self._pending_cr = False
            if buf[0] == _CR_BYTE:
                pos = 1
        end = len(buf)
        start = 0
        scan = self._scan
        while pos < end or self._in_frame:
            if not self._in_frame:
                sb = buf.find(SB, pos)
                if sb < 0:
                    self._junk(end - pos)
                    pos = end
                    break
                self._junk(sb - pos)
                self._in_junk = False
                self._in_frame = True
                start = scan = pos = sb + 1
            eb = buf.find(EB, scan)
            sb2 = buf.find(SB, scan, eb if eb >= 0 else end)
            if sb2 >= 0:
                # A new start block inside a frame: the partial frame (and its SB) is junk.
                self._in_junk = False
                self._junk(sb2 - start + 1)
                self._in_junk = False
                start = scan = pos = sb2 + 1
                continue
            if eb < 0:
                if end - start > self.max_length:
                    return self._overflowed(out, start, end)
                scan = end
                break
            if eb - start > self.max_length:
                return self._overflowed(out, start, eb)
            out.append(bytes(buf[start:eb]))
            self._in_frame = False
            pos = eb + 1
            if pos < end:
                if buf[pos] == _CR_BYTE:
                    pos += 1
            else:
                self._pending_cr = True
        if self._in_frame:
            del buf[:start]
            self._scan = scan - start
        else:
            buf.clear()
            self._scan = 0
        return out

    def _overflowed(self, out: list[bytes], start: int, stop: int) -> list[bytes]:
        self.overflow = True
        # The head of the oversize payload only (no SB, no earlier or later frames), kept so it can be recorded.
        self.overflow_head = bytes(self._buf[start : min(stop, start + 4096)])
        self._in_frame = False
        self._buf = bytearray()
        self._scan = 0
        return out


class BlockingMLLPClient:
    """A blocking MLLP client for the CLI: ``send(payload)`` returns the response payload.

    Use as a context manager. The socket has TCP_NODELAY set; *timeout* bounds the
    connect and each whole request/response round trip.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0, max_length: int = 1_048_576) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_length = max_length
        self._sock: socket.socket | None = None
        self._decoder = MLLPDecoder(max_length)
        self._pending: collections.deque[bytes] = collections.deque()

    def connect(self) -> None:
        """Open the TCP connection (done by ``send`` and ``__enter__`` when needed)."""
        if self._sock is not None:
            return
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError as e:
            raise TimeoutError(f"MLLP connect to {where} timed out after {self.timeout}s") from e
        except OSError as e:
            raise ConnectionError(f"MLLP connect to {where} failed: {e}") from e
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._decoder = MLLPDecoder(self.max_length)
        self._pending.clear()

    def close(self) -> None:
        """Close the connection; ``send`` reconnects afterwards."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> BlockingMLLPClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, payload: bytes) -> bytes:
        """Send one framed *payload* and return the payload of the next response frame."""
        self.connect()
        sock = self._sock
        assert sock is not None
        where = f"{self.host}:{self.port}"
        deadline = time.monotonic() + self.timeout
        try:
            sock.settimeout(self.timeout)
            sock.sendall(encode_frame(payload))
            while not self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(65536)
                if not data:
                    self.close()
                    raise ConnectionError(
                        f"MLLP peer {where} closed the connection before a complete response frame"
                        f" ({self._decoder.buffered()} bytes of a frame received)"
                    )
                self._pending.extend(self._decoder.feed(data))
                if not self._pending and self._decoder.overflow:
                    self.close()
                    raise ConnectionError(f"MLLP response from {where} is longer than {self.max_length} bytes")
        except TimeoutError as e:
            self.close()
            raise TimeoutError(f"no MLLP response from {where} within {self.timeout}s") from e
        except ConnectionError:
            raise
        except OSError as e:
            self.close()
            raise ConnectionError(f"MLLP connection to {where} failed: {e}") from e
        return self._pending.popleft()
