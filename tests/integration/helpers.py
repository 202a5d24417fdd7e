"""Helpers for the integration tests: free ports, the real engine as a subprocess, a downstream MLLP peer."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

SB, EB, CR = b"\x0b", b"\x1c", b"\r"
BIN_DIR = Path(sys.executable).parent
RADBRIDGE = [sys.executable, "-m", "engine.cli"]
MLLP_SEND = str(BIN_DIR / "mllp_send")
READY = "radbridge ready:"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether *port* on 127.0.0.1 can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll *predicate* until it returns something truthy; raise AssertionError after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- messages ----------------------------------------------------------------
def _ts() -> str:
    return datetime.now().strftime("%Y%m%d%H%M%S")


def make_orm(control_id: str, patient: str, accession: str, *, app: str = "HIS", facility: str = "HOSP") -> str:
    """An ORM^O01 (v2.3.1) new order, segments joined by CR."""
    return "\r".join(
        [
            f"MSH|^~\\&|{app}|{facility}|RIS|RAD|{_ts()}||ORM^O01|{control_id}|P|2.3.1",
            f"PID|1||{patient}^^^HOSP^MR||DOE^JOHN^Q||19700101|M",
            "PV1|1|O|RAD^^^HOSP",
            f"ORC|NW|P{accession}||||||||||1234^WELBY^MARCUS",
            f"OBR|1|P{accession}||CTHEAD^CT HEAD WITHOUT CONTRAST|||{_ts()}|||||||||1234^WELBY^MARCUS||{accession}",
        ]
    )


def make_adt(control_id: str, patient: str, *, event: str = "A04", app: str = "HIS", facility: str = "HOSP") -> str:
    """An ADT^A04 (or other event) registration, segments joined by CR."""
    return "\r".join(
        [
            f"MSH|^~\\&|{app}|{facility}|RIS|RAD|{_ts()}||ADT^{event}|{control_id}|P|2.3.1",
            f"EVN|{event}|{_ts()}",
            f"PID|1||{patient}^^^HOSP^MR||ROE^JANE||19800202|F",
            "PV1|1|O|RAD^^^HOSP",
        ]
    )


def frame(message: str | bytes) -> bytes:
    """One MLLP frame: SB payload EB CR."""
    data = message.encode() if isinstance(message, str) else message
    return SB + data + EB + CR


def write_mllp_file(path: Path, messages: Iterable[str]) -> Path:
    """Write *messages* MLLP-framed, the format ``mllp_send -f`` reads."""
    path.write_bytes(b"".join(frame(m) for m in messages))
    return path


def segments(text: str) -> dict[str, list[str]]:
    """First occurrence of each segment, split into fields (``seg["MSA"][1]`` is MSA-1)."""
    out: dict[str, list[str]] = {}
    for seg in text.replace("\n", "\r").split("\r"):
        seg = seg.strip(SB.decode() + EB.decode())
        if len(seg) >= 3:
            fields = seg.split("|")
            if seg.startswith("MSH"):
                fields = ["MSH", "|", *fields[1:]]  # MSH-1 is the separator itself
            out.setdefault(fields[0], fields)
    return out


ACK_RE = re.compile(r"MSA\|(A[AER])\|([^|\r\n\x1c]*)")


def parse_mllp_send_output(stdout: str) -> list[tuple[str, str]]:
    """(code, MSA-2) for every ACK that ``mllp_send`` printed, in order."""
    return ACK_RE.findall(stdout)


# -- config and CLI ----------------------------------------------------------
def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Dump *config* as YAML to *path*."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(
    *args: str, timeout: float = 30.0, env: dict[str, str] | None = None, unset: Iterable[str] = ()
) -> subprocess.CompletedProcess:
    """Run ``radbridge ARGS`` to completion, capturing text output; *env* adds variables, *unset* removes some."""
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in set(unset)}
    return subprocess.run([*RADBRIDGE, *args], capture_output=True, text=True, timeout=timeout, env=environ)


def search_messages(config: Path, *args: str) -> list[dict[str, Any]]:
    """``radbridge messages search --json`` rows."""
    proc = run_cli("messages", "search", "--config", str(config), "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- the engine ----------------------------------------------------------------
class EngineProcess:
    """``radbridge run CONFIG`` as a subprocess; stderr goes to a log file."""

    def __init__(self, config: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_dir = log_dir
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log_path: Path = log_dir / "engine-0.log"

    def start(self) -> EngineProcess:
        """Start the engine (each start writes a new log file)."""
        assert self.proc is None or self.proc.poll() is not None, "engine already running"
        self.runs += 1
        self.log_path = self.log_dir / f"engine-{self.runs}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*RADBRIDGE, "run", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        return self

    def log(self) -> str:
        """What the current run has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = 20.0) -> EngineProcess:
        """Wait for ``radbridge ready:``; fail with the log if the process exits or takes too long."""
        deadline = time.monotonic() + timeout
        while READY not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited with {self.proc.returncode} before ready:\n{self.log()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"engine not ready after {timeout:g}s:\n{self.log()}")
            time.sleep(0.02)
        return self

    def start_ready(self, timeout: float = 20.0) -> EngineProcess:
        """``start()`` then ``wait_ready()``."""
        return self.start().wait_ready(timeout)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL, then reap."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for a clean exit (SIGKILL if it takes longer than *timeout*)."""
        if self.proc is None:
            return 0
        if self.running:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"engine ignored SIGTERM for {timeout:g}s:\n{self.log()}") from None
        return self.proc.returncode


