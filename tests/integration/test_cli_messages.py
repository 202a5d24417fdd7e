"""``radbridge messages resend|reprocess|prune`` against a running engine, and many concurrent senders."""

from __future__ import annotations

import json
import threading

import hl7.client
import pytest

from tests.integration.helpers import free_port, make_orm, run_cli, search_messages, wait_until, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def running(tmp_path, downstream, engine_factory):
    """An engine whose single destination gives up after one attempt, with fast queue polling."""
    port = free_port()
    config = write_config(
        tmp_path / "cfg.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "metrics": {"enabled": False},
            "store": {"queue_poll_interval": 0.2},
            "channels": [
                {
                    "name": "cli",
                    "source": {"type": "mllp_listener", "port": port},
                    "destinations": [
                        {
                            "name": "down",
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": downstream.port,
                            "retry": {"max_attempts": 1},
                        }
                    ],
                }
            ],
        },
    )
    engine = engine_factory(config).start_ready()
    yield config, port, downstream
    assert engine.terminate() == 0


def _show(config, mid: int) -> dict:
    proc = run_cli("messages", "show", "--config", str(config), "--json", str(mid))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_resend_reprocess_and_prune(running):
    """An ERROR delivery is resent, a message is reprocessed as a new linked one, and prune deletes old ones."""
    config, port, downstream = running
    downstream.ae_for.add("CLI1")
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        assert b"MSA|AA|CLI1" in client.send_message(make_orm("CLI1", "P1", "A1"))
    wait_until(lambda: search_messages(config, "--status", "ERROR"), 20, what="delivery in ERROR")
    mid = search_messages(config, "--control-id", "CLI1")[0]["id"]
    assert _show(config, mid)["deliveries"][0]["status"] == "ERROR"

    downstream.ae_for.clear()
    proc = run_cli("messages", "resend", "--config", str(config), str(mid))
    assert proc.returncode == 0 and "1 deliveries queued again" in proc.stdout
    wait_until(lambda: _show(config, mid)["deliveries"][0]["status"] == "SENT", 20, what="resent delivery SENT")

    proc = run_cli("messages", "reprocess", "--config", str(config), str(mid))
    assert proc.returncode == 0, proc.stderr
    new_id = int(proc.stdout.split("->")[1].split()[0])
    assert _show(config, new_id)["parent_id"] == mid
    wait_until(lambda: _show(config, new_id)["deliveries"][0]["status"] == "SENT", 20, what="reprocessed SENT")
    assert downstream.snapshot().count("CLI1") == 3  # AE, resend, reprocess

    proc = run_cli("messages", "prune", "--config", str(config), "--older-than", "0s")
    assert proc.returncode == 0 and "2 messages pruned" in proc.stdout
    assert search_messages(config) == []


def test_many_concurrent_connections(running):
    """Twenty senders at once each get an AA for every message, and everything is delivered."""
    config, port, downstream = running
    failures: list[str] = []

    def sender(n: int) -> None:
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            for i in range(10):
                cid = f"C{n:02d}{i:02d}"
                if b"MSA|AA|" + cid.encode() not in client.send_message(make_orm(cid, "P", "A")):
                    failures.append(cid)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures
    downstream.wait_for([f"C{n:02d}{i:02d}" for n in range(20) for i in range(10)], timeout=60)
