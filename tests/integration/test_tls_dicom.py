"""DICOM over TLS with real handshakes on loopback: ``radbridge run`` as an SCP requiring (or only checking)
client certificates, driven by dcmtk ``echoscu --enable-tls`` and pynetdicom, and its ``dicom_scu``
destination storing into a pynetdicom SCP that requires a client certificate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from tests.channels.dicom.test_scu import StorageSCP
from tests.channels.tls_certs import PKI, make_pki
from tests.integration.dicom import dcmtk, make_study, metric, scrape
from tests.integration.helpers import free_port, run_cli, search_messages, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    """A fresh CA, server and client certificates under tmp_path/pki."""
    return make_pki(tmp_path / "pki")


def scp_channel(name: str, port: int, tls: str, destinations: str = "") -> str:
    """YAML of one dicom_scp channel on *port* with the inline *tls* mapping."""
    return f"""\
  - name: {name}
    source: {{type: dicom_scp, ae_title: RADBRIDGE, host: 127.0.0.1, port: {port}, tls: {tls}}}
{destinations}"""


def engine_config(tmp: Path, metrics_port: int, channels: str) -> Path:
    """Write a config with the archive under tmp/data and *channels*."""
    path = tmp / "radbridge.yaml"
    path.write_text(
        f"data_dir: {tmp / 'data'}\nmetrics: {{host: 127.0.0.1, port: {metrics_port}}}\n"
        f"logging: {{level: INFO}}\nchannels:\n{channels}"
    )
    return path


def echoscu(port: int, *tls: str) -> int:
    """dcmtk echoscu over TLS (*tls* are its TLS options); its exit code."""
    return dcmtk("echoscu", *tls, "-to", "10", "-aec", "RADBRIDGE", "127.0.0.1", str(port), timeout=30).returncode


def test_scp_client_certificates(tmp_path: Path, pki: PKI, engine_factory) -> None:
    """Required: only clients certified by the CA associate, and the SCP keeps serving; optional: anonymous too."""
    required, optional, metrics_port = free_port(), free_port(), free_port()
    server = "{cert: pki/server.pem, key: pki/server.key, ca: pki/ca.pem"
    config = engine_config(
        tmp_path, metrics_port,
        scp_channel("required", required, server + "}") + scp_channel("optional", optional, server + ", require_client_cert: false}"),
    )  # fmt: skip
    engine = engine_factory(config).start_ready()
    trust = ("+cf", str(pki.ca))
    certified = ("+tls", str(pki.client_key), str(pki.client_cert), *trust)
    stranger = ("+tls", str(pki.other_client_key), str(pki.other_client_cert), *trust)
    anonymous = ("+tla", *trust)

    assert echoscu(required, *certified) == 0
    assert echoscu(required, *anonymous) != 0
    assert echoscu(required, *stranger) != 0
    assert echoscu(required) != 0  # no TLS at all
    ae = AE("PYSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # as the file is encoded
    ae.add_requested_context(Verification)
    refused = ae.associate(
        "127.0.0.1", required, ae_title="RADBRIDGE", tls_args=(pki.client_context(False), "localhost")
    )
    assert not refused.is_established
    [instance] = make_study(tmp_path / "study", 1, patient_name="TLS^PATIENT")
    assoc = ae.associate("127.0.0.1", required, ae_title="RADBRIDGE", tls_args=(pki.client_context(), "localhost"))
    assert assoc.is_established
    try:
        assert assoc.send_c_store(instance).Status == 0x0000
    finally:
        assoc.release()
    assert echoscu(required, *certified) == 0  # still serving after the refusals

    assert echoscu(optional, *anonymous) == 0
    assert echoscu(optional, *certified) == 0
    assert echoscu(optional, *stranger) != 0  # a presented certificate must still verify

    assert metric(scrape(metrics_port), "radbridge_dicom_instances_stored_total", channel="required") == 1
    assert engine.running
    held = ae.associate("127.0.0.1", required, ae_title="RADBRIDGE", tls_args=(pki.client_context(), "localhost"))
    assert held.is_established  # a storage association (fast path) left open over TLS: stopping still ends it
    assert engine.terminate() == 0
    wait_until(lambda: not held.is_established, 10, what="the held association to end")
    assert "TLS^PATIENT" not in engine.log()


def test_dicom_scu_destination_over_tls(tmp_path: Path, pki: PKI, engine_factory) -> None:
    """dicom_scu stores into a peer requiring client certificates when it presents one; without, it fails."""
    peer = StorageSCP(tls=pki.server_context(require_client_cert=True))
    try:
        port, metrics_port = free_port(), free_port()
        dest = "\n".join(
            f"""      - {{name: {name}, type: dicom_scu, ae_title: TESTSCP, host: 127.0.0.1, port: {peer.port},
         connect_timeout: 5, retry: {{max_attempts: 2, initial_delay: 0.1}}, tls: {tls}}}"""
            for name, tls in (
                ("pacs", "{ca: pki/ca.pem, cert: pki/client.pem, key: pki/client.key, server_name: localhost}"),
                ("by-ip", "{ca: pki/ca.pem, cert: pki/client.pem, key: pki/client.key}"),
                ("no-cert", "{ca: pki/ca.pem, server_name: localhost}"),
                ("wrong-ca", "{ca: pki/other-ca.pem, cert: pki/client.pem, key: pki/client.key}"),
            )
        )
        channel = f"""\
  - name: images
    source: {{type: dicom_scp, ae_title: RADBRIDGE, host: 127.0.0.1, port: {port}}}
    destinations:
{dest}
"""
        engine = engine_factory(engine_config(tmp_path, metrics_port, channel)).start_ready()
        files = make_study(tmp_path / "study", 2, series=1)
        sent = dcmtk("storescu", "-aec", "RADBRIDGE", "127.0.0.1", str(port), *map(str, files))
        assert sent.returncode == 0, sent.stderr

        def outcomes() -> list[dict[str, Any]] | None:
            rows = []
            for row in search_messages(engine.config):
                shown = run_cli("messages", "show", "--config", str(engine.config), "--json", str(row["id"]))
                rows.extend(json.loads(shown.stdout)["deliveries"])
            return rows if len(rows) == 8 and all(d["status"] in ("SENT", "ERROR") for d in rows) else None

        done = wait_until(outcomes, 60, interval=0.3, what="every delivery finished")
        status = {(d["destination"], d["status"]) for d in done}
        assert status == {("pacs", "SENT"), ("by-ip", "SENT"), ("no-cert", "ERROR"), ("wrong-ca", "ERROR")}
        assert all(d["attempts"] == 2 for d in done if d["status"] == "ERROR")
        uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
        assert sorted(peer.stored) == sorted(uids * 2)  # each instance once per destination that got through
        assert engine.terminate() == 0
    finally:
        peer.stop()
