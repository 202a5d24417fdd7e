"""Bad input never takes the engine down: garbage, oversize frames, unknown charsets, broken templates, AE downstream."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import (
    EB,
    SB,
    DownstreamReceiver,
    EngineProcess,
    frame,
    free_port,
    make_adt,
    make_orm,
    run_cli,
    search_messages,
    segments,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    """An engine with channel ``inbound`` (to the downstream) and channel ``broken`` (failing template)."""

    engine: EngineProcess
    config: Path
    inbound: int
    broken: int
    downstream: DownstreamReceiver


@pytest.fixture
def rig(tmp_path, downstream, engine_factory) -> Rig:
    """Start the engine once per test with both channels."""
    inbound, broken = free_port(), free_port()
    config = write_config(
        tmp_path / "radbridge.yaml",
        {
            "data_dir": "data",
            "metrics": {"enabled": False},
            "channels": [
                {
                    "name": "inbound",
                    "source": {"type": "mllp_listener", "port": inbound, "max_message_bytes": 1024},
                    "destinations": [
                        {
                            "name": "ris",
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": downstream.port,
                            "retry": {"max_attempts": 3, "initial_delay": 0.05, "max_delay": 0.1},
                        }
                    ],
                },
                {
                    "name": "broken",
                    "source": {"type": "mllp_listener", "port": broken},
                    "transformer": {"template": '{{ msg.segments[0] }}\nZZZ|{{ msg["PID-5.1"] | int / 0 }}\n'},
                    "destinations": [
                        {"name": "ris", "type": "mllp_sender", "host": "127.0.0.1", "port": downstream.port}
                    ],
                },
            ],
        },
    )
    return Rig(engine_factory(config).start_ready(), config, inbound, broken, downstream)


class RawClient:
    """A plain socket MLLP client that can send anything and notice the server closing."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> str:
        """Send raw bytes (already framed); return the next response frame's text."""
        self.sock.sendall(data)
        deadline = time.monotonic() + 10
        while EB not in self.buf:
            assert time.monotonic() < deadline, "no response within 10s"
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed without a response (got {self.buf!r})"
            self.buf += chunk
        payload, self.buf = self.buf.split(EB, 1)
        self.buf = self.buf.removeprefix(b"\r")
        return payload.split(SB, 1)[-1].decode("utf-8", errors="replace")

    def closed_by_server(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection within *timeout* seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def _error_rows(rig: Rig) -> list[dict]:
    return search_messages(rig.config, "--status", "ERROR")


def test_garbage_is_rejected_stored_and_the_engine_stays_up(rig: Rig) -> None:
    """A frame that is not HL7 gets AR with an ERR reason, is stored as ERROR, and the next message gets AA."""
    with RawClient(rig.inbound) as client:
        ack = segments(client.send(frame(b"this is not an HL7 message at all")))
        assert ack["MSA"][1] == "AR"
        assert "ERR" in ack and ack["ERR"][8], "ERR-8 carries the reason"
        good = segments(client.send(frame(make_orm("BAD-OK-1", "P1", "A1"))))
        assert good["MSA"][1:3] == ["AA", "BAD-OK-1"]
    rig.downstream.wait_for(["BAD-OK-1"], timeout=10)
    rows = _error_rows(rig)
    assert len(rows) == 1 and rows[0]["channel"] == "inbound"
    assert rows[0]["error"].startswith("parse:")
    shown = json.loads(run_cli("messages", "show", "--json", "--config", str(rig.config), str(rows[0]["id"])).stdout)
    assert shown["raw"] == "this is not an HL7 message at all"


def test_oversize_frame_gets_ar_then_the_connection_closes(rig: Rig) -> None:
    """A frame over max_message_bytes is answered AR, the connection is closed, and it is stored as ERROR."""
    big = make_orm("BAD-BIG-1", "P2", "A2") + "\rNTE|1||" + "X" * 4000
    with RawClient(rig.inbound) as client:
        ack = segments(client.send(frame(big)))
        assert ack["MSA"][1] == "AR"
        assert "max_message_bytes" in ack["ERR"][8]
        assert client.closed_by_server()
    with RawClient(rig.inbound) as client:
        assert segments(client.send(frame(make_orm("BAD-OK-2", "P3", "A3"))))["MSA"][1] == "AA"
    rows = _error_rows(rig)
    assert len(rows) == 1 and rows[0]["error"].startswith("framing:")
    assert "BAD-BIG-1" not in rig.downstream.snapshot()


def test_unknown_charset_is_rejected_with_a_reason(rig: Rig) -> None:
    """An MSH-18 the engine has no codec for is refused with a reason naming MSH-18."""
    msg = make_adt("BAD-CS-1", "P4").replace("|P|2.3.1", "|P|2.5||||||KLINGON-8", 1)
    with RawClient(rig.inbound) as client:
        ack = segments(client.send(frame(msg)))
    assert ack["MSA"][1] in ("AR", "AE")
    assert ack["MSA"][2] == "BAD-CS-1", "the control id is salvaged from the raw header"
    assert "MSH-18" in ack["ERR"][8]
    rows = _error_rows(rig)
    assert len(rows) == 1 and rows[0]["error"].startswith("charset:")


def test_template_failing_at_render_time_answers_ae(rig: Rig) -> None:
    """A template that raises while rendering answers AE with an ERR segment; the message is stored as ERROR."""
    with RawClient(rig.broken) as client:
        ack = segments(client.send(frame(make_orm("BAD-TPL-1", "P5", "A5"))))
    assert ack["MSA"][1:3] == ["AE", "BAD-TPL-1"]
    assert ack["ERR"][8], "ERR-8 carries the reason"
    rows = _error_rows(rig)
    assert [(r["channel"], r["control_id"]) for r in rows] == [("broken", "BAD-TPL-1")]
    assert rig.downstream.count() == 0


def test_downstream_ae_is_retried_then_error_and_the_queue_moves_on(rig: Rig) -> None:
    """A delivery answered AE is tried max_attempts times, then set to ERROR, and the next message is delivered."""
    rig.downstream.ae_for.add("BAD-AE-1")
    with RawClient(rig.inbound) as client:
        for cid in ("BAD-AE-1", "BAD-AE-2"):
            assert segments(client.send(frame(make_orm(cid, "P6", "A6"))))["MSA"][1:3] == ["AA", cid]
    rig.downstream.wait_for(["BAD-AE-2"], timeout=10)
    assert rig.downstream.snapshot() == ["BAD-AE-1"] * 3 + ["BAD-AE-2"]

    def failed_rows() -> list[dict]:
        return [r for r in _error_rows(rig) if r["control_id"] == "BAD-AE-1"]

    row = wait_until(failed_rows, 5, what="delivery marked ERROR")[0]
    shown = json.loads(run_cli("messages", "show", "--json", "--config", str(rig.config), str(row["id"])).stdout)
    (delivery,) = shown["deliveries"]
    assert delivery["status"] == "ERROR" and delivery["attempts"] == 3
    assert "AE" in delivery["last_error"]
    assert rig.engine.running
