"""Acceptance: kill -9 in the middle of a stream loses nothing that was ACKed (DESIGN.md §3.2, §6)."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.helpers import (
    MLLP_SEND,
    first_arrivals,
    free_port,
    make_orm,
    parse_mllp_send_output,
    wait_until,
    write_config,
    write_mllp_file,
)

pytestmark = pytest.mark.integration

TOTAL = 2000
KILL_AFTER = 600

TEMPLATE = """\
{% for s in msg.segments %}
{{ s }}
{% endfor %}
ZRB|{{ msg["OBR-18"] }}|{{ msg["PID-3.1"] }}|{{ channel }}
"""


def _config(tmp_path: Path, port: int, downstream_port: int) -> Path:
    return write_config(
        tmp_path / "radbridge.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "metrics": {"enabled": False},
            "channels": [
                {
                    "name": "orders",
                    "source": {"type": "mllp_listener", "port": port},
                    "filter": 'MSH-9.1 == "ORM"',
                    "transformer": {"template": TEMPLATE},
                    "destinations": [
                        {
                            "name": "ris",
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": downstream_port,
                            "retry": {"max_attempts": 1000, "initial_delay": 0.05, "max_delay": 0.5},
                        }
                    ],
                }
            ],
        },
    )


def _mllp_send(path: Path, port: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [MLLP_SEND, "-p", str(port), "-f", str(path), "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=open(out, "wb"),  # noqa: SIM115 - closed by the child's exit; read back from the file
        stderr=subprocess.STDOUT,
    )


def test_kill9_mid_stream_loses_no_acked_message(tmp_path, downstream, engine_factory):
    """Every message that got AA before a kill -9 is stored and delivered; after a resend, all arrive in order."""
    started = time.monotonic()
    port = free_port()
    config = _config(tmp_path, port, downstream.port)
    ids = [f"CRASH{i:05d}" for i in range(TOTAL)]
    messages = [make_orm(cid, f"P{i:06d}", f"A{i:07d}") for i, cid in enumerate(ids)]
    first_file = write_mllp_file(tmp_path / "all.hl7", messages)

    engine = engine_factory(config).start_ready()
    out1 = tmp_path / "mllp_send-1.out"
    sender = _mllp_send(first_file, port, out1)
    try:
        wait_until(lambda: downstream.count() >= KILL_AFTER or sender.poll() is not None, 30, what="600 downstream")
        assert sender.poll() is None, f"mllp_send finished before the kill:\n{out1.read_text(errors='replace')[-2000:]}"
        engine.kill9()
        sender.wait(timeout=15)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait(timeout=5)
    assert sender.returncode != 0, "mllp_send should fail when the engine dies under it"

    acks = parse_mllp_send_output(out1.read_text(errors="replace"))
    assert all(code == "AA" for code, _ in acks), acks[-5:]
    acked = [cid for _, cid in acks]
    assert acked == ids[: len(acked)], "ACKs arrive in send order with MSA-2 = MSH-10"
    assert KILL_AFTER <= len(acked) < TOTAL
    seen_before_kill = downstream.count()

    # Nothing that got AA is missing from the store (read while the engine is down).
    db = tmp_path / "data" / "radbridge.db"
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT control_id FROM messages WHERE channel = 'orders'")}
    missing = [cid for cid in acked if cid not in stored]
    assert not missing, f"{len(missing)} ACKed messages not in the store, e.g. {missing[:5]}"

    # Restart on the same config and data; the HIS resends everything it got no AA for.
    engine.start_ready()
    rest_file = write_mllp_file(tmp_path / "rest.hl7", messages[len(acked) :])
    out2 = tmp_path / "mllp_send-2.out"
    resender = _mllp_send(rest_file, port, out2)
    try:
        resender.wait(timeout=60)
    finally:
        if resender.poll() is None:
            resender.kill()
            resender.wait(timeout=5)
    assert resender.returncode == 0, out2.read_text(errors="replace")[-2000:]
    acks2 = parse_mllp_send_output(out2.read_text(errors="replace"))
    assert acks2 == [("AA", cid) for cid in ids[len(acked) :]]

    received = downstream.wait_for(ids, timeout=120)
    arrivals = first_arrivals(received)
    assert arrivals == ids, "after MSH-10 dedupe every message arrives exactly once, in send order"
    assert set(acked) <= set(received)
    duplicates = len(received) - len(arrivals)
    stored_but_unacked = len(stored) - len(acked)
    engine.terminate()
    print(
        f"\ncrash test: {len(acked)} ACKed before kill -9 (downstream had {seen_before_kill}), "
        f"{stored_but_unacked} stored but not ACKed, {duplicates} duplicate deliveries downstream (at-least-once), "
        f"{time.monotonic() - started:.1f}s"
    )
