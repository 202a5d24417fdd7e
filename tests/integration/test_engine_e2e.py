"""End to end: the real engine routes ORM and ADT to real MLLP peers and a folder, with ACKs, metrics and the CLI."""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import hl7
import hl7.client
import pytest

from tests.integration.helpers import (
    DownstreamReceiver,
    EngineProcess,
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
    """A running engine with its two downstreams and its output folder."""

    engine: EngineProcess
    config: Path
    port: int
    metrics_port: int
    orders: DownstreamReceiver
    adt: DownstreamReceiver
    outbox: Path

    def send(self, *messages: str) -> list[dict[str, list[str]]]:
        """Send with python-hl7's MLLPClient; the ACKs' segments."""
        with hl7.client.MLLPClient("127.0.0.1", self.port) as client:
            return [segments(client.send_message(m).decode()) for m in messages]

    def metrics(self) -> str:
        """The /metrics page."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            assert resp.status == 200
            return resp.read().decode()


@pytest.fixture
def rig(tmp_path, downstream_factory, engine_factory) -> Rig:
    """An engine with channel ``his``: ORM → ``orders``; ADT → ``adt`` and the ``adt-file`` folder."""
    orders, adt = downstream_factory(), downstream_factory()
    port, metrics_port = free_port(), free_port()
    outbox = tmp_path / "outbox"
    retry = {"max_attempts": 100, "initial_delay": 0.2, "max_delay": 0.5}
    config = write_config(
        tmp_path / "radbridge.yaml",
        {
            "data_dir": "data",
            "metrics": {"host": "127.0.0.1", "port": metrics_port},
            "channels": [
                {
                    "name": "his",
                    "source": {"type": "mllp_listener", "port": port},
                    "filter": 'MSH-9.1 in ["ORM", "ADT"]',
                    "destinations": [
                        {
                            "name": "orders",
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": orders.port,
                            "filter": 'MSH-9.1 == "ORM"',
                            "retry": retry,
                        },
                        {
                            "name": "adt",
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": adt.port,
                            "filter": 'MSH-9.1 == "ADT"',
                            "retry": retry,
                        },
                        {
                            "name": "adt-file",
                            "type": "file_writer",
                            "directory": "outbox",
                            "filename": "{message_id}.hl7",
                            "filter": 'MSH-9.1 == "ADT"',
                        },
                    ],
                }
            ],
        },
    )
    engine = engine_factory(config).start_ready()
    return Rig(engine, config, port, metrics_port, orders, adt, outbox)


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition *text* (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(part in (m.group(1) or "").split(",") for part in want.split(",") if part):
            return float(m.group(2))
    return 0.0


def test_routes_acks_metrics_and_cli(rig: Rig, tmp_path: Path) -> None:
    """ORM goes to one downstream, ADT to another and to a folder; ACKs, /metrics and the CLI agree."""
    orm, adt = make_orm("E2E-ORM-1", "P100", "ACC100"), make_adt("E2E-ADT-1", "P200")
    acks = rig.send(orm, adt)
    for ack, sent in zip(acks, (orm, adt)):
        msh_in = segments(sent)["MSH"]
        assert ack["MSA"][1:3] == ["AA", msh_in[10]]
        assert ack["MSH"][3:7] == [msh_in[5], msh_in[6], msh_in[3], msh_in[4]], "MSH-3/4 and 5/6 swapped"
        assert ack["MSH"][9].startswith("ACK")

    proc = run_cli("send", "--port", str(rig.port), str(_file(tmp_path, make_orm("E2E-ORM-2", "P101", "ACC101"))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "MSA|AA|E2E-ORM-2"

    assert rig.orders.wait_for(["E2E-ORM-1", "E2E-ORM-2"], timeout=10) == ["E2E-ORM-1", "E2E-ORM-2"]
    assert rig.adt.wait_for(["E2E-ADT-1"], timeout=10) == ["E2E-ADT-1"]
    files = wait_until(lambda: list(rig.outbox.glob("*.hl7")), 10, what="file_writer output")
    assert len(files) == 1
    assert files[0].read_bytes().decode().split("\r")[0] == adt.split("\r")[0]
    assert rig.orders.messages[0] == orm, "no channel transformer: the message is sent as received"

    def sent_all() -> str | None:
        text = rig.metrics()
        return text if _metric(text, "radbridge_messages_sent_total", destination="adt-file") == 1 else None

    text = wait_until(sent_all, 10, what="sent counters")
    assert _metric(text, "radbridge_messages_received_total", channel="his") == 3
    assert _metric(text, "radbridge_messages_sent_total", channel="his", destination="orders") == 2
    assert _metric(text, "radbridge_messages_sent_total", channel="his", destination="adt") == 1
    assert _metric(text, "radbridge_acks_sent_total", channel="his", code="AA") == 3
    assert 'radbridge_queue_depth{channel="his",destination="orders"} 0.0' in text

    rows = search_messages(rig.config)
    assert sorted(r["control_id"] for r in rows) == ["E2E-ADT-1", "E2E-ORM-1", "E2E-ORM-2"]
    assert [r["control_id"] for r in search_messages(rig.config, "--type", "ADT*")] == ["E2E-ADT-1"]
    assert [r["control_id"] for r in search_messages(rig.config, "--patient-id", "P200")] == ["E2E-ADT-1"]
    adt_row = next(r for r in rows if r["control_id"] == "E2E-ADT-1")
    assert adt_row["message_type"] == "ADT^A04" and adt_row["status"] == "TRANSFORMED"

    shown = run_cli("messages", "show", "--config", str(rig.config), str(adt_row["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "DESTINATION adt " in shown.stdout and "DESTINATION adt-file " in shown.stdout
    assert "RECEIVED" in shown.stdout and "E2E-ADT-1" in shown.stdout
    as_json = json.loads(run_cli("messages", "show", "--json", "--config", str(rig.config), str(adt_row["id"])).stdout)
    assert {d["destination"]: d["status"] for d in as_json["deliveries"]} == {"adt": "SENT", "adt-file": "SENT"}


def test_duplicate_control_id_is_acked_and_delivered_once(rig: Rig) -> None:
    """A resent MSH-10 from the same sender gets AA again but reaches the downstream only once."""
    first = make_orm("E2E-DUP-1", "P300", "ACC300")
    acks = rig.send(first, first, make_orm("E2E-DUP-2", "P301", "ACC301"))
    assert [a["MSA"][1:3] for a in acks] == [["AA", "E2E-DUP-1"], ["AA", "E2E-DUP-1"], ["AA", "E2E-DUP-2"]]
    rig.orders.wait_for(["E2E-DUP-1", "E2E-DUP-2"], timeout=10)
    assert rig.orders.snapshot() == ["E2E-DUP-1", "E2E-DUP-2"]
    rows = search_messages(rig.config, "--control-id", "E2E-DUP-1")
    assert sorted(r["status"] for r in rows) == ["FILTERED", "TRANSFORMED"]
    assert sum(1 for r in rows if r["duplicate_of"]) == 1
    assert _metric(rig.metrics(), "radbridge_messages_duplicate_total", channel="his") == 1


def test_downstream_outage_queues_and_delivers_in_order(rig: Rig) -> None:
    """With the downstream down, messages are still ACKed (after_store) and arrive in order once it is back."""
    rig.orders.stop()
    ids = [f"E2E-OUT-{i}" for i in range(5)]
    acks = rig.send(*(make_orm(cid, f"P4{i}", f"ACC4{i}") for i, cid in enumerate(ids)))
    assert [a["MSA"][1:3] for a in acks] == [["AA", cid] for cid in ids]
    wait_until(
        lambda: _metric(rig.metrics(), "radbridge_queue_depth", channel="his", destination="orders") == 5,
        5,
        what="queue depth 5",
    )
    assert rig.orders.count() == 0
    rig.orders.start()  # the same port again
    assert rig.orders.wait_for(ids, timeout=15) == ids
    wait_until(
        lambda: _metric(rig.metrics(), "radbridge_queue_depth", channel="his", destination="orders") == 0,
        5,
        what="queue drained",
    )
    assert rig.engine.terminate() == 0


def _file(tmp_path: Path, *messages: str) -> Path:
    path = tmp_path / "send.hl7"
    path.write_text("\r\n".join(messages) + "\r\n", newline="")
    return path
