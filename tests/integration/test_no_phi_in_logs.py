"""PHI never reaches the logs at INFO or above, on the HL7 and the DICOM paths, in text and JSON formats.

Each test feeds a patient name that appears nowhere else (``SENTINEL``) through the paths that log:
accepted, rejected, filtered and failing messages; stored, queried and refused DICOM instances.
"""

from __future__ import annotations

import json
from pathlib import Path

import hl7.client
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.integration.dicom import dcmtk, make_study
from tests.integration.helpers import DownstreamReceiver, free_port, make_orm, wait_until, write_config

pytestmark = pytest.mark.integration

SENTINEL = "ZZPHISENTINEL"
KEYS = {"ts", "level", "logger", "msg"}


class NamingDownstream(DownstreamReceiver):
    """A downstream whose AE answers quote the patient's name in MSA-3, as some real systems do."""

    def _answer(self, text: str) -> bytes:
        ack = super()._answer(text)
        return ack.replace(b"downstream says no", f"unknown patient {SENTINEL}^JOHN".encode())


def assert_json_lines(log: str) -> list[dict]:
    """Every line of *log* is a JSON object with ts, level, logger and msg; returns them."""
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert records, "nothing was logged"
    for record in records:
        assert record.keys() >= KEYS, record
    return records


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_hl7_path_never_logs_the_patient_name(tmp_path: Path, engine_factory, fmt: str) -> None:
    """Accepted, NAK'd, filtered and failed messages (error texts quoting the name) never put it in the log."""
    port, closed = free_port(), free_port()
    downstream = NamingDownstream().start()
    try:
        config = write_config(
            tmp_path / "phi.yaml",
            {
                "data_dir": str(tmp_path / "data"),
                "metrics": {"enabled": False},
                "logging": {"level": "INFO", "format": fmt},
                "channels": [
                    {
                        "name": "phi",
                        "source": {"type": "mllp_listener", "port": port},
                        "filter": 'MSH-10 != "PHI4"',
                        "destinations": [
                            {
                                "name": "ok",
                                "type": "mllp_sender",
                                "host": "127.0.0.1",
                                "port": downstream.port,
                                "retry": {"max_attempts": 2, "initial_delay": 0.1},
                            },
                            {
                                "name": "bad-template",
                                "type": "mllp_sender",
                                "host": "127.0.0.1",
                                "port": downstream.port,
                                "filter": 'MSH-10 == "PHI2"',
                                # The error text of this template quotes the patient's name.
                                "transformer": {"template": '{{ msg[msg["PID-5.1"]] }}'},
                            },
                            {
                                "name": "down",
                                "type": "mllp_sender",
                                "host": "127.0.0.1",
                                "port": closed,
                                "filter": 'MSH-10 == "PHI1"',
                                "connect_timeout": 1,
                                "retry": {"max_attempts": 2, "initial_delay": 0.1},
                            },
                        ],
                    }  # fmt: skip
                ],
            },
        )
        engine = engine_factory(config).start_ready()
        downstream.ae_for.add("PHI3")  # answered AE quoting the name, retried, then ERROR
        acks = []
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            for cid in ("PHI1", "PHI2", "PHI3", "PHI4"):
                message = make_orm(cid, "123", "ACC" + cid).replace("DOE^JOHN", f"{SENTINEL}^JOHN")
                acks.append(str(client.send_message(message)))
            acks.append(str(client.send_message(f"NOT HL7 {SENTINEL}")))
        codes = [a.split("MSA|", 1)[1][:2] for a in acks]
        assert codes[0] == codes[2] == codes[3] == "AA" and codes[4] != "AA", acks  # not HL7: NAK'd
        assert codes[1] != "AA", acks  # the template error fails the message before it is ACKed
        wait_until(lambda: downstream.received.count("PHI3") == 2, 20, what="PHI3 tried twice")
        wait_until(lambda: "PHI1" in downstream.received, 20, what="PHI1 delivered")
        wait_until(lambda: "to phi/down failed for good" in engine.log(), 20, what="the failing destination given up")
        assert "PHI4" not in downstream.received  # filtered
        assert engine.terminate() == 0
    finally:
        downstream.stop()
    log = engine.log()
    assert "PHI2" in log and "to phi/ok failed for good" in log  # the failures were logged, by ids
    assert SENTINEL not in log
    if fmt == "json":
        levels = {r["level"] for r in assert_json_lines(log)}
        assert {"INFO", "WARNING"} <= levels, levels


def test_dicom_path_never_logs_the_patient_name(tmp_path: Path, engine_factory) -> None:
    """C-STORE, C-FIND on PatientName, a refused instance and a failing forward never log the name (JSON lines)."""
    port, closed = free_port(), free_port()
    config = tmp_path / "dicom.yaml"
    config.write_text(
        f"""\
data_dir: {tmp_path / "data"}
metrics: {{enabled: false}}
logging: {{level: INFO, format: json}}
channels:
  - name: images
    source: {{type: dicom_scp, ae_title: RADBRIDGE, host: 127.0.0.1, port: {port}}}
    destinations:
      - {{name: pacs, type: dicom_scu, ae_title: PACS, host: 127.0.0.1, port: {closed}, connect_timeout: 1,
         retry: {{max_attempts: 2, initial_delay: 0.1}}}}
"""
    )
    engine = engine_factory(config).start_ready()
    files = make_study(tmp_path / "study", 2, series=1, patient_id="PID" + SENTINEL, patient_name=f"{SENTINEL}^JANE")
    stored = dcmtk("storescu", "-aec", "RADBRIDGE", "127.0.0.1", str(port), *map(str, files))
    assert stored.returncode == 0, stored.stderr
    found = dcmtk(
        "findscu", "-P", "-aec", "RADBRIDGE", "-k", "QueryRetrieveLevel=PATIENT",
        "-k", f"PatientName={SENTINEL}*", "-k", "PatientID", "127.0.0.1", str(port),
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert SENTINEL in found.stderr  # the match came back to the client ...

    ds = dcmread(files[0])
    del ds.StudyInstanceUID  # the archive refuses an instance without its study
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad, enforce_file_format=True)
    ae = AE("PYSCU")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADBRIDGE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(bad).Status != 0x0000
    finally:
        assoc.release()
    wait_until(lambda: engine.log().count("pacs") >= 2, 20, what="the failing forward logged")
    assert engine.terminate() == 0
    log = engine.log()
    records = assert_json_lines(log)
    assert any("refused SOP instance" in r["msg"] for r in records), log
    assert any("C-FIND" in r["msg"] for r in records), log
    assert SENTINEL not in log  # ... but never to the log
