"""PHI never reaches the logs at INFO or above, even when processing fails on a PHI value."""

from __future__ import annotations

import hl7.client
import pytest

from tests.integration.helpers import free_port, make_orm, write_config

pytestmark = pytest.mark.integration

SENTINEL = "ZZPHISENTINEL"


def test_patient_name_never_logged(tmp_path, downstream, engine_factory):
    """A patient name that appears in an error, an ACK and a delivery never appears in the INFO log."""
    port = free_port()
    config = write_config(
        tmp_path / "phi.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "metrics": {"enabled": False},
            "logging": {"level": "INFO"},
            "channels": [
                {
                    "name": "phi",
                    "source": {"type": "mllp_listener", "port": port},
                    "destinations": [
                        {"name": "ok", "type": "mllp_sender", "host": "127.0.0.1", "port": downstream.port},
                        {
                            "name": "bad-template",
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": downstream.port,
                            "filter": 'MSH-10 == "PHI2"',
                            # The error text of this template quotes the patient's name.
                            "transformer": {"template": '{{ msg[msg["PID-5.1"]] }}'},
                        },
                    ],
                }
            ],
        },
    )
    engine = engine_factory(config).start_ready()
    downstream.ae_for.add("PHI3")
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        for cid in ("PHI1", "PHI2", "PHI3"):
            client.send_message(make_orm(cid, "123", "ACC" + cid).replace("DOE^JOHN", f"{SENTINEL}^JOHN"))
        client.send_message(f"NOT HL7 {SENTINEL}")
    downstream.wait_for(["PHI1", "PHI3"], timeout=20)
    assert engine.terminate() == 0
    log = engine.log()
    assert "PHI2" in log  # the failure was logged, by control id
    assert SENTINEL not in log