# -- the downstream ----------------------------------------------------------
class DownstreamReceiver:
    """A threaded MLLP server on 127.0.0.1 that records every MSH-10 and ACKs it.

    ``code`` is the ACK code answered (``"AA"`` unless changed); ``ae_for`` holds
    control ids answered AE whatever ``code`` says. ``stop()`` closes the port and
    every connection; ``start()`` binds the same port again.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.code = "AA"
        self.ae_for: set[str] = set()
        self.received: list[str] = []  # MSH-10 of every frame, in arrival order (duplicates included)
        self.messages: list[str] = []  # the frames' text, same order
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()

    def start(self) -> DownstreamReceiver:
        """Bind (the same port after a restart) and serve in background threads."""
        assert self._sock is None, "already running"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        sock.settimeout(0.05)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._stop.clear()
        t = threading.Thread(target=self._accept_loop, args=(sock,), name=f"downstream-{self.port}", daemon=True)
        t.start()
        self._threads = [t]
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection; wait for the threads."""
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._threads = []

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                buf += data
                while EB in buf:
                    payload, buf = buf.split(EB, 1)
                    buf = buf[1:] if buf.startswith(CR) else buf
                    payload = payload[payload.find(SB) + 1 :] if SB in payload else payload
                    conn.sendall(frame(self._answer(payload.decode("utf-8", errors="replace"))))
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, text: str) -> bytes:
        msh = text.split("\r", 1)[0].split("|")
        control_id = msh[9] if len(msh) > 9 else ""
        with self._lock:
            self.received.append(control_id)
            self.messages.append(text)
            code = "AE" if control_id in self.ae_for else self.code
        reason = "|downstream says no" if code != "AA" else ""
        return f"MSH|^~\\&|RIS|RAD|{msh[2] if len(msh) > 2 else ''}||{_ts()}||ACK|A{control_id}|P|2.3.1\rMSA|{code}|{control_id}{reason}".encode()

    def count(self) -> int:
        """How many frames arrived so far."""
        with self._lock:
            return len(self.received)

    def snapshot(self) -> list[str]:
        """A copy of the MSH-10s received so far."""
        with self._lock:
            return list(self.received)

    def wait_for(self, ids: Iterable[str], timeout: float) -> list[str]:
        """Wait until every control id in *ids* has arrived at least once; return what arrived."""
        wanted = set(ids)
        wait_until(lambda: wanted <= set(self.snapshot()), timeout, what=f"{len(wanted)} messages downstream")
        return self.snapshot()


def first_arrivals(received: Iterable[str]) -> list[str]:
    """The control ids in order of first arrival (duplicates dropped)."""
    seen: set[str] = set()
    out = []
    for cid in received:
        if cid not in seen:
            seen.add(cid)
            out.append(cid)
    return out
