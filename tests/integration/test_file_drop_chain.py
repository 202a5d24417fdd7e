"""A dropped batch file flows through a chained channel to a real MLLP peer, and the file is filed away."""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.helpers import free_port, make_adt, make_orm, wait_until, write_config

pytestmark = pytest.mark.integration


def test_file_drop_into_chained_channel(tmp_path, downstream, engine_factory):
    """Each message of an FHS/BHS batch file reaches the downstream through the chained channel, in order."""
    inbox = tmp_path / "inbox"
    config = write_config(
        tmp_path / "cfg.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "metrics": {"enabled": False},
            "channels": [
                {
                    "name": "drop",
                    "source": {"type": "file_drop", "path": str(inbox), "poll_interval": 0.2, "min_age": 0.2},
                    "destinations": [{"name": "to-main", "type": "channel", "channel": "main"}],
                },
                {
                    "name": "main",
                    "source": {"type": "mllp_listener", "port": free_port()},
                    "destinations": [
                        {"name": "down", "type": "mllp_sender", "host": "127.0.0.1", "port": downstream.port}
                    ],
                },
            ],
        },
    )
    engine = engine_factory(config).start_ready()
    messages = [make_orm("F1", "P1", "A1"), make_adt("F2", "P2"), make_orm("F3", "P3", "A3")]
    batch = "FHS|^~\\&|LEGACY\nBHS|^~\\&|LEGACY\n" + "\n".join(m.replace("\r", "\n") for m in messages)
    batch += "\nBTS|3\nFTS|1\n"
    tmp = inbox / ".batch.tmp"
    tmp.write_text(batch)
    old = time.time() - 5
    os.utime(tmp, (old, old))
    tmp.rename(inbox / "batch.hl7")
    assert downstream.wait_for(["F1", "F2", "F3"], timeout=30)[:3] == ["F1", "F2", "F3"]
    wait_until(lambda: (inbox / "done" / "batch.hl7").exists(), 10, what="file moved to done/")
    assert not (inbox / "batch.hl7").exists()
    assert engine.terminate() == 0
